//! Modulo beside the ring: the last change's live sessions on two rings —
//! on the left the sessions a consistent-hash ring moved, on the right
//! those `hash % N` would have moved for the same change — so the
//! article's claim, about K/N keys against (N−1)/N, is seen, not told.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::super::block;
use super::super::theme::Theme;
use super::canvas::Canvas;
use super::index_of;
use crate::dashboard::app::App;
use crate::dashboard::moves::{MovedSession, MovesView};
use crate::dashboard::text::fit;
use crate::text::thousands;

fn pct(part: u64, all: u64) -> String {
    if all == 0 {
        "0%".to_owned()
    } else {
        format!("{:.1}%", 100.0 * part as f64 / all as f64)
    }
}

/// Draws both rings over `area` (the dashboard's body).
pub fn draw(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    let Some(m) = &app.scene().moves else { return };
    if area.width < 30 || area.height < 8 {
        return;
    }
    let title = fit(
        &format!(" modulo beside the ring — {} ", m.headline),
        area.width.saturating_sub(2) as usize,
    );
    let outer = block(title, true, theme);
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let [rings, foot] = Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(inner);
    let [left, right] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(rings);
    let s = &m.summary;
    let n = s.backends_before.max(s.backends_after).max(1) as u64;
    side(
        app,
        m,
        theme,
        frame,
        left,
        Side::Ring,
        [
            format!(
                "ring moved {} ({} of {})",
                pct(s.ring, s.sessions),
                thousands(s.ring),
                thousands(s.sessions)
            ),
            format!("ideal K/N: {:.1}%", 100.0 * s.ideal),
        ],
    );
    side(
        app,
        m,
        theme,
        frame,
        right,
        Side::Modulo,
        [
            format!(
                "hash % N moved {} ({} of {})",
                pct(s.modulo, s.sessions),
                thousands(s.modulo),
                thousands(s.sessions)
            ),
            format!("(N−1)/N: {:.1}%", 100.0 * (n - 1) as f64 / n as f64),
        ],
    );
    let sample = if m.sampled() {
        format!(
            "a sample of {} of the {} live sessions",
            m.sessions.len(),
            thousands(s.sessions)
        )
    } else {
        format!("the same {} live sessions on both", thousands(s.sessions))
    };
    let sticky = if s.moved == s.ring {
        String::new()
    } else {
        format!(" · sticky sessions moved {}", thousands(s.moved))
    };
    let text = fit(
        &format!(" ● moved by the change ({}) · · kept — {sample}{sticky}", change(m)),
        foot.width as usize,
    );
    frame.render_widget(Paragraph::new(Line::from(Span::styled(text, theme.dim()))), foot);
}

/// What the change was, in words.
fn change(m: &MovesView) -> String {
    let kind = serde_json::to_value(m.summary.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("{} {kind}", m.summary.backend)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Ring,
    Modulo,
}

impl Side {
    /// Whether this balancer moved `s`, and where it sends it now.
    fn moved(self, s: &MovedSession) -> (bool, Option<&str>) {
        match self {
            Side::Ring => (s.ring_moved, s.ring_to.as_deref()),
            Side::Modulo => (s.modulo_moved, s.modulo_to.as_deref()),
        }
    }
}

fn side(app: &App, m: &MovesView, theme: &Theme, frame: &mut Frame<'_>, area: Rect, which: Side, caption: [String; 2]) {
    let snapshot = &app.scene().snapshot;
    let [ring, text] = Layout::vertical([Constraint::Min(0), Constraint::Length(2)]).areas(area);
    let bold = Style::new().add_modifier(Modifier::BOLD);
    if let Some(canvas) = Canvas::new(ring) {
        let buf = frame.buffer_mut();
        match which {
            Side::Ring => {
                canvas.arcs(buf, &snapshot.owners, None, theme);
                let state = |i: usize| {
                    snapshot
                        .backends
                        .get(i)
                        .map_or(crate::router::BackendState::Removed, |b| b.state)
                };
                canvas.vnodes(buf, &snapshot.vnodes, state, theme);
            }
            Side::Modulo => canvas.plain_track(buf, theme),
        }
        // Kept first, so a moved session sharing a cell shows.
        let mut sessions: Vec<&MovedSession> = m.sessions.iter().collect();
        sessions.sort_by_key(|s| which.moved(s).0);
        for s in sessions {
            let (moved, now) = which.moved(s);
            let colour = now
                .and_then(|b| index_of(snapshot, b))
                .map_or(Style::new(), |i| theme.fg(theme.backend(i)));
            if moved {
                canvas.dot(buf, s.position, '●', colour.add_modifier(Modifier::BOLD));
            } else {
                canvas.dot(buf, s.position, '·', colour);
            }
        }
        let name = match which {
            Side::Ring => "consistent hashing",
            Side::Modulo => "hash % N",
        };
        canvas.centre(buf, &[(name.to_owned(), bold)]);
    }
    let w = text.width as usize;
    let lines: Vec<Line<'_>> = caption
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let style = if k == 0 { bold } else { theme.dim() };
            Line::from(Span::styled(format!("{:^w$}", fit(t, w)), style))
        })
        .collect();
    frame.render_widget(Paragraph::new(lines), text);
}
