//! The `runner` binary: parses the command line, runs the subcommand (src/cli/), and
//! turns its error into the exit status.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    if let Err(e) = runner::sys::malloc::tune() {
        eprintln!("error: {e:#}");
        return ExitCode::from(runner::error::exit::USAGE);
    }
    match cli::Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(e.code())
        }
    }
}
