//! The lesson as the dashboard draws it: the band above the dashboard (its
//! title, where it stands, and its caption when that fits), the lesson
//! panel (caption and steps) where the caption does not fit the band, the
//! opening card, and the report at the end.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use super::block;
use super::popup::scrolling;
use super::theme::Theme;
use crate::dashboard::app::App;
use crate::dashboard::lesson::{LessonState, paragraphs, passed, report_lines, status, step_lines};
use crate::dashboard::text::{fit, wrap};

/// The caption wrapped to `width`, a blank line between paragraphs.
fn caption(l: &LessonState, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for (i, p) in paragraphs(l).into_iter().enumerate() {
        if i > 0 {
            out.push(String::new());
        }
        out.extend(wrap(p, width, usize::MAX));
    }
    out
}

/// Caption lines the band has room for in `area` (the whole screen).
fn band_room(area: Rect) -> usize {
    if area.height < 30 {
        0
    } else {
        (area.height / 5).saturating_sub(2) as usize
    }
}

/// True when the whole caption shows in the band.
pub fn caption_in_band(app: &App, area: Rect) -> bool {
    app.lesson.as_ref().is_some_and(|l| {
        let lines = caption(l, area.width.saturating_sub(2) as usize).len();
        lines <= band_room(area)
    })
}

/// The band's height: nothing without a lesson; else its two lines, and
/// the caption when it fits.
pub fn band_height(app: &App, area: Rect) -> u16 {
    match &app.lesson {
        None => 0,
        Some(l) if caption_in_band(app, area) => 2 + caption(l, area.width.saturating_sub(2) as usize).len() as u16,
        Some(_) => 2,
    }
}

/// The status line's style: paused stands out, the end says how it went.
fn status_style(l: &LessonState, theme: &Theme) -> Style {
    if l.report.is_some() {
        let (ok, all) = passed(l);
        let colour = if ok == all { Color::Green } else { Color::Red };
        theme.fg(colour).add_modifier(Modifier::BOLD)
    } else if l.paused {
        theme.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    } else {
        theme.fg(Color::Cyan)
    }
}

/// Draws the band: the lesson's title, its state, and its caption when
/// the band holds it (`whole` is the screen).
pub fn draw_band(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect, whole: Rect) {
    let Some(l) = &app.lesson else { return };
    if area.height == 0 {
        return;
    }
    let w = area.width.saturating_sub(1) as usize;
    let in_band = caption_in_band(app, whole);
    let mut title = if l.headline.is_empty() {
        l.name.clone()
    } else {
        l.headline.clone()
    };
    if !in_band && !l.caption.is_empty() {
        title.push_str(" (? reads it all)");
    }
    let mut lines = vec![Line::from(vec![
        Span::styled(" lesson ", theme.badge()),
        Span::styled(
            fit(&format!(" {title}"), w.saturating_sub(8)),
            Style::new().add_modifier(Modifier::BOLD),
        ),
    ])];
    lines.push(Line::from(Span::styled(
        fit(&format!(" {}", status(l)), w),
        status_style(l, theme),
    )));
    if in_band {
        lines.extend(
            caption(l, w.saturating_sub(1))
                .into_iter()
                .map(|t| Line::from(format!(" {t}"))),
        );
    }
    frame.render_widget(Paragraph::new(lines), area);
}

/// Draws the lesson panel: the caption, then the steps as room allows.
pub fn draw_panel(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect) {
    let Some(l) = &app.lesson else { return };
    if area.height < 3 {
        return;
    }
    let outer = block(" lesson ".to_owned(), false, theme);
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let w = inner.width.saturating_sub(1) as usize;
    let rows = inner.height as usize;
    let steps = step_lines(l);
    // The steps when there is room for them below three caption lines.
    let show_steps = rows >= steps.len() + 4;
    let room = if show_steps { rows - steps.len() - 1 } else { rows };
    let text: Vec<String> = paragraphs(l).into_iter().map(str::to_owned).collect();
    let mut lines: Vec<Line<'_>> = wrap(&text.join(" "), w, room)
        .into_iter()
        .map(|t| Line::from(format!(" {t}")))
        .collect();
    if show_steps {
        lines.push(Line::from(""));
        lines.extend(steps.into_iter().enumerate().map(|(i, t)| {
            let style = if Some(i) == l.next {
                theme.fg(Color::Cyan).add_modifier(Modifier::BOLD)
            } else if l.steps[i].done {
                theme.dim()
            } else {
                Style::new()
            };
            Line::from(Span::styled(fit(&format!(" {t}"), w + 1), style))
        }));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// Draws the opening card: what the lesson teaches, its steps and keys.
pub fn card(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect, scroll: usize) -> (Rect, usize, usize) {
    let Some(l) = &app.lesson else {
        return (Rect::default(), 0, 0);
    };
    let width = 78.min(area.width);
    let w = width.saturating_sub(4) as usize;
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let title = if l.headline.is_empty() { &l.name } else { &l.headline };
    let mut body = vec![Line::from(Span::styled(format!(" {}", fit(title, w)), bold))];
    body.push(Line::from(""));
    body.extend(caption(l, w).into_iter().map(|t| Line::from(format!(" {t}"))));
    body.push(Line::from(""));
    body.extend(
        step_lines(l)
            .into_iter()
            .map(|t| Line::from(format!(" {}", fit(&t, w)))),
    );
    body.push(Line::from(""));
    body.push(Line::from(Span::styled(
        fit(
            " Enter starts it · n does the first step · P pauses later · b replays",
            w + 1,
        ),
        theme.fg(Color::Cyan),
    )));
    scrolling(theme, frame, area, width, body, scroll, |at| match at {
        None => " lesson — Enter starts · Esc closes (paused) ".to_owned(),
        Some((from, to, all)) => format!(" lesson {from}–{to} of {all} — j/k scroll · Enter starts "),
    })
}

/// Draws the report: each check passed or failed, then the phases.
pub fn report(app: &App, theme: &Theme, frame: &mut Frame<'_>, area: Rect, scroll: usize) -> (Rect, usize, usize) {
    let Some(l) = &app.lesson else {
        return (Rect::default(), 0, 0);
    };
    let width = 92.min(area.width);
    let w = width.saturating_sub(3) as usize;
    let mut body: Vec<Line<'_>> = Vec::new();
    for (text, passed) in report_lines(l) {
        let style = match passed {
            Some(true) => theme.fg(Color::Green),
            Some(false) => theme.fg(Color::Red).add_modifier(Modifier::BOLD),
            None => Style::new(),
        };
        if crate::dashboard::text::width(&text) <= w {
            body.push(Line::from(Span::styled(format!(" {text}"), style)));
            continue;
        }
        // A long line wraps under its own indent.
        let lead = text.len() - text.trim_start().len();
        for (k, part) in wrap(&text, w.saturating_sub(lead + 2), usize::MAX)
            .into_iter()
            .enumerate()
        {
            let indent = if k == 0 { lead } else { lead + 2 };
            body.push(Line::from(Span::styled(
                format!(" {}{part}", " ".repeat(indent)),
                style,
            )));
        }
    }
    let (ok, all) = passed(l);
    scrolling(theme, frame, area, width, body, scroll, |at| match at {
        None => format!(" report: {ok} of {all} checks passed — b replays · Esc closes "),
        Some((from, to, n)) => format!(" report {from}–{to} of {n}: {ok}/{all} passed — j/k · b replays · Esc "),
    })
}
