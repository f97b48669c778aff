//! The `ringside` binary: parse the command line and hand off to the library.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match ringside::cli::run(ringside::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: stderr may be a terminal that is gone.
            let _ = writeln!(std::io::stderr(), "ringside: {e:#}");
            ExitCode::FAILURE
        }
    }
}
