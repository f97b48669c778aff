//! ringside: an interactive load balancer for learning and experimenting
//! with sticky sessions and consistent hashing.
//!
//! Module map:
//! - [`cli`]: the command line; `main.rs` only calls it.
//! - [`router`]: the I/O-free brain — backends, the hash ring, placements,
//!   affinity keys, balancer cookies, the session table, remap accounting
//!   and events. Everything else drives it.
//! - [`experiment`]: `ringside ring`, the seed's remapping experiment.
//! - [`sim`]: `ringside sim`, the JSON line protocol over stdin/stdout.

pub mod cli;
pub mod experiment;
pub mod router;
pub mod sim;
