//! A scripted lesson as the dashboard shows it (`ringside scenario --tui`):
//! the lesson controller's [`LessonState`] — caption, steps, which one
//! happened last, the countdown to the next, paused or not, and the report
//! at the end — put in words for the lesson band and panel. The dashboard
//! drives the controller with keys (pause, step, replay) and only reads
//! its state.

pub use crate::experiment::scenario::LessonState;

/// What a lesson key asks of the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LessonControl {
    /// Stop the lesson clock.
    Pause,
    /// Start it again.
    Resume,
    /// Carry out the next step now.
    Step,
    /// Set the stage again and start over.
    Replay,
}

/// Refreshes the countdown and the clock from the time the next step is
/// due (the controller publishes it only at changes and four times a second).
pub fn refresh(l: &mut LessonState, now: tokio::time::Instant) {
    if let Some(due) = l.next_due {
        l.next_in_secs = due.saturating_duration_since(now).as_secs_f64() * l.pace;
        let until = l
            .next
            .and_then(|i| l.steps.get(i))
            .map_or(l.duration_secs, |s| s.at_secs);
        l.elapsed_secs = (until - l.next_in_secs).max(0.0);
    }
}

/// Checks passed and checks in all, in the report or so far.
pub fn passed(l: &LessonState) -> (usize, usize) {
    let checks = l.report.as_ref().map_or(&l.checks, |r| &r.checks);
    (checks.iter().filter(|c| c.passed).count(), checks.len())
}

/// The lesson's state in one line: where it stands and what comes next.
pub fn status(l: &LessonState) -> String {
    let total = l.steps.len();
    if l.resetting {
        return "↺ replay: setting the stage again (backends, placement, traffic)…".to_owned();
    }
    if l.report.is_some() {
        let (ok, all) = passed(l);
        let verdict = if ok == all { "all passed" } else { "SOME FAILED" };
        return format!("■ ended: {ok} of {all} checks passed ({verdict}) · n shows the report · b replays");
    }
    let mark = if l.paused { "❚❚ paused" } else { "▶" };
    let now = match l.current.and_then(|i| l.steps.get(i).map(|s| (i, s))) {
        Some((i, s)) => format!("step {}/{total} at {:.0}s: {}", i + 1, s.at_secs, s.label),
        None => format!("{:.0}s in, {total} steps to come", l.elapsed_secs.floor()),
    };
    let next = match l.next.and_then(|i| l.steps.get(i)) {
        Some(s) if l.paused => format!("n does the next now: {}", s.label),
        Some(s) => format!("next in {:.0}s: {}", l.next_in_secs.ceil(), s.label),
        None if l.paused => "n ends it now".to_owned(),
        None => format!("ends in {:.0}s", l.next_in_secs.ceil()),
    };
    let run = if l.run > 1 {
        format!(" (run {})", l.run)
    } else {
        String::new()
    };
    format!("{mark}{run} {now} · {next}")
}

/// The caption as paragraphs (the controller separates them with `\n`).
pub fn paragraphs(l: &LessonState) -> Vec<&str> {
    l.caption.split('\n').filter(|p| !p.trim().is_empty()).collect()
}

/// Each step with a mark: `✓` done, `▶` next, `·` to come.
pub fn step_lines(l: &LessonState) -> Vec<String> {
    l.steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mark = if s.done {
                "✓"
            } else if Some(i) == l.next {
                "▶"
            } else {
                "·"
            };
            format!("{mark} {:>4.1}s {}", s.at_secs, s.label)
        })
        .collect()
}

/// The report as lines: each check passed or failed first, then the phases.
pub fn report_lines(l: &LessonState) -> Vec<(String, Option<bool>)> {
    let Some(r) = &l.report else { return Vec::new() };
    let mut out: Vec<(String, Option<bool>)> = r
        .checks
        .iter()
        .map(|c| {
            let mark = if c.passed { "✓ ok  " } else { "✗ FAIL" };
            (
                format!("{mark} at {:.1}s: {} (measured {:.3})", c.at_secs, c.check, c.measured),
                Some(c.passed),
            )
        })
        .collect();
    if out.is_empty() {
        out.push(("no expect in this lesson".to_owned(), None));
    }
    out.push((String::new(), None));
    let text = r.to_string();
    // The phases; the report's own check lines were shown above.
    let phases = text
        .lines()
        .filter(|l| !l.starts_with("ok   at") && !l.starts_with("FAIL at"))
        .map(|l| (l.trim_end().to_owned(), None));
    out.extend(phases);
    while out.last().is_some_and(|(t, _)| t.is_empty()) {
        out.pop();
    }
    out
}
