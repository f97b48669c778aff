//! The teaching views' keys and state: watching a move, modulo beside the
//! ring, the probe and follow prompts, the lesson's card, keys and report;
//! and the requests they make of the UI loop.

use super::{App, Confirm, FlashKind, Msg, Popup, Probed, PromptKind, Yes};
use crate::dashboard::follow::Followed;
use crate::dashboard::lesson::{LessonControl, LessonState};
use crate::dashboard::moves::{MovesView, Watch};
use crate::router::probe::Probe;

/// What the UI loop does for the dashboard besides engine commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Probe a key (again at every snapshot while the prompt is open).
    Probe(String),
    /// Follow the session or demo client a text names.
    Follow(String),
    /// Stop following a session.
    Unfollow(u64),
    /// Save the next frame as SVG and text.
    Capture,
    /// Drive the lesson.
    Lesson(LessonControl),
}

impl App {
    /// The key to probe again at each snapshot, while its prompt is open.
    pub fn probing(&self) -> Option<&str> {
        match (&self.popup, &self.probed) {
            (
                Some(Popup::Prompt {
                    kind: PromptKind::Probe,
                    ..
                }),
                Some(p),
            ) => Some(&p.key),
            _ => None,
        }
    }

    /// What the router said of the key probed.
    pub fn on_probe(&mut self, key: String, result: Result<Probe, String>) {
        self.probed = Some(Probed { key, result });
    }

    /// The last topology change's moves; `glide` when it just happened.
    pub fn set_moves(&mut self, moves: MovesView, glide: bool) {
        if glide {
            self.watch = Some(Watch::new(moves.generation));
        }
        self.live.moves = Some(moves);
    }

    /// The followed session's latest (`None` once it is followed no more).
    pub fn set_followed(&mut self, followed: Option<Followed>) {
        self.live.followed = followed;
    }

    /// The session followed now, by fingerprint.
    pub fn following(&self) -> Option<u64> {
        self.live.followed.as_ref().map(|f| f.fingerprint)
    }

    /// The watch of the change on screen, if it is watched.
    pub fn watching(&self) -> Option<&Watch> {
        let shown = self.scene().moves.as_ref()?.generation;
        self.watch.as_ref().filter(|w| w.generation == shown)
    }

    /// True while a glide needs frames drawn.
    pub fn animating(&self) -> bool {
        self.watching().is_some_and(Watch::gliding)
    }

    /// A frame was drawn: the glide goes on.
    pub fn tick_frame(&mut self) {
        if self.animating()
            && let Some(w) = &mut self.watch
        {
            w.advance();
        }
    }

    /// The lesson's latest state. The first opens the lesson's card and
    /// pauses it until the card is closed; each run's report opens once.
    pub fn set_lesson(&mut self, state: LessonState) {
        if self.lesson.is_none() && state.report.is_none() && self.popup.is_none() {
            self.popup = Some(Popup::Card { scroll: 0 });
            if !state.paused {
                self.requests.push(Request::Lesson(LessonControl::Pause));
            }
        }
        if state.report.is_some() && self.report_seen != state.run {
            self.report_seen = state.run;
            let (ok, all) = crate::dashboard::lesson::passed(&state);
            if self.popup.is_none() && !self.typing {
                self.popup = Some(Popup::Report { scroll: 0 });
            }
            let kind = if ok == all { FlashKind::Done } else { FlashKind::Refused };
            self.flash(
                kind,
                format!("the lesson has ended: {ok} of {all} checks passed (n shows the report, b replays)"),
            );
        }
        self.lesson = Some(state);
    }

    pub(super) fn on_prompt(&mut self, kind: PromptKind, mut input: String, scroll: usize, msg: Msg) {
        let last = self.viewport.popup_total.saturating_sub(self.viewport.popup.max(1));
        let page = self.viewport.popup.max(1);
        let scroll = match msg {
            Msg::TypeChar(c) => {
                if input.chars().count() < 256 {
                    input.push(c);
                }
                scroll
            }
            Msg::TypeBack => {
                input.pop();
                scroll
            }
            Msg::Submit => {
                let text = input.trim().to_owned();
                if text.is_empty() {
                    self.flash(FlashKind::Info, "type a key first; Esc closes");
                } else if kind == PromptKind::Probe {
                    self.requests.push(Request::Probe(text));
                } else {
                    self.requests.push(Request::Follow(text));
                    return;
                }
                0
            }
            Msg::Up => scroll.saturating_sub(1),
            Msg::Down => scroll + 1,
            Msg::PageUp => scroll.saturating_sub(page),
            Msg::PageDown => scroll + page,
            _ => scroll,
        };
        self.popup = Some(Popup::Prompt {
            kind,
            input,
            scroll: scroll.min(last),
        });
    }

    /// The report's keys; `None` closes it.
    pub(super) fn on_report(&mut self, scroll: usize, msg: Msg) -> Option<usize> {
        match msg {
            Msg::Yes | Msg::LessonStep => None,
            Msg::Capture => {
                self.requests.push(Request::Capture);
                Some(scroll)
            }
            Msg::LessonReplay => {
                self.replay();
                None
            }
            _ => Some(self.page_scroll(scroll, msg)),
        }
    }

    /// The card's keys: Enter (or P) starts the lesson; `None` closes it.
    pub(super) fn on_card(&mut self, scroll: usize, msg: Msg) -> Option<usize> {
        match msg {
            Msg::Yes | Msg::LessonPause => {
                self.requests.push(Request::Lesson(LessonControl::Resume));
                self.flash(FlashKind::Info, "the lesson begins: P pauses, n does the next step now");
                None
            }
            Msg::LessonStep => {
                self.requests.push(Request::Lesson(LessonControl::Step));
                None
            }
            Msg::LessonReplay => {
                self.flash(
                    FlashKind::Info,
                    "the lesson waits, paused: P starts it, n does the next step now",
                );
                None
            }
            _ => Some(self.page_scroll(scroll, msg)),
        }
    }

    /// A popup's scroll after a navigation key.
    pub(super) fn page_scroll(&self, scroll: usize, msg: Msg) -> usize {
        super::scrolled(scroll, msg, self.viewport.popup_total, self.viewport.popup)
    }

    pub(super) fn watch_again(&mut self) {
        match &self.scene().moves {
            Some(m) => {
                let text = format!("watching the last change again: {}", m.headline);
                self.watch = Some(Watch::new(m.generation));
                self.flash(FlashKind::Info, text);
            }
            None => self.flash(
                FlashKind::Info,
                "no change to watch yet: kill (x), remove, add (a), reweight (+/-) or re-vnode (v) a backend",
            ),
        }
    }

    pub(super) fn toggle_modulo(&mut self) {
        if self.modulo {
            self.modulo = false;
            self.flash(FlashKind::Info, "the ring alone again");
        } else if self.scene().moves.is_some() {
            self.modulo = true;
            self.flash(
                FlashKind::Info,
                "what the last change moved on a ring, beside what hash % N would have moved (% or Esc: back)",
            );
        } else {
            self.flash(
                FlashKind::Info,
                "no change yet to compare: kill (x), add (a) or remove a backend first",
            );
        }
    }

    pub(super) fn lesson_key(&mut self, msg: Msg) {
        let Some(l) = &self.lesson else {
            self.flash(
                FlashKind::Info,
                "no lesson runs: ringside scenario FILE --tui starts one",
            );
            return;
        };
        if l.resetting {
            self.flash(FlashKind::Info, "the stage is being set again; a moment");
            return;
        }
        let ended = l.report.is_some();
        match msg {
            Msg::LessonPause if ended => self.flash(FlashKind::Info, "the lesson has ended: b replays it"),
            Msg::LessonPause if l.paused => {
                self.requests.push(Request::Lesson(LessonControl::Resume));
                self.flash(FlashKind::Info, "the lesson goes on");
            }
            Msg::LessonPause => {
                self.requests.push(Request::Lesson(LessonControl::Pause));
                self.flash(FlashKind::Info, "lesson paused: n does the next step now, P goes on");
            }
            Msg::LessonStep if ended => self.popup = Some(Popup::Report { scroll: 0 }),
            Msg::LessonStep => self.requests.push(Request::Lesson(LessonControl::Step)),
            _ if ended => self.replay(),
            _ => {
                self.popup = Some(Popup::Confirm(Confirm {
                    question: "Replay the lesson from the start?".into(),
                    detail: "The stage is set again as the scenario begins (backends, placement, affinity, \
                             vnodes, traffic), every session and counter is forgotten, and the steps run again."
                        .into(),
                    yes: Yes::Replay,
                }));
            }
        }
    }

    pub(super) fn replay(&mut self) {
        self.requests.push(Request::Lesson(LessonControl::Replay));
        self.watch = None;
        self.modulo = false;
        self.flash(FlashKind::Info, "replaying the lesson: setting the stage again");
    }
}
