//! Keys and mouse → dashboard messages, by what is open ([`Mode`]).

use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind};
use ratatui::layout::{Position, Rect};

use super::app::{Action, Mode, Msg, Panel, SortBy};
use super::lesson::LessonState;

/// Where the panels were drawn last, for the mouse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Areas {
    /// The backends table, borders included.
    pub backends: Rect,
    /// The first backend row shown (the table scrolls with the selection).
    pub backends_offset: usize,
    /// The sessions table.
    pub sessions: Rect,
    /// The sessions table's columns: their x range and the order they sort by.
    pub session_columns: Vec<(u16, u16, SortBy)>,
    /// The event log.
    pub log: Rect,
    /// The help box, when open.
    pub help: Rect,
}

/// The message for a terminal event under `mode`.
pub fn message(event: &Event, mode: Mode, areas: &Areas) -> Option<Msg> {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => key_message(key, mode),
        Event::Mouse(m) => {
            let at = Position::new(m.column, m.row);
            let wheel = match m.kind {
                MouseEventKind::ScrollUp => Some(-3i32),
                MouseEventKind::ScrollDown => Some(3),
                _ => None,
            };
            match mode {
                Mode::Normal => {}
                Mode::Help | Mode::Picker | Mode::Prompt | Mode::Report => {
                    return wheel.map(|n| if n < 0 { Msg::Up } else { Msg::Down });
                }
                Mode::Typing | Mode::Confirm => return None,
            }
            let panel = [
                (areas.backends, Panel::Backends),
                (areas.sessions, Panel::Sessions),
                (areas.log, Panel::Log),
            ]
            .into_iter()
            .find(|(r, _)| r.contains(at))
            .map(|(_, p)| p)?;
            if let Some(n) = wheel {
                // The backends table scrolls by moving the selection, a row at a time.
                let n = if panel == Panel::Backends { n.signum() } else { n };
                return Some(Msg::ScrollAt(panel, n));
            }
            if m.kind != MouseEventKind::Down(MouseButton::Left) {
                return None;
            }
            match panel {
                Panel::Backends => {
                    // Border and header rows come first.
                    match m.row.checked_sub(areas.backends.y + 2) {
                        Some(row) => Some(Msg::SelectBackend(areas.backends_offset + row as usize)),
                        None => Some(Msg::Focus(Panel::Backends)),
                    }
                }
                Panel::Sessions if m.row == areas.sessions.y + 1 => areas
                    .session_columns
                    .iter()
                    .find(|(from, to, _)| (*from..*to).contains(&m.column))
                    .map(|(_, _, by)| Msg::SortBy(*by)),
                p => Some(Msg::Focus(p)),
            }
        }
        _ => None,
    }
}

fn key_message(key: &KeyEvent, mode: Mode) -> Option<Msg> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Msg::Quit);
    }
    let navigation = match key.code {
        KeyCode::Up | KeyCode::Char('k') => Some(Msg::Up),
        KeyCode::Down | KeyCode::Char('j') => Some(Msg::Down),
        KeyCode::PageUp => Some(Msg::PageUp),
        KeyCode::PageDown => Some(Msg::PageDown),
        KeyCode::Home | KeyCode::Char('g') => Some(Msg::First),
        KeyCode::End | KeyCode::Char('G') => Some(Msg::Last),
        _ => None,
    };
    match mode {
        Mode::Typing => match key.code {
            KeyCode::Enter => Some(Msg::FilterDone),
            KeyCode::Esc => Some(Msg::Back),
            KeyCode::Backspace => Some(Msg::FilterBack),
            KeyCode::Char(c) if !c.is_control() => Some(Msg::FilterChar(c)),
            _ => None,
        },
        // Any answer but yes is no.
        Mode::Confirm => Some(match key.code {
            KeyCode::Char('y' | 'Y') => Msg::Yes,
            _ => Msg::No,
        }),
        Mode::Help => match key.code {
            KeyCode::Esc | KeyCode::Enter | KeyCode::Char('?') => Some(Msg::Back),
            KeyCode::Char('q') => Some(Msg::Quit),
            _ => navigation,
        },
        Mode::Prompt => match key.code {
            KeyCode::Enter => Some(Msg::Submit),
            KeyCode::Esc => Some(Msg::Back),
            KeyCode::Backspace => Some(Msg::TypeBack),
            KeyCode::Up => Some(Msg::Up),
            KeyCode::Down => Some(Msg::Down),
            KeyCode::PageUp => Some(Msg::PageUp),
            KeyCode::PageDown => Some(Msg::PageDown),
            KeyCode::Char(c) if !c.is_control() => Some(Msg::TypeChar(c)),
            _ => None,
        },
        Mode::Report => match key.code {
            KeyCode::Esc => Some(Msg::Back),
            KeyCode::Enter => Some(Msg::Yes),
            KeyCode::Char('q') => Some(Msg::Quit),
            KeyCode::Char('P') => Some(Msg::LessonPause),
            KeyCode::Char('b') => Some(Msg::LessonReplay),
            KeyCode::Char('n') => Some(Msg::LessonStep),
            KeyCode::Char('c') => Some(Msg::Capture),
            _ => navigation,
        },
        Mode::Picker => match key.code {
            KeyCode::Esc => Some(Msg::Back),
            KeyCode::Enter => Some(Msg::Yes),
            KeyCode::Char('q') => Some(Msg::Quit),
            KeyCode::Char('p') => Some(Msg::Act(Action::PickPlacement)),
            KeyCode::Char('m') => Some(Msg::Act(Action::PickAffinity)),
            KeyCode::Char(c @ '1'..='9') => Some(Msg::Pick(c as usize - '1' as usize)),
            _ => navigation,
        },
        Mode::Normal => navigation.or_else(|| normal_key(key)),
    }
}

fn normal_key(key: &KeyEvent) -> Option<Msg> {
    Some(match key.code {
        KeyCode::Tab => Msg::NextPanel,
        KeyCode::BackTab => Msg::PrevPanel,
        KeyCode::Char('x') => Msg::Act(Action::Kill),
        KeyCode::Char('r') => Msg::Act(Action::Revive),
        KeyCode::Char('d') => Msg::Act(Action::Drain),
        KeyCode::Char('u') => Msg::Act(Action::Undrain),
        KeyCode::Char('e') => Msg::Act(Action::Extend),
        KeyCode::Char('+' | '=') => Msg::Act(Action::WeightUp),
        KeyCode::Char('-') => Msg::Act(Action::WeightDown),
        KeyCode::Char('a') => Msg::Act(Action::AddDemo),
        KeyCode::Delete => Msg::Act(Action::Remove),
        KeyCode::Char('p') => Msg::Act(Action::PickPlacement),
        KeyCode::Char('m') => Msg::Act(Action::PickAffinity),
        KeyCode::Char('t') => Msg::Act(Action::ToggleTraffic),
        KeyCode::Char(']') => Msg::Act(Action::FasterTraffic),
        KeyCode::Char('[') => Msg::Act(Action::SlowerTraffic),
        KeyCode::Char('v') => Msg::Act(Action::Vnodes),
        KeyCode::Char('R') => Msg::Act(Action::Restart),
        KeyCode::Char('w') => Msg::Watch,
        KeyCode::Char('%') => Msg::Modulo,
        KeyCode::Char('i') => Msg::Probe,
        KeyCode::Char('f') => Msg::Follow,
        KeyCode::Char('c') => Msg::Capture,
        KeyCode::Char('P') => Msg::LessonPause,
        KeyCode::Char('n') => Msg::LessonStep,
        KeyCode::Char('b') => Msg::LessonReplay,
        KeyCode::Char('/') => Msg::StartFilter,
        KeyCode::Char('s') => Msg::Sort,
        KeyCode::Enter => Msg::ToggleOnlySelected,
        KeyCode::Char(' ') => Msg::Freeze,
        KeyCode::Char('?') => Msg::Help,
        KeyCode::Esc => Msg::Back,
        KeyCode::Char('q') => Msg::Quit,
        _ => return None,
    })
}

/// Every key and what it does, for the help and the README.
pub const KEYS: [(&str, &str); 34] = [
    ("↑/↓ j/k", "select a backend, or scroll the focused panel"),
    ("g/G Home/End", "first / last row; PgUp/PgDn a page"),
    ("Tab Shift-Tab", "focus the next / previous panel"),
    ("x", "kill the selected backend (r undoes it)"),
    ("r", "revive it (back to health checking)"),
    ("d / u", "drain it (no new sessions) / undrain it"),
    ("e", "extend its drain by 30 s"),
    ("+ / -", "weight up / down, from its value now"),
    ("a", "add a demo backend"),
    ("Delete", "remove the selected backend (asks y/n)"),
    ("p", "pick the placement of new sessions"),
    ("m", "pick the affinity mode"),
    ("v", "vnodes per weight: 1 → 4 → 16 → 150"),
    ("R", "start the lesson afresh (asks y/n)"),
    ("t", "synthetic traffic on / off"),
    ("[ / ]", "traffic slower / faster"),
    ("/", "filter sessions by key or client"),
    ("s", "sort sessions (or click a column)"),
    ("Enter", "sessions of the selected backend only / all"),
    ("space", "freeze / unfreeze everything on screen"),
    (
        "w",
        "watch the last change again: moved sessions glide to their new owner",
    ),
    ("%", "modulo beside the ring: what hash % N would have moved"),
    ("i", "probe a key: its hash, ring position and clockwise walk"),
    ("f", "follow a session or a demo client (client-7); Esc stops"),
    ("c", "capture the screen as SVG and text, in the current directory"),
    ("P", "lesson: pause / go on"),
    ("n", "lesson: the next step now (at the end, the report)"),
    ("b", "lesson: replay from the start"),
    ("mouse", "click: focus, select, sort; wheel: scroll"),
    ("Esc", "close the innermost popup, filter or focus"),
    ("?", "this help (j/k scroll it)"),
    ("q", "quit"),
    ("Ctrl-C", "quit"),
    ("y / n", "answer a question (anything but y is no)"),
];

/// The words the dashboard uses, for the help.
pub const WORDS: [(&str, &str); 8] = [
    (
        "ring",
        "outside, who takes a new key landing there now (a fill per backend); inside, • each vnode (◦ draining, × out of service), · each session, ◆ the last key; a legend bar half full is an even share; ● a session the last change moved, ◎ the followed one, ◇ a probed key",
    ),
    (
        "moved",
        "a session the balancer sent to another backend because its own left (kill, down, remove, end of a drain) — counted in the last change, redispatched requests included",
    ),
    (
        "lost",
        "a client that had to log in again: its session lived in the dead server's memory, so moving it could not save it",
    ),
    (
        "redispatch",
        "a request whose backend refused the connection, sent to the next one clockwise before the failure was detected",
    ),
    (
        "remap",
        "the share of sessions a change moved, beside what modulo hashing would have moved and the ideal",
    ),
    (
        "vnodes",
        "each backend's points on the ring; more points, more even shares (v changes them live)",
    ),
    (
        "kept",
        "a session the last change left where it was; modulo would move counts what hash % N would have moved",
    ),
    (
        "walk",
        "a key goes clockwise from its hash to the first vnode of a backend that takes it; i shows each vnode passed by and why",
    ),
];

/// The help's entries as (term, meaning): the lesson's text when one
/// runs, each key, then each word.
pub fn help_lines(lesson: Option<&LessonState>) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    if let Some(l) = lesson {
        let title = if l.headline.is_empty() { &l.name } else { &l.headline };
        lines.push(("lesson".to_owned(), title.clone()));
        for p in super::lesson::paragraphs(l) {
            lines.push((String::new(), p.to_owned()));
        }
        lines.push((String::new(), String::new()));
    }
    let pairs = KEYS.iter().chain([("", "")].iter()).chain(WORDS.iter());
    lines.extend(pairs.map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::crossterm::event::{KeyEventState, MouseEvent};

    fn key(code: KeyCode) -> Event {
        Event::Key(KeyEvent {
            code,
            modifiers: KeyModifiers::NONE,
            kind: KeyEventKind::Press,
            state: KeyEventState::NONE,
        })
    }

    #[test]
    fn every_documented_key_maps() {
        let areas = Areas::default();
        let cases = [
            (KeyCode::Char('j'), Msg::Down),
            (KeyCode::Down, Msg::Down),
            (KeyCode::Char('k'), Msg::Up),
            (KeyCode::Up, Msg::Up),
            (KeyCode::Char('g'), Msg::First),
            (KeyCode::Home, Msg::First),
            (KeyCode::Char('G'), Msg::Last),
            (KeyCode::End, Msg::Last),
            (KeyCode::PageUp, Msg::PageUp),
            (KeyCode::PageDown, Msg::PageDown),
            (KeyCode::Char('x'), Msg::Act(Action::Kill)),
            (KeyCode::Char('r'), Msg::Act(Action::Revive)),
            (KeyCode::Char('d'), Msg::Act(Action::Drain)),
            (KeyCode::Char('u'), Msg::Act(Action::Undrain)),
            (KeyCode::Char('e'), Msg::Act(Action::Extend)),
            (KeyCode::Char('+'), Msg::Act(Action::WeightUp)),
            (KeyCode::Char('-'), Msg::Act(Action::WeightDown)),
            (KeyCode::Char('a'), Msg::Act(Action::AddDemo)),
            (KeyCode::Delete, Msg::Act(Action::Remove)),
            (KeyCode::Char('p'), Msg::Act(Action::PickPlacement)),
            (KeyCode::Char('m'), Msg::Act(Action::PickAffinity)),
            (KeyCode::Char('v'), Msg::Act(Action::Vnodes)),
            (KeyCode::Char('R'), Msg::Act(Action::Restart)),
            (KeyCode::Char('t'), Msg::Act(Action::ToggleTraffic)),
            (KeyCode::Char('['), Msg::Act(Action::SlowerTraffic)),
            (KeyCode::Char(']'), Msg::Act(Action::FasterTraffic)),
            (KeyCode::Tab, Msg::NextPanel),
            (KeyCode::BackTab, Msg::PrevPanel),
            (KeyCode::Char('/'), Msg::StartFilter),
            (KeyCode::Char('s'), Msg::Sort),
            (KeyCode::Enter, Msg::ToggleOnlySelected),
            (KeyCode::Char(' '), Msg::Freeze),
            (KeyCode::Char('?'), Msg::Help),
            (KeyCode::Char('q'), Msg::Quit),
            (KeyCode::Esc, Msg::Back),
            (KeyCode::Char('w'), Msg::Watch),
            (KeyCode::Char('%'), Msg::Modulo),
            (KeyCode::Char('i'), Msg::Probe),
            (KeyCode::Char('f'), Msg::Follow),
            (KeyCode::Char('c'), Msg::Capture),
            (KeyCode::Char('P'), Msg::LessonPause),
            (KeyCode::Char('n'), Msg::LessonStep),
            (KeyCode::Char('b'), Msg::LessonReplay),
        ];
        for (code, msg) in cases {
            assert_eq!(message(&key(code), Mode::Normal, &areas), Some(msg), "{code:?}");
        }
        let ctrl_c = Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        for mode in [
            Mode::Normal,
            Mode::Typing,
            Mode::Help,
            Mode::Confirm,
            Mode::Picker,
            Mode::Prompt,
            Mode::Report,
        ] {
            assert_eq!(message(&ctrl_c, mode, &areas), Some(Msg::Quit), "{mode:?}");
        }
        assert_eq!(message(&key(KeyCode::Char('z')), Mode::Normal, &areas), None);
    }

    #[test]
    fn popups_take_the_keys() {
        let areas = Areas::default();
        let m = |code, mode| message(&key(code), mode, &areas);
        // Help: navigation scrolls it; actions do nothing.
        assert_eq!(m(KeyCode::Char('j'), Mode::Help), Some(Msg::Down));
        assert_eq!(m(KeyCode::Char('x'), Mode::Help), None);
        assert_eq!(m(KeyCode::Esc, Mode::Help), Some(Msg::Back));
        assert_eq!(m(KeyCode::Char('q'), Mode::Help), Some(Msg::Quit));
        // A question: only y is yes.
        assert_eq!(m(KeyCode::Char('y'), Mode::Confirm), Some(Msg::Yes));
        for code in [KeyCode::Enter, KeyCode::Char('n'), KeyCode::Esc, KeyCode::Char('x')] {
            assert_eq!(m(code, Mode::Confirm), Some(Msg::No), "{code:?}");
        }
        // A picker: move, pick, close.
        assert_eq!(m(KeyCode::Char('k'), Mode::Picker), Some(Msg::Up));
        assert_eq!(m(KeyCode::Enter, Mode::Picker), Some(Msg::Yes));
        assert_eq!(m(KeyCode::Char('3'), Mode::Picker), Some(Msg::Pick(2)));
        assert_eq!(m(KeyCode::Char('x'), Mode::Picker), None);
        // Typing: every character is text; Esc backs out, never quits.
        assert_eq!(m(KeyCode::Char('q'), Mode::Typing), Some(Msg::FilterChar('q')));
        assert_eq!(m(KeyCode::Backspace, Mode::Typing), Some(Msg::FilterBack));
        assert_eq!(m(KeyCode::Enter, Mode::Typing), Some(Msg::FilterDone));
        assert_eq!(m(KeyCode::Esc, Mode::Typing), Some(Msg::Back));
        // A prompt: every character is text, arrows scroll its answer.
        assert_eq!(m(KeyCode::Char('q'), Mode::Prompt), Some(Msg::TypeChar('q')));
        assert_eq!(m(KeyCode::Char('j'), Mode::Prompt), Some(Msg::TypeChar('j')));
        assert_eq!(m(KeyCode::Down, Mode::Prompt), Some(Msg::Down));
        assert_eq!(m(KeyCode::Enter, Mode::Prompt), Some(Msg::Submit));
        assert_eq!(m(KeyCode::Esc, Mode::Prompt), Some(Msg::Back));
        // The report: scroll, replay, close.
        assert_eq!(m(KeyCode::Char('j'), Mode::Report), Some(Msg::Down));
        assert_eq!(m(KeyCode::Char('b'), Mode::Report), Some(Msg::LessonReplay));
        assert_eq!(
            m(KeyCode::Char('c'), Mode::Report),
            Some(Msg::Capture),
            "a report for a handout"
        );
        assert_eq!(m(KeyCode::Esc, Mode::Report), Some(Msg::Back));
        assert_eq!(m(KeyCode::Char('x'), Mode::Report), None);
    }

    #[test]
    fn the_mouse_acts_on_the_panel_under_it() {
        let areas = Areas {
            backends: Rect::new(0, 5, 80, 8),
            backends_offset: 2,
            sessions: Rect::new(30, 14, 50, 10),
            session_columns: vec![(31, 40, SortBy::Key), (70, 76, SortBy::Moves)],
            log: Rect::new(0, 24, 80, 6),
            help: Rect::default(),
        };
        let mouse = |kind, column, row| {
            Event::Mouse(MouseEvent {
                kind,
                column,
                row,
                modifiers: KeyModifiers::NONE,
            })
        };
        let click = |column, row| mouse(MouseEventKind::Down(MouseButton::Left), column, row);
        let m = |e: Event| message(&e, Mode::Normal, &areas);
        assert_eq!(m(click(10, 8)), Some(Msg::SelectBackend(3)), "offset + row");
        assert_eq!(m(click(10, 6)), Some(Msg::Focus(Panel::Backends)), "the header row");
        assert_eq!(m(click(72, 15)), Some(Msg::SortBy(SortBy::Moves)), "a column header");
        assert_eq!(m(click(72, 18)), Some(Msg::Focus(Panel::Sessions)));
        assert_eq!(m(click(5, 26)), Some(Msg::Focus(Panel::Log)));
        assert_eq!(m(click(5, 40)), None, "outside every panel");
        let wheel_down = |column, row| mouse(MouseEventKind::ScrollDown, column, row);
        assert_eq!(m(wheel_down(40, 18)), Some(Msg::ScrollAt(Panel::Sessions, 3)));
        assert_eq!(m(wheel_down(5, 26)), Some(Msg::ScrollAt(Panel::Log, 3)));
        assert_eq!(m(wheel_down(5, 8)), Some(Msg::ScrollAt(Panel::Backends, 1)));
        // Behind a popup the mouse does nothing but scroll it.
        assert_eq!(message(&click(10, 8), Mode::Help, &areas), None);
        assert_eq!(message(&wheel_down(10, 8), Mode::Help, &areas), Some(Msg::Down));
        assert_eq!(message(&click(10, 8), Mode::Confirm, &areas), None);
    }
}
