//! The binary's reporter: how the library's messages and progress bars reach the
//! terminal. Decided once, when the subcommand starts: `--quiet` hides what a run does
//! (and its bars); bars are drawn only on a terminal and never under CI (`CI` set, as
//! CI services set it); errors and a sweep's status lines always show.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use runner::sys::reporter::{Level, Reporter, Unit};

pub(crate) struct Console {
    quiet: bool,
    bars: bool,
}

impl Console {
    /// Installs the console as the process's reporter (once; a second call changes nothing).
    pub(crate) fn install(quiet: bool) {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false");
        let bars = !quiet && !ci && std::io::stderr().is_terminal();
        runner::sys::reporter::install(Box::new(Console { quiet, bars }));
    }
}

impl Reporter for Console {
    fn message(&self, level: Level, text: &str) {
        match level {
            Level::Info if !self.quiet => println!("{text}"),
            Level::Note if !self.quiet => eprintln!("{text}"),
            Level::Status => println!("{text}"),
            Level::Error => eprintln!("error: {text}"),
            Level::Info | Level::Note => {}
        }
    }

    fn bar(&self, len: u64, unit: Unit, label: &str) -> ProgressBar {
        if !self.bars {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(style(unit));
        bar.set_message(label.to_string());
        bar
    }
}

/// The one look of runner's progress bars.
fn style(unit: Unit) -> ProgressStyle {
    let template = match unit {
        Unit::Images => "{msg:>10} [{bar:30}] {pos}/{len} images {per_sec} eta {eta}",
        Unit::Bytes => "{msg:>10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    };
    ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ")
}
