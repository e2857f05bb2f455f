//! The `runner` binary: parses the command line, runs the subcommand (src/cli/), and
//! turns its error into the exit status.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // `runner plan | head` ends quietly when `head` closes the pipe, as Unix tools do,
    // instead of panicking in println!.
    // SAFETY: setting a signal's disposition to the default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(e) = runner::sys::env::check() {
        eprintln!("error: {e}");
        return ExitCode::from(runner::error::exit::USAGE);
    }
    if let Err(e) = runner::sys::malloc::tune() {
        eprintln!("error: {e:#}");
        return ExitCode::from(runner::error::exit::USAGE);
    }
    match cli::Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", runner::sys::redact::credentials(&format!("{e:#}")));
            ExitCode::from(e.code())
        }
    }
}
