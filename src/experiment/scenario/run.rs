//! Running a scenario on the real proxy, demo backends and synthetic
//! clients: its steps at their times, the figures of each phase, the checks.

use std::path::Path;
use std::time::Duration;

use super::report::{Outcome, Phase, Report};
use super::{Action, Metric, Scenario};
use crate::app::{Handle, StartOptions};
use crate::bus::BusEvent;
use crate::engine::Command;

/// The figures at one moment, cumulative since the start.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Sample {
    requests: u64,
    errors: u64,
    /// 502s for requests a backend failed after taking them, not resent.
    lost_in_flight: u64,
    by_status: [u64; 6],
    lost: u64,
    created: u64,
    reassigned: u64,
    /// Requests per backend name.
    per_backend: Vec<(String, u64)>,
}

fn sample(handle: &Handle) -> Sample {
    let s = handle.stats_view();
    Sample {
        requests: s.responses.total,
        errors: s.responses.server_5xx,
        lost_in_flight: s.lost_in_flight,
        by_status: [
            0,
            0,
            s.responses.ok_2xx,
            s.responses.redirect_3xx,
            s.responses.client_4xx,
            s.responses.server_5xx,
        ],
        lost: s.lost_sessions,
        created: s.router.created,
        reassigned: s.router.reassigned,
        per_backend: handle
            .backends_view()
            .into_iter()
            .map(|b| (b.name, b.requests))
            .collect(),
    }
}

/// What a running scenario reports as it goes; each prints as one line.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Step `index` (in the order of the file) happened at `at_secs`.
    Step {
        /// Its index.
        index: usize,
        /// When.
        at_secs: f64,
        /// What it is, e.g. `kill api-2`.
        label: String,
    },
    /// What the last step did, or why it was refused.
    Outcome(String),
    /// A check and its verdict.
    Check {
        /// When.
        at_secs: f64,
        /// It held.
        passed: bool,
        /// The check and what was measured.
        text: String,
    },
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Step { at_secs, label, .. } => write!(f, "{at_secs:>5.1}s  {label}"),
            Progress::Outcome(text) => write!(f, "        {text}"),
            Progress::Check { at_secs, passed, text } => {
                write!(f, "{at_secs:>5.1}s  {} {text}", if *passed { "ok  " } else { "FAIL" })
            }
        }
    }
}

/// Runs a scenario on a started ringside (demo backends and traffic
/// running); `on_step` hears of each step as it happens.
pub async fn drive(
    handle: Handle,
    name: String,
    duration: f64,
    actions: Vec<(f64, Action)>,
    mut on_step: impl FnMut(&Progress),
) -> Report {
    let mut events = handle.shared().bus.subscribe();
    let start = tokio::time::Instant::now();
    let mut recording = Recording::new(&handle);
    let mut steps = actions.into_iter().enumerate().peekable();
    loop {
        let until = steps.peek().map_or(duration, |(_, (at, _))| *at);
        // Collect events until the next step.
        let deadline = start + Duration::from_secs_f64(until);
        loop {
            tokio::select! {
                e = events.recv() => match e {
                    Some(e) => recording.hear(&e.event),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let now = recording.reach(&handle, until, steps.peek().map(|(_, (_, a))| a));
        let Some((index, (at, action))) = steps.next() else {
            break;
        };
        recording.act(&handle, index, at, action, &now, &mut on_step).await;
    }
    recording.finish(name)
}

/// A scenario's report as it is made: the figures at each step, the
/// phases they close, the notes heard on the bus, the checks.
#[derive(Debug)]
pub(super) struct Recording {
    phases: Vec<Phase>,
    checks: Vec<Outcome>,
    started_by: String,
    from: f64,
    before: Sample,
    notes: Vec<String>,
    remaps: Vec<crate::router::RemapSummary>,
}

impl Recording {
    /// A report starting now, at second 0.
    pub(super) fn new(handle: &Handle) -> Self {
        Recording {
            phases: Vec::new(),
            checks: Vec::new(),
            started_by: "start".to_owned(),
            from: 0.0,
            before: sample(handle),
            notes: Vec::new(),
            remaps: Vec::new(),
        }
    }

    /// Checks so far.
    pub(super) fn checks(&self) -> &[Outcome] {
        &self.checks
    }

    /// Takes in what the bus says: changes, detections, drain steps.
    pub(super) fn hear(&mut self, event: &BusEvent) {
        match event {
            BusEvent::Router(crate::router::Event::Remap(s)) => {
                self.notes.push(s.to_string());
                self.remaps.push(s.clone());
            }
            BusEvent::Detected { backend, after_ms, by } => {
                self.notes
                    .push(format!("{backend} found dead by {by} after {after_ms} ms"));
            }
            BusEvent::Drain {
                backend,
                active,
                sessions,
                remaining_secs,
                done,
            } => self.notes.push(match done {
                Some(end) => {
                    format!("drain of {backend} ended ({end}): {active} connections, {sessions} sessions left")
                }
                None => {
                    format!("drain of {backend}: {active} connections, {sessions} sessions, {remaining_secs}s left")
                }
            }),
            _ => {}
        }
    }

    /// Second `until` is reached, before `next` (the step due then, if
    /// any): closes the phase unless `next` only checks. Returns the figures now.
    pub(super) fn reach(&mut self, handle: &Handle, until: f64, next: Option<&Action>) -> Sample {
        let now = sample(handle);
        if !matches!(next, Some(Action::Expect(_))) {
            let notes = std::mem::take(&mut self.notes);
            self.phases
                .push(phase(&self.started_by, self.from, until, &self.before, &now, notes));
            self.before = now.clone();
            self.from = until;
        }
        now
    }

    /// Carries out step `index`, due at second `at`; `now` is what
    /// [`Recording::reach`] returned.
    pub(super) async fn act(
        &mut self,
        handle: &Handle,
        index: usize,
        at: f64,
        action: Action,
        now: &Sample,
        on_step: &mut impl FnMut(&Progress),
    ) {
        on_step(&Progress::Step {
            index,
            at_secs: at,
            label: action.label(),
        });
        match action {
            Action::Do(command) => {
                self.started_by = command.label();
                let restart = matches!(command, Command::Restart);
                match handle.execute(command).await {
                    Ok(text) => {
                        // The counters start again from zero: so does the phase.
                        if restart {
                            self.before = sample(handle);
                        }
                        on_step(&Progress::Outcome(text));
                    }
                    Err(e) => {
                        on_step(&Progress::Outcome(format!("refused: {e}")));
                        self.notes.push(format!("refused: {e}"));
                    }
                }
            }
            Action::Phase(p) => self.started_by = p,
            Action::Expect(list) => {
                for c in list {
                    let measured = measure(handle, c.metric, now, &self.before, self.remaps.last());
                    let passed = c.holds(measured);
                    on_step(&Progress::Check {
                        at_secs: at,
                        passed,
                        text: format!("{c} (measured {measured:.3})"),
                    });
                    self.checks.push(Outcome {
                        at_secs: at,
                        check: c.to_string(),
                        measured,
                        passed,
                    });
                }
            }
        }
    }

    /// The report.
    pub(super) fn finish(self, name: String) -> Report {
        Report {
            scenario: name,
            phases: self.phases,
            checks: self.checks,
        }
    }
}

fn phase(started_by: &str, from: f64, to: f64, a: &Sample, b: &Sample, mut notes: Vec<String>) -> Phase {
    let lost_in_flight = b.lost_in_flight.saturating_sub(a.lost_in_flight);
    if lost_in_flight > 0 {
        notes.push(format!(
            "lost in flight: {lost_in_flight} — taken by a backend that failed before answering; \
             answered 502, not resent, as repeating them may not be safe"
        ));
    }
    let load = load_between(a, b);
    let load_max_over_mean = busiest_over_mean(&load);
    Phase {
        started_by: started_by.to_owned(),
        from_secs: from,
        to_secs: to,
        requests: b.requests.saturating_sub(a.requests),
        status: [
            b.by_status[2].saturating_sub(a.by_status[2]),
            b.by_status[3].saturating_sub(a.by_status[3]),
            b.by_status[4].saturating_sub(a.by_status[4]),
            b.by_status[5].saturating_sub(a.by_status[5]),
        ],
        created: b.created.saturating_sub(a.created),
        reassigned: b.reassigned.saturating_sub(a.reassigned),
        lost_sessions: b.lost.saturating_sub(a.lost),
        load,
        load_max_over_mean,
        notes,
    }
}

/// Requests per backend from sample `a` to sample `b`.
fn load_between(a: &Sample, b: &Sample) -> Vec<(String, u64)> {
    b.per_backend
        .iter()
        .map(|(n, r)| {
            let was = a.per_backend.iter().find(|(m, _)| m == n).map_or(0, |(_, x)| *x);
            (n.clone(), r.saturating_sub(was))
        })
        .collect()
}

/// The busiest backend's requests over the mean of those that served any.
fn busiest_over_mean(load: &[(String, u64)]) -> f64 {
    let serving: Vec<u64> = load.iter().map(|(_, r)| *r).filter(|&r| r > 0).collect();
    let mean = serving.iter().sum::<u64>() as f64 / serving.len().max(1) as f64;
    let max = serving.iter().copied().max().unwrap_or(0) as f64;
    if mean > 0.0 { max / mean } else { 0.0 }
}

/// The value of `metric` now.
fn measure(
    handle: &Handle,
    metric: Metric,
    now: &Sample,
    phase_start: &Sample,
    remap: Option<&crate::router::RemapSummary>,
) -> f64 {
    let backends = handle.backends_view();
    let serving: Vec<&crate::engine::view::BackendView> = backends.iter().filter(|b| b.healthy).collect();
    let spread = |values: Vec<f64>| {
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let max = values.iter().copied().fold(0.0, f64::max);
        if mean > 0.0 { max / mean } else { 0.0 }
    };
    match metric {
        Metric::Requests => now.requests as f64,
        Metric::Errors => now.errors as f64,
        Metric::LostInFlight => now.lost_in_flight as f64,
        Metric::OtherErrors => now.errors.saturating_sub(now.lost_in_flight) as f64,
        Metric::LostSessions => now.lost as f64,
        Metric::Sessions => handle.router().session_count() as f64,
        Metric::Reassigned => now.reassigned as f64,
        Metric::PhaseLostSessions => now.lost.saturating_sub(phase_start.lost) as f64,
        Metric::PhaseErrors => now.errors.saturating_sub(phase_start.errors) as f64,
        Metric::PhaseLoadMaxOverMean => busiest_over_mean(&load_between(phase_start, now)),
        Metric::Remap => remap.map_or(0.0, |r| r.moved_share()),
        Metric::RemapModulo => remap.map_or(0.0, |r| r.modulo_share()),
        Metric::RemapRing => remap.map_or(0.0, |r| r.ring_share()),
        Metric::MaxOverMean => spread(serving.iter().map(|b| b.sessions as f64).collect()),
        Metric::RingMaxOverMean => spread(serving.iter().map(|b| b.ring_share).collect()),
    }
}

/// Loads `path`, starts ringside headless for it, runs it and returns the
/// report; `on_step` hears of each step as it happens.
pub async fn run_file(path: &Path, on_step: impl FnMut(&Progress)) -> anyhow::Result<Report> {
    let (scenario, actions) = Scenario::load(path)?;
    let handle = crate::app::bind_and_start(scenario.config(), StartOptions { traffic: true }).await?;
    let report = drive(
        handle.clone(),
        path.display().to_string(),
        scenario.duration_secs,
        actions,
        on_step,
    )
    .await;
    handle.shutdown().await;
    Ok(report)
}
