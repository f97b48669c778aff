//! Following one client: the panel with the followed session's history —
//! each backend it lived on, when and why it moved, how it ended, whether
//! its user lost their login — and the prompt that names whom to follow.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use super::popup::{centred, frame_box};
use super::theme::Theme;
use super::{block, duration};
use crate::dashboard::app::App;
use crate::dashboard::text::{fit, wrap};

/// Lines of text the follow panel wants, borders included.
pub fn wanted_height(app: &App) -> u16 {
    app.scene()
        .followed
        .as_ref()
        .map_or(0, |f| (f.history.happenings.len() as u16 + 4).min(12))
}

/// Draws the followed session's panel.
pub fn draw(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    let Some(f) = &app.scene().followed else { return };
    if area.height < 3 {
        return;
    }
    let title = fit(
        &format!(" ◎ following {} ", f.label()),
        area.width.saturating_sub(2) as usize,
    );
    let outer = block(title, false, theme);
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let w = inner.width as usize;
    let now = match &f.history.backend {
        Some(b) => format!(" on {b} · lived on {}", f.lived_on()),
        None => format!(" ended · lived on {}", f.lived_on()),
    };
    let lost = f.history.lost_logins > 0;
    let login_style = if lost {
        theme.fg(Color::Red).add_modifier(Modifier::BOLD)
    } else {
        theme.fg(Color::Green)
    };
    let mark = if lost { "✗" } else { "✓" };
    let mut head = vec![
        Line::from(Span::styled(fit(&now, w), Style::new().add_modifier(Modifier::BOLD))),
        Line::from(Span::styled(fit(&format!(" {mark} {}", f.login()), w), login_style)),
    ];
    let room = (inner.height as usize).saturating_sub(head.len());
    let happenings = f.lines();
    let skip = happenings.len().saturating_sub(room);
    head.extend(happenings.into_iter().skip(skip).map(|(at, text, bad)| {
        let style = if bad { theme.fg(Color::Yellow) } else { Style::new() };
        Line::from(vec![
            Span::styled(format!("{:>6} ", duration(at)), theme.dim()),
            Span::styled(fit(&text, w.saturating_sub(7)), style),
        ])
    }));
    frame.render_widget(Paragraph::new(head), inner);
}

/// Draws the prompt for whom to follow.
pub fn prompt(theme: &Theme, frame: &mut Frame<'_>, area: Rect, input: &str) {
    let width = 64.min(area.width);
    let inner = width.saturating_sub(4) as usize;
    let mut lines = vec![Line::from(Span::styled(
        fit(&format!("{input}▏"), inner),
        Style::new().add_modifier(Modifier::BOLD),
    ))];
    let help = "a demo client (client-7), a session as the table shows it (#3fa2c1e9), \
                a client address, or a fingerprint's 16 hex digits";
    lines.extend(
        wrap(help, inner, 3)
            .into_iter()
            .map(|t| Line::from(Span::styled(t, theme.dim()))),
    );
    let popup = centred(area, width, lines.len() as u16 + 2);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            frame_box(fit(" follow — Enter follows · Esc closes ", inner + 2), theme)
                .padding(ratatui::widgets::Padding::horizontal(1)),
        ),
        popup,
    );
}
