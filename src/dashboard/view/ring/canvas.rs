//! The ring's geometry in character cells: three concentric ellipses —
//! the track (ownership arcs), the vnode marks, the session dots — and
//! the primitives that draw on them. Cells are about twice as tall as
//! wide, so the ellipses are twice as wide as tall and read as circles.

use std::f64::consts::TAU;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};

use super::super::theme::Theme;
use crate::dashboard::scene::{RING_SAMPLES, Tick};
use crate::router::BackendState;

const FULL: f64 = 4_294_967_296.0;

/// The angle of a ring position, clockwise from the top.
fn angle(position: u32) -> f64 {
    TAU * f64::from(position) / FULL
}

/// The ring sample a position falls in.
pub fn sample(position: u32) -> usize {
    (f64::from(position) / FULL * RING_SAMPLES as f64) as usize
}

/// Whether sample `s` lies on the clockwise way from `from` to `to`.
pub fn on_way(way: Option<(usize, usize)>, s: usize) -> bool {
    match way {
        Some((from, to)) if from <= to => (from..=to).contains(&s),
        Some((from, to)) => s >= from || s <= to,
        None => false,
    }
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

/// A ring drawn in `area`.
#[derive(Debug, Clone, Copy)]
pub struct Canvas {
    area: Rect,
    track: Ellipse,
    marks: Ellipse,
    dots: Ellipse,
}

impl Canvas {
    /// The ring that fits `area`; `None` when it is too small for one.
    pub fn new(area: Rect) -> Option<Canvas> {
        if area.width < 8 || area.height < 4 {
            return None;
        }
        let ry = (f64::from(area.height) - 1.0) / 2.0;
        let rx = ((f64::from(area.width) - 1.0) / 2.0).min(ry * 2.2);
        let ry = ry.min(rx / 1.8);
        let centre = |rx: f64, ry: f64| Ellipse {
            cx: f64::from(area.x) + (f64::from(area.width) - 1.0) / 2.0,
            cy: f64::from(area.y) + (f64::from(area.height) - 1.0) / 2.0,
            rx,
            ry,
        };
        Some(Canvas {
            area,
            track: centre(rx, ry),
            marks: centre(rx - 2.0, ry - 1.0),
            dots: centre(rx - 4.0, ry - 2.0),
        })
    }

    fn inside(&self, (x, y): (u16, u16)) -> bool {
        x < self.area.right() && y < self.area.bottom()
    }

    fn put(&self, buf: &mut Buffer, cell: (u16, u16), symbol: char, style: Style) {
        if self.inside(cell) {
            buf[cell].set_char(symbol).set_style(style);
        }
    }

    /// The track: each cell in the fill and colour of the backend that owns
    /// most of its samples for a new key (`·` where none does); cells on
    /// `way` (ring samples) are reversed.
    pub fn arcs(&self, buf: &mut Buffer, owners: &[Option<usize>], way: Option<(usize, usize)>, theme: &Theme) {
        for (cell, samples) in self.track.cells() {
            let owner = if owners.is_empty() {
                None
            } else {
                majority(samples.iter().map(|&s| owners.get(s).copied().flatten()))
            };
            let (symbol, mut style) = match owner {
                Some(i) => (Theme::glyph(i), theme.fg(theme.backend(i))),
                None => ('·', theme.dim()),
            };
            if samples.iter().any(|&s| on_way(way, s)) {
                style = style.add_modifier(ratatui::style::Modifier::REVERSED);
            }
            self.put(buf, cell, symbol, style);
        }
    }

    /// A plain track, for a balancer with no arcs (`hash % N`).
    pub fn plain_track(&self, buf: &mut Buffer, theme: &Theme) {
        for (cell, _) in self.track.cells() {
            self.put(buf, cell, '·', theme.dim());
        }
    }

    /// A mark per vnode: `•` in service, `◦` draining, `×` out; a cell
    /// shared by several backends is drawn without colour.
    pub fn vnodes(&self, buf: &mut Buffer, vnodes: &[Tick], state_of: impl Fn(usize) -> BackendState, theme: &Theme) {
        let mut marked: Vec<((u16, u16), usize, usize)> = Vec::new();
        for &(position, owner) in vnodes {
            let cell = self.marks.cell(angle(position));
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
            let (symbol, colour) = match state_of(owner) {
                BackendState::Up => ('•', theme.backend(owner)),
                BackendState::Draining => ('◦', theme.backend(owner)),
                _ => ('×', if theme.color { Color::DarkGray } else { Color::Reset }),
            };
            let style = if others > 0 { Style::new() } else { theme.fg(colour) };
            self.put(buf, cell, symbol, style);
        }
    }

    /// A symbol on the vnode marks' ellipse.
    pub fn mark(&self, buf: &mut Buffer, position: u32, symbol: char, style: Style) {
        self.put(buf, self.marks.cell(angle(position)), symbol, style);
    }

    /// A symbol on the session dots' ellipse.
    pub fn dot(&self, buf: &mut Buffer, position: u32, symbol: char, style: Style) {
        self.put(buf, self.dots.cell(angle(position)), symbol, style);
    }

    /// Lines in the middle of the ring, when they fit inside the dots.
    pub fn centre(&self, buf: &mut Buffer, lines: &[(String, Style)]) {
        let widest = lines.iter().map(|(t, _)| t.chars().count()).max().unwrap_or(0) as f64;
        if self.dots.ry < 3.0 || self.dots.rx < 8.0 || self.dots.rx * 2.0 < widest + 2.0 {
            return;
        }
        let top = (self.track.cy - (lines.len() as f64 - 1.0) / 2.0).round().max(0.0) as u16;
        for (k, (text, style)) in lines.iter().enumerate() {
            let w = text.chars().count() as f64;
            let x = (self.track.cx - w / 2.0 + 0.5).max(f64::from(self.area.x)) as u16;
            let y = top + k as u16;
            if y < self.area.bottom() {
                buf.set_string(x, y, text, *style);
            }
        }
    }
}
