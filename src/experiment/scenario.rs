//! `ringside scenario FILE`: a repeatable experiment on the real proxy, real
//! demo backends and the real synthetic clients, on loopback ports the OS
//! chooses. A TOML file sets the stage and lists timed steps; the report
//! gives each phase's figures, and `expect` lines check them.
//!
//! ```toml
//! # What it teaches, in a comment.
//! duration_secs = 8
//! [setup]
//! backends = 3
//! affinity = "lb-cookie"
//! [traffic]
//! clients = 20
//! rate = 100
//! [[steps]]
//! at = 3
//! kill = "api-2"
//! [[steps]]
//! at = 8
//! expect = ["other_errors == 0", "remap <= 0.5"]
//! ```

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bus::BusEvent;
use crate::config::Config;
use crate::engine::{Command, Engine};
use crate::router::affinity::AffinityMode;
use crate::router::remap::thousands;
use crate::router::{BackendSpec, Placement, VnodeHash};

/// A scenario file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// How long the run lasts.
    pub duration_secs: f64,
    /// The stage.
    #[serde(default)]
    pub setup: Setup,
    /// The synthetic clients.
    #[serde(default)]
    pub traffic: TrafficSetup,
    /// Timed steps, in order.
    #[serde(default)]
    pub steps: Vec<toml::Spanned<Step>>,
}

/// `[setup]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Setup {
    /// Demo backends `api-1 … api-N` (when no external backend is given).
    pub backends: usize,
    /// External backends instead of demo ones: `{ name, addr, weight }`.
    pub external: Vec<crate::config::BackendEntry>,
    /// Affinity mode at the start.
    pub affinity: AffinityMode,
    /// Placement at the start.
    pub placement: Placement,
    /// Virtual nodes per unit of weight.
    pub vnodes: u32,
    /// How vnode labels become positions.
    pub vnode_hash: VnodeHash,
    /// Sessions idle this long expire.
    pub idle_timeout_secs: u32,
    /// Health-check interval of the demo backends.
    pub health_interval_ms: u64,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            backends: 3,
            external: Vec::new(),
            affinity: AffinityMode::LbCookie,
            placement: Placement::Ring,
            vnodes: 150,
            vnode_hash: VnodeHash::Mixed,
            idle_timeout_secs: 1800,
            health_interval_ms: 500,
        }
    }
}

/// `[traffic]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficSetup {
    /// Clients.
    pub clients: usize,
    /// Requests per second, all together.
    pub rate: f64,
    /// Share behind one NAT address.
    pub nat_share: f64,
}

impl Default for TrafficSetup {
    fn default() -> Self {
        TrafficSetup {
            clients: 20,
            rate: 100.0,
            nat_share: 0.0,
        }
    }
}

/// One step: `at` seconds, and one action (or `expect`, or a new `phase`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Seconds from the start.
    pub at: f64,
    /// Kill a backend.
    pub kill: Option<String>,
    /// Revive a backend.
    pub revive: Option<String>,
    /// Drain a backend (with `timeout_secs`).
    pub drain: Option<String>,
    /// The drain's timeout.
    pub timeout_secs: Option<u64>,
    /// Cancel a drain.
    pub undrain: Option<String>,
    /// Add a demo backend (`"demo"`).
    pub add: Option<String>,
    /// Remove a backend.
    pub remove: Option<String>,
    /// Set a backend's weight (with `value`).
    pub weight: Option<String>,
    /// The weight.
    pub value: Option<u32>,
    /// Switch the placement.
    pub placement: Option<Placement>,
    /// Switch the affinity mode.
    pub affinity: Option<AffinityMode>,
    /// Re-place every backend with this many vnodes.
    pub vnodes: Option<u32>,
    /// `on` or `off`.
    pub traffic: Option<String>,
    /// A new traffic rate.
    pub rate: Option<f64>,
    /// Start a new named phase (nothing else happens).
    pub phase: Option<String>,
    /// Checks: `METRIC OP NUMBER`, e.g. `lost_sessions == 0`.
    pub expect: Option<Vec<String>>,
}

/// A scenario that cannot be run: where and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ScenarioError {
    /// The file.
    pub file: String,
    /// The line (1-based).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// A metric a check can name.
pub const METRICS: [&str; 15] = [
    "requests",
    "errors",
    "lost_in_flight",
    "other_errors",
    "lost_sessions",
    "sessions",
    "reassigned",
    "phase_lost_sessions",
    "phase_errors",
    "phase_load_max_over_mean",
    "remap",
    "remap_modulo",
    "remap_ring",
    "max_over_mean",
    "ring_max_over_mean",
];

/// A parsed check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The metric.
    pub metric: String,
    /// `==`, `<=`, `>=`, `<` or `>`.
    pub op: String,
    /// The number.
    pub value: f64,
}

impl Check {
    fn parse(s: &str) -> Result<Check, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [metric, op, value] = parts[..] else {
            return Err(format!(
                "check {s:?}: expected METRIC OP NUMBER, e.g. \"lost_sessions == 0\""
            ));
        };
        if !METRICS.contains(&metric) {
            return Err(format!(
                "check {s:?}: unknown metric {metric:?}; known: {}",
                METRICS.join(", ")
            ));
        }
        if !["==", "<=", ">=", "<", ">"].contains(&op) {
            return Err(format!(
                "check {s:?}: unknown comparison {op:?}; use ==, <=, >=, < or >"
            ));
        }
        let value = value
            .parse::<f64>()
            .map_err(|_| format!("check {s:?}: {value:?} is not a number"))?;
        Ok(Check {
            metric: metric.into(),
            op: op.into(),
            value,
        })
    }

    fn holds(&self, x: f64) -> bool {
        match self.op.as_str() {
            "==" => (x - self.value).abs() < 1e-9,
            "<=" => x <= self.value + 1e-9,
            ">=" => x >= self.value - 1e-9,
            "<" => x < self.value,
            _ => x > self.value,
        }
    }
}

/// What a step does, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// An operator command.
    Do(Command),
    /// A new phase of the report begins.
    Phase(String),
    /// Checks of the figures at that moment.
    Expect(Vec<Check>),
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<(Scenario, Vec<(f64, Action)>), ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            line: 0,
            reason: format!("cannot read it: {e}"),
        })?;
        Scenario::parse(&text, &file)
    }

    fn parse(text: &str, file: &str) -> Result<(Scenario, Vec<(f64, Action)>), ScenarioError> {
        let err = |line: usize, reason: String| ScenarioError {
            file: file.to_owned(),
            line,
            reason,
        };
        let scenario: Scenario = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            err(line, e.message().to_owned())
        })?;
        if !(scenario.duration_secs > 0.0 && scenario.duration_secs <= 600.0) {
            return Err(err(0, "duration_secs must be above 0 and at most 600".into()));
        }
        if !(1..=32).contains(&scenario.setup.backends) {
            return Err(err(0, "setup.backends must be 1 to 32".into()));
        }
        if let Err(e) = scenario.config().validate(file) {
            return Err(err(0, e.to_string()));
        }
        let mut actions = Vec::new();
        let mut last = 0.0;
        for spanned in &scenario.steps {
            let line = line_of(text, spanned.span().start);
            let s = spanned.get_ref();
            if !(s.at >= last && s.at <= scenario.duration_secs) {
                return Err(err(
                    line,
                    format!("at = {}: steps must be in order, within 0..duration_secs", s.at),
                ));
            }
            last = s.at;
            let mut found: Vec<Action> = Vec::new();
            let name = |n: &String| n.clone();
            if let Some(n) = &s.kill {
                found.push(Action::Do(Command::Kill(name(n))));
            }
            if let Some(n) = &s.revive {
                found.push(Action::Do(Command::Revive(name(n))));
            }
            if let Some(n) = &s.drain {
                found.push(Action::Do(Command::Drain {
                    backend: name(n),
                    timeout: s.timeout_secs.map(Duration::from_secs),
                }));
            }
            if let Some(n) = &s.undrain {
                found.push(Action::Do(Command::Undrain(name(n))));
            }
            if let Some(n) = &s.add {
                if n != "demo" {
                    return Err(err(
                        line,
                        format!("add = {n:?}: only \"demo\" backends can be added by a scenario"),
                    ));
                }
                found.push(Action::Do(Command::AddDemo));
            }
            if let Some(n) = &s.remove {
                found.push(Action::Do(Command::Remove(name(n))));
            }
            if let Some(n) = &s.weight {
                let value = s.value.ok_or_else(|| err(line, "weight needs value = 1..100".into()))?;
                found.push(Action::Do(Command::Weight {
                    backend: name(n),
                    weight: value,
                }));
            }
            if let Some(p) = s.placement {
                found.push(Action::Do(Command::Placement(p)));
            }
            if let Some(m) = s.affinity {
                found.push(Action::Do(Command::Affinity(m)));
            }
            if let Some(v) = s.vnodes {
                found.push(Action::Do(Command::Vnodes(v)));
            }
            if let Some(t) = &s.traffic {
                let on = match t.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(err(line, format!("traffic = {other:?}: use \"on\" or \"off\""))),
                };
                found.push(Action::Do(Command::Traffic(on)));
            }
            if let Some(r) = s.rate {
                found.push(Action::Do(Command::TrafficRate(r)));
            }
            if let Some(p) = &s.phase {
                found.push(Action::Phase(p.clone()));
            }
            if let Some(list) = &s.expect {
                let checks = list.iter().map(|c| Check::parse(c)).collect::<Result<Vec<_>, _>>();
                found.push(Action::Expect(checks.map_err(|e| err(line, e))?));
            }
            match found.len() {
                1 => actions.push((s.at, found.remove(0))),
                0 => return Err(err(line, "a step needs one action, a phase or an expect".into())),
                _ => {
                    return Err(err(
                        line,
                        "a step does one thing: split it into two steps at the same time".into(),
                    ));
                }
            }
        }
        Ok((scenario, actions))
    }

    /// The balancer configuration for this scenario: loopback ports the OS chooses.
    pub fn config(&self) -> Config {
        let mut c = Config {
            listen: "127.0.0.1:0".parse().unwrap_or(Config::default().listen),
            ..Config::default()
        };
        c.admin.listen = "127.0.0.1:0".parse().unwrap_or(c.admin.listen);
        c.demo.base_port = 0;
        c.demo.backends = self.setup.backends;
        c.backends = self.setup.external.clone();
        c.demo.health_interval_ms = self.setup.health_interval_ms;
        c.routing.placement = self.setup.placement;
        c.routing.vnodes = self.setup.vnodes;
        c.routing.vnode_hash = self.setup.vnode_hash;
        c.affinity.mode = self.setup.affinity;
        c.sessions.idle_timeout_secs = self.setup.idle_timeout_secs;
        c.traffic.clients = self.traffic.clients;
        c.traffic.rate = self.traffic.rate;
        c.traffic.nat_share = self.traffic.nat_share;
        c.traffic.enabled = Some(true);
        // Cookies only live as long as the run: a key made for it will do.
        c.affinity.secret = Some(format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)));
        c
    }
}

/// The figures at one moment, cumulative since the start.
#[derive(Debug, Clone, Default, PartialEq)]
struct Sample {
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

fn sample(engine: &Engine) -> Sample {
    let s = engine.stats_view();
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
        per_backend: engine
            .backends_view()
            .into_iter()
            .map(|b| (b.name, b.requests))
            .collect(),
    }
}

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

/// Runs a scenario on a started engine (demo backends and traffic running).
pub async fn drive(engine: Arc<Engine>, name: String, duration: f64, actions: Vec<(f64, Action)>) -> Report {
    let mut events = engine.bus().subscribe();
    let start = tokio::time::Instant::now();
    let secs = |s: f64| start + Duration::from_secs_f64(s);
    let mut phases = Vec::new();
    let mut checks = Vec::new();
    let mut started_by = "start".to_owned();
    let mut from = 0.0;
    let mut before = sample(&engine);
    let mut notes = Vec::new();
    let mut remaps: Vec<crate::router::RemapSummary> = Vec::new();
    let mut steps = actions.into_iter().peekable();
    loop {
        let until = steps.peek().map_or(duration, |(at, _)| *at);
        // Collect events until the next step.
        let deadline = secs(until);
        loop {
            tokio::select! {
                e = events.recv() => match e.as_deref() {
                    Some(BusEvent::Router(crate::router::Event::Remap(s))) => {
                        notes.push(s.to_string());
                        remaps.push(s.clone());
                    }
                    Some(BusEvent::Detected { backend, after_ms, by }) => {
                        notes.push(format!("{backend} found dead by {by} after {after_ms} ms"));
                    }
                    Some(BusEvent::Drain { backend, active, sessions, remaining_secs, done }) => notes.push(match done {
                        Some(reason) => format!("drain of {backend} ended ({reason}): {active} connections, {sessions} sessions left"),
                        None => format!("drain of {backend}: {active} connections, {sessions} sessions, {remaining_secs}s left"),
                    }),
                    Some(_) => {}
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let now = sample(&engine);
        let boundary = steps
            .peek()
            .map(|(_, a)| !matches!(a, Action::Expect(_)))
            .unwrap_or(true);
        if boundary {
            phases.push(phase(
                &started_by,
                from,
                until,
                &before,
                &now,
                std::mem::take(&mut notes),
            ));
            before = now.clone();
            from = until;
        }
        let Some((at, action)) = steps.next() else { break };
        match action {
            Action::Do(command) => {
                started_by = command_label(&command);
                if let Err(e) = engine.execute(command).await {
                    notes.push(format!("refused: {e}"));
                }
            }
            Action::Phase(p) => started_by = p,
            Action::Expect(list) => {
                let phase_before = before.clone();
                for c in list {
                    let measured = metric(&engine, &c.metric, &now, &phase_before, remaps.last());
                    checks.push(Outcome {
                        at_secs: at,
                        check: format!("{} {} {}", c.metric, c.op, c.value),
                        measured,
                        passed: c.holds(measured),
                    });
                }
            }
        }
    }
    Report {
        scenario: name,
        phases,
        checks,
    }
}

fn command_label(c: &Command) -> String {
    match c {
        Command::Kill(n) => format!("kill {n}"),
        Command::Revive(n) => format!("revive {n}"),
        Command::Drain { backend, .. } => format!("drain {backend}"),
        Command::Undrain(n) => format!("undrain {n}"),
        Command::Extend { backend, .. } => format!("extend {backend}"),
        Command::Weight { backend, weight } => format!("weight {backend} {weight}"),
        Command::AddDemo => "add a demo backend".into(),
        Command::Add(BackendSpec { name, .. }) => format!("add {name}"),
        Command::Remove(n) => format!("remove {n}"),
        Command::Vnodes(v) => format!("{v} vnodes"),
        Command::Placement(p) => format!("placement {p}"),
        Command::Affinity(m) => format!("affinity {m}"),
        Command::Traffic(on) => format!("traffic {}", if *on { "on" } else { "off" }),
        Command::TrafficRate(r) => format!("traffic rate {r}"),
    }
}

fn phase(started_by: &str, from: f64, to: f64, a: &Sample, b: &Sample, mut notes: Vec<String>) -> Phase {
    let lost_in_flight = b.lost_in_flight - a.lost_in_flight;
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
        requests: b.requests - a.requests,
        status: [
            b.by_status[2] - a.by_status[2],
            b.by_status[3] - a.by_status[3],
            b.by_status[4] - a.by_status[4],
            b.by_status[5] - a.by_status[5],
        ],
        created: b.created - a.created,
        reassigned: b.reassigned - a.reassigned,
        lost_sessions: b.lost - a.lost,
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

fn metric(
    engine: &Engine,
    name: &str,
    now: &Sample,
    phase_start: &Sample,
    remap: Option<&crate::router::RemapSummary>,
) -> f64 {
    let backends = engine.backends_view();
    let serving: Vec<&crate::engine::view::BackendView> = backends.iter().filter(|b| b.healthy).collect();
    let spread = |values: Vec<f64>| {
        let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
        let max = values.iter().copied().fold(0.0, f64::max);
        if mean > 0.0 { max / mean } else { 0.0 }
    };
    match name {
        "requests" => now.requests as f64,
        "errors" => now.errors as f64,
        "lost_in_flight" => now.lost_in_flight as f64,
        "other_errors" => now.errors.saturating_sub(now.lost_in_flight) as f64,
        "lost_sessions" => now.lost as f64,
        "sessions" => engine.router().sessions().len() as f64,
        "reassigned" => now.reassigned as f64,
        "phase_lost_sessions" => (now.lost - phase_start.lost) as f64,
        "phase_errors" => (now.errors - phase_start.errors) as f64,
        "phase_load_max_over_mean" => busiest_over_mean(&load_between(phase_start, now)),
        "remap" => remap.map_or(0.0, |r| r.moved_share()),
        "remap_modulo" => remap.map_or(0.0, |r| r.modulo_share()),
        "remap_ring" => remap.map_or(0.0, |r| r.ring_share()),
        "max_over_mean" => spread(serving.iter().map(|b| b.sessions as f64).collect()),
        _ => spread(serving.iter().map(|b| b.ring_share).collect()),
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

/// Loads `path`, starts ringside headless for it, runs it and returns the report.
pub async fn run_file(path: &Path) -> anyhow::Result<Report> {
    let (scenario, actions) = Scenario::load(path)?;
    let running = Engine::start(scenario.config(), true).await?;
    let engine = running.engine;
    let report = drive(
        Arc::clone(&engine),
        path.display().to_string(),
        scenario.duration_secs,
        actions,
    )
    .await;
    engine.shutdown().await;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_refused_with_the_line_and_the_reason() {
        let cases = [
            (
                "duration_secs = 5\n[[steps]]\nat = 1\nkil = \"api-1\"\n",
                4,
                "unknown field",
            ),
            ("duration_secs = 5\n[[steps]]\nat = 1\n", 2, "needs one action"),
            (
                "duration_secs = 5\n[[steps]]\nat = 1\nkill = \"a\"\nrevive = \"a\"\n",
                2,
                "does one thing",
            ),
            (
                "duration_secs = 5\n[[steps]]\nat = 3\nkill = \"a\"\n[[steps]]\nat = 2\nkill = \"b\"\n",
                5,
                "in order",
            ),
            (
                "duration_secs = 5\n[[steps]]\nat = 1\nexpect = [\"lost > \"]\n",
                2,
                "METRIC OP NUMBER",
            ),
            (
                "duration_secs = 5\n[[steps]]\nat = 1\nexpect = [\"joy == 1\"]\n",
                2,
                "unknown metric",
            ),
            (
                "duration_secs = 5\n[setup]\nplacement = \"modulo\"\n",
                3,
                "unknown variant",
            ),
            ("duration_secs = 0\n", 0, "duration_secs"),
        ];
        for (text, line, needle) in cases {
            let e = Scenario::parse(text, "t.toml").unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(needle), "{text:?}: {e}");
            assert!(e.to_string().starts_with(&format!("t.toml:{line}: ")));
        }
    }

    #[test]
    fn checks_parse_and_compare() {
        let c = Check::parse("lost_sessions == 0").unwrap();
        assert!(c.holds(0.0) && !c.holds(1.0));
        assert!(Check::parse("remap <= 0.25").unwrap().holds(0.25));
        assert!(Check::parse("max_over_mean > 1.5").unwrap().holds(1.6));
    }
}
