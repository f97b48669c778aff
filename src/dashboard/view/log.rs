//! The event log: newest at the bottom, coloured by meaning, each line cut
//! with `…` where it does not fit.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::theme::Theme;
use super::{block, duration};
use crate::dashboard::app::{App, Panel};
use crate::dashboard::text::fit;

/// Draws the event log.
pub fn draw(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    if area.height < 3 {
        return;
    }
    let log = &app.scene().log;
    let inner = area.height.saturating_sub(2) as usize;
    let text_width = (area.width as usize).saturating_sub(2 + 7);
    let end = log.len().saturating_sub(app.log_scroll);
    let start = end.saturating_sub(inner);
    let lines: Vec<Line<'_>> = log
        .range(start..end)
        .map(|l| {
            Line::from(vec![
                Span::styled(format!("{:>6} ", duration(l.at_secs)), theme.dim()),
                Span::styled(fit(&l.text, text_width), theme.log(l.kind)),
            ])
        })
        .collect();
    let title = if app.is_frozen() {
        " events (frozen) ".to_owned()
    } else if app.log_scroll > 0 {
        format!(" events (scrolled back {}; G for the newest) ", app.log_scroll)
    } else {
        " events ".to_owned()
    };
    frame.render_widget(
        Paragraph::new(lines).block(block(title, app.focus == Panel::Log, theme)),
        area,
    );
}
