//! A scenario as a guided lesson: the same steps and report as `ringside
//! scenario`, on a lesson clock that can be paused, stepped to the next
//! action at once, run faster, and replayed from the start. A view drives
//! it with [`Lesson`]'s methods and draws its [`LessonState`], published
//! on a watch at every change and four times a second.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::report::{Outcome, Report};
use super::run::{Progress, Recording};
use super::{Action, Scenario, ScenarioError};
use crate::app::Handle;
use crate::config::Config;
use crate::engine::Command;
use crate::router::BackendState;

/// Lines of the step log a state keeps.
const LOG_LINES: usize = 50;

/// How long a replay waits for the stage's backends to be up again.
const STAGE_TIMEOUT: Duration = Duration::from_secs(20);

/// A scenario read for a lesson.
#[derive(Debug, Clone)]
pub struct LessonPlan {
    /// The file, as named in the report.
    pub name: String,
    /// The first line of its opening comment, e.g. `failover — a backend dies under traffic.`
    pub headline: String,
    /// The rest of the opening comment, as one paragraph per blank comment line.
    pub caption: String,
    /// The scenario.
    pub scenario: Scenario,
    /// Its steps, in order, at their seconds.
    pub actions: Vec<(f64, Action)>,
}

impl LessonPlan {
    /// Reads a scenario file.
    pub fn load(path: &Path) -> Result<LessonPlan, ScenarioError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: name.clone(),
            line: 0,
            reason: format!("cannot read it: {e}"),
        })?;
        LessonPlan::parse(&text, &name)
    }

    /// Reads a scenario's text (`name` names it in errors and the report).
    pub fn parse(text: &str, name: &str) -> Result<LessonPlan, ScenarioError> {
        let (scenario, actions) = Scenario::parse(text, name)?;
        let (headline, caption) = headline_and_caption(&scenario.about);
        Ok(LessonPlan {
            name: name.to_owned(),
            headline,
            caption,
            scenario,
            actions,
        })
    }

    /// The balancer configuration the lesson runs on.
    pub fn config(&self) -> Config {
        self.scenario.config()
    }
}

/// A scenario's opening comment ([`Scenario::about`]) as a headline (its
/// first line) and a caption: the rest joined into paragraphs (an empty
/// line starts a new one).
pub fn headline_and_caption(about: &[String]) -> (String, String) {
    let headline = about.first().cloned().unwrap_or_default();
    let mut caption = String::new();
    for line in about.iter().skip(1) {
        if line.is_empty() {
            caption.push('\n');
        } else {
            if !caption.is_empty() && !caption.ends_with('\n') {
                caption.push(' ');
            }
            caption.push_str(line);
        }
    }
    (headline, caption)
}

/// One step of the plan, as a view lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepView {
    /// Its second on the lesson clock.
    pub at_secs: f64,
    /// What it does, e.g. `kill api-2`, `phase: settled`, `expect remap <= 0.5`.
    pub label: String,
    /// Carried out in this run.
    pub done: bool,
}

/// What a view shows of a lesson.
#[derive(Debug, Clone, Serialize)]
pub struct LessonState {
    /// The scenario file.
    pub name: String,
    /// The opening comment's first line.
    pub headline: String,
    /// The rest of the opening comment.
    pub caption: String,
    /// The lesson's length on its clock.
    pub duration_secs: f64,
    /// The lesson clock when this state was published.
    pub elapsed_secs: f64,
    /// The clock stands still.
    pub paused: bool,
    /// Lesson seconds per wall second.
    pub pace: f64,
    /// Every step, in order.
    pub steps: Vec<StepView>,
    /// The last step carried out, by index into `steps`.
    pub current: Option<usize>,
    /// The next step, by index into `steps`.
    pub next: Option<usize>,
    /// Lesson seconds to the next step (or the end) when published.
    pub next_in_secs: f64,
    /// When the next step is due, while the clock runs (for a countdown).
    #[serde(skip)]
    pub next_due: Option<Instant>,
    /// What the steps said, the last `LOG_LINES` lines.
    pub log: Vec<String>,
    /// The checks so far in this run.
    pub checks: Vec<Outcome>,
    /// The report, once the run has ended: each `expect` passed or failed.
    pub report: Option<Report>,
    /// 1 for the first run, one more for each replay.
    pub run: u32,
    /// A replay is setting the stage again (backends back as the setup says).
    pub resetting: bool,
}

/// What a view asks of a lesson.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Pause,
    Resume,
    Step,
    Replay,
}

/// A lesson running on a started ringside. Dropping it ends the lesson
/// (ringside keeps running).
#[derive(Debug)]
pub struct Lesson {
    tx: mpsc::Sender<Control>,
    state: watch::Receiver<LessonState>,
    task: JoinHandle<()>,
}

impl Drop for Lesson {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Lesson {
    /// Starts `plan` on `handle` (its demo backends and traffic running),
    /// at `pace` lesson seconds per wall second (1 is the scenario's own
    /// pace; traffic and health checks keep real time).
    pub fn start(handle: Handle, plan: LessonPlan, pace: f64) -> Lesson {
        let pace = if pace.is_finite() && pace > 0.0 { pace } else { 1.0 };
        let (tx, rx) = mpsc::channel(16);
        let state = LessonState {
            name: plan.name.clone(),
            headline: plan.headline.clone(),
            caption: plan.caption.clone(),
            duration_secs: plan.scenario.duration_secs,
            elapsed_secs: 0.0,
            paused: false,
            pace,
            steps: plan
                .actions
                .iter()
                .map(|(at, a)| StepView {
                    at_secs: *at,
                    label: label(a),
                    done: false,
                })
                .collect(),
            current: None,
            next: (!plan.actions.is_empty()).then_some(0),
            next_in_secs: 0.0,
            next_due: None,
            log: Vec::new(),
            checks: Vec::new(),
            report: None,
            run: 1,
            resetting: false,
        };
        let (publish, state) = watch::channel(state);
        let task = tokio::spawn(teach(handle, plan, pace, rx, publish));
        Lesson { tx, state, task }
    }

    /// Stops the lesson clock.
    pub fn pause(&self) {
        let _ = self.tx.try_send(Control::Pause);
    }

    /// Starts the lesson clock again.
    pub fn resume(&self) {
        let _ = self.tx.try_send(Control::Resume);
    }

    /// Carries out the next step now (paused or not).
    pub fn step(&self) {
        let _ = self.tx.try_send(Control::Step);
    }

    /// Starts over: the stage as the setup says (backends, placement,
    /// affinity, vnodes, traffic), [`Command::Restart`], and the steps again.
    pub fn replay(&self) {
        let _ = self.tx.try_send(Control::Replay);
    }

    /// The state now and at every change.
    pub fn state(&self) -> watch::Receiver<LessonState> {
        self.state.clone()
    }

    /// Waits for the run under way to end and returns its report (`None`
    /// if the lesson stopped, e.g. ringside shut down).
    pub async fn finished(&self) -> Option<Report> {
        let mut state = self.state.clone();
        loop {
            if let Some(r) = state.borrow_and_update().report.clone() {
                return Some(r);
            }
            state.changed().await.ok()?;
        }
    }
}

/// The lesson clock: lesson seconds that run at `pace` unless paused.
#[derive(Debug, Clone, Copy)]
struct LessonClock {
    /// Lesson seconds at `since`.
    at: f64,
    since: Instant,
    paused: bool,
    pace: f64,
}

impl LessonClock {
    fn now(&self) -> f64 {
        if self.paused {
            self.at
        } else {
            self.at + self.since.elapsed().as_secs_f64() * self.pace
        }
    }

    fn set(&mut self, at: f64) {
        self.at = at;
        self.since = Instant::now();
    }

    fn pause(&mut self) {
        let now = self.now();
        self.set(now);
        self.paused = true;
    }

    fn resume(&mut self) {
        self.set(self.at);
        self.paused = false;
    }

    /// When lesson second `at` comes, while running.
    fn due(&self, at: f64) -> Option<Instant> {
        (!self.paused).then(|| self.since + Duration::from_secs_f64(((at - self.at) / self.pace).max(0.0)))
    }
}

/// How a wait for the next step ended.
enum Wake {
    Due,
    Replay,
    Gone,
}

/// The lesson task: runs the plan, then waits for a replay, until the
/// [`Lesson`] is dropped.
async fn teach(
    handle: Handle,
    plan: LessonPlan,
    pace: f64,
    mut rx: mpsc::Receiver<Control>,
    publish: watch::Sender<LessonState>,
) {
    let mut events = handle.shared().bus.subscribe();
    let mut clock = LessonClock {
        at: 0.0,
        since: Instant::now(),
        paused: false,
        pace,
    };
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        let mut recording = Recording::new(&handle);
        let mut replay = false;
        for index in 0..=plan.actions.len() {
            let next = plan.actions.get(index);
            let until = next.map_or(plan.scenario.duration_secs, |(at, _)| *at);
            let show = |clock: &LessonClock, recording: &Recording| {
                publish.send_modify(|s| {
                    schedule(s, clock, &plan, index);
                    s.checks = recording.checks().to_vec();
                });
            };
            show(&clock, &recording);
            let wake = loop {
                let due = clock.due(until);
                tokio::select! {
                    e = events.recv() => match e {
                        Some(e) => recording.hear(&e.event),
                        None => break Wake::Gone,
                    },
                    _ = sleep_until(due) => break Wake::Due,
                    c = rx.recv() => match c {
                        Some(Control::Pause) => clock.pause(),
                        Some(Control::Resume) => clock.resume(),
                        Some(Control::Step) => break Wake::Due,
                        Some(Control::Replay) => break Wake::Replay,
                        None => break Wake::Gone,
                    },
                    _ = ticker.tick() => {}
                }
                show(&clock, &recording);
            };
            match wake {
                Wake::Gone => return,
                Wake::Replay => {
                    replay = true;
                    break;
                }
                Wake::Due => {}
            }
            clock.set(until);
            let now = recording.reach(&handle, until, next.map(|(_, a)| a));
            let Some((at, action)) = next.cloned() else { break };
            let mut lines = Vec::new();
            recording
                .act(&handle, index, at, action, &now, &mut |p: &Progress| {
                    lines.push(p.to_string())
                })
                .await;
            publish.send_modify(|s| {
                schedule(s, &clock, &plan, index + 1);
                s.current = Some(index);
                if let Some(step) = s.steps.get_mut(index) {
                    step.done = true;
                }
                s.log.extend(lines);
                let extra = s.log.len().saturating_sub(LOG_LINES);
                s.log.drain(..extra);
                s.checks = recording.checks().to_vec();
            });
        }
        if !replay {
            let report = recording.finish(plan.name.clone());
            publish.send_modify(|s| {
                s.elapsed_secs = plan.scenario.duration_secs;
                s.next = None;
                s.next_in_secs = 0.0;
                s.next_due = None;
                s.report = Some(report);
            });
            // The run is over: wait for a replay, or for the lesson to go.
            loop {
                match rx.recv().await {
                    Some(Control::Replay) => break,
                    Some(_) => {}
                    None => return,
                }
            }
        }
        publish.send_modify(|s| s.resetting = true);
        let notes = reset_stage(&handle, &plan.scenario).await;
        let mut discarded = Vec::new();
        events.drain_into(&mut discarded);
        clock.set(0.0);
        publish.send_modify(|s| {
            schedule(s, &clock, &plan, 0);
            s.resetting = false;
            s.run += 1;
            s.current = None;
            s.report = None;
            s.checks.clear();
            s.log = notes;
            for step in &mut s.steps {
                step.done = false;
            }
        });
    }
}

/// Fills in the clock and the countdown to step `index` (or to the end).
fn schedule(s: &mut LessonState, clock: &LessonClock, plan: &LessonPlan, index: usize) {
    let next = plan.actions.get(index);
    let until = next.map_or(plan.scenario.duration_secs, |(at, _)| *at);
    s.elapsed_secs = clock.now();
    s.paused = clock.paused;
    s.next = next.map(|_| index);
    s.next_in_secs = (until - clock.now()).max(0.0);
    s.next_due = clock.due(until);
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A step in words.
fn label(action: &Action) -> String {
    match action {
        Action::Do(c) => c.label(),
        Action::Phase(p) => format!("phase: {p}"),
        Action::Expect(checks) => {
            let list: Vec<String> = checks.iter().map(ToString::to_string).collect();
            format!("expect {}", list.join(", "))
        }
    }
}

/// Sets the stage again as the scenario's setup says — backends back (added
/// ones removed, removed ones added, killed ones revived, drains undone,
/// weights reset), placement, affinity, vnodes and traffic as at the start —
/// waits for the backends to be up, and restarts the lesson
/// ([`Command::Restart`]). Returns what it did, for the step log.
async fn reset_stage(handle: &Handle, scenario: &Scenario) -> Vec<String> {
    let config = scenario.config();
    let wanted: Vec<(String, u32)> = if config.backends.is_empty() {
        (1..=config.demo.backends).map(|i| (format!("api-{i}"), 1)).collect()
    } else {
        config.backends.iter().map(|b| (b.name.clone(), b.weight)).collect()
    };
    let mut commands = Vec::new();
    let have = handle.backends_view();
    for b in &have {
        match wanted.iter().find(|(n, _)| *n == b.name) {
            None => commands.push(Command::Remove(b.name.clone())),
            Some((_, weight)) => {
                match b.state {
                    BackendState::Killed | BackendState::Down => commands.push(Command::Revive(b.name.clone())),
                    BackendState::Draining | BackendState::Drained => commands.push(Command::Undrain(b.name.clone())),
                    _ => {}
                }
                if b.weight != *weight {
                    commands.push(Command::Weight {
                        backend: b.name.clone(),
                        weight: *weight,
                    });
                }
            }
        }
    }
    for (name, weight) in &wanted {
        if have.iter().any(|b| b.name == *name) {
            continue;
        }
        match config.backends.iter().find(|b| b.name == *name) {
            Some(b) => match crate::router::BackendSpec::new(name, b.addr, *weight) {
                Ok(spec) => commands.push(Command::Add(spec)),
                Err(_) => continue,
            },
            None => commands.push(Command::AddDemo),
        }
    }
    let r = &config.routing;
    commands.extend([
        Command::Placement(r.placement),
        Command::Affinity(config.affinity.mode),
        Command::Traffic(true),
        Command::TrafficRate(config.traffic.rate),
    ]);
    if handle.router().vnodes() != r.vnodes {
        commands.push(Command::Vnodes(r.vnodes));
    }
    let mut notes = vec!["replay: the stage is set again".to_owned()];
    for c in commands {
        let label = c.label();
        match handle.execute(c).await {
            Ok(_) => notes.push(format!("        {label}")),
            Err(e) => notes.push(format!("        {label}: refused: {e}")),
        }
    }
    let names: Vec<&str> = wanted.iter().map(|(n, _)| n.as_str()).collect();
    if !all_up(handle, &names, STAGE_TIMEOUT).await {
        notes.push(format!(
            "        not every backend was up within {}s; the lesson goes on",
            STAGE_TIMEOUT.as_secs()
        ));
    }
    match handle.execute(Command::Restart).await {
        Ok(text) => notes.push(format!("        {text}")),
        Err(e) => notes.push(format!("        restart refused: {e}")),
    }
    notes
}

/// Waits, on the bus, until every backend in `names` is up.
async fn all_up(handle: &Handle, names: &[&str], within: Duration) -> bool {
    let mut events = handle.shared().bus.subscribe();
    let up = || {
        let view = handle.backends_view();
        names
            .iter()
            .all(|n| view.iter().any(|b| b.name == *n && b.state == BackendState::Up))
    };
    let deadline = Instant::now() + within;
    while !up() {
        tokio::select! {
            e = events.recv() => if e.is_none() { return false },
            _ = tokio::time::sleep_until(deadline) => return up(),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opening_comment_is_the_caption() {
        let about = super::super::opening_comment(
            "# drain — a graceful drain.\n# one\n# two\n#\n# three\nduration_secs = 1\n# later\n",
        );
        let (headline, caption) = headline_and_caption(&about);
        assert_eq!(headline, "drain — a graceful drain.");
        assert_eq!(caption, "one two\nthree");
    }
}
