//! Modal boxes: the help (it scrolls when it does not fit), a yes/no
//! question, a picker, and a box of lines that scrolls (the lesson's card
//! and report).

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};

use super::theme::Theme;
use crate::dashboard::app::{App, Confirm, Picker};
use crate::dashboard::input::help_lines;
use crate::dashboard::text::{fit, wrap};

/// A box of `width` × `height` in the middle of `area`, within it.
pub fn centred(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    )
}

/// A popup's frame: bright borders and a title.
pub fn frame_box<'a>(title: String, theme: &Theme) -> Block<'a> {
    Block::bordered()
        .title(title)
        .border_style(theme.fg(Color::Cyan).add_modifier(Modifier::BOLD))
}

/// Draws the help; returns its box, the lines it shows at once and the
/// lines in all.
pub fn help(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect, scroll: usize) -> (Rect, usize, usize) {
    let lines = help_lines(app.lesson.as_ref());
    let width = 78.min(area.width);
    let inner_w = width.saturating_sub(2) as usize;
    let term_w = 14.min(inner_w / 3);
    let text_w = inner_w.saturating_sub(term_w + 3);
    // Each entry wraps to as many lines as its meaning needs.
    let mut body: Vec<Line<'_>> = Vec::new();
    for (term, meaning) in &lines {
        let wrapped = wrap(meaning, text_w.max(1), 12);
        if wrapped.is_empty() {
            body.push(Line::from(""));
        }
        for (k, part) in wrapped.into_iter().enumerate() {
            let head = if k == 0 { fit(term, term_w) } else { String::new() };
            body.push(Line::from(vec![
                Span::styled(
                    format!(" {head:<term_w$} "),
                    theme.fg(Color::Cyan).add_modifier(Modifier::BOLD),
                ),
                Span::raw(part),
            ]));
        }
    }
    let height = (body.len() as u16 + 2).min(area.height);
    let popup = centred(area, width, height);
    let shown = popup.height.saturating_sub(2) as usize;
    let total = body.len();
    let last = total.saturating_sub(shown);
    let scroll = scroll.min(last);
    let title = if last == 0 {
        " help — Esc or ? closes ".to_owned()
    } else {
        format!(
            " help {}–{} of {} — j/k scroll · Esc closes ",
            scroll + 1,
            scroll + shown,
            body.len()
        )
    };
    let body: Vec<Line<'_>> = body.into_iter().skip(scroll).take(shown).collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(body).block(frame_box(title, theme)), popup);
    (popup, shown, total)
}

/// Draws a yes/no question.
pub fn confirm(theme: &Theme, frame: &mut Frame<'_>, area: Rect, c: &Confirm) {
    let width = 64.min(area.width);
    let inner = width.saturating_sub(4) as usize;
    let mut lines = vec![Line::from(Span::styled(
        fit(&c.question, inner),
        Style::new().add_modifier(Modifier::BOLD),
    ))];
    lines.extend(wrap(&c.detail, inner, 4).into_iter().map(Line::from));
    lines.push(Line::from(""));
    lines.push(Line::from(vec![
        Span::styled("y", theme.fg(Color::Red).add_modifier(Modifier::BOLD)),
        Span::raw(" yes   "),
        Span::styled("n", theme.fg(Color::Green).add_modifier(Modifier::BOLD)),
        Span::raw(" no (any other key)"),
    ]));
    let height = lines.len() as u16 + 2;
    let popup = centred(area, width, height);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .block(frame_box(" are you sure? ".into(), theme).padding(ratatui::widgets::Padding::horizontal(1))),
        popup,
    );
}

/// Draws a picker.
pub fn picker(theme: &Theme, frame: &mut Frame<'_>, area: Rect, p: &Picker) {
    let items = p.items();
    let width = 68.min(area.width);
    let inner = width.saturating_sub(2) as usize;
    let name_w = items.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let lines: Vec<Line<'_>> = items
        .iter()
        .enumerate()
        .map(|(i, (name, about))| {
            let mark = if i == p.current { "●" } else { " " };
            let text = fit(&format!(" {} {mark} {name:<name_w$}  {about}", i + 1), inner);
            let style = if i == p.cursor {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            Line::from(Span::styled(format!("{text:<inner$}"), style))
        })
        .collect();
    let height = lines.len() as u16 + 2;
    let popup = centred(area, width, height);
    let title = fit(&format!(" {} — Enter picks · Esc closes ", p.title()), inner);
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(frame_box(title, theme)), popup);
}

/// Draws `body` in a box of at most `width` in the middle of `area`,
/// scrolled by `scroll`; `title` is given the lines shown and in all
/// (`None` when everything shows). Returns the box, the lines it shows at
/// once and the lines in all.
pub fn scrolling(
    theme: &Theme,
    frame: &mut Frame<'_>,
    area: Rect,
    width: u16,
    body: Vec<Line<'_>>,
    scroll: usize,
    title: impl Fn(Option<(usize, usize, usize)>) -> String,
) -> (Rect, usize, usize) {
    let height = (body.len() as u16 + 2).min(area.height);
    let popup = centred(area, width.min(area.width), height);
    let shown = popup.height.saturating_sub(2) as usize;
    let total = body.len();
    let last = total.saturating_sub(shown);
    let scroll = scroll.min(last);
    let title = title((last > 0).then_some((scroll + 1, (scroll + shown).min(total), total)));
    let inner = popup.width.saturating_sub(2) as usize;
    let body: Vec<Line<'_>> = body.into_iter().skip(scroll).take(shown).collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(body).block(frame_box(fit(&title, inner), theme)), popup);
    (popup, shown, total)
}
