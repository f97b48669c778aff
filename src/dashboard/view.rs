//! Drawing the dashboard from its state: a pure function of [`App`].

use std::f64::consts::TAU;

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::canvas::{Canvas, Line as Segment, Points};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};

use super::app::{App, LogKind, Panel};
use super::input::{Areas, KEYS};
use crate::router::BackendState;
use crate::text::thousands;

/// Colours for backends, in id order (chosen to read on dark and light backgrounds).
const PALETTE: [Color; 8] = [
    Color::Cyan,
    Color::Magenta,
    Color::Yellow,
    Color::Green,
    Color::Blue,
    Color::Red,
    Color::LightBlue,
    Color::LightMagenta,
];

/// Smallest terminal the dashboard draws in.
pub const MIN_SIZE: (u16, u16) = (40, 10);

struct Theme {
    color: bool,
}

impl Theme {
    fn fg(&self, c: Color) -> Style {
        if self.color { Style::new().fg(c) } else { Style::new() }
    }

    fn backend(&self, i: usize) -> Color {
        if self.color {
            PALETTE[i % PALETTE.len()]
        } else {
            Color::Reset
        }
    }

    fn state(&self, s: BackendState) -> Style {
        let c = match s {
            BackendState::Up => Color::Green,
            BackendState::Down | BackendState::Killed => Color::Red,
            BackendState::Draining => Color::Yellow,
            BackendState::Removed | BackendState::Drained => Color::DarkGray,
        };
        let style = self.fg(c);
        if matches!(s, BackendState::Down | BackendState::Killed) {
            style.add_modifier(Modifier::BOLD)
        } else {
            style
        }
    }

    fn log(&self, k: LogKind) -> Style {
        self.fg(match k {
            LogKind::Route => Color::DarkGray,
            LogKind::Session => Color::Blue,
            LogKind::State => Color::Red,
            LogKind::Remap => Color::Magenta,
            LogKind::Alarm => Color::LightRed,
            LogKind::Drain => Color::Yellow,
            LogKind::Command => Color::Cyan,
        })
    }
}

/// A state with a symbol, so it reads without colour too.
pub fn state_label(s: BackendState) -> &'static str {
    match s {
        BackendState::Up => "▲ up",
        BackendState::Down => "▼ down",
        BackendState::Draining => "◐ draining",
        BackendState::Drained => "◌ drained",
        BackendState::Killed => "✖ killed",
        BackendState::Removed => "○ removed",
    }
}

/// Draws everything; returns where the panels went, for the mouse.
pub fn draw(app: &App, frame: &mut Frame<'_>) -> Areas {
    let area = frame.area();
    let theme = Theme { color: !app.no_color };
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let text = format!("enlarge the terminal to {}×{} or more", MIN_SIZE.0, MIN_SIZE.1);
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return Areas::default();
    }
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(0), Constraint::Length(1)]).areas(area);
    draw_header(app, &theme, frame, header);
    draw_footer(app, &theme, frame, footer);

    let table_height = (app.snapshot.backends.len() as u16 + 3).min(body.height.saturating_sub(1));
    let mut areas = Areas::default();
    if body.width >= 110 && body.height >= 24 {
        // Backends across the top; the ring, the sessions and the log below.
        let [backends, remap, rest] = Layout::vertical([
            Constraint::Length(table_height),
            Constraint::Length(1),
            Constraint::Min(0),
        ])
        .areas(body);
        let ring_width = (rest.height * 2 + 2).min(body.width / 2);
        let [left, right] = Layout::horizontal([Constraint::Length(ring_width), Constraint::Min(0)]).areas(rest);
        let [sessions, log] = Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
        draw_backends(app, &theme, frame, backends);
        draw_remap(app, &theme, frame, remap);
        draw_ring(app, &theme, frame, left);
        draw_sessions(app, &theme, frame, sessions);
        draw_log(app, &theme, frame, log);
        areas = Areas {
            backends,
            sessions,
            log,
        };
    } else {
        let [backends, remap, rest] = Layout::vertical([
            Constraint::Length(table_height),
            Constraint::Length(if body.height > table_height + 6 { 1 } else { 0 }),
            Constraint::Min(0),
        ])
        .areas(body);
        draw_backends(app, &theme, frame, backends);
        draw_remap(app, &theme, frame, remap);
        areas.backends = backends;
        if rest.height >= 6 {
            let log_height = if rest.height >= 20 { rest.height / 3 } else { 0 };
            let [middle, log] = Layout::vertical([Constraint::Min(0), Constraint::Length(log_height)]).areas(rest);
            let ring_width = (middle.height * 2 + 2).min(middle.width / 2);
            let [ring, sessions] =
                Layout::horizontal([Constraint::Length(ring_width), Constraint::Min(0)]).areas(middle);
            draw_ring(app, &theme, frame, ring);
            draw_sessions(app, &theme, frame, sessions);
            draw_log(app, &theme, frame, log);
            areas.sessions = sessions;
            areas.log = log;
        }
    }
    if app.help {
        draw_help(&theme, frame, area);
    }
    areas
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn draw_header(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    let s = &app.snapshot;
    let stats = s.stats.as_ref();
    let wide = area.width >= 120;
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let label = |t: &'static str| Span::styled(t, theme.fg(Color::DarkGray));
    let affinity = stats.map_or("-".into(), |st| st.affinity.to_string());
    let placement = stats.map_or("-".into(), |st| st.placement.to_string());
    let mut line1 = Line::from(vec![
        Span::styled(" ringside ", bold.patch(theme.fg(Color::Cyan))),
        label(" proxy "),
        Span::raw(s.proxy.clone()),
        label(if wide { "  admin " } else { " admin " }),
        Span::raw(s.admin.clone()),
        label(if wide { "  affinity " } else { " · " }),
        Span::styled(affinity, bold),
        label(if wide { "  placement " } else { " · " }),
        Span::styled(placement, bold),
    ]);
    if let Some(store) = stats.and_then(|st| st.store.as_ref()) {
        use crate::store::StoreState;
        let (text, style) = match store.state {
            StoreState::Ok => ("redis ok", theme.fg(Color::Green)),
            StoreState::Connecting => ("redis connecting", theme.fg(Color::Yellow)),
            StoreState::Degraded => ("REDIS DEGRADED", theme.fg(Color::Red).add_modifier(Modifier::BOLD)),
        };
        line1
            .spans
            .extend([label(if wide { "  store " } else { " · " }), Span::styled(text, style)]);
        if wide {
            line1.spans.push(Span::styled(
                format!(" {}/{} keys", store.keys, store.keys_max),
                theme.fg(Color::DarkGray),
            ));
        }
    }
    let err_rate = if app.rps == 0 {
        0.0
    } else {
        100.0 * app.errors_per_sec as f64 / app.rps as f64
    };
    let lost = stats.map_or(0, |st| st.lost_sessions);
    let alarm = |bad: bool| {
        if bad {
            theme.fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            bold
        }
    };
    let mut line2 = vec![
        label(" req/s "),
        Span::styled(app.rps.to_string(), bold),
        label(if wide { "  errors " } else { " err " }),
        Span::styled(format!("{err_rate:.1}%"), alarm(err_rate > 0.0)),
        label(if wide { "  sessions " } else { " sess " }),
        Span::styled(thousands(stats.map_or(0, |st| st.router.sessions)), bold),
        label(if wide { "  lost " } else { " lost " }),
        Span::styled(thousands(lost), alarm(lost > 0)),
        label(if wide { "  dropped events " } else { " dropped " }),
        Span::raw(thousands(stats.map_or(0, |st| st.dropped_events))),
        label(if wide { "  up " } else { " up " }),
        Span::raw(duration(stats.map_or(0, |st| st.uptime_secs))),
    ];
    if wide {
        line2.extend([
            label("  requests "),
            Span::raw(thousands(stats.map_or(0, |st| st.responses.total))),
        ]);
    }
    match s.traffic {
        Some((true, rate)) => line2.extend([label("  traffic "), Span::raw(format!("{rate:.0}/s"))]),
        Some((false, _)) => line2.extend([label("  traffic "), Span::raw("paused")]),
        None => line2.extend([label("  traffic "), Span::raw("off")]),
    }
    if app.frozen {
        line2.push(Span::styled(
            " ❚❚ FROZEN",
            theme.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ));
    }
    frame.render_widget(Paragraph::new(vec![line1, Line::from(line2)]), area);
}

fn draw_footer(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    let text = if app.typing {
        format!(
            " filter: {}▏  Enter keeps · Esc clears",
            app.filter.as_deref().unwrap_or("")
        )
    } else {
        " j/k select · x kill · r revive · d drain · u undrain · a add · p placement · m affinity · t traffic · / filter · ? help · q quit".to_owned()
    };
    frame.render_widget(Paragraph::new(text).style(theme.fg(Color::DarkGray)), area);
}

fn block<'a>(title: String, focused: bool, theme: &Theme) -> Block<'a> {
    let b = Block::new().borders(Borders::ALL).title(title);
    if focused {
        b.border_style(theme.fg(Color::Cyan).add_modifier(Modifier::BOLD))
    } else {
        b.border_style(theme.fg(Color::DarkGray))
    }
}

/// A sparkline of the last values, in block characters.
fn sparkline(values: impl Iterator<Item = u64>, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let v: Vec<u64> = values.collect();
    let tail = &v[v.len().saturating_sub(width)..];
    let max = tail.iter().copied().max().unwrap_or(0).max(1);
    tail.iter()
        .map(|&x| if x == 0 { ' ' } else { BARS[((x * 7) / max) as usize] })
        .collect()
}

fn draw_backends(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    if area.height < 3 {
        return;
    }
    // Columns that come and go with the width: address, then latency and weight.
    let with_addr = area.width >= 96;
    let with_latency = area.width >= 116;
    let mut header = vec!["backend"];
    let mut widths = vec![Constraint::Length(7)];
    if with_addr {
        header.push("address");
        widths.push(Constraint::Length(15));
    }
    header.extend(["state", "health", "conns", "req/s", "sessions", "ring"]);
    widths.extend([
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(5),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(6),
    ]);
    if with_latency {
        header.extend(["p50/p99 ms", "weight"]);
        widths.extend([Constraint::Length(10), Constraint::Length(6)]);
    }
    header.push("");
    widths.push(Constraint::Min(0));
    let rows: Vec<Row<'_>> = app
        .snapshot
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let history = app.history_of(&b.name);
            let rate = history.and_then(|h| h.back().copied()).unwrap_or(0);
            let spark = history.map_or(String::new(), |h| sparkline(h.iter().copied(), 5));
            let note = if let Some(left) = b.drain_left_secs {
                let total = app.snapshot.drain_timeout_secs.max(left).max(1);
                let filled = ((total - left) * 6 / total) as usize;
                format!("{}{} {left}s left", "█".repeat(filled), "░".repeat(6 - filled))
            } else if let Some(ms) = b.detected_after_ms {
                format!("detected in {:.1}s", ms as f64 / 1000.0)
            } else if b.demo {
                "demo".to_owned()
            } else {
                String::new()
            };
            let mut cells = vec![Cell::from(Span::styled(b.name.clone(), theme.fg(theme.backend(i))))];
            if with_addr {
                cells.push(Cell::from(b.addr.clone()));
            }
            cells.extend([
                Cell::from(Span::styled(state_label(b.state), theme.state(b.state))),
                Cell::from(b.health.clone()),
                Cell::from(b.active.to_string()),
                Cell::from(format!("{rate:>4} {spark}")),
                Cell::from(thousands(b.sessions)),
                Cell::from(format!("{:.1}%", b.ring_share * 100.0)),
            ]);
            if with_latency {
                cells.push(Cell::from(match (b.p50_ms, b.p99_ms) {
                    (Some(p50), Some(p99)) => format!("{p50:.1}/{p99:.1}"),
                    _ => "–".to_owned(),
                }));
                cells.push(Cell::from(b.weight.to_string()));
            }
            cells.push(Cell::from(note));
            Row::new(cells)
        })
        .collect();
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(block(" backends ".into(), app.focus == Panel::Backends, theme))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("›");
    let mut state = TableState::default().with_selected(Some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_remap(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    if area.height == 0 {
        return;
    }
    let text = match &app.remap {
        Some(r) => format!(" last change: {r}"),
        None => " last change: none yet — kill (x), drain (d) or add (a) a backend to see what moves".to_owned(),
    };
    frame.render_widget(
        Paragraph::new(text)
            .style(theme.fg(Color::Magenta))
            .wrap(Wrap { trim: true }),
        area,
    );
}

fn angle(position: u32) -> f64 {
    TAU * f64::from(position) / 4_294_967_296.0
}

/// x, y on a circle of radius `r`, clockwise from the top.
fn at(position: u32, r: f64, (sx, sy): (f64, f64)) -> (f64, f64) {
    let a = angle(position);
    (r * a.sin() * sx, r * a.cos() * sy)
}

fn draw_ring(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    if area.width < 12 || area.height < 6 {
        return;
    }
    let names: Vec<&str> = app.snapshot.backends.iter().map(|b| b.name.as_str()).collect();
    let legend_rows = (names.len() as u16).min(area.height.saturating_sub(8) / 2);
    let [canvas_area, legend_area] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(legend_rows)]).areas(area);
    let title = match &app.last_route {
        Some(r) => format!(" ring · last key {} → {} ", r.key, r.backend),
        None => " hash ring ".to_owned(),
    };
    let inner_w = f64::from(canvas_area.width.saturating_sub(2).max(1));
    let inner_h = f64::from(canvas_area.height.saturating_sub(2).max(1));
    // Cells are about twice as tall as wide: shrink whichever axis is
    // longer on screen so the circle stays round.
    let aspect = ((inner_h * 2.0 / inner_w).min(1.0), (inner_w / (inner_h * 2.0)).min(1.0));
    let state_of = |i: usize| app.snapshot.backends.get(i).map(|b| b.state);
    let canvas = Canvas::default()
        .block(block(title, false, theme))
        .marker(Marker::Braille)
        .x_bounds([-1.2, 1.2])
        .y_bounds([-1.2, 1.2])
        .paint(|ctx| {
            let circle: Vec<(f64, f64)> = (0..720u32)
                .map(|k| at(k.wrapping_mul(5_965_232), 1.0, aspect))
                .collect();
            ctx.draw(&Points {
                coords: &circle,
                color: if theme.color { Color::DarkGray } else { Color::Reset },
            });
            ctx.layer();
            for &(position, owner) in &app.snapshot.vnodes {
                let state = state_of(owner).unwrap_or(BackendState::Removed);
                let dead = matches!(
                    state,
                    BackendState::Down | BackendState::Killed | BackendState::Removed | BackendState::Drained
                );
                let outer = if state == BackendState::Draining { 1.05 } else { 1.1 };
                let (x1, y1) = at(position, 1.0, aspect);
                let (x2, y2) = at(position, outer, aspect);
                let color = if dead && theme.color {
                    Color::DarkGray
                } else {
                    theme.backend(owner)
                };
                ctx.draw(&Segment { x1, y1, x2, y2, color });
            }
            ctx.layer();
            for (i, name) in names.iter().enumerate() {
                let points: Vec<(f64, f64)> = app
                    .snapshot
                    .sessions
                    .iter()
                    .filter(|s| s.backend == *name)
                    .map(|s| at(s.position, 0.85, aspect))
                    .collect();
                ctx.draw(&Points {
                    coords: &points,
                    color: theme.backend(i),
                });
            }
            if let Some(route) = &app.last_route {
                let owner = names.iter().position(|n| *n == route.backend);
                // The owning vnode: the first of its backend clockwise from the key.
                let vnode = owner.and_then(|o| {
                    let ticks = &app.snapshot.vnodes;
                    ticks
                        .iter()
                        .filter(|(p, b)| *b == o && *p >= route.position)
                        .map(|(p, _)| *p)
                        .next()
                        .or_else(|| ticks.iter().find(|(_, b)| *b == o).map(|(p, _)| *p))
                });
                if let Some(end) = vnode {
                    let span = end.wrapping_sub(route.position);
                    let steps = 48u32;
                    let arc: Vec<(f64, f64)> = (0..=steps)
                        .map(|k| {
                            let p = route
                                .position
                                .wrapping_add((u64::from(span) * u64::from(k) / u64::from(steps)) as u32);
                            at(p, 0.93, aspect)
                        })
                        .collect();
                    let color = if theme.color { Color::White } else { Color::Reset };
                    ctx.draw(&Points { coords: &arc, color });
                }
                let (x, y) = at(route.position, 0.72, aspect);
                ctx.print(x, y, Span::styled("◆", Style::new().add_modifier(Modifier::BOLD)));
            }
        });
    frame.render_widget(canvas, canvas_area);
    let legend: Vec<Line<'_>> = app
        .snapshot
        .backends
        .iter()
        .enumerate()
        .take(legend_rows as usize)
        .map(|(i, b)| {
            Line::from(vec![
                Span::styled("■ ", theme.fg(theme.backend(i))),
                Span::raw(format!("{} {:.1}% of the ring", b.name, b.ring_share * 100.0)),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(legend), legend_area);
}

fn draw_sessions(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    if area.height < 3 {
        return;
    }
    let rows = app.visible_sessions();
    let total = app
        .snapshot
        .stats
        .as_ref()
        .map_or(rows.len() as u64, |s| s.router.sessions);
    let mut title = format!(" sessions {} · by {} ", thousands(total), app.sort.as_str());
    if app.only_selected {
        if let Some(b) = app.selected_backend() {
            title.push_str(&format!("· {} only ", b.name));
        }
    }
    if let Some(f) = &app.filter {
        title.push_str(&format!("· /{f} "));
    }
    let names: Vec<&str> = app.snapshot.backends.iter().map(|b| b.name.as_str()).collect();
    let body: Vec<Row<'_>> = rows
        .iter()
        .skip(app.session_scroll)
        .map(|s| {
            let i = names.iter().position(|n| *n == s.backend).unwrap_or(0);
            Row::new(vec![
                Cell::from(s.key.clone()),
                Cell::from(Span::styled(s.backend.clone(), theme.fg(theme.backend(i)))),
                Cell::from(duration(u64::from(s.age_secs))),
                Cell::from(duration(u64::from(s.idle_secs))),
                Cell::from(s.requests.to_string()),
                Cell::from(s.reassignments.to_string()),
            ])
        })
        .collect();
    let table = Table::new(
        body,
        [
            Constraint::Length(16),
            Constraint::Length(9),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(6),
        ],
    )
    .header(
        Row::new(["key", "backend", "age", "idle", "reqs", "moves"]).style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(block(title, app.focus == Panel::Sessions, theme));
    frame.render_widget(table, area);
}

fn draw_log(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    if area.height < 3 {
        return;
    }
    let inner = area.height.saturating_sub(2) as usize;
    let end = app.log.len().saturating_sub(app.log_scroll);
    let start = end.saturating_sub(inner);
    let lines: Vec<Line<'_>> = app
        .log
        .range(start..end)
        .map(|l| {
            Line::from(vec![
                Span::styled(format!("{:>6} ", duration(l.at_secs)), theme.fg(Color::DarkGray)),
                Span::styled(l.text.clone(), theme.log(l.kind)),
            ])
        })
        .collect();
    let title = if app.frozen {
        " events (paused) ".to_owned()
    } else if app.log_scroll > 0 {
        format!(" events (scrolled back {}) ", app.log_scroll)
    } else {
        " events ".to_owned()
    };
    frame.render_widget(
        Paragraph::new(lines).block(block(title, app.focus == Panel::Log, theme)),
        area,
    );
}

fn draw_help(theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    let width = 74.min(area.width.saturating_sub(2));
    let height = (KEYS.len() as u16 + 4).min(area.height.saturating_sub(2));
    let popup = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    let mut lines: Vec<Line<'_>> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<9}"), theme.fg(Color::Cyan).add_modifier(Modifier::BOLD)),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(" every action goes through the same command as the admin API").alignment(Alignment::Center));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys — ? closes ")),
        popup,
    );
}
