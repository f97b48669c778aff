//! Experiments that print a report.

pub mod probe;
pub mod ring;
pub mod scenario;

pub use ring::{Change, RingExperiment, RingReport};
