//! The `runner` binary: parses the command line, runs the subcommand (src/cli/), and
//! turns its error into the exit status.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use runner::config::spec::SpecError;

fn main() -> ExitCode {
    if let Err(e) = runner::sys::malloc::tune() {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    match cli::Cli::parse().run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // A wrong spec is a usage error, like a wrong flag.
            if e.downcast_ref::<SpecError>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}
