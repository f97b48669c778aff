//! The modal boxes' state: a picker, a yes/no question, a prompt, and
//! what a probe found.

use crate::engine::Command;
use crate::router::Placement;
use crate::router::affinity::AffinityMode;
use crate::router::probe::Probe;

/// What a picker picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickerKind {
    /// The placement of new sessions.
    Placement,
    /// The affinity mode.
    Affinity,
}

/// A small list to pick one of (`p`, `m`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picker {
    /// What it picks.
    pub kind: PickerKind,
    /// The highlighted item.
    pub cursor: usize,
    /// The item in force.
    pub current: usize,
}

impl Picker {
    /// Its title.
    pub fn title(&self) -> &'static str {
        match self.kind {
            PickerKind::Placement => "placement of new sessions",
            PickerKind::Affinity => "affinity: what requests are routed by",
        }
    }

    /// Each item's name and what it does.
    pub fn items(&self) -> Vec<(&'static str, &'static str)> {
        match self.kind {
            PickerKind::Placement => Placement::ALL
                .iter()
                .map(|p| (p.as_str(), placement_about(*p)))
                .collect(),
            PickerKind::Affinity => AffinityMode::ALL
                .iter()
                .map(|m| (m.as_str(), affinity_about(*m)))
                .collect(),
        }
    }

    pub(super) fn command(&self, i: usize) -> Option<Command> {
        match self.kind {
            PickerKind::Placement => Placement::ALL.get(i).map(|p| Command::Placement(*p)),
            PickerKind::Affinity => AffinityMode::ALL.get(i).map(|m| Command::Affinity(*m)),
        }
    }
}

fn placement_about(p: Placement) -> &'static str {
    match p {
        Placement::RoundRobin => "each backend in turn",
        Placement::Weighted => "in turn, in proportion to weight",
        Placement::LeastConn => "the fewest open connections",
        Placement::P2c => "the less busy of two random backends",
        Placement::IpModulo => "position % backends: remaps almost all",
        Placement::Ring => "consistent hashing: next vnode clockwise",
        Placement::BoundedRing => "consistent hashing, past full backends",
    }
}

fn affinity_about(m: AffinityMode) -> &'static str {
    match m {
        AffinityMode::LbCookie => "the balancer's own cookie",
        AffinityMode::AppCookie => "the application's session cookie",
        AffinityMode::Header => "the X-Session-ID header",
        AffinityMode::Query => "the ?session= parameter",
        AffinityMode::SourceIp => "the client address (NAT shares one)",
        AffinityMode::None => "nothing: every request placed afresh",
    }
}

/// A question before a hard-to-undo action; the answer defaults to no.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirm {
    /// The question, e.g. `Remove api-2 for good?`.
    pub question: String,
    /// What the action would do.
    pub detail: String,
    /// What a yes does.
    pub yes: Yes,
}

/// What a yes to a [`Confirm`] does.
#[derive(Debug, Clone, PartialEq)]
pub enum Yes {
    /// Sends an engine command.
    Command(Command),
    /// Replays the lesson from the start.
    Replay,
}

impl Yes {
    pub(super) fn label(&self) -> String {
        match self {
            Yes::Command(c) => c.label(),
            Yes::Replay => "replay".to_owned(),
        }
    }
}

/// What a prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    /// A key to probe (`i`).
    Probe,
    /// A session or demo client to follow (`f`).
    Follow,
}

/// A key probed, and what the router said.
#[derive(Debug, Clone, PartialEq)]
pub struct Probed {
    /// The key as typed.
    pub key: String,
    /// The probe, or why the key cannot be probed.
    pub result: Result<Probe, String>,
}

/// A modal box over the dashboard.
#[derive(Debug, Clone, PartialEq)]
pub enum Popup {
    /// The keys and words (scrolls when it does not fit).
    Help {
        /// Lines scrolled past.
        scroll: usize,
    },
    /// A yes/no question.
    Confirm(Confirm),
    /// A list to pick from.
    Picker(Picker),
    /// A line to type: a key to probe, a session to follow.
    Prompt {
        /// What it asks for.
        kind: PromptKind,
        /// The text typed.
        input: String,
        /// Lines of the answer scrolled past.
        scroll: usize,
    },
    /// The lesson's opening card: what it teaches and its steps; the
    /// lesson waits, paused, until it is closed.
    Card {
        /// Lines scrolled past.
        scroll: usize,
    },
    /// The lesson's report, at its end (scrolls when it does not fit).
    Report {
        /// Lines scrolled past.
        scroll: usize,
    },
}
