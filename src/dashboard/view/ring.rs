//! The hash ring, drawn in character cells so that it reads at any vnode
//! count and without colour. From the outside in:
//!
//! - ownership: each cell of the outer track shows, in its backend's fill
//!   (█ ░ ▒ …) and colour, which backend a new key landing there goes to
//!   now — the arcs of each backend's share;
//! - vnodes: a mark where each virtual node sits (`•`, `◦` draining,
//!   `×` out of service);
//! - sessions: a dot at each live session's key, and `◆` at the last
//!   routed key, whose way clockwise to its vnode is highlighted.
//!
//! Over it: after a topology change the sessions it moved (`●`) glide
//! clockwise to their new owner's vnode; the followed session is `◎`; a
//! probed key is `◇`, its walk highlighted, each vnode it passed by `×`
//! and its owner `◈`. The legend gives each backend's fill, its share of
//! new keys as a bar, and what the marks stand for. `twin` draws the ring
//! beside `hash % N`.

mod canvas;
mod twin;

use std::collections::HashSet;

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::block;
use super::theme::Theme;
use crate::dashboard::app::App;
use crate::dashboard::moves::clockwise;
use crate::dashboard::scene::{Snapshot, Tick};
use crate::dashboard::text::fit;
use crate::router::BackendState;
use crate::router::probe::Probe;
use crate::text::thousands;
use canvas::{Canvas, sample};
pub use twin::draw as draw_modulo;

/// The position of `backend`'s first vnode clockwise from `position`.
fn next_vnode(vnodes: &[Tick], backend: usize, position: u32) -> Option<u32> {
    vnodes
        .iter()
        .filter(|(_, b)| *b == backend)
        .map(|(p, _)| p.wrapping_sub(position))
        .min()
        .map(|d| position.wrapping_add(d))
}

fn index_of(snapshot: &Snapshot, name: &str) -> Option<usize> {
    snapshot.backends.iter().position(|b| b.name == name)
}

/// The probe shown on the ring, while its box is open.
fn probe(app: &App) -> Option<&Probe> {
    app.probing()?;
    app.probed.as_ref()?.result.as_ref().ok()
}

/// Draws the ring panel.
pub fn draw(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    if area.width < 12 || area.height < 6 {
        return;
    }
    let snapshot = &app.scene().snapshot;
    let extras = legend_extras(app, area.width as usize);
    // A line per backend (the ring keeps 6 rows), then the marks (8).
    let backends = snapshot.backends.len() as u16;
    let extra_rows = extras.len().max(1) as u16;
    let legend_rows = (backends + extra_rows)
        .min(area.height.saturating_sub(8))
        .max(backends.min(area.height.saturating_sub(6)));
    let [canvas, legend] = Layout::vertical([Constraint::Min(0), Constraint::Length(legend_rows)]).areas(area);
    let vnodes = super::vnodes(snapshot.vnodes_per_weight);
    let title = [
        format!(" hash ring · {vnodes}/weight "),
        format!(" ring · {vnodes} "),
        " ring ".to_owned(),
    ]
    .into_iter()
    .find(|t| crate::dashboard::text::width(t) + 2 <= canvas.width as usize)
    .unwrap_or_default();
    let outer = block(title, false, theme);
    let inner = outer.inner(canvas);
    frame.render_widget(outer, canvas);
    RingWidget { app, theme: *theme }.render(inner, frame.buffer_mut());
    draw_legend(app, theme, frame, legend, extras);
}

/// A stretch of the ring, clockwise, in ring samples: from, to.
type Way = (usize, usize);

struct RingWidget<'a> {
    app: &'a App,
    theme: Theme,
}

impl RingWidget<'_> {
    fn state_of(&self, i: usize) -> BackendState {
        let backends = &self.app.scene().snapshot.backends;
        backends.get(i).map_or(BackendState::Removed, |b| b.state)
    }

    /// The way to highlight, in ring samples, and the key it starts from:
    /// a probed key's walk, or the last routed key's.
    fn way(&self) -> (Option<Way>, Option<(u32, char)>) {
        let scene = self.app.scene();
        let snapshot = &scene.snapshot;
        if let Some(p) = probe(self.app) {
            let end = p.walk.owner.as_ref().or(p.walk.steps.last()).map(|s| s.position);
            return (end.map(|e| (sample(p.position), sample(e))), Some((p.position, '◇')));
        }
        let Some(r) = &scene.last_route else {
            return (None, None);
        };
        let way = index_of(snapshot, &r.backend)
            .and_then(|owner| next_vnode(&snapshot.vnodes, owner, r.position))
            .map(|end| (sample(r.position), sample(end)));
        (way, Some((r.position, '◆')))
    }
}

impl Widget for RingWidget<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let Some(canvas) = Canvas::new(area) else { return };
        let scene = self.app.scene();
        let snapshot = &scene.snapshot;
        let theme = self.theme;
        let (way, key) = self.way();
        canvas.arcs(buf, &snapshot.owners, way, &theme);
        canvas.vnodes(buf, &snapshot.vnodes, |i| self.state_of(i), &theme);
        if let Some(p) = probe(self.app) {
            for s in &p.walk.steps {
                let (symbol, style) = match s.skip {
                    Some(_) => ('×', Style::new().add_modifier(Modifier::BOLD)),
                    None => ('◈', Style::new().add_modifier(Modifier::BOLD)),
                };
                canvas.mark(buf, s.position, symbol, style);
            }
        }

        // Sessions: those the watched change moved glide instead.
        let watched = self.app.watching().zip(scene.moves.as_ref());
        let moving: HashSet<u64> = watched
            .map(|(_, m)| m.moved().map(|s| s.fingerprint).collect())
            .unwrap_or_default();
        for s in &snapshot.sessions {
            if moving.contains(&s.fingerprint) {
                continue;
            }
            if let Some(i) = index_of(snapshot, &s.backend) {
                canvas.dot(buf, s.position, '·', theme.fg(theme.backend(i)));
            }
        }
        if let Some((watch, moves)) = watched {
            let t = watch.progress();
            for s in moves.moved() {
                let (from, to) = (index_of(snapshot, &s.from), index_of(snapshot, &s.to));
                let end = to
                    .and_then(|i| next_vnode(&snapshot.vnodes, i, s.position))
                    .unwrap_or(s.position);
                let colour = if t < 0.5 { from } else { to };
                let style = colour.map_or(Style::new(), |i| theme.fg(theme.backend(i)));
                canvas.dot(
                    buf,
                    clockwise(s.position, end, t),
                    '●',
                    style.add_modifier(Modifier::BOLD),
                );
            }
        }
        if let Some((position, symbol)) = key {
            canvas.dot(buf, position, symbol, Style::new().add_modifier(Modifier::BOLD));
        }
        // The followed session last: it stays marked whatever lands beside it.
        if let Some(f) = &scene.followed
            && let Some(position) = f.position
        {
            let colour = f
                .history
                .backend
                .as_deref()
                .and_then(|b| index_of(snapshot, b))
                .map_or(Style::new(), |i| theme.fg(theme.backend(i)));
            canvas.dot(buf, position, '◎', colour.add_modifier(Modifier::BOLD));
        }

        // In the middle: the change's counter while it is watched, else the vnodes.
        let centre: Vec<(String, Style)> = match watched {
            Some((_, m)) => {
                let bold = Style::new().add_modifier(Modifier::BOLD);
                let kept = m.summary.sessions.saturating_sub(m.summary.moved);
                vec![
                    (format!("moved {}", thousands(m.summary.moved)), bold),
                    (format!("kept {}", thousands(kept)), bold),
                    (format!("modulo {}", thousands(m.summary.modulo)), bold),
                ]
            }
            None => vec![
                (super::vnodes(snapshot.vnodes_per_weight), theme.dim()),
                ("per weight".to_owned(), theme.dim()),
            ],
        };
        canvas.centre(buf, &centre);
    }
}

/// The legend's lines above the backends: what the marks on the ring
/// stand for now, least needed first (they give way first).
fn legend_extras(app: &App, width: usize) -> Vec<Line<'static>> {
    let scene = app.scene();
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let room = width.saturating_sub(2);
    let mut out = Vec::new();
    if let Some(p) = probe(app) {
        let skipped = p.walk.steps.iter().filter(|s| s.skip.is_some()).count() + p.walk.unlisted;
        let owner = p.walk.owner.as_ref().map_or("no backend", |o| o.backend.as_str());
        let text = format!("probe → {owner}, {} passed by", thousands(skipped as u64));
        out.push(Line::from(vec![Span::styled("◇ ", bold), Span::raw(fit(&text, room))]));
    } else if let Some(r) = &scene.last_route {
        let text = format!("last key {} → {}", r.key, r.backend);
        out.push(Line::from(vec![Span::styled("◆ ", bold), Span::raw(fit(&text, room))]));
    }
    if let Some(m) = app.watching().and(scene.moves.as_ref()) {
        let text = format!("moved by {}: {}", m.summary.backend, thousands(m.summary.moved));
        out.push(Line::from(vec![Span::styled("● ", bold), Span::raw(fit(&text, room))]));
    }
    if let Some(f) = &scene.followed {
        let on = f.history.backend.as_deref().unwrap_or("ended");
        let who = f
            .history
            .client
            .map_or_else(|| f.history.session.clone(), |c| format!("client-{c}"));
        let text = format!("{who} on {on}");
        out.push(Line::from(vec![Span::styled("◎ ", bold), Span::raw(fit(&text, room))]));
    }
    out
}

fn draw_legend(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect, extras: Vec<Line<'static>>) {
    if area.height == 0 {
        return;
    }
    let scene = app.scene();
    let width = area.width as usize;
    let name_w = scene
        .snapshot
        .backends
        .iter()
        .map(|b| b.name.chars().count())
        .max()
        .unwrap_or(0);
    let bar_w = width.saturating_sub(name_w + 10).min(10);
    // Half the bar is an even share of the backends that take new keys.
    let taking = scene
        .snapshot
        .backends
        .iter()
        .filter(|b| b.state.takes_new_sessions())
        .count()
        .max(1);
    let even = 1.0 / taking as f64;
    let extra = extras.len();
    let mut lines: Vec<Line<'_>> = extras;
    for (i, b) in scene.snapshot.backends.iter().enumerate() {
        let glyph = Theme::glyph(i);
        let colour = theme.fg(theme.backend(i));
        let mut spans = vec![
            Span::styled(format!("{glyph} "), colour),
            Span::raw(format!("{:<name_w$} ", b.name)),
        ];
        if b.state.takes_new_sessions() {
            let filled = ((b.ring_share / (2.0 * even) * bar_w as f64).round() as usize)
                .clamp(usize::from(b.ring_share > 0.0), bar_w);
            spans.push(Span::styled(glyph.to_string().repeat(filled), colour));
            spans.push(Span::styled("·".repeat(bar_w - filled), theme.dim()));
            spans.push(Span::raw(format!(" {:.1}%", b.ring_share * 100.0)));
        } else {
            spans.push(Span::styled(
                fit(&format!("{}: no new keys", b.state), width.saturating_sub(name_w + 3)),
                theme.dim(),
            ));
        }
        lines.push(Line::from(spans));
    }
    let skip = lines.len().saturating_sub(area.height as usize).min(extra);
    let lines: Vec<Line<'_>> = lines.into_iter().skip(skip).take(area.height as usize).collect();
    frame.render_widget(Paragraph::new(lines), area);
}
