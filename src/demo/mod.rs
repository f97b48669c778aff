//! The demo world: stateful demo backends and a traffic generator of
//! synthetic clients, so `ringside` with no arguments shows everything working.

pub mod backend;
pub mod registry;
pub mod traffic;
