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
//! The legend gives each backend's fill, its share of new keys as a bar,
//! and the last routed key.

use std::f64::consts::TAU;

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use super::block;
use super::theme::Theme;
use crate::dashboard::app::App;
use crate::dashboard::scene::RING_SAMPLES;
use crate::dashboard::text::fit;
use crate::router::BackendState;

const FULL: f64 = 4_294_967_296.0;

/// The angle of a ring position, clockwise from the top.
fn angle(position: u32) -> f64 {
    TAU * f64::from(position) / FULL
}

/// An ellipse of cells around a centre.
#[derive(Debug, Clone, Copy)]
struct Ellipse {
    cx: f64,
    cy: f64,
    rx: f64,
    ry: f64,
}

impl Ellipse {
    /// The cell at `angle`.
    fn cell(&self, angle: f64) -> (u16, u16) {
        let x = self.cx + self.rx * angle.sin();
        let y = self.cy - self.ry * angle.cos();
        (x.round().max(0.0) as u16, y.round().max(0.0) as u16)
    }

    /// Its cells in clockwise order, each with the ring samples whose angle
    /// falls in it.
    fn cells(&self) -> Vec<((u16, u16), Vec<usize>)> {
        let mut out: Vec<((u16, u16), Vec<usize>)> = Vec::new();
        for i in 0..RING_SAMPLES {
            let cell = self.cell(TAU * i as f64 / RING_SAMPLES as f64);
            // Mostly the cell of the sample before.
            let found = match out.last_mut() {
                Some((c, samples)) if *c == cell => Some(samples),
                _ => out.iter_mut().find(|(c, _)| *c == cell).map(|(_, s)| s),
            };
            match found {
                Some(samples) => samples.push(i),
                None => out.push((cell, vec![i])),
            }
        }
        out
    }
}

/// The most frequent value, ties to the first seen.
fn majority(values: impl Iterator<Item = Option<usize>>) -> Option<usize> {
    let mut counts: Vec<(Option<usize>, usize)> = Vec::new();
    for v in values {
        match counts.iter_mut().find(|(x, _)| *x == v) {
            Some((_, n)) => *n += 1,
            None => counts.push((v, 1)),
        }
    }
    let best = counts.iter().map(|(_, n)| *n).max()?;
    counts.into_iter().find(|(_, n)| *n == best).and_then(|(v, _)| v)
}

/// Draws the ring panel.
pub fn draw(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    if area.width < 12 || area.height < 6 {
        return;
    }
    let snapshot = &app.scene().snapshot;
    // A line per backend (the ring keeps 6 rows), then the last key (8).
    let backends = snapshot.backends.len() as u16;
    let legend_rows = (backends + 1)
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
    draw_legend(app, theme, frame, legend);
}

struct RingWidget<'a> {
    app: &'a App,
    theme: Theme,
}

impl RingWidget<'_> {
    fn state_of(&self, i: usize) -> BackendState {
        let backends = &self.app.scene().snapshot.backends;
        backends.get(i).map_or(BackendState::Removed, |b| b.state)
    }
}

impl Widget for RingWidget<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.width < 8 || area.height < 4 {
            return;
        }
        let scene = self.app.scene();
        let snapshot = &scene.snapshot;
        let theme = self.theme;
        // Cells are about twice as tall as wide: rx ≈ 2 ry keeps it round.
        let ry = (f64::from(area.height) - 1.0) / 2.0;
        let rx = ((f64::from(area.width) - 1.0) / 2.0).min(ry * 2.2);
        let ry = ry.min(rx / 1.8);
        let centre = |rx: f64, ry: f64| Ellipse {
            cx: f64::from(area.x) + (f64::from(area.width) - 1.0) / 2.0,
            cy: f64::from(area.y) + (f64::from(area.height) - 1.0) / 2.0,
            rx,
            ry,
        };
        let track = centre(rx, ry);
        let marks = centre(rx - 2.0, ry - 1.0);
        let dots = centre(rx - 4.0, ry - 2.0);
        let inside = |(x, y): (u16, u16)| x < area.right() && y < area.bottom();

        // The way from the last routed key to its vnode, in ring samples.
        let route = scene.last_route.as_ref().and_then(|r| {
            let owner = snapshot.backends.iter().position(|b| b.name == r.backend)?;
            let end = snapshot
                .vnodes
                .iter()
                .filter(|(p, b)| *b == owner && *p >= r.position)
                .map(|(p, _)| *p)
                .next()
                .or_else(|| snapshot.vnodes.iter().find(|(_, b)| *b == owner).map(|(p, _)| *p))?;
            let sample = |p: u32| (f64::from(p) / FULL * RING_SAMPLES as f64) as usize;
            Some((sample(r.position), sample(end), r.position))
        });
        let on_route = |s: usize| match route {
            Some((from, to, _)) if from <= to => (from..=to).contains(&s),
            Some((from, to, _)) => s >= from || s <= to,
            None => false,
        };

        // Ownership arcs.
        for (cell, samples) in track.cells() {
            if !inside(cell) {
                continue;
            }
            let owner = if snapshot.owners.is_empty() {
                None
            } else {
                majority(samples.iter().map(|&s| snapshot.owners.get(s).copied().flatten()))
            };
            let (symbol, mut style) = match owner {
                Some(i) => (Theme::glyph(i), theme.fg(theme.backend(i))),
                None => ('·', theme.dim()),
            };
            if samples.iter().any(|&s| on_route(s)) {
                style = style.add_modifier(Modifier::REVERSED);
            }
            buf[cell].set_char(symbol).set_style(style);
        }

        // Vnode marks.
        let mut marked: Vec<((u16, u16), usize, usize)> = Vec::new();
        for &(position, owner) in &snapshot.vnodes {
            let cell = marks.cell(angle(position));
            match marked.iter_mut().find(|(c, _, _)| *c == cell) {
                Some((_, first, n)) => {
                    if *first != owner {
                        *n += 1;
                    }
                }
                None => marked.push((cell, owner, 0)),
            }
        }
        for (cell, owner, others) in marked {
            if !inside(cell) {
                continue;
            }
            let state = self.state_of(owner);
            let (symbol, colour) = match state {
                BackendState::Up => ('•', theme.backend(owner)),
                BackendState::Draining => ('◦', theme.backend(owner)),
                _ => ('×', if theme.color { Color::DarkGray } else { Color::Reset }),
            };
            let style = if others > 0 { Style::new() } else { theme.fg(colour) };
            buf[cell].set_char(symbol).set_style(style);
        }

        // Sessions, then the last routed key.
        for (i, b) in snapshot.backends.iter().enumerate() {
            for s in snapshot.sessions.iter().filter(|s| s.backend == b.name) {
                let cell = dots.cell(angle(s.position));
                if inside(cell) {
                    buf[cell].set_char('·').set_style(theme.fg(theme.backend(i)));
                }
            }
        }
        if let Some((_, _, position)) = route {
            let cell = dots.cell(angle(position));
            if inside(cell) {
                buf[cell]
                    .set_char('◆')
                    .set_style(Style::new().add_modifier(Modifier::BOLD));
            }
        }

        // The vnode count in the middle, when there is room.
        if dots.ry >= 3.0 && dots.rx >= 8.0 {
            let lines = [super::vnodes(snapshot.vnodes_per_weight), "per weight".to_owned()];
            for (k, text) in lines.iter().enumerate() {
                let w = text.chars().count() as u16;
                let x = (track.cx - f64::from(w) / 2.0 + 0.5).max(f64::from(area.x)) as u16;
                let y = track.cy as u16 + k as u16;
                if y < area.bottom() {
                    buf.set_string(x, y, text, theme.dim());
                }
            }
        }
    }
}

fn draw_legend(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
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
    let mut lines: Vec<Line<'_>> = Vec::new();
    if let Some(r) = &scene.last_route {
        lines.push(Line::from(vec![
            Span::styled("◆ ", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(fit(
                &format!("last key {} → {}", r.key, r.backend),
                width.saturating_sub(2),
            )),
        ]));
    }
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
    let skip = lines
        .len()
        .saturating_sub(area.height as usize)
        .min(usize::from(scene.last_route.is_some()));
    let lines: Vec<Line<'_>> = lines.into_iter().skip(skip).take(area.height as usize).collect();
    frame.render_widget(Paragraph::new(lines), area);
}
