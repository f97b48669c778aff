//! Probing a key: the box where it is typed and what the router says of
//! it — its hash, its position on the ring, the clockwise walk to the
//! owning vnode with why each vnode before it was passed by, and where a
//! request with it goes now. The ring beside it marks the same walk.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use super::popup::frame_box;
use super::theme::Theme;
use crate::dashboard::app::Probed;
use crate::dashboard::text::{fit, wrap};
use crate::router::probe::Probe;
use crate::text::thousands;

/// The answer's lines for a box `w` columns wide.
fn answer(p: &Probe, theme: &Theme, w: usize) -> Vec<Line<'static>> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut out: Vec<Line<'static>> = Vec::new();
    let mut text = |t: String, style: Style| {
        for l in wrap(&t, w, 4) {
            out.push(Line::from(Span::styled(l, style)));
        }
    };
    text(format!("read as {}", p.read_as), theme.dim());
    text(
        format!(
            "hash: {} = {:#010x} → position {} ◇ ({:.1}° clockwise from the top)",
            p.hashed,
            p.position,
            thousands(u64::from(p.position)),
            (p.degrees * 10.0).floor() / 10.0
        ),
        Style::new(),
    );
    text(format!("walk clockwise under {}:", p.placement), bold);
    for s in &p.walk.steps {
        let (mark, verdict, style) = match &s.skip {
            Some(why) => ("×", format!("skipped: {} is {why}", s.backend), theme.fg(Color::Yellow)),
            None => (
                "◈",
                "owner".to_owned(),
                theme.fg(Color::Green).add_modifier(Modifier::BOLD),
            ),
        };
        let line = format!(" {mark} #{:<4} {:<10} {verdict}", s.index, s.vnode);
        out.push(Line::from(Span::styled(fit(&line, w), style)));
    }
    if p.walk.unlisted > 0 {
        out.push(Line::from(format!(
            "   … and {} more skipped",
            thousands(p.walk.unlisted as u64)
        )));
    }
    let mut text = |t: String, style: Style| {
        for l in wrap(&t, w, 4) {
            out.push(Line::from(Span::styled(l, style)));
        }
    };
    let owner = match &p.walk.owner {
        Some(o) => format!("owner: {} (vnode {})", o.backend, o.vnode),
        None => "owner: none — no backend takes new keys".to_owned(),
    };
    let modulo = p
        .modulo
        .as_ref()
        .map_or(String::new(), |m| format!(" · hash % N would pick {m}"));
    text(format!("{owner}{modulo}"), bold);
    if let Some(c) = &p.cookie_names {
        text(format!("the cookie names {c}"), Style::new());
    }
    match &p.session {
        Some(s) => text(
            format!("session {} on {} (moved {} times)", s.name, s.backend, s.reassignments),
            Style::new(),
        ),
        None => text("no session for this key yet".to_owned(), Style::new()),
    }
    if let Some(d) = &p.routes_to {
        let via = serde_json::to_value(d.via)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        text(format!("a request now goes to {} by {via}", d.backend), bold);
    }
    for n in &p.notes {
        text(format!("note: {n}"), theme.dim());
    }
    out
}

/// Draws the probe box in `area`; returns the answer's lines shown at once
/// and in all.
pub fn draw(
    theme: &Theme,
    frame: &mut Frame<'_>,
    area: Rect,
    input: &str,
    probed: Option<&Probed>,
    scroll: usize,
) -> (usize, usize) {
    if area.width < 20 || area.height < 5 {
        return (0, 0);
    }
    let w = area.width.saturating_sub(4) as usize;
    let title = fit(" probe a key — Enter probes · ↑/↓ scroll · Esc closes ", w + 2);
    let outer = frame_box(title, theme).padding(ratatui::widgets::Padding::horizontal(1));
    let inner = outer.inner(area);
    frame.render_widget(Clear, area);
    frame.render_widget(outer, area);
    let key = Line::from(vec![
        Span::styled("key: ", theme.dim()),
        Span::styled(
            fit(&format!("{input}▏"), w.saturating_sub(5)),
            Style::new().add_modifier(Modifier::BOLD),
        ),
    ]);
    let body: Vec<Line<'static>> = match probed {
        None => wrap(
            "type a key — a session id, a client address, or a balancer cookie as the browser sends it — \
             and Enter: its hash, its place on the ring, and the clockwise walk to its owner",
            w,
            8,
        )
        .into_iter()
        .map(|t| Line::from(Span::styled(t, theme.dim())))
        .collect(),
        Some(Probed { result: Err(e), .. }) => wrap(&format!("✗ {e}"), w, 8)
            .into_iter()
            .map(|t| Line::from(Span::styled(t, theme.fg(Color::Red).add_modifier(Modifier::BOLD))))
            .collect(),
        Some(Probed { result: Ok(p), .. }) => answer(p, theme, w),
    };
    let shown = (inner.height as usize).saturating_sub(2);
    let total = body.len();
    let scroll = scroll.min(total.saturating_sub(shown));
    let mut lines = vec![key, Line::from("")];
    lines.extend(body.into_iter().skip(scroll).take(shown));
    frame.render_widget(Paragraph::new(lines), inner);
    (shown, total)
}
