//! Drawing the dashboard from its state: a pure function of [`App`].
//!
//! From the top: the header (addresses, modes, figures), the lesson when
//! one runs, the body (backends, the last change, the ring, sessions, the
//! event log), a one-line flash message about the last action, and the
//! keys that work now.

mod log;
mod popup;
mod ring;
mod tables;
mod theme;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use super::app::{App, Mode, Panel, Popup, Viewport};
use super::input::Areas;
use super::text::{fit, width, wrap};
use crate::text::thousands;
pub use tables::sparkline;
pub use theme::{GLYPHS, Theme, state_label};

/// Smallest terminal the dashboard draws in.
pub const MIN_SIZE: (u16, u16) = (40, 10);

/// Draws everything; returns where the panels went, for the mouse, and
/// what each could show (for paging).
pub fn draw(app: &App, frame: &mut Frame<'_>) -> (Areas, Viewport) {
    let area = frame.area();
    let theme = Theme { color: !app.no_color };
    let mut viewport = Viewport::default();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let text = format!(
            "enlarge the terminal to {}×{} or more (q quits)",
            MIN_SIZE.0, MIN_SIZE.1
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return (Areas::default(), viewport);
    }
    let lesson_height = lesson_height(app, area);
    let [header, lesson, body, flash, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(lesson_height),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(app, &theme, frame, header);
    draw_lesson(app, &theme, frame, lesson);
    draw_flash(app, &theme, frame, flash);
    draw_footer(app, &theme, frame, footer);

    let backends_count = app.scene().snapshot.backends.len() as u16;
    let table_height = (backends_count + 3).min(body.height.saturating_sub(1));
    let remap_lines = remap_lines(app, body.width);
    let mut areas = Areas::default();
    let wide = body.width >= 110 && body.height >= 24;
    let remap_height = if wide || body.height > table_height + 8 {
        remap_lines.len() as u16
    } else if body.height > table_height + 6 {
        1
    } else {
        0
    };
    let [backends, remap, rest] = Layout::vertical([
        Constraint::Length(table_height),
        Constraint::Length(remap_height),
        Constraint::Min(0),
    ])
    .areas(body);
    areas.backends = backends;
    areas.backends_offset = tables::backends(app, &theme, frame, backends);
    viewport.backends = backends.height.saturating_sub(3) as usize;
    draw_remap(app, &theme, frame, remap);
    let (ring, sessions, log) = if wide {
        let ring_width = (rest.height * 2 + 2).min(body.width / 2);
        let [left, right] = Layout::horizontal([Constraint::Length(ring_width), Constraint::Min(0)]).areas(rest);
        let [sessions, log] = Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
        (left, sessions, log)
    } else if rest.height >= 6 {
        let log_height = if rest.height >= 20 { rest.height / 3 } else { 0 };
        let [middle, log] = Layout::vertical([Constraint::Min(0), Constraint::Length(log_height)]).areas(rest);
        let ring_width = (middle.height * 2 + 2).min(middle.width * 2 / 5);
        let [ring, sessions] = Layout::horizontal([Constraint::Length(ring_width), Constraint::Min(0)]).areas(middle);
        (ring, sessions, log)
    } else {
        (Rect::default(), Rect::default(), Rect::default())
    };
    ring::draw(app, &theme, frame, ring);
    areas.session_columns = tables::sessions(app, &theme, frame, sessions);
    log::draw(app, &theme, frame, log);
    if sessions.height >= 3 {
        areas.sessions = sessions;
        viewport.sessions = sessions.height.saturating_sub(3) as usize;
    }
    if log.height >= 3 {
        areas.log = log;
        viewport.log = log.height.saturating_sub(2) as usize;
    }
    // Popups leave the flash line and the keys in view.
    let above = Rect {
        height: area.height.saturating_sub(2),
        ..area
    };
    match &app.popup {
        Some(Popup::Help { scroll }) => {
            let (help, shown, total) = popup::help(app, &theme, frame, above, *scroll);
            areas.help = help;
            viewport.help = shown;
            viewport.help_total = total;
        }
        Some(Popup::Confirm(c)) => popup::confirm(&theme, frame, above, c),
        Some(Popup::Picker(p)) => popup::picker(&theme, frame, above, p),
        None => {}
    }
    (areas, viewport)
}

/// `12s`, `3m05s`, `1h02m`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `1 vnode`, `150 vnodes`.
fn vnodes(n: u32) -> String {
    crate::text::plural(u64::from(n), "vnode")
}

/// A panel's frame, bright when it has the focus.
fn block<'a>(title: String, focused: bool, theme: &Theme) -> Block<'a> {
    let b = Block::new().borders(Borders::ALL).title(title);
    if focused {
        b.border_style(theme.fg(Color::Cyan).add_modifier(Modifier::BOLD))
    } else {
        b.border_style(theme.dim())
    }
}

/// The groups of spans that fit `room`, chosen by `priority` (most
/// important first), shown in their own order: a figure is dropped whole,
/// never cut.
fn fit_groups<'a>(groups: Vec<Vec<Span<'a>>>, priority: &[usize], room: usize) -> Line<'a> {
    let widths: Vec<usize> = groups
        .iter()
        .map(|g| g.iter().map(|s| width(&s.content)).sum())
        .collect();
    let mut chosen = Vec::new();
    let mut used = 0;
    for &i in priority {
        if i < groups.len() && used + widths[i] <= room {
            used += widths[i];
            chosen.push(i);
        }
    }
    chosen.sort_unstable();
    let mut groups: Vec<Option<Vec<Span<'a>>>> = groups.into_iter().map(Some).collect();
    Line::from(
        chosen
            .into_iter()
            .flat_map(|i| groups[i].take().unwrap_or_default())
            .collect::<Vec<_>>(),
    )
}

fn draw_header(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    let scene = app.scene();
    let s = &scene.snapshot;
    let stats = s.stats.as_ref();
    let wide = area.width >= 120;
    let room = area.width as usize;
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let label = |t: &'static str| Span::styled(t, theme.dim());
    let gap = |narrow: &'static str, wide_text: &'static str| label(if wide { wide_text } else { narrow });
    let affinity = stats.map_or("-".into(), |st| st.affinity.to_string());
    let placement = stats.map_or("-".into(), |st| st.placement.to_string());
    let name = if app.is_frozen() {
        Span::styled(
            " ❚❚ FROZEN ",
            theme
                .fg(Color::Yellow)
                .add_modifier(Modifier::BOLD | Modifier::REVERSED),
        )
    } else {
        Span::styled(" ringside ", bold.patch(theme.fg(Color::Cyan)))
    };
    let mut line1 = vec![
        vec![name],
        vec![label(" proxy "), Span::raw(s.proxy.clone())],
        vec![gap(" admin ", "  admin "), Span::raw(s.admin.clone())],
        vec![gap(" · ", "  affinity "), Span::styled(affinity, bold)],
        vec![gap(" · ", "  placement "), Span::styled(placement, bold)],
    ];
    if let Some(store) = stats.and_then(|st| st.store.as_ref()) {
        use crate::store::StoreState;
        let (text, style) = match store.state {
            StoreState::Ok => ("redis ok", theme.fg(Color::Green)),
            StoreState::Connecting => ("redis connecting", theme.fg(Color::Yellow)),
            StoreState::Degraded => ("REDIS DEGRADED", theme.fg(Color::Red).add_modifier(Modifier::BOLD)),
        };
        let mut group = vec![gap(" · ", "  store "), Span::styled(text, style)];
        if wide {
            group.push(Span::styled(
                format!(" {}/{} keys", store.keys, store.keys_max),
                theme.fg(Color::DarkGray),
            ));
        }
        line1.push(group);
    }
    let err_rate = if scene.rps == 0 {
        0.0
    } else {
        100.0 * scene.errors_per_sec as f64 / scene.rps as f64
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
        vec![],
        vec![label(" req/s "), Span::styled(scene.rps.to_string(), bold)],
        vec![
            gap(" err ", "  errors "),
            Span::styled(format!("{err_rate:.1}%"), alarm(err_rate > 0.0)),
        ],
        vec![
            gap(" sess ", "  sessions "),
            Span::styled(thousands(stats.map_or(0, |st| st.router.sessions)), bold),
        ],
        vec![
            gap(" moved ", "  moved "),
            Span::styled(thousands(stats.map_or(0, |st| st.router.reassigned)), bold),
        ],
        vec![gap(" lost ", "  lost "), Span::styled(thousands(lost), alarm(lost > 0))],
        vec![
            gap(" up ", "  up "),
            Span::raw(duration(stats.map_or(0, |st| st.uptime_secs))),
        ],
        vec![
            label("  requests "),
            Span::raw(thousands(stats.map_or(0, |st| st.responses.total))),
        ],
        vec![
            label("  dropped events "),
            Span::raw(thousands(stats.map_or(0, |st| st.dropped_events))),
        ],
        match s.traffic {
            Some((true, rate)) => vec![label("  traffic "), Span::raw(format!("{rate:.0}/s"))],
            Some((false, _)) => vec![label("  traffic "), Span::raw("paused")],
            None => vec![label("  traffic "), Span::raw("off")],
        },
    ];
    if s.nothing_available() {
        line2[0].push(Span::styled(
            " ⚠ no backend takes requests: clients get 503 ",
            theme.fg(Color::Red).add_modifier(Modifier::BOLD | Modifier::REVERSED),
        ));
    }
    let line1 = fit_groups(line1, &[0, 1, 3, 4, 5, 2], room);
    let line2 = fit_groups(line2, &[0, 1, 5, 3, 4, 2, 9, 6, 7, 8], room);
    frame.render_widget(Paragraph::new(vec![line1, line2]), area);
}

/// The last change, wrapped to at most two lines (three when wide).
fn remap_lines(app: &App, width: u16) -> Vec<String> {
    let text = match &app.scene().remap {
        Some(r) if width >= 110 => format!("last change: {r}"),
        Some(r) => format!("last change: {}", r.brief()),
        None => "last change: none yet — kill (x), drain (d) or add (a) a backend to see what moves".to_owned(),
    };
    let most = if width >= 110 { 3 } else { 2 };
    wrap(&text, width.saturating_sub(2) as usize, most)
}

fn draw_remap(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    if area.height == 0 {
        return;
    }
    let lines = wrap(
        &remap_lines(app, area.width).join(" "),
        area.width.saturating_sub(2) as usize,
        area.height as usize,
    );
    let lines: Vec<Line<'_>> = lines.into_iter().map(|l| Line::from(format!(" {l}"))).collect();
    frame.render_widget(Paragraph::new(lines).style(theme.fg(Color::Magenta)), area);
}

fn lesson_height(app: &App, area: Rect) -> u16 {
    let Some(lesson) = &app.lesson else { return 0 };
    if area.height < 30 {
        return 2;
    }
    let text = lesson.about.iter().skip(1).filter(|l| !l.is_empty()).count() as u16;
    (2 + text).min(area.height / 5).max(2)
}

fn draw_lesson(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    let Some(lesson) = &app.lesson else { return };
    if area.height == 0 {
        return;
    }
    let w = area.width.saturating_sub(1) as usize;
    let mut title = lesson.about.first().cloned().unwrap_or_else(|| lesson.name.clone());
    if area.height <= 2 && lesson.about.len() > 1 {
        title.push_str(" (? shows the whole lesson)");
    }
    let mut lines = vec![Line::from(vec![
        Span::styled(" lesson ", theme.badge()),
        Span::styled(
            fit(&format!(" {title}"), w.saturating_sub(8)),
            Style::new().add_modifier(Modifier::BOLD),
        ),
    ])];
    let total = lesson.steps.len();
    let status = if lesson.ended {
        "the lesson has ended — q quits and prints the report".to_owned()
    } else {
        let now = match lesson.current {
            Some(i) => {
                let step = &lesson.steps[i];
                let outcome = lesson.outcome.as_deref().map_or(String::new(), |o| format!(" — {o}"));
                format!(
                    "step {}/{total} at {:.0}s: {}{outcome}",
                    i + 1,
                    step.at_secs,
                    step.label
                )
            }
            None => format!("{:.0}s in, {total} steps to come", lesson.elapsed_secs),
        };
        match lesson.next() {
            Some((step, wait)) => format!("next in {wait:.0}s: {} · {now}", step.label),
            None => format!(
                "ends in {:.0}s · {now}",
                (lesson.duration_secs - lesson.elapsed_secs).max(0.0)
            ),
        }
    };
    lines.push(Line::from(Span::styled(
        fit(&format!(" {status}"), w),
        theme.fg(Color::Cyan),
    )));
    let text = lesson
        .about
        .iter()
        .skip(1)
        .filter(|l| !l.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let room = area.height.saturating_sub(2) as usize;
    lines.extend(
        wrap(&text, w.saturating_sub(1), room)
            .into_iter()
            .map(|l| Line::from(format!(" {l}"))),
    );
    frame.render_widget(Paragraph::new(lines), area);
}

fn draw_flash(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    let Some(flash) = &app.flash else { return };
    let (mark, style) = theme.flash(flash.kind);
    let text = fit(&flash.text, (area.width as usize).saturating_sub(3));
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(format!(" {mark}"), style),
            Span::styled(text, style),
        ])),
        area,
    );
}

/// The keys that work now, most useful first.
fn hints(app: &App) -> Vec<(&'static str, &'static str)> {
    match app.mode() {
        Mode::Typing => vec![("Enter", "keep"), ("Esc", "clear"), ("Ctrl-C", "quit")],
        Mode::Confirm => vec![("y", "yes"), ("n/Esc", "no")],
        Mode::Picker => vec![("j/k", "move"), ("Enter", "pick"), ("1-9", "pick"), ("Esc", "close")],
        Mode::Help => vec![("j/k", "scroll"), ("Esc ?", "close")],
        Mode::Normal => {
            let mut h = match app.focus {
                Panel::Backends => vec![
                    ("j/k", "select"),
                    ("x", "kill"),
                    ("r", "revive"),
                    ("d", "drain"),
                    ("+/-", "weight"),
                    ("a", "add"),
                    ("p", "placement"),
                    ("m", "affinity"),
                    ("v", "vnodes"),
                    ("space", "freeze"),
                    ("Tab", "panel"),
                ],
                Panel::Sessions => vec![
                    ("j/k", "scroll"),
                    ("s", "sort"),
                    ("/", "filter"),
                    ("Enter", "selected only"),
                    ("g/G", "top/end"),
                    ("Tab", "panel"),
                ],
                Panel::Log => vec![("j/k", "scroll"), ("g/G", "oldest/newest"), ("Tab", "panel")],
            };
            if app.filter.is_some() || app.focus != Panel::Backends || app.only_selected {
                h.insert(0, ("Esc", "back"));
            }
            h
        }
    }
}

fn draw_footer(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
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
