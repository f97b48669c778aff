//! ringside: an interactive load balancer for learning and experimenting
//! with sticky sessions and consistent hashing.
//!
//! Module map:
//! - [`engine`]: the one owner of topology changes: commands, health checks,
//!   drains, the demo world; [`admin`]: its JSON API; [`app`]: start-up.
//! - [`engine`]: the one owner of topology changes: commands, health checks,
//!   drains, the demo world; [`admin`]: its JSON API; [`app`]: start-up.
//! - [`bus`]: the event bus that never slows the proxy; [`clock`]: router time.
//! - [`cli`]: the command line; `main.rs` only calls it.
//! - [`router`]: the I/O-free brain — backends, the hash ring, placements,
//!   affinity keys, balancer cookies, the session table, remap accounting
//!   and events. Everything else drives it.
//! - [`config`]: the TOML file and its validation.
//! - [`dashboard`]: the terminal dashboard (ratatui).
//! - [`demo`]: demo backends and the traffic generator.
//! - [`experiment`]: `ringside ring`, the seed's remapping experiment.
//! - [`proxy`]: the live HTTP proxy (hyper) and its connection pools.
//! - [`sim`]: `ringside sim`, the JSON line protocol over stdin/stdout.

pub mod admin;
pub mod app;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod engine;
pub mod experiment;
pub mod proxy;
pub mod router;
pub mod sim;
pub mod store;
