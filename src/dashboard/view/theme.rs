//! Colours, and the symbols that say the same without colour (`NO_COLOR`).

use ratatui::style::{Color, Modifier, Style};

use crate::dashboard::app::{FlashKind, LogKind};
use crate::router::BackendState;

/// Colours for backends, in table order (chosen to read on dark and light backgrounds).
const PALETTE: [Color; 8] = [
    Color::Cyan,
    Color::Magenta,
    Color::Yellow,
    Color::Green,
    Color::Blue,
    Color::LightRed,
    Color::LightBlue,
    Color::LightMagenta,
];

/// A fill per backend, in table order, so arcs read without colour.
pub const GLYPHS: [char; 8] = ['█', '░', '▒', '▚', '▞', '▀', '▄', '▌'];

/// How things are drawn: with colours, or with symbols only.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    /// Colours are on.
    pub color: bool,
}

impl Theme {
    /// A foreground colour, or nothing without colour.
    pub fn fg(&self, c: Color) -> Style {
        if self.color { Style::new().fg(c) } else { Style::new() }
    }

    /// Dim text: grey, or plain without colour.
    pub fn dim(&self) -> Style {
        self.fg(Color::DarkGray)
    }

    /// Backend `i`'s colour.
    pub fn backend(&self, i: usize) -> Color {
        if self.color {
            PALETTE[i % PALETTE.len()]
        } else {
            Color::Reset
        }
    }

    /// Backend `i`'s fill.
    pub fn glyph(i: usize) -> char {
        GLYPHS[i % GLYPHS.len()]
    }

    /// A label that stands out: dark on cyan, or reversed without colour.
    pub fn badge(&self) -> Style {
        let style = Style::new().add_modifier(Modifier::BOLD);
        if self.color {
            style.fg(Color::Black).bg(Color::Cyan)
        } else {
            style.add_modifier(Modifier::REVERSED)
        }
    }

    /// The counter of a change's moves: bold, on magenta or reversed.
    pub fn counter(&self) -> Style {
        let style = Style::new().add_modifier(Modifier::BOLD);
        if self.color {
            style.fg(Color::Black).bg(Color::Magenta)
        } else {
            style.add_modifier(Modifier::REVERSED)
        }
    }

    /// A backend state's style.
    pub fn state(&self, s: BackendState) -> Style {
        let c = match s {
            BackendState::Up => Color::Green,
            BackendState::Down | BackendState::Killed => Color::Red,
            BackendState::Draining => Color::Yellow,
            BackendState::Removed | BackendState::Drained => Color::DarkGray,
        };
        let style = self.fg(c);
        if matches!(s, BackendState::Down | BackendState::Killed) {
            style.add_modifier(Modifier::BOLD)
        } else {
            style
        }
    }

    /// An event-log line's style, by what it means.
    pub fn log(&self, k: LogKind) -> Style {
        self.fg(match k {
            LogKind::Route => Color::DarkGray,
            LogKind::Session => Color::Blue,
            LogKind::Failure => Color::Red,
            LogKind::Recovery => Color::Green,
            LogKind::State => Color::Yellow,
            LogKind::Remap => Color::Magenta,
            LogKind::Alarm => Color::LightRed,
            LogKind::Drain => Color::Yellow,
            LogKind::Command => Color::Cyan,
        })
    }

    /// A flash message's mark and style.
    pub fn flash(&self, k: FlashKind) -> (&'static str, Style) {
        match k {
            FlashKind::Done => ("✓ ", self.fg(Color::Green).add_modifier(Modifier::BOLD)),
            FlashKind::Refused => ("✗ ", self.fg(Color::Red).add_modifier(Modifier::BOLD)),
            FlashKind::Info => ("• ", self.fg(Color::Cyan)),
        }
    }
}

/// A state with a symbol, so it reads without colour too.
pub fn state_label(s: BackendState) -> &'static str {
    match s {
        BackendState::Up => "▲ up",
        BackendState::Down => "▼ down",
        BackendState::Draining => "◐ draining",
        BackendState::Drained => "◌ drained",
        BackendState::Killed => "✖ killed",
        BackendState::Removed => "○ removed",
    }
}
