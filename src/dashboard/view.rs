//! Drawing the dashboard from its state: a pure function of [`App`].
//!
//! From the top: the header (addresses, modes, figures), the lesson when
//! one runs, the body (backends, the last change, the ring, sessions, the
//! followed session, the event log — or the ring beside modulo), a
//! one-line flash message about the last action, and the keys that work now.

mod follow;
mod keys;
mod lesson;
mod log;
mod popup;
mod probe;
mod ring;
mod tables;
mod theme;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};

use super::app::{App, Panel, Popup, PromptKind, Viewport};
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
    let [header, band, body, flash, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(lesson::band_height(app, area)),
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(app, &theme, frame, header);
    lesson::draw_band(app, &theme, frame, band, area);
    draw_flash(app, &theme, frame, flash);
    keys::draw(app, &theme, frame, footer);
    let mut areas = Areas::default();
    let ring_area = if app.modulo && app.scene().moves.is_some() {
        ring::draw_modulo(app, &theme, frame, body);
        Rect::default()
    } else {
        draw_body(app, &theme, frame, body, area, &mut areas, &mut viewport)
    };
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
        Some(Popup::Prompt {
            kind: PromptKind::Probe,
            input,
            scroll,
        }) => {
            // Beside the ring, so the walk on it stays in view.
            let beside = if ring_area.width > 0 && body.right() >= ring_area.right() + 40 {
                Rect::new(ring_area.right(), body.y, body.right() - ring_area.right(), body.height)
            } else {
                body
            };
            let (shown, total) = probe::draw(&theme, frame, beside, input, app.probed.as_ref(), *scroll);
            viewport.popup = shown;
            viewport.popup_total = total;
        }
        Some(Popup::Prompt {
            kind: PromptKind::Follow,
            input,
            ..
        }) => follow::prompt(&theme, frame, above, input),
        Some(Popup::Card { scroll }) => {
            let (_, shown, total) = lesson::card(app, &theme, frame, above, *scroll);
            viewport.popup = shown;
            viewport.popup_total = total;
        }
        Some(Popup::Report { scroll }) => {
            let (_, shown, total) = lesson::report(app, &theme, frame, above, *scroll);
            viewport.popup = shown;
            viewport.popup_total = total;
        }
        None => {}
    }
    (areas, viewport)
}

/// Draws the body: backends, the last change, then the ring beside the
/// sessions (and the followed session, the lesson, the event log); returns
/// where the ring went.
fn draw_body(
    app: &App,
    theme: &Theme,
    frame: &mut Frame<'_>,
    body: Rect,
    whole: Rect,
    areas: &mut Areas,
    viewport: &mut Viewport,
) -> Rect {
    let theme = *theme;

    let backends_count = app.scene().snapshot.backends.len() as u16;
    let table_height = (backends_count + 3).min(body.height.saturating_sub(1));
    let remap_lines = remap_lines(app, body.width);
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
    // The lesson's caption goes beside the ring when the band cannot hold it.
    let lesson_panel = app.lesson.is_some() && !lesson::caption_in_band(app, whole);
    let (ring, right, log) = if wide {
        let ring_width = (rest.height * 2 + 2).min(body.width / 2);
        let [left, right] = Layout::horizontal([Constraint::Length(ring_width), Constraint::Min(0)]).areas(rest);
        (left, right, None)
    } else if rest.height >= 6 {
        let log_height = if rest.height >= 20 { rest.height / 3 } else { 0 };
        let [middle, log] = Layout::vertical([Constraint::Min(0), Constraint::Length(log_height)]).areas(rest);
        let ring_width = (middle.height * 2 + 2).min(middle.width * 2 / 5);
        let [ring, right] = Layout::horizontal([Constraint::Length(ring_width), Constraint::Min(0)]).areas(middle);
        (ring, right, Some(log))
    } else {
        (Rect::default(), Rect::default(), Some(Rect::default()))
    };
    let side = stack(app, right, lesson_panel, log.is_none());
    ring::draw(app, &theme, frame, ring);
    areas.session_columns = tables::sessions(app, &theme, frame, side.sessions);
    lesson::draw_panel(app, &theme, frame, side.lesson);
    follow::draw(app, &theme, frame, side.follow);
    let log = log.unwrap_or(side.log);
    log::draw(app, &theme, frame, log);
    if side.sessions.height >= 3 {
        areas.sessions = side.sessions;
        viewport.sessions = side.sessions.height.saturating_sub(3) as usize;
    }
    if log.height >= 3 {
        areas.log = log;
        viewport.log = log.height.saturating_sub(2) as usize;
    }
    ring
}

/// Where the panels beside the ring go.
#[derive(Default)]
struct Side {
    sessions: Rect,
    lesson: Rect,
    follow: Rect,
    log: Rect,
}

/// Stacks the panels beside the ring in `area`: the sessions (or the
/// lesson's caption, unless the sessions have the focus), the followed
/// session, and the event log when `with_log`. Where only one fits, the
/// focused or newest wins.
fn stack(app: &App, area: Rect, lesson_panel: bool, with_log: bool) -> Side {
    let mut side = Side::default();
    let following = app.scene().followed.is_some();
    let sessions_first = app.focus == Panel::Sessions || !lesson_panel;
    let follow_h = follow::wanted_height(app).max(6);
    if with_log {
        // Wide: equal shares, top to bottom.
        let mut parts: Vec<u8> = vec![0];
        if lesson_panel {
            parts.push(1);
        }
        if following {
            parts.push(2);
        }
        parts.push(3);
        let rects = Layout::vertical(parts.iter().map(|_| Constraint::Fill(1))).split(area);
        for (p, r) in parts.iter().zip(rects.iter()) {
            match p {
                0 => side.sessions = *r,
                1 => side.lesson = *r,
                2 => side.follow = *r,
                _ => side.log = *r,
            }
        }
        return side;
    }
    let (top, follow) = if !following {
        (area, Rect::default())
    } else if area.height >= follow_h + 6 {
        let [top, follow] = Layout::vertical([Constraint::Min(0), Constraint::Length(follow_h)]).areas(area);
        (top, follow)
    } else if app.focus == Panel::Sessions {
        (area, Rect::default())
    } else {
        (Rect::default(), area)
    };
    side.follow = follow;
    if sessions_first {
        side.sessions = top;
    } else {
        side.lesson = top;
    }
    side
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

/// The last change, wrapped to at most two lines (three when wide), after
/// the counter of its moves when there is one.
fn remap_lines(app: &App, width: u16) -> Vec<String> {
    let text = match &app.scene().remap {
        Some(r) if width >= 110 => format!("last change: {r}"),
        Some(r) => format!("last change: {}", r.brief()),
        None => "last change: none yet — kill (x), drain (d) or add (a) a backend to see what moves".to_owned(),
    };
    let counter = app.scene().moves.is_some();
    // The counter takes a line of the summary's below 110 columns.
    let most = if width >= 110 { 3 } else { 2 - usize::from(counter) };
    let mut lines = wrap(&text, width.saturating_sub(2) as usize, most);
    if counter {
        lines.insert(0, String::new());
    }
    lines
}

fn draw_remap(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    if area.height == 0 {
        return;
    }
    let mut lines: Vec<Line<'_>> = Vec::new();
    let mut room = area.height as usize;
    if let Some(m) = &app.scene().moves {
        let counter = format!(" {} ", m.headline);
        let hint = "  w watch again · % beside modulo";
        let mut spans = vec![Span::raw(" "), Span::styled(counter.clone(), theme.counter())];
        if width(&counter) + width(hint) < area.width as usize {
            spans.push(Span::styled(hint, theme.dim()));
        }
        lines.push(Line::from(spans));
        room -= 1;
    }
    let summary: Vec<String> = remap_lines(app, area.width)
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect();
    let text = wrap(&summary.join(" "), area.width.saturating_sub(2) as usize, room);
    lines.extend(
        text.into_iter()
            .map(|l| Line::from(Span::styled(format!(" {l}"), theme.fg(Color::Magenta)))),
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
