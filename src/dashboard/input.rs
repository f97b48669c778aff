//! Keys and mouse → dashboard messages.

use ratatui::crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind};
use ratatui::layout::{Position, Rect};

use super::app::{Action, Msg};

/// Where the panels were drawn last, for the mouse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Areas {
    /// The backends table, borders included.
    pub backends: Rect,
    /// The sessions table.
    pub sessions: Rect,
    /// The event log.
    pub log: Rect,
}

/// The message for a terminal event; `typing` while the filter is edited.
pub fn message(event: &Event, typing: bool, areas: &Areas) -> Option<Msg> {
    match event {
        Event::Key(key) if key.kind != KeyEventKind::Release => key_message(key, typing),
        Event::Mouse(m) => {
            let at = Position::new(m.column, m.row);
            match m.kind {
                MouseEventKind::Down(MouseButton::Left) if areas.backends.contains(at) => {
                    // Border and header rows come first.
                    let row = m.row.checked_sub(areas.backends.y + 2)?;
                    Some(Msg::SelectBackend(row as usize))
                }
                MouseEventKind::ScrollUp => Some(Msg::Scroll(-3)),
                MouseEventKind::ScrollDown => Some(Msg::Scroll(3)),
                _ => None,
            }
        }
        _ => None,
    }
}

fn key_message(key: &KeyEvent, typing: bool) -> Option<Msg> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Some(Msg::Quit);
    }
    if typing {
        return match key.code {
            KeyCode::Enter => Some(Msg::FilterDone(true)),
            KeyCode::Esc => Some(Msg::FilterDone(false)),
            KeyCode::Backspace => Some(Msg::FilterBack),
            KeyCode::Char(c) if !c.is_control() => Some(Msg::FilterChar(c)),
            _ => None,
        };
    }
    Some(match key.code {
        KeyCode::Up | KeyCode::Char('k') => Msg::Up,
        KeyCode::Down | KeyCode::Char('j') => Msg::Down,
        KeyCode::Tab => Msg::NextPanel,
        KeyCode::Char('x') => Msg::Act(Action::Kill),
        KeyCode::Char('r') => Msg::Act(Action::Revive),
        KeyCode::Char('d') => Msg::Act(Action::Drain),
        KeyCode::Char('u') => Msg::Act(Action::Undrain),
        KeyCode::Char('e') => Msg::Act(Action::Extend),
        KeyCode::Char('+') | KeyCode::Char('=') => Msg::Act(Action::WeightUp),
        KeyCode::Char('-') => Msg::Act(Action::WeightDown),
        KeyCode::Char('a') => Msg::Act(Action::AddDemo),
        KeyCode::Delete => Msg::Act(Action::Remove),
        KeyCode::Char('p') => Msg::Act(Action::NextPlacement),
        KeyCode::Char('m') => Msg::Act(Action::NextAffinity),
        KeyCode::Char('t') => Msg::Act(Action::ToggleTraffic),
        KeyCode::Char(']') => Msg::Act(Action::FasterTraffic),
        KeyCode::Char('[') => Msg::Act(Action::SlowerTraffic),
        KeyCode::Char('/') => Msg::StartFilter,
        KeyCode::Char('s') => Msg::Sort,
        KeyCode::Enter => Msg::ToggleOnlySelected,
        KeyCode::Char(' ') => Msg::Freeze,
        KeyCode::Char('?') => Msg::Help,
        KeyCode::Char('q') | KeyCode::Esc => Msg::Quit,
        _ => return None,
    })
}

/// Every key and what it does, for the help overlay and the README.
pub const KEYS: [(&str, &str); 22] = [
    ("↑/↓ j/k", "select a backend (or scroll the focused panel)"),
    ("x", "kill the selected backend"),
    ("r", "revive it (back to health checking)"),
    ("d", "drain it (no new sessions; leaves when empty or at the timeout)"),
    ("u", "undrain it"),
    ("e", "extend its drain by 30 s"),
    ("+ / -", "weight up / down"),
    ("a", "add a demo backend"),
    ("Delete", "remove the selected backend"),
    ("p", "next placement"),
    ("m", "next affinity mode"),
    ("t", "synthetic traffic on / off"),
    ("[ / ]", "traffic slower / faster"),
    ("Tab", "focus the next panel"),
    ("/", "filter sessions by key (Enter keeps, Esc clears)"),
    ("s", "sort sessions (recent, age, requests, backend)"),
    ("Enter", "sessions of the selected backend only / all"),
    ("space", "freeze / unfreeze the view"),
    ("mouse", "click a backend to select it; the wheel scrolls"),
    ("?", "this help"),
    ("q Esc", "quit"),
    ("Ctrl-C", "quit"),
];

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
            (KeyCode::Char('x'), Msg::Act(Action::Kill)),
            (KeyCode::Char('r'), Msg::Act(Action::Revive)),
            (KeyCode::Char('d'), Msg::Act(Action::Drain)),
            (KeyCode::Char('u'), Msg::Act(Action::Undrain)),
            (KeyCode::Char('e'), Msg::Act(Action::Extend)),
            (KeyCode::Char('+'), Msg::Act(Action::WeightUp)),
            (KeyCode::Char('-'), Msg::Act(Action::WeightDown)),
            (KeyCode::Char('a'), Msg::Act(Action::AddDemo)),
            (KeyCode::Delete, Msg::Act(Action::Remove)),
            (KeyCode::Char('p'), Msg::Act(Action::NextPlacement)),
            (KeyCode::Char('m'), Msg::Act(Action::NextAffinity)),
            (KeyCode::Char('t'), Msg::Act(Action::ToggleTraffic)),
            (KeyCode::Char('['), Msg::Act(Action::SlowerTraffic)),
            (KeyCode::Char(']'), Msg::Act(Action::FasterTraffic)),
            (KeyCode::Tab, Msg::NextPanel),
            (KeyCode::Char('/'), Msg::StartFilter),
            (KeyCode::Char('s'), Msg::Sort),
            (KeyCode::Enter, Msg::ToggleOnlySelected),
            (KeyCode::Char(' '), Msg::Freeze),
            (KeyCode::Char('?'), Msg::Help),
            (KeyCode::Char('q'), Msg::Quit),
            (KeyCode::Esc, Msg::Quit),
        ];
        for (code, msg) in cases {
            assert_eq!(message(&key(code), false, &areas), Some(msg), "{code:?}");
        }
        let ctrl_c = Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert_eq!(message(&ctrl_c, false, &areas), Some(Msg::Quit));
        assert_eq!(message(&ctrl_c, true, &areas), Some(Msg::Quit));
        assert_eq!(message(&key(KeyCode::Char('z')), false, &areas), None);
    }

    #[test]
    fn typing_a_filter_takes_the_keys() {
        let areas = Areas::default();
        assert_eq!(
            message(&key(KeyCode::Char('x')), true, &areas),
            Some(Msg::FilterChar('x'))
        );
        assert_eq!(
            message(&key(KeyCode::Char('q')), true, &areas),
            Some(Msg::FilterChar('q'))
        );
        assert_eq!(message(&key(KeyCode::Backspace), true, &areas), Some(Msg::FilterBack));
        assert_eq!(message(&key(KeyCode::Enter), true, &areas), Some(Msg::FilterDone(true)));
        assert_eq!(message(&key(KeyCode::Esc), true, &areas), Some(Msg::FilterDone(false)));
    }

    #[test]
    fn clicks_select_rows_and_the_wheel_scrolls() {
        let areas = Areas {
            backends: Rect::new(0, 5, 80, 8),
            ..Areas::default()
        };
        let click = |row| {
            Event::Mouse(MouseEvent {
                kind: MouseEventKind::Down(MouseButton::Left),
                column: 10,
                row,
                modifiers: KeyModifiers::NONE,
            })
        };
        assert_eq!(message(&click(8), false, &areas), Some(Msg::SelectBackend(1)));
        assert_eq!(message(&click(6), false, &areas), None, "the header row");
        assert_eq!(message(&click(20), false, &areas), None, "outside the table");
        let wheel = Event::Mouse(MouseEvent {
            kind: MouseEventKind::ScrollDown,
            column: 0,
            row: 0,
            modifiers: KeyModifiers::NONE,
        });
        assert_eq!(message(&wheel, false, &areas), Some(Msg::Scroll(3)));
    }
}
