//! A scripted lesson as the dashboard shows it (`ringside scenario --tui`):
//! what it teaches, its steps, which one happened last, when the next comes,
//! and that it has ended. The scenario runner fills it in; the dashboard
//! only reads it, so a richer guided lesson can grow from the same data.

use std::time::Instant;

/// One step of a lesson.
#[derive(Debug, Clone, PartialEq)]
pub struct LessonStep {
    /// When it happens, in seconds from the start.
    pub at_secs: f64,
    /// What it does, e.g. `kill api-2`.
    pub label: String,
}

/// A lesson and where it stands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lesson {
    /// Its name (the file).
    pub name: String,
    /// What it teaches: the scenario's opening comment, line by line.
    pub about: Vec<String>,
    /// Its steps, in time order.
    pub steps: Vec<LessonStep>,
    /// How long it lasts.
    pub duration_secs: f64,
    /// When it started.
    pub started: Option<Instant>,
    /// Seconds since it started (set by whoever shows it).
    pub elapsed_secs: f64,
    /// The last step that happened.
    pub current: Option<usize>,
    /// What the last step did.
    pub outcome: Option<String>,
    /// It is over.
    pub ended: bool,
}

impl Lesson {
    /// The next step to come and the seconds until it, if any.
    pub fn next(&self) -> Option<(&LessonStep, f64)> {
        let from = self.current.map_or(0, |i| i + 1);
        self.steps
            .get(from)
            .map(|s| (s, (s.at_secs - self.elapsed_secs).max(0.0)))
    }

    /// Updates `elapsed_secs` from `started`.
    pub fn tick(&mut self) {
        if let Some(t) = self.started {
            self.elapsed_secs = t.elapsed().as_secs_f64().min(self.duration_secs);
        }
    }
}
