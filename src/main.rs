//! The `ringside` binary: parse the command line and hand off to the library.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    ringside::cli::run(ringside::cli::Cli::parse())
}
