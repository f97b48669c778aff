//! A scenario's report: its phases with their figures and notes, and each
//! check passed or failed.

use std::fmt;

use serde::Serialize;

use crate::text::thousands;

/// One phase of the report: between two steps.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// What started it.
    pub started_by: String,
    /// When it started and ended, in seconds.
    pub from_secs: f64,
    /// When it ended.
    pub to_secs: f64,
    /// Requests answered.
    pub requests: u64,
    /// Answers by class: 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 4],
    /// Sessions created.
    pub created: u64,
    /// Sessions reassigned.
    pub reassigned: u64,
    /// Sessions the clients lost.
    pub lost_sessions: u64,
    /// Requests per backend.
    pub load: Vec<(String, u64)>,
    /// Busiest backend's requests over the mean of those that served any.
    pub load_max_over_mean: f64,
    /// Topology changes, what they moved, detections and drain steps.
    pub notes: Vec<String>,
}

/// A check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// When.
    pub at_secs: f64,
    /// The check as written.
    pub check: String,
    /// The value measured.
    pub measured: f64,
    /// Whether it held.
    pub passed: bool,
}

/// The report of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The file.
    pub scenario: String,
    /// Phases, in order.
    pub phases: Vec<Phase>,
    /// Checks, in order.
    pub checks: Vec<Outcome>,
}

impl Report {
    /// True when every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "scenario {}", self.scenario)?;
        for p in &self.phases {
            writeln!(f)?;
            let span = format!("{:.1}–{:.1}s", p.from_secs, p.to_secs);
            writeln!(f, "{span:<12} {}", p.started_by)?;
            writeln!(
                f,
                "  requests {}  2xx {}  4xx {}  5xx {}  sessions created {}  reassigned {}  lost {}",
                thousands(p.requests),
                thousands(p.status[0]),
                thousands(p.status[2]),
                thousands(p.status[3]),
                thousands(p.created),
                thousands(p.reassigned),
                thousands(p.lost_sessions)
            )?;
            let load: Vec<String> = p.load.iter().map(|(n, r)| format!("{n} {}", thousands(*r))).collect();
            writeln!(
                f,
                "  load: {}  (max/mean {:.2})",
                load.join(" · "),
                p.load_max_over_mean
            )?;
            for n in &p.notes {
                writeln!(f, "  · {n}")?;
            }
        }
        if !self.checks.is_empty() {
            writeln!(f)?;
            for c in &self.checks {
                let mark = if c.passed { "ok  " } else { "FAIL" };
                writeln!(
                    f,
                    "{mark} at {:.1}s: {} (measured {:.3})",
                    c.at_secs, c.check, c.measured
                )?;
            }
        }
        Ok(())
    }
}
