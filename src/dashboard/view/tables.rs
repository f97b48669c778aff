//! The backends and sessions tables. Columns come and go with the width, by
//! priority, so names are never squeezed: at any size each backend reads in
//! full.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Cell, Row, Table, TableState};

use super::theme::{Theme, state_label};
use super::{block, duration};
use crate::dashboard::app::{App, Panel, SortBy};
use crate::dashboard::text::{fit, width};
use crate::engine::view::BackendView;
use crate::router::BackendState;
use crate::text::thousands;

/// Picks the columns that fit `room` (spacing of 1 included), by priority;
/// returns their indices in display order. `widths` are in display order,
/// `priority` lists display indices, most important first.
fn choose(widths: &[u16], priority: &[usize], room: u16) -> Vec<usize> {
    let mut chosen = Vec::new();
    let mut used = 0u16;
    for &i in priority {
        let need = widths[i] + u16::from(!chosen.is_empty());
        if used + need <= room {
            used += need;
            chosen.push(i);
        }
    }
    chosen.sort_unstable();
    chosen
}

/// A sparkline of the last values, in block characters.
pub fn sparkline(values: impl Iterator<Item = u64>, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let v: Vec<u64> = values.collect();
    let tail = &v[v.len().saturating_sub(width)..];
    let max = tail.iter().copied().max().unwrap_or(0).max(1);
    tail.iter()
        .map(|&x| if x == 0 { ' ' } else { BARS[((x * 7) / max) as usize] })
        .collect()
}

/// Milliseconds with two significant digits: `0.05`, `1.2`, `35`.
fn ms(x: f64) -> String {
    match x {
        x if x < 1.0 => format!("{x:.2}"),
        x if x < 10.0 => format!("{x:.1}"),
        x => format!("{x:.0}"),
    }
}

/// What the last column says of a backend: a drain's gauge, why it is
/// down, its health progress (when no column shows it), or that it is a demo.
fn note(app: &App, b: &BackendView, with_health: bool) -> String {
    let failed = matches!(b.state, BackendState::Down | BackendState::Killed);
    if let Some(left) = b.drain_left_secs {
        let total = app.scene().snapshot.drain_timeout_secs.max(left).max(1);
        let filled = ((total - left) * 6 / total) as usize;
        return format!("{}{} {left}s left", "█".repeat(filled), "░".repeat(6 - filled));
    }
    let mut parts = Vec::new();
    // Past its cap (limits.max_conns_per_backend), requests wait in its queue.
    if b.queued > 0 {
        parts.push(format!("{} queued · {}/{} in use", b.queued, b.in_use, b.cap));
    } else if b.cap > 0 && b.in_use >= b.cap {
        parts.push(format!("at its cap of {}", b.cap));
    }
    if failed && let Some(ms) = b.detected_after_ms {
        parts.push(format!("detected in {:.1}s", ms as f64 / 1000.0));
    }
    if let Some(why) = &b.failure {
        parts.push(why.clone());
    }
    if !with_health && !b.health.is_empty() {
        parts.push(b.health.clone());
    }
    if parts.is_empty() && b.demo {
        parts.push("demo".into());
    }
    parts.join(" · ")
}

/// Draws the backends table; returns the first row shown.
pub fn backends(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) -> usize {
    if area.height < 3 {
        return 0;
    }
    let snapshot = &app.scene().snapshot;
    let shortest = if area.width >= 60 { 7 } else { 4 };
    let name_w = snapshot
        .backends
        .iter()
        .map(|b| width(&b.name))
        .max()
        .unwrap_or(0)
        .clamp(shortest, 24) as u16;
    let addr_w = snapshot.backends.iter().map(|b| b.addr.len()).max().unwrap_or(0).max(7) as u16;
    // Display order: name, address, state, health, conns, req/s, sessions, ring, p50/p99, weight, note.
    let titles = [
        if name_w >= 7 { "backend" } else { "name" },
        "address",
        "state",
        "health",
        "conns",
        "req/s",
        "sessions",
        "ring",
        "p50/p99 ms",
        "weight",
        "",
    ];
    let mut widths = [name_w, addr_w, 10, 12, 5, 10, 8, 6, 10, 6, 16];
    let priority = [0, 2, 5, 6, 7, 9, 10, 3, 4, 8, 1];
    // Borders and the selection mark.
    let room = area.width.saturating_sub(3);
    let chosen = choose(&widths, &priority, room);
    let used: u16 = chosen.iter().map(|&i| widths[i] + 1).sum::<u16>().saturating_sub(1);
    if chosen.contains(&10) {
        widths[10] += room.saturating_sub(used);
    }
    let with_health = chosen.contains(&3);
    let rows: Vec<Row<'_>> = snapshot
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let history = app.scene().history_of(&b.name);
            let rate = history.and_then(|h| h.back().copied()).unwrap_or(0);
            let spark = history.map_or(String::new(), |h| sparkline(h.iter().copied(), 5));
            let latency = match (b.p50_ms, b.p99_ms) {
                (Some(p50), Some(p99)) if b.requests > 0 => format!("{}/{}", ms(p50), ms(p99)),
                _ => "–".to_owned(),
            };
            let cells: Vec<Cell<'_>> = chosen
                .iter()
                .map(|&c| match c {
                    0 => Cell::from(Span::styled(b.name.clone(), theme.fg(theme.backend(i)))),
                    1 => Cell::from(b.addr.clone()),
                    2 => Cell::from(Span::styled(state_label(b.state), theme.state(b.state))),
                    3 => Cell::from(fit(&b.health, widths[3] as usize)),
                    4 => Cell::from(b.active.to_string()),
                    5 => Cell::from(format!("{rate:>4} {spark}")),
                    6 => Cell::from(thousands(b.sessions)),
                    7 => Cell::from(format!("{:.1}%", b.ring_share * 100.0)),
                    8 => Cell::from(latency.clone()),
                    9 => Cell::from(b.weight.to_string()),
                    _ => {
                        let style = if b.failure.is_some() {
                            theme.state(BackendState::Down)
                        } else {
                            Style::new()
                        };
                        Cell::from(Span::styled(
                            fit(&note(app, b, with_health), widths[10] as usize),
                            style,
                        ))
                    }
                })
                .collect();
            Row::new(cells)
        })
        .collect();
    let header: Vec<&str> = chosen.iter().map(|&c| titles[c]).collect();
    let constraints: Vec<Constraint> = chosen.iter().map(|&c| Constraint::Length(widths[c])).collect();
    let title = if area.width >= 60 {
        format!(
            " backends · {} per unit of weight ",
            super::vnodes(snapshot.vnodes_per_weight)
        )
    } else {
        " backends ".to_owned()
    };
    let table = Table::new(rows, constraints)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(block(title, app.focus == Panel::Backends, theme))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("›");
    let mut state = TableState::default().with_selected(Some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
    state.offset()
}

/// Draws the sessions table; returns each column's x range and order.
pub fn sessions(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) -> Vec<(u16, u16, SortBy)> {
    if area.height < 3 {
        return Vec::new();
    }
    let scene = app.scene();
    let rows = app.visible_sessions();
    let total = scene
        .snapshot
        .stats
        .as_ref()
        .map_or(rows.len() as u64, |s| s.router.sessions);
    let mut title = format!(" sessions {} · by {} ", thousands(total), app.sort.as_str());
    if app.only_selected
        && let Some(b) = app.selected_backend()
    {
        title.push_str(&format!("· {} only ", b.name));
    }
    if let Some(f) = &app.filter {
        let listed = scene.snapshot.sessions.len();
        title.push_str(&format!(
            "· /{f} {} of {} listed ",
            rows.len(),
            thousands(listed as u64)
        ));
    }
    let names: Vec<&str> = scene.snapshot.backends.iter().map(|b| b.name.as_str()).collect();
    let key_w = rows.iter().map(|s| width(&s.key)).max().unwrap_or(0).max(9) as u16;
    let client_w = rows
        .iter()
        .filter_map(|s| s.client.as_deref().map(width))
        .max()
        .unwrap_or(0)
        .max(6) as u16;
    let backend_w = names.iter().map(|n| width(n)).max().unwrap_or(0).max(7) as u16;
    let columns = [
        ("key", key_w, SortBy::Key),
        ("client", client_w, SortBy::Client),
        ("backend", backend_w, SortBy::Backend),
        ("age", 6, SortBy::Age),
        ("idle", 6, SortBy::Recent),
        ("reqs", 5, SortBy::Requests),
        ("moves", 5, SortBy::Moves),
    ];
    let widths: Vec<u16> = columns.iter().map(|c| c.1).collect();
    let chosen = choose(&widths, &[0, 2, 1, 6, 5, 4, 3], area.width.saturating_sub(2));
    // Focused, the top row is the one `f` follows.
    let marked = app.focus == Panel::Sessions;
    let body: Vec<Row<'_>> = rows
        .iter()
        .skip(app.session_scroll)
        .take(area.height.saturating_sub(3) as usize)
        .enumerate()
        .map(|(k, s)| {
            let i = names.iter().position(|n| *n == s.backend).unwrap_or(0);
            let cells: Vec<Cell<'_>> = chosen
                .iter()
                .map(|&c| match c {
                    0 => Cell::from(s.key.clone()),
                    1 => Cell::from(s.client.clone().unwrap_or_else(|| "–".into())),
                    2 => Cell::from(Span::styled(s.backend.clone(), theme.fg(theme.backend(i)))),
                    3 => Cell::from(duration(u64::from(s.age_secs))),
                    4 => Cell::from(duration(u64::from(s.idle_secs))),
                    5 => Cell::from(s.requests.to_string()),
                    _ => Cell::from(s.reassignments.to_string()),
                })
                .collect();
            let row = Row::new(cells);
            if marked && k == 0 {
                row.style(Style::new().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        })
        .collect();
    let header: Vec<Cell<'_>> = chosen
        .iter()
        .map(|&c| {
            let (name, _, by) = columns[c];
            let style = if by == app.sort {
                Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
            } else {
                Style::new().add_modifier(Modifier::BOLD)
            };
            Cell::from(Span::styled(name, style))
        })
        .collect();
    let constraints: Vec<Constraint> = chosen.iter().map(|&c| Constraint::Length(widths[c])).collect();
    let table =
        Table::new(body, constraints)
            .header(Row::new(header))
            .block(block(title, app.focus == Panel::Sessions, theme));
    frame.render_widget(table, area);
    let mut x = area.x + 1;
    chosen
        .iter()
        .map(|&c| {
            let from = x;
            x += widths[c] + 1;
            (from, from + widths[c], columns[c].2)
        })
        .collect()
}
