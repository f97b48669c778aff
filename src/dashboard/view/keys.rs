//! The keys line at the bottom: the keys that work now, most useful first,
//! always ending with `? help · q quit` (while typing, Ctrl-C quits).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::theme::Theme;
use crate::dashboard::app::{App, Mode, Panel, Popup, PromptKind};
use crate::dashboard::text::width;

/// The keys that work now, most useful first.
fn hints(app: &App) -> Vec<(&'static str, &'static str)> {
    match app.mode() {
        Mode::Typing => vec![("Enter", "keep"), ("Esc", "clear"), ("Ctrl-C", "quit")],
        Mode::Confirm => vec![("y", "yes"), ("n/Esc", "no")],
        Mode::Picker => vec![("j/k", "move"), ("Enter", "pick"), ("1-9", "pick"), ("Esc", "close")],
        Mode::Help => vec![("j/k", "scroll"), ("Esc ?", "close")],
        Mode::Prompt => match &app.popup {
            Some(Popup::Prompt {
                kind: PromptKind::Probe,
                ..
            }) => vec![
                ("Enter", "probe"),
                ("↑/↓", "scroll"),
                ("Esc", "close"),
                ("Ctrl-C", "quit"),
            ],
            _ => vec![("Enter", "follow"), ("Esc", "close"), ("Ctrl-C", "quit")],
        },
        Mode::Report => match &app.popup {
            Some(Popup::Card { .. }) => vec![
                ("Enter", "start"),
                ("n", "first step"),
                ("j/k", "scroll"),
                ("Esc", "close"),
            ],
            _ => vec![("j/k", "scroll"), ("b", "replay"), ("c", "capture"), ("Esc", "close")],
        },
        Mode::Normal => {
            let mut h = match app.focus {
                Panel::Backends => vec![
                    ("j/k", "select"),
                    ("x", "kill"),
                    ("r", "revive"),
                    ("d", "drain"),
                    ("a", "add"),
                    ("i", "probe"),
                    ("f", "follow"),
                    ("c", "capture"),
                    ("+/-", "weight"),
                    ("p", "placement"),
                    ("m", "affinity"),
                    ("v", "vnodes"),
                    ("space", "freeze"),
                    ("Tab", "panel"),
                ],
                Panel::Sessions => vec![
                    ("j/k", "scroll"),
                    ("f", "follow"),
                    ("s", "sort"),
                    ("/", "filter"),
                    ("Enter", "selected only"),
                    ("g/G", "top/end"),
                    ("Tab", "panel"),
                ],
                Panel::Log => vec![("j/k", "scroll"), ("g/G", "oldest/newest"), ("Tab", "panel")],
            };
            // After a change, watching it and modulo come right after the kill.
            if app.scene().moves.is_some() && app.focus == Panel::Backends {
                h.splice(3..3, [("w", "watch"), ("%", "modulo")]);
            }
            if app.is_frozen() {
                h.insert(0, ("c", "capture"));
            }
            if let Some(l) = &app.lesson {
                let lesson = if l.report.is_some() {
                    vec![("n", "report"), ("b", "replay")]
                } else if l.paused {
                    vec![("P", "go on"), ("n", "next step"), ("b", "replay")]
                } else {
                    vec![("P", "pause"), ("n", "next step"), ("b", "replay")]
                };
                h.splice(0..0, lesson);
            }
            if app.filter.is_some() || app.focus != Panel::Backends || app.only_selected {
                h.insert(0, ("Esc", "back"));
            } else if app.modulo {
                h.insert(0, ("%", "ring only"));
            } else if app.scene().followed.is_some() {
                h.insert(0, ("Esc", "unfollow"));
            }
            h
        }
    }
}

/// Draws the keys line.
pub fn draw(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    let key = theme.fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let dim = theme.dim();
    let mut left: Vec<Span<'_>> = Vec::new();
    if app.mode() == Mode::Typing {
        left.push(Span::styled(
            format!(" filter: {}▏ ", app.filter.as_deref().unwrap_or("")),
            Style::new().add_modifier(Modifier::BOLD),
        ));
    }
    // `? help · q quit` always shows, at the right; while typing, Ctrl-C quits.
    let tail: Vec<(&str, &str)> = match app.mode() {
        Mode::Typing => vec![],
        Mode::Help => vec![("q", "quit")],
        _ => vec![("?", "help"), ("q", "quit")],
    };
    let span_width = |spans: &[Span<'_>]| spans.iter().map(|s| width(&s.content)).sum::<usize>();
    let pair =
        |(k, what): (&'static str, &'static str)| vec![Span::styled(k, key), Span::styled(format!(" {what}"), dim)];
    let mut tail_spans: Vec<Span<'_>> = Vec::new();
    for (i, h) in tail.into_iter().enumerate() {
        if i > 0 {
            tail_spans.push(Span::styled(" · ", dim));
        }
        tail_spans.extend(pair(h));
    }
    let room = (area.width as usize).saturating_sub(span_width(&tail_spans) + 2);
    left.insert(0, Span::raw(" "));
    for h in hints(app) {
        let mut next = if left.len() > 1 {
            vec![Span::styled(" · ", dim)]
        } else {
            vec![]
        };
        next.extend(pair(h));
        if span_width(&left) + span_width(&next) > room {
            break;
        }
        left.extend(next);
    }
    let pad = (area.width as usize).saturating_sub(span_width(&left) + span_width(&tail_spans) + 1);
    left.push(Span::raw(" ".repeat(pad)));
    left.extend(tail_spans);
    frame.render_widget(Paragraph::new(Line::from(left)), area);
}
