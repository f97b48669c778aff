//! Experiments that print a report.

pub mod ring;

pub use ring::{Change, RingExperiment, RingReport};
