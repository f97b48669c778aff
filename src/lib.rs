//! ringside: an interactive load balancer for learning and experimenting
//! with sticky sessions and consistent hashing.
//!
//! Module map (data flows down, events flow up):
//! - [`cli`]: the command line; `main.rs` only calls it. [`headless`] runs
//!   without the dashboard; [`dashboard`] is the terminal dashboard (ratatui).
//! - [`app`]: the one start-up path — bind every listener, start, get a
//!   [`app::Handle`]; [`signals`], [`logging`], [`secret`] (the kept cookie
//!   secret), [`limits`] (the descriptor budget) and [`shutdown`] (one
//!   signal for every task) serve it; [`memory`] gives freed memory back.
//! - [`engine`]: the one owner of topology changes — a task that runs
//!   commands and health verdicts in order; [`admin`]: its JSON API.
//! - [`proxy`]: the live HTTP proxy (hyper) and its connection pools.
//! - [`router`]: the I/O-free brain — backends, the hash ring, placements,
//!   affinity policy, balancer cookies, the session tables, remap accounting
//!   and events. Everything else drives it.
//! - [`bus`]: the event bus that never slows the proxy; [`clock`]: router time.
//! - [`store`]: the session tables shared through Redis.
//! - [`config`]: the TOML file and its validation.
//! - [`demo`]: demo backends and the synthetic clients.
//! - [`experiment`]: `ringside ring` and `ringside scenario`.
//! - [`sim`]: `ringside sim`, the JSON line protocol over stdin/stdout.
//! - [`text`]: numbers as people read them; [`counter`]: counters the
//!   proxy threads update without contention.

pub mod admin;
pub mod app;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod counter;
pub mod dashboard;
pub mod demo;
pub mod engine;
pub mod experiment;
pub mod headless;
pub mod limits;
pub mod logging;
pub mod memory;
pub mod proxy;
pub mod router;
pub mod secret;
pub mod shutdown;
pub mod signals;
pub mod sim;
pub mod store;
#[cfg(test)]
mod testing;
pub mod text;
