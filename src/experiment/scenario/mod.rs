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
//!
//! Files: parsing here; running in `run`; the report in `report`; a run
//! as a guided lesson (pause, step, replay) in `lesson`.

mod lesson;
mod report;
mod run;

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Config;
use crate::engine::Command;
use crate::router::affinity::AffinityMode;
use crate::router::{Placement, VnodeHash};
pub use lesson::{Lesson, LessonPlan, LessonState, StepView};
pub use report::{Outcome, Phase, Report};
pub use run::{Progress, drive, run_file};

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
    /// Timed steps, in order, as written (each becomes a [`Step`]).
    #[serde(default)]
    pub steps: Vec<toml::Spanned<toml::Table>>,
    /// What it teaches: the comment the file opens with.
    #[serde(skip)]
    pub about: Vec<String>,
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

/// What one step does: one action, a new phase, or checks. Written as one
/// key beside `at`, e.g. `kill = "api-2"`, `drain = "api-2"` (with an
/// optional `timeout_secs = 5`), `weight = "api-1"` with `value = 3`,
/// `expect = ["lost_sessions == 0"]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Kill a backend.
    Kill(String),
    /// Revive a backend.
    Revive(String),
    /// Drain a backend.
    Drain {
        /// Which.
        backend: String,
        /// The drain's timeout (default: the configuration's).
        timeout_secs: Option<u64>,
    },
    /// Cancel a drain.
    Undrain(String),
    /// Add a demo backend (`"demo"`).
    Add(AddWhat),
    /// Remove a backend.
    Remove(String),
    /// Set a backend's weight.
    Weight {
        /// Which.
        backend: String,
        /// 1–100.
        value: u32,
    },
    /// Switch the placement.
    Placement(Placement),
    /// Switch the affinity mode.
    Affinity(AffinityMode),
    /// Re-place every backend with this many vnodes.
    Vnodes(u32),
    /// Traffic `"on"` or `"off"`.
    Traffic(OnOff),
    /// A new traffic rate.
    Rate(f64),
    /// `restart = true`: forget every session and counter; the clients
    /// start as new visitors; the backends stay.
    Restart(bool),
    /// Start a new named phase of the report (nothing else happens).
    Phase(String),
    /// Checks of the figures at that moment.
    Expect(Vec<Check>),
}

/// What `add` can add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddWhat {
    /// A demo backend on loopback.
    Demo,
}

/// `"on"` or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
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

/// A figure a check can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Requests answered since the start.
    Requests,
    /// 5xx answers since the start.
    Errors,
    /// 502s for requests a backend failed after taking them (not resent).
    LostInFlight,
    /// 5xx answers other than those.
    OtherErrors,
    /// Sessions the clients lost since the start.
    LostSessions,
    /// Live sessions now.
    Sessions,
    /// Sessions reassigned since the start.
    Reassigned,
    /// Sessions lost in the phase so far.
    PhaseLostSessions,
    /// 5xx answers in the phase so far.
    PhaseErrors,
    /// The busiest backend's requests over the mean, in the phase so far.
    PhaseLoadMaxOverMean,
    /// The last change's moved share.
    Remap,
    /// What modulo hashing would have moved on the last change.
    RemapModulo,
    /// What a stateless ring would have moved on the last change.
    RemapRing,
    /// The fullest serving backend's live sessions over the mean.
    MaxOverMean,
    /// The largest serving ring share over the mean.
    RingMaxOverMean,
}

impl Metric {
    /// Every metric, by the name checks use.
    pub const ALL: [(&'static str, Metric); 15] = [
        ("requests", Metric::Requests),
        ("errors", Metric::Errors),
        ("lost_in_flight", Metric::LostInFlight),
        ("other_errors", Metric::OtherErrors),
        ("lost_sessions", Metric::LostSessions),
        ("sessions", Metric::Sessions),
        ("reassigned", Metric::Reassigned),
        ("phase_lost_sessions", Metric::PhaseLostSessions),
        ("phase_errors", Metric::PhaseErrors),
        ("phase_load_max_over_mean", Metric::PhaseLoadMaxOverMean),
        ("remap", Metric::Remap),
        ("remap_modulo", Metric::RemapModulo),
        ("remap_ring", Metric::RemapRing),
        ("max_over_mean", Metric::MaxOverMean),
        ("ring_max_over_mean", Metric::RingMaxOverMean),
    ];

    /// Its name in checks.
    pub fn name(self) -> &'static str {
        Metric::ALL.iter().find(|(_, m)| *m == self).map_or("?", |(n, _)| n)
    }
}

impl std::str::FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Metric, String> {
        Metric::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                let names: Vec<&str> = Metric::ALL.iter().map(|(n, _)| *n).collect();
                format!("unknown metric {s:?}; known: {}", names.join(", "))
            })
    }
}

/// A comparison of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `<=`
    Le,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `>`
    Gt,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Le => "<=",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Gt => ">",
        }
    }
}

/// A parsed check: `METRIC OP NUMBER`, e.g. `lost_sessions == 0`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct Check {
    /// The metric.
    pub metric: Metric,
    /// The comparison.
    pub op: Op,
    /// The number.
    pub value: f64,
}

impl TryFrom<String> for Check {
    type Error = String;

    fn try_from(s: String) -> Result<Check, String> {
        Check::parse(&s)
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.metric.name(), self.op.as_str(), self.value)
    }
}

impl Check {
    fn parse(s: &str) -> Result<Check, String> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        let [metric, op, value] = parts[..] else {
            return Err(format!(
                "check {s:?}: expected METRIC OP NUMBER, e.g. \"lost_sessions == 0\""
            ));
        };
        let metric = metric.parse::<Metric>().map_err(|e| format!("check {s:?}: {e}"))?;
        let op = match op {
            "==" => Op::Eq,
            "<=" => Op::Le,
            ">=" => Op::Ge,
            "<" => Op::Lt,
            ">" => Op::Gt,
            _ => {
                return Err(format!(
                    "check {s:?}: unknown comparison {op:?}; use ==, <=, >=, < or >"
                ));
            }
        };
        let value = value
            .parse::<f64>()
            .map_err(|_| format!("check {s:?}: {value:?} is not a number"))?;
        Ok(Check { metric, op, value })
    }

    /// Whether `x` passes.
    pub fn holds(&self, x: f64) -> bool {
        match self.op {
            Op::Eq => (x - self.value).abs() < 1e-9,
            Op::Le => x <= self.value + 1e-9,
            Op::Ge => x >= self.value - 1e-9,
            Op::Lt => x < self.value,
            Op::Gt => x > self.value,
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

impl Action {
    /// What it is, in a few words: `kill api-2`, `phase: recovery`,
    /// `expect lost_sessions == 0`.
    pub fn label(&self) -> String {
        match self {
            Action::Do(command) => command.label(),
            Action::Phase(p) => format!("phase: {p}"),
            Action::Expect(list) => {
                let checks: Vec<String> = list.iter().map(ToString::to_string).collect();
                format!("expect {}", checks.join(", "))
            }
        }
    }
}

/// The comment a scenario file opens with (what it teaches), without the
/// `#` marks: one string per line, blank lines kept.
pub fn opening_comment(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .take_while(|l| l.starts_with('#') || l.is_empty())
        .map(|l| l.trim_start_matches('#').trim().to_owned())
        .skip_while(String::is_empty)
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Step {
    /// What the engine does for it, if it is an action.
    fn action(self) -> Action {
        let command = match self {
            Step::Kill(n) => Command::Kill(n),
            Step::Revive(n) => Command::Revive(n),
            Step::Drain { backend, timeout_secs } => Command::Drain {
                backend,
                timeout: timeout_secs.map(Duration::from_secs),
            },
            Step::Undrain(n) => Command::Undrain(n),
            Step::Add(AddWhat::Demo) => Command::AddDemo,
            Step::Remove(n) => Command::Remove(n),
            Step::Weight { backend, value } => Command::Weight { backend, weight: value },
            Step::Placement(p) => Command::Placement(p),
            Step::Affinity(m) => Command::Affinity(m),
            Step::Vnodes(v) => Command::Vnodes(v),
            Step::Traffic(on) => Command::Traffic(on == OnOff::On),
            Step::Rate(r) => Command::TrafficRate(r),
            Step::Restart(_) => Command::Restart,
            Step::Phase(p) => return Action::Phase(p),
            Step::Expect(checks) => return Action::Expect(checks),
        };
        Action::Do(command)
    }
}

/// The keys that name a step's action.
const ACTIONS: [&str; 15] = [
    "kill",
    "revive",
    "drain",
    "undrain",
    "add",
    "remove",
    "weight",
    "placement",
    "affinity",
    "vnodes",
    "traffic",
    "rate",
    "restart",
    "phase",
    "expect",
];

/// Keys that only modify another key's action.
const MODIFIERS: [(&str, &str); 2] = [("drain", "timeout_secs"), ("weight", "value")];

/// A step that cannot be read: why, and the key it is about.
struct StepError(String, Option<String>);

impl From<String> for StepError {
    fn from(reason: String) -> Self {
        StepError(reason, None)
    }
}

/// One step as written: `at`, one action key, and that action's modifier.
fn parse_step(table: &toml::Table) -> Result<(f64, Step), StepError> {
    if let Some(unknown) = table
        .keys()
        .find(|k| *k != "at" && !ACTIONS.contains(&k.as_str()) && !MODIFIERS.iter().any(|(_, m)| m == k))
    {
        return Err(StepError(
            format!(
                "unknown field `{unknown}`: a step has `at` and one of {}",
                ACTIONS.join(", ")
            ),
            Some(unknown.clone()),
        ));
    }
    let mut rest = table.clone();
    let at = match rest.remove("at") {
        Some(toml::Value::Float(f)) => f,
        Some(toml::Value::Integer(i)) => i as f64,
        Some(other) => return Err(format!("at = {other:?}: a number of seconds, please").into()),
        None => return Err(String::from("a step needs `at`, the second it happens").into()),
    };
    let actions: Vec<String> = rest
        .keys()
        .filter(|k| !MODIFIERS.iter().any(|(_, m)| m == k))
        .cloned()
        .collect();
    let action = match actions.as_slice() {
        [one] => one.clone(),
        [] => return Err(String::from("a step needs one action, a phase or an expect").into()),
        _ => {
            return Err(String::from("a step does one thing: split it into two steps at the same time").into());
        }
    };
    let mut value = rest.remove(&action).unwrap_or(toml::Value::Boolean(false));
    if let Some((_, modifier)) = MODIFIERS.iter().find(|(a, _)| *a == action) {
        let mut fields = toml::Table::new();
        fields.insert("backend".into(), value);
        if let Some(m) = rest.remove(*modifier) {
            fields.insert((*modifier).into(), m);
        }
        value = toml::Value::Table(fields);
    }
    if let Some(stray) = rest.keys().next() {
        return Err(StepError(
            format!("`{stray}` belongs with another action, not `{action}`"),
            Some(stray.clone()),
        ));
    }
    let mut single = toml::Table::new();
    single.insert(action, value);
    let step = Step::deserialize(toml::Value::Table(single))
        .map_err(|e| StepError(e.message().trim().to_owned(), Some(key_of(&e))))?;
    Ok((at, step))
}

/// The action key a deserialization error is about (its first path part).
fn key_of(e: &toml::de::Error) -> String {
    let text = e.message();
    ACTIONS
        .iter()
        .find(|a| text.contains(&format!("`{a}`")))
        .map_or_else(String::new, |a| (*a).to_owned())
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

    /// Parses a scenario's text (`file` only names it in errors).
    pub fn parse(text: &str, file: &str) -> Result<(Scenario, Vec<(f64, Action)>), ScenarioError> {
        let err = |line: usize, reason: String| ScenarioError {
            file: file.to_owned(),
            line,
            reason,
        };
        let mut scenario: Scenario = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            err(line, e.message().to_owned())
        })?;
        scenario.about = opening_comment(text);
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
            let span = spanned.span();
            let line = line_of(text, span.start);
            let (at, step) = parse_step(spanned.get_ref()).map_err(|StepError(reason, key)| {
                // The line of the key at fault, when it can be found in the step.
                let rest = &text[span.start..];
                let step = &rest[..rest[1..].find("\n[").map_or(rest.len(), |end| end + 1)];
                let key_line = key
                    .filter(|k| !k.is_empty())
                    .and_then(|k| step.find(&format!("\n{k}")))
                    .map(|at| line_of(text, span.start + at + 1));
                err(key_line.unwrap_or(line), reason)
            })?;
            if !(at >= last && at <= scenario.duration_secs) {
                return Err(err(
                    line,
                    format!("at = {at}: steps must be in order, within 0..duration_secs"),
                ));
            }
            last = at;
            actions.push((at, step.action()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opening_comment_is_what_it_teaches() {
        let text = "# failover — a backend dies.\n#\n# Only its sessions move.\n\nduration_secs = 5\n# not this\n";
        assert_eq!(
            opening_comment(text),
            ["failover — a backend dies.", "", "Only its sessions move."]
        );
        assert!(opening_comment("duration_secs = 5\n").is_empty());
    }

    #[test]
    fn bad_files_are_refused_with_the_line_and_the_reason() {
        let cases = [
            (
                "duration_secs = 5\n[[steps]]\nat = 1\nkil = \"api-1\"\n",
                4,
                "unknown field `kil`",
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
                "duration_secs = 5\n[[steps]]\nat = 1\nkill = \"a\"\ntimeout_secs = 3\n",
                5,
                "belongs with another action",
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
        assert_eq!(c.to_string(), "lost_sessions == 0");
        assert!(Check::parse("remap <= 0.25").unwrap().holds(0.25));
        assert!(Check::parse("max_over_mean > 1.5").unwrap().holds(1.6));
        for (name, metric) in Metric::ALL {
            assert_eq!(name.parse::<Metric>(), Ok(metric));
            assert_eq!(metric.name(), name);
        }
    }

    #[test]
    fn steps_read_as_written() {
        let text = "duration_secs = 9\n[[steps]]\nat = 1\ndrain = \"api-2\"\ntimeout_secs = 5\n\
[[steps]]\nat = 2\nweight = \"api-1\"\nvalue = 3\n[[steps]]\nat = 3\nadd = \"demo\"\n\
[[steps]]\nat = 4\ntraffic = \"off\"\n";
        let (_, actions) = Scenario::parse(text, "t.toml").unwrap();
        assert_eq!(
            actions,
            vec![
                (
                    1.0,
                    Action::Do(Command::Drain {
                        backend: "api-2".into(),
                        timeout: Some(Duration::from_secs(5))
                    })
                ),
                (
                    2.0,
                    Action::Do(Command::Weight {
                        backend: "api-1".into(),
                        weight: 3
                    })
                ),
                (3.0, Action::Do(Command::AddDemo)),
                (4.0, Action::Do(Command::Traffic(false))),
            ]
        );
    }
}
