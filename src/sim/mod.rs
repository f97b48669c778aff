//! `ringside sim`: the seed task's JSON line protocol over stdin/stdout.

use std::io::{self, BufRead, Write};

use crate::router::Placement;

/// Simulator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Simulated backends `api-1` … `api-N`.
    pub backends: usize,
    /// Placement for new sessions.
    pub placement: Placement,
    /// Idle timeout in seconds.
    pub idle_timeout_secs: u32,
    /// Seed for session ids and random choices.
    pub seed: u64,
}

/// Runs the simulator until EOF on `input`.
pub fn run(input: impl BufRead, mut output: impl Write, config: &SimConfig) -> io::Result<()> {
    let _ = (input, config);
    output.flush()
}
