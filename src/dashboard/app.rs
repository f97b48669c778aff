//! The dashboard's state and how keys change it. Pure: no terminal, no clock.
//!
//! What is shown lives in a [`Scene`], fed by snapshots and events; freezing
//! keeps a copy of it. Popups (help, a confirmation, a picker, a prompt, the
//! lesson's report) are modal: while one is open, keys act on it and
//! nothing behind it. What the engine must do besides commands — probe a
//! key, follow a session, capture the screen, drive the lesson — is queued
//! as a [`Request`] for the UI loop. The popups' state is in `popup`; the
//! teaching views' keys in `teach`.

mod popup;
mod teach;

pub use popup::{Confirm, Picker, PickerKind, Popup, Probed, PromptKind, Yes};
pub use teach::Request;

use super::lesson::{LessonControl, LessonState};
use super::moves::Watch;
pub use super::scene::{HISTORY, LOG_LINES, LastRoute, LogKind, LogLine, Scene, SessionRow, Snapshot, Tick};
use crate::bus::BusEvent;
use crate::engine::Command;
use crate::engine::view::BackendView;
use crate::router::Placement;
use crate::router::affinity::AffinityMode;
use crate::text::plural;

/// How long a flash message stays, in seconds.
pub const FLASH_SECS: u8 = 8;
/// The vnode counts per unit of weight `v` steps through.
pub const VNODE_STEPS: [u32; 4] = [1, 4, 16, 150];

/// The panels that take the focus in turn (`Tab`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    /// The backends table (↑/↓ select a backend).
    Backends,
    /// The sessions table (↑/↓ scroll).
    Sessions,
    /// The event log (↑/↓ scroll).
    Log,
}

impl Panel {
    fn next(self) -> Panel {
        match self {
            Panel::Backends => Panel::Sessions,
            Panel::Sessions => Panel::Log,
            Panel::Log => Panel::Backends,
        }
    }

    fn prev(self) -> Panel {
        self.next().next()
    }
}

/// How the sessions table is sorted (`s` cycles, a click on a column picks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// Most recently used first.
    Recent,
    /// Oldest first.
    Age,
    /// Most requests first.
    Requests,
    /// Most moves first.
    Moves,
    /// By backend name.
    Backend,
    /// By client name.
    Client,
    /// By session name.
    Key,
}

impl SortBy {
    const ALL: [SortBy; 7] = [
        SortBy::Recent,
        SortBy::Age,
        SortBy::Requests,
        SortBy::Moves,
        SortBy::Backend,
        SortBy::Client,
        SortBy::Key,
    ];

    fn next(self) -> SortBy {
        let i = SortBy::ALL.iter().position(|&s| s == self).unwrap_or(0);
        SortBy::ALL[(i + 1) % SortBy::ALL.len()]
    }

    /// Its name in the panel title.
    pub fn as_str(self) -> &'static str {
        match self {
            SortBy::Recent => "recent",
            SortBy::Age => "age",
            SortBy::Requests => "requests",
            SortBy::Moves => "moves",
            SortBy::Backend => "backend",
            SortBy::Client => "client",
            SortBy::Key => "key",
        }
    }
}

/// What a flash message reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashKind {
    /// An action was carried out.
    Done,
    /// An action was refused.
    Refused,
    /// A hint or a change of view.
    Info,
}

/// A one-line message about the last action, shown for [`FLASH_SECS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// What it says.
    pub text: String,
    /// Its colour and mark.
    pub kind: FlashKind,
    secs_left: u8,
}

/// What keys act on now: the innermost thing open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The dashboard itself.
    Normal,
    /// The session filter is being typed.
    Typing,
    /// The help is open.
    Help,
    /// A confirmation is asked.
    Confirm,
    /// A picker is open.
    Picker,
    /// A prompt is being typed.
    Prompt,
    /// The lesson's opening card or its report is open.
    Report,
}

/// Rows each scrollable thing showed at the last frame (for paging).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Viewport {
    /// Backend rows.
    pub backends: usize,
    /// Session rows.
    pub sessions: usize,
    /// Log lines.
    pub log: usize,
    /// Help lines shown.
    pub help: usize,
    /// Help lines in all.
    pub help_total: usize,
    /// Lines a popup's answer shows at once (probe, report).
    pub popup: usize,
    /// Lines of that answer in all.
    pub popup_total: usize,
}

/// The dashboard's whole state.
#[derive(Debug, Clone)]
pub struct App {
    live: Scene,
    frozen: Option<Box<Scene>>,
    /// The selected backend's index.
    pub selected: usize,
    /// The focused panel.
    pub focus: Panel,
    /// Sessions table order.
    pub sort: SortBy,
    /// Sessions shown only for the selected backend.
    pub only_selected: bool,
    /// Text filter on sessions; `Some` while typing or set.
    pub filter: Option<String>,
    /// True while typing the filter.
    pub typing: bool,
    /// Sessions table scroll.
    pub session_scroll: usize,
    /// Event log scroll (0 = newest at the bottom).
    pub log_scroll: usize,
    /// The open popup.
    pub popup: Option<Popup>,
    /// The message about the last action.
    pub flash: Option<Flash>,
    /// The lesson running, under `ringside scenario --tui`.
    pub lesson: Option<LessonState>,
    /// The run whose report was shown already.
    report_seen: u32,
    /// The moved sessions highlighted, and their glide.
    pub watch: Option<Watch>,
    /// Modulo beside the ring (`%`).
    pub modulo: bool,
    /// The key probed, while its prompt is open.
    pub probed: Option<Probed>,
    requests: Vec<Request>,
    /// What the last frame could show.
    pub viewport: Viewport,
    /// Set on quit.
    pub quit: bool,
    /// Colours are off (`NO_COLOR`).
    pub no_color: bool,
    /// Where the log file is, for the goodbye line.
    pub log_path: String,
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    /// The previous row (or help line, or picker item).
    Up,
    /// The next row.
    Down,
    /// A page up.
    PageUp,
    /// A page down.
    PageDown,
    /// The first row (`g`, Home).
    First,
    /// The last row (`G`, End).
    Last,
    /// Focus the next panel.
    NextPanel,
    /// Focus the previous panel.
    PrevPanel,
    /// Focus a panel (mouse).
    Focus(Panel),
    /// Select a row by index in the backends table (mouse).
    SelectBackend(usize),
    /// Scroll a panel by rows (mouse wheel): negative is up.
    ScrollAt(Panel, i32),
    /// Sort the sessions table by a column (mouse).
    SortBy(SortBy),
    /// An action on the selected backend or the balancer.
    Act(Action),
    /// Start typing a filter.
    StartFilter,
    /// A character of the filter.
    FilterChar(char),
    /// Delete the filter's last character.
    FilterBack,
    /// Finish typing (Enter keeps the filter).
    FilterDone,
    /// Cycle the sessions table's order.
    Sort,
    /// Show only the selected backend's sessions, or all.
    ToggleOnlySelected,
    /// Freeze or unfreeze the view.
    Freeze,
    /// Show or hide the help.
    Help,
    /// Yes to a confirmation, or pick the highlighted item.
    Yes,
    /// No to a confirmation.
    No,
    /// Pick item `n` of a picker.
    Pick(usize),
    /// Back out of the innermost thing open (Esc).
    Back,
    /// Leave.
    Quit,
    /// Watch the last change again (`w`).
    Watch,
    /// Modulo beside the ring, or not (`%`).
    Modulo,
    /// Open the probe prompt (`i`).
    Probe,
    /// Open the follow prompt (`f`).
    Follow,
    /// Capture the screen (`c`).
    Capture,
    /// A character typed into a prompt.
    TypeChar(char),
    /// Delete the prompt's last character.
    TypeBack,
    /// Submit the prompt (Enter).
    Submit,
    /// Pause or resume the lesson (`P`).
    LessonPause,
    /// The lesson's next step now; at its end, the report (`n`).
    LessonStep,
    /// Replay the lesson (`b`).
    LessonReplay,
}

/// Operator actions, turned into engine commands with the current selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `x`.
    Kill,
    /// `r`.
    Revive,
    /// `d`.
    Drain,
    /// `u`.
    Undrain,
    /// `e`.
    Extend,
    /// `+`.
    WeightUp,
    /// `-`.
    WeightDown,
    /// `a`.
    AddDemo,
    /// `Delete` (asks first).
    Remove,
    /// `p`: the placement picker.
    PickPlacement,
    /// `m`: the affinity picker.
    PickAffinity,
    /// `t`.
    ToggleTraffic,
    /// `]`.
    FasterTraffic,
    /// `[`.
    SlowerTraffic,
    /// `v`: the next vnode count of [`VNODE_STEPS`].
    Vnodes,
    /// `R`: start the lesson afresh (asks first).
    Restart,
}

impl App {
    /// A dashboard over an empty snapshot.
    pub fn new(no_color: bool, log_path: String) -> Self {
        App {
            live: Scene::default(),
            frozen: None,
            selected: 0,
            focus: Panel::Backends,
            sort: SortBy::Recent,
            only_selected: false,
            filter: None,
            typing: false,
            session_scroll: 0,
            log_scroll: 0,
            popup: None,
            flash: None,
            lesson: None,
            report_seen: 0,
            watch: None,
            modulo: false,
            probed: None,
            requests: Vec::new(),
            viewport: Viewport::default(),
            quit: false,
            no_color,
            log_path,
        }
    }

    /// What is on screen: the frozen copy, or the live scene.
    pub fn scene(&self) -> &Scene {
        self.frozen.as_deref().unwrap_or(&self.live)
    }

    /// The live scene, which keeps up with the engine even while frozen.
    pub fn live_mut(&mut self) -> &mut Scene {
        &mut self.live
    }

    /// True while the view is frozen.
    pub fn is_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    /// What keys act on now.
    pub fn mode(&self) -> Mode {
        match &self.popup {
            Some(Popup::Help { .. }) => Mode::Help,
            Some(Popup::Confirm(_)) => Mode::Confirm,
            Some(Popup::Picker(_)) => Mode::Picker,
            Some(Popup::Prompt { .. }) => Mode::Prompt,
            Some(Popup::Card { .. } | Popup::Report { .. }) => Mode::Report,
            None if self.typing => Mode::Typing,
            None => Mode::Normal,
        }
    }

    /// The requests queued since the last call, in order.
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.requests)
    }

    /// The selected backend, as shown.
    pub fn selected_backend(&self) -> Option<&BackendView> {
        self.scene().snapshot.backends.get(self.selected)
    }

    /// Takes a new snapshot into the live scene.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        self.live.set_snapshot(snapshot);
        self.clamp_selection();
    }

    /// Takes in one bus event; `name` resolves backend ids.
    pub fn on_event(&mut self, event: &BusEvent, at_secs: u64, name: impl Fn(crate::router::BackendId) -> String) {
        self.live.on_event(event, at_secs, name);
    }

    /// Once a second: rates for the sparklines; flash messages and the
    /// highlight of moved sessions age.
    pub fn tick_second(&mut self) {
        self.live.tick_second();
        if let Some(w) = &mut self.watch
            && !w.gliding()
            && !w.tick_second()
        {
            self.watch = None;
        }
        if let Some(f) = &mut self.flash {
            f.secs_left = f.secs_left.saturating_sub(1);
            if f.secs_left == 0 {
                self.flash = None;
            }
        }
    }

    /// Shows a flash message.
    pub fn flash(&mut self, kind: FlashKind, text: impl Into<String>) {
        self.flash = Some(Flash {
            text: text.into(),
            kind,
            secs_left: FLASH_SECS,
        });
    }

    /// The engine's answer to a command: a flash message says what it did,
    /// or why it was refused.
    pub fn on_reply(&mut self, command: &Command, result: Result<&str, String>) {
        match result {
            Ok(text) => {
                if *command == Command::Restart {
                    self.live.restart();
                    self.frozen = None;
                    self.watch = None;
                    self.modulo = false;
                }
                self.flash(FlashKind::Done, text);
            }
            Err(why) => self.flash(FlashKind::Refused, format!("{}: refused — {why}", command.label())),
        }
    }

    /// Applies a message; returns the engine command it asks for, if any.
    pub fn update(&mut self, msg: Msg) -> Option<Command> {
        if msg == Msg::Quit {
            self.quit = true;
            return None;
        }
        if msg == Msg::Back {
            self.back();
            return None;
        }
        match self.popup.take() {
            Some(Popup::Help { scroll }) => {
                self.popup = self.on_help(scroll, msg);
                None
            }
            Some(Popup::Confirm(c)) => self.on_confirm(c, msg),
            Some(Popup::Picker(p)) => self.on_picker(p, msg),
            Some(Popup::Prompt { kind, input, scroll }) => {
                self.on_prompt(kind, input, scroll, msg);
                None
            }
            Some(Popup::Report { scroll }) => {
                self.popup = self.on_report(scroll, msg).map(|scroll| Popup::Report { scroll });
                None
            }
            Some(Popup::Card { scroll }) => {
                self.popup = self.on_card(scroll, msg).map(|scroll| Popup::Card { scroll });
                None
            }
            None if self.typing => {
                self.on_typing(msg);
                None
            }
            None => self.on_normal(msg),
        }
    }

    /// Esc: closes the innermost thing open; never quits.
    fn back(&mut self) {
        if let Some(popup) = self.popup.take() {
            self.probed = None;
            if matches!(popup, Popup::Card { .. }) {
                self.flash(
                    FlashKind::Info,
                    "the lesson waits, paused: P starts it, n does the next step now",
                );
            }
            return;
        }
        if self.typing || self.filter.is_some() {
            self.typing = false;
            self.filter = None;
            self.session_scroll = 0;
        } else if self.only_selected {
            self.only_selected = false;
        } else if self.log_scroll > 0 {
            self.log_scroll = 0;
        } else if self.focus != Panel::Backends {
            self.focus = Panel::Backends;
        } else if self.modulo {
            self.modulo = false;
        } else if let Some(f) = self.live.followed.take() {
            self.requests.push(Request::Unfollow(f.fingerprint));
            self.flash(FlashKind::Info, format!("stopped following {}", f.label()));
        } else {
            self.flash(FlashKind::Info, "nothing to close; q quits");
        }
    }

    fn on_help(&mut self, scroll: usize, msg: Msg) -> Option<Popup> {
        if matches!(msg, Msg::Help | Msg::Yes) {
            return None;
        }
        Some(Popup::Help {
            scroll: scrolled(scroll, msg, self.viewport.help_total, self.viewport.help),
        })
    }

    fn on_confirm(&mut self, c: Confirm, msg: Msg) -> Option<Command> {
        if msg == Msg::Yes {
            return match c.yes {
                Yes::Command(command) => Some(command),
                Yes::Replay => {
                    self.requests.push(Request::Lesson(LessonControl::Replay));
                    None
                }
            };
        }
        self.flash(FlashKind::Info, format!("{}: not done", c.yes.label()));
        None
    }

    fn on_picker(&mut self, mut p: Picker, msg: Msg) -> Option<Command> {
        let count = p.items().len();
        match msg {
            Msg::Up => p.cursor = p.cursor.saturating_sub(1),
            Msg::Down => p.cursor = (p.cursor + 1).min(count - 1),
            Msg::First | Msg::PageUp => p.cursor = 0,
            Msg::Last | Msg::PageDown => p.cursor = count - 1,
            Msg::Yes => return self.pick(&p, p.cursor),
            Msg::Pick(i) if i < count => return self.pick(&p, i),
            Msg::Act(Action::PickPlacement | Action::PickAffinity) => return None,
            _ => {}
        }
        self.popup = Some(Popup::Picker(p));
        None
    }

    fn pick(&mut self, p: &Picker, i: usize) -> Option<Command> {
        if i == p.current {
            let name = p.items()[i].0;
            self.flash(FlashKind::Info, format!("{name} is already in force"));
            return None;
        }
        p.command(i)
    }

    fn on_typing(&mut self, msg: Msg) {
        match msg {
            Msg::FilterChar(c) => {
                if let Some(f) = &mut self.filter
                    && f.chars().count() < 32
                {
                    f.push(c);
                }
                self.session_scroll = 0;
            }
            Msg::FilterBack => {
                if let Some(f) = &mut self.filter {
                    f.pop();
                }
            }
            Msg::FilterDone => {
                self.typing = false;
                if self.filter.as_deref() == Some("") {
                    self.filter = None;
                }
            }
            _ => {}
        }
    }

    fn on_normal(&mut self, msg: Msg) -> Option<Command> {
        match msg {
            Msg::Help => self.popup = Some(Popup::Help { scroll: 0 }),
            Msg::Freeze => {
                if self.frozen.take().is_some() {
                    self.flash(FlashKind::Info, "live again");
                } else {
                    self.frozen = Some(Box::new(self.live.clone()));
                    self.flash(
                        FlashKind::Info,
                        "frozen: every figure stays as it is; space goes live again",
                    );
                }
            }
            Msg::NextPanel => self.focus = self.focus.next(),
            Msg::PrevPanel => self.focus = self.focus.prev(),
            Msg::Focus(p) => self.focus = p,
            Msg::Up => self.scroll(self.focus, -1),
            Msg::Down => self.scroll(self.focus, 1),
            Msg::PageUp => self.scroll(self.focus, -(self.page() as i32)),
            Msg::PageDown => self.scroll(self.focus, self.page() as i32),
            Msg::First => self.scroll(self.focus, i32::MIN / 2),
            Msg::Last => self.scroll(self.focus, i32::MAX / 2),
            Msg::ScrollAt(panel, n) => self.scroll(panel, n),
            Msg::SelectBackend(i) => {
                if i < self.scene().snapshot.backends.len() {
                    self.selected = i;
                }
                self.focus = Panel::Backends;
            }
            Msg::SortBy(by) => {
                self.sort = by;
                self.session_scroll = 0;
                self.focus = Panel::Sessions;
            }
            Msg::Sort => {
                self.sort = self.sort.next();
                self.session_scroll = 0;
            }
            Msg::ToggleOnlySelected => {
                self.only_selected = !self.only_selected;
                self.session_scroll = 0;
            }
            Msg::StartFilter => {
                self.typing = true;
                self.filter.get_or_insert_with(String::new);
            }
            Msg::Act(action) => return self.act(action),
            Msg::Watch => self.watch_again(),
            Msg::Modulo => self.toggle_modulo(),
            Msg::Probe => {
                self.probed = None;
                self.popup = Some(Popup::Prompt {
                    kind: PromptKind::Probe,
                    input: String::new(),
                    scroll: 0,
                });
            }
            Msg::Follow => {
                let input = if self.focus == Panel::Sessions {
                    self.visible_sessions()
                        .get(self.session_scroll)
                        .map(|s| s.client.clone().unwrap_or_else(|| s.key.clone()))
                } else {
                    None
                };
                // `client-0 +5`: the clients behind one address share a session.
                let input = input.map(|i| i.split(' ').next().unwrap_or_default().to_owned());
                self.popup = Some(Popup::Prompt {
                    kind: PromptKind::Follow,
                    input: input.unwrap_or_default(),
                    scroll: 0,
                });
            }
            Msg::Capture => self.requests.push(Request::Capture),
            Msg::LessonPause | Msg::LessonStep | Msg::LessonReplay => self.lesson_key(msg),
            _ => {}
        }
        None
    }

    fn page(&self) -> usize {
        let v = &self.viewport;
        match self.focus {
            Panel::Backends => v.backends,
            Panel::Sessions => v.sessions,
            Panel::Log => v.log,
        }
        .max(1)
    }

    fn scroll(&mut self, panel: Panel, by: i32) {
        let step = |v: usize, max: usize| -> usize { (v as i64 + i64::from(by)).clamp(0, max as i64) as usize };
        match panel {
            Panel::Backends => {
                self.selected = step(self.selected, self.scene().snapshot.backends.len().saturating_sub(1));
            }
            Panel::Sessions => {
                let last = self
                    .visible_sessions()
                    .len()
                    .saturating_sub(self.viewport.sessions.max(1));
                self.session_scroll = step(self.session_scroll, last);
            }
            Panel::Log => {
                // Up goes back in time.
                let oldest = self.scene().log.len().saturating_sub(self.viewport.log.max(1));
                let back = (self.log_scroll as i64 - i64::from(by)).clamp(0, oldest as i64);
                self.log_scroll = back as usize;
            }
        }
    }

    fn clamp_selection(&mut self) {
        let n = self.scene().snapshot.backends.len();
        if self.selected >= n {
            self.selected = n.saturating_sub(1);
        }
    }

    fn act(&mut self, action: Action) -> Option<Command> {
        let snapshot = &self.scene().snapshot;
        let stats = snapshot.stats.as_ref();
        let traffic = snapshot.traffic;
        let vnodes = snapshot.vnodes_per_weight;
        let backend = self.selected_backend().map(|b| (b.name.clone(), b.sessions));
        let needs_backend = !matches!(
            action,
            Action::AddDemo
                | Action::PickPlacement
                | Action::PickAffinity
                | Action::ToggleTraffic
                | Action::FasterTraffic
                | Action::SlowerTraffic
                | Action::Vnodes
                | Action::Restart
        );
        if needs_backend && backend.is_none() {
            self.flash(FlashKind::Refused, "no backend is selected");
            return None;
        }
        let (name, sessions) = backend.unwrap_or_default();
        Some(match action {
            Action::Kill => Command::Kill(name),
            Action::Revive => Command::Revive(name),
            Action::Drain => Command::Drain {
                backend: name,
                timeout: None,
            },
            Action::Undrain => Command::Undrain(name),
            Action::Extend => Command::Extend {
                backend: name,
                by: std::time::Duration::from_secs(30),
            },
            Action::WeightUp => Command::WeightBy {
                backend: name,
                delta: 1,
            },
            Action::WeightDown => Command::WeightBy {
                backend: name,
                delta: -1,
            },
            Action::AddDemo => Command::AddDemo,
            Action::Remove => {
                self.popup = Some(Popup::Confirm(Confirm {
                    question: format!("Remove {name} for good?"),
                    detail: format!(
                        "Its {} move to the next backends clockwise, and it comes back only if added again.",
                        plural(sessions, "session")
                    ),
                    yes: Yes::Command(Command::Remove(name)),
                }));
                return None;
            }
            Action::Restart => {
                let live = stats.map_or(0, |s| s.router.sessions);
                self.popup = Some(Popup::Confirm(Confirm {
                    question: "Start the lesson afresh?".into(),
                    detail: format!(
                        "The {} and every counter are forgotten and the clients come back as new visitors; \
                         the backends stay as they are.",
                        plural(live, "session")
                    ),
                    yes: Yes::Command(Command::Restart),
                }));
                return None;
            }
            Action::PickPlacement | Action::PickAffinity => {
                let (kind, current) = if action == Action::PickPlacement {
                    let p = stats.map(|s| s.placement).unwrap_or_default();
                    let i = Placement::ALL.iter().position(|x| *x == p).unwrap_or(0);
                    (PickerKind::Placement, i)
                } else {
                    let m = stats.map(|s| s.affinity).unwrap_or_default();
                    let i = AffinityMode::ALL.iter().position(|x| *x == m).unwrap_or(0);
                    (PickerKind::Affinity, i)
                };
                self.popup = Some(Popup::Picker(Picker {
                    kind,
                    cursor: current,
                    current,
                }));
                return None;
            }
            Action::ToggleTraffic => Command::Traffic(!traffic.is_some_and(|(on, _)| on)),
            Action::FasterTraffic => Command::TrafficRateBy(1.5),
            Action::SlowerTraffic => Command::TrafficRateBy(1.0 / 1.5),
            Action::Vnodes => {
                let next = VNODE_STEPS.iter().find(|&&v| v > vnodes).unwrap_or(&VNODE_STEPS[0]);
                Command::Vnodes(*next)
            }
        })
    }

    /// The sessions the table shows, filtered and sorted.
    pub fn visible_sessions(&self) -> Vec<&SessionRow> {
        let selected = self.selected_backend().map(|b| b.name.as_str());
        let filter = self.filter.as_deref().filter(|f| !f.is_empty());
        let mut rows: Vec<&SessionRow> = self
            .scene()
            .snapshot
            .sessions
            .iter()
            .filter(|s| !self.only_selected || Some(s.backend.as_str()) == selected)
            .filter(|s| filter.is_none_or(|f| s.key.contains(f) || s.client.as_deref().is_some_and(|c| c.contains(f))))
            .collect();
        match self.sort {
            SortBy::Recent => rows.sort_by_key(|s| s.idle_secs),
            SortBy::Age => rows.sort_by_key(|s| std::cmp::Reverse(s.age_secs)),
            SortBy::Requests => rows.sort_by_key(|s| std::cmp::Reverse(s.requests)),
            SortBy::Moves => rows.sort_by_key(|s| std::cmp::Reverse(s.reassignments)),
            SortBy::Backend => rows.sort_by(|a, b| a.backend.cmp(&b.backend)),
            SortBy::Client => rows.sort_by(|a, b| client_order(a).cmp(&client_order(b))),
            SortBy::Key => rows.sort_by(|a, b| a.key.cmp(&b.key)),
        }
        rows
    }
}

/// Clients by number (`client-2` before `client-10`), unknown ones last.
fn client_order(s: &SessionRow) -> (bool, usize, &str) {
    let c = s.client.as_deref().unwrap_or("");
    let number = c
        .trim_start_matches("client-")
        .split(|ch: char| !ch.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    (s.client.is_none(), number, c)
}

/// A scroll offset after a navigation key, in `total` lines shown `page`
/// at a time; other keys leave it.
pub(super) fn scrolled(scroll: usize, msg: Msg, total: usize, page: usize) -> usize {
    let page = page.max(1);
    let last = total.saturating_sub(page);
    let scroll = match msg {
        Msg::Up => scroll.saturating_sub(1),
        Msg::Down => scroll + 1,
        Msg::PageUp => scroll.saturating_sub(page),
        Msg::PageDown => scroll + page,
        Msg::First => 0,
        Msg::Last => last,
        _ => scroll,
    };
    scroll.min(last)
}
