//! The command line (clap): one subcommand per job, each handing off to the library.

use std::io;

use clap::{Args, Parser, Subcommand};

use crate::experiment::{self, RingExperiment};
use crate::router::{Placement, VnodeHash};
use crate::sim::{self, SimConfig};

/// An interactive load balancer for learning and experimenting with sticky
/// sessions and consistent hashing.
#[derive(Debug, Parser)]
#[command(name = "ringside", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Consistent hashing against modulo: keys per backend before and after a
    /// backend leaves or joins, and the share of keys remapped by each.
    Ring(RingArgs),
    /// A sticky-session simulator: JSON messages on stdin, answers on stdout,
    /// one object per line, driving the real router with simulated backends.
    Sim(SimArgs),
}

/// Options of `ringside ring`.
#[derive(Debug, Args)]
pub struct RingArgs {
    /// Backends api-1 … api-N before the change.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub backends: u32,
    /// Virtual nodes per backend.
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub vnodes: u32,
    /// Keys `client-0` … `client-(N-1)` to place.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub keys: u32,
    /// Take this backend out (e.g. api-2).
    #[arg(long, conflicts_with = "add")]
    pub remove: Option<String>,
    /// Add a backend with this name.
    #[arg(long)]
    pub add: Option<String>,
    /// How keys are placed.
    #[arg(long, default_value = "ring")]
    pub placement: Placement,
    /// How vnode labels become positions: mixed (default) or the seed's crc32.
    #[arg(long, default_value = "mixed")]
    pub vnode_hash: VnodeHash,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Options of `ringside sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Simulated backends api-1 … api-N.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub backends: u32,
    /// How new sessions are placed (the task's default is round-robin).
    #[arg(long, default_value = "round-robin")]
    pub placement: Placement,
    /// Sessions idle this many seconds expire.
    #[arg(long, default_value_t = 1800)]
    pub idle_timeout: u32,
    /// Seed for session ids and random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Ring(a)) => {
            let change = match (a.remove, a.add) {
                (Some(name), _) => Some(experiment::Change::Remove(name)),
                (None, Some(name)) => Some(experiment::Change::Add(name)),
                (None, None) => None,
            };
            let report = RingExperiment {
                backends: a.backends,
                vnodes: a.vnodes,
                keys: a.keys,
                change,
                placement: a.placement,
                vnode_hash: a.vnode_hash,
            }
            .run()?;
            let out = if a.json {
                serde_json::to_string(&report.json())?
            } else {
                report.to_string()
            };
            println!("{out}");
            Ok(())
        }
        Some(Command::Sim(a)) => {
            let config = SimConfig {
                backends: a.backends as usize,
                placement: a.placement,
                idle_timeout_secs: a.idle_timeout,
                seed: a.seed,
            };
            sim::run(io::stdin().lock(), io::stdout().lock(), &config)?;
            Ok(())
        }
        None => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            Ok(())
        }
    }
}
