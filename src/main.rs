//! The `ringside` binary: parse the command line and hand off to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match ringside::cli::run(ringside::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringside: {e:#}");
            ExitCode::FAILURE
        }
    }
}
