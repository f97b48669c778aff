//! Slides from the screen: the frame as drawn — a ratatui [`Buffer`] — as
//! an SVG that looks like the terminal (colours kept, a monospace grid,
//! box-drawing and braille characters as text) and as plain text for a
//! handout, saved under a name made from the time. Pure functions, and
//! [`save`] to write both files. The palette is the one
//! `assets/make-screenshot.py` uses, so old and new screenshots match.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ratatui::buffer::{Buffer, Cell, CellWidth};
use ratatui::style::{Color, Modifier};

/// One cell's width and height in the SVG, in pixels.
const CELL_W: f64 = 8.4;
const CELL_H: f64 = 17.0;
/// The margin around the grid.
const PAD: f64 = 12.0;
/// Where the text sits in a cell.
const BASELINE: f64 = 13.0;
/// The terminal's own colours.
const BG: &str = "#1d1f21";
const FG: &str = "#d8d8d8";
/// The 16 ANSI colours (Tomorrow Night).
const BASIC: [&str; 16] = [
    "#1d1f21", "#cc6666", "#b5bd68", "#f0c674", "#81a2be", "#b294bb", "#8abeb7", "#c5c8c6", "#666666", "#d54e53",
    "#b9ca4a", "#e7c547", "#7aa6da", "#c397d8", "#70c0b1", "#eaeaea",
];
const FONT: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";

/// Where [`save`] wrote the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The SVG.
    pub svg: PathBuf,
    /// The plain text.
    pub text: PathBuf,
}

/// A colour as SVG writes it; `None` for the terminal's default.
fn hex(color: Color) -> Option<String> {
    let basic = |i: usize| Some(BASIC[i].to_owned());
    match color {
        Color::Reset => None,
        Color::Black => basic(0),
        Color::Red => basic(1),
        Color::Green => basic(2),
        Color::Yellow => basic(3),
        Color::Blue => basic(4),
        Color::Magenta => basic(5),
        Color::Cyan => basic(6),
        Color::Gray => basic(7),
        Color::DarkGray => basic(8),
        Color::LightRed => basic(9),
        Color::LightGreen => basic(10),
        Color::LightYellow => basic(11),
        Color::LightBlue => basic(12),
        Color::LightMagenta => basic(13),
        Color::LightCyan => basic(14),
        Color::White => basic(15),
        Color::Rgb(r, g, b) => Some(format!("#{r:02x}{g:02x}{b:02x}")),
        Color::Indexed(n) => Some(xterm256(n)),
    }
}

/// The xterm 256-colour palette.
fn xterm256(n: u8) -> String {
    match n {
        0..=15 => BASIC[usize::from(n)].to_owned(),
        16..=231 => {
            let n = n - 16;
            let step = |v: u8| if v == 0 { 0 } else { 55 + 40 * v };
            format!("#{:02x}{:02x}{:02x}", step(n / 36), step((n / 6) % 6), step(n % 6))
        }
        _ => {
            let v = 8 + (n - 232) * 10;
            format!("#{v:02x}{v:02x}{v:02x}")
        }
    }
}

/// A cell as drawn: its text (empty for the cells a wide character
/// covers), colours after `REVERSED`, and the modifiers SVG shows.
#[derive(Debug, Clone, PartialEq)]
struct Drawn {
    text: String,
    fg: String,
    bg: Option<String>,
    modifier: Modifier,
}

/// The rows of drawn cells, wide characters taking their cells.
fn drawn(buffer: &Buffer) -> Vec<Vec<Drawn>> {
    let width = usize::from(buffer.area.width).max(1);
    buffer
        .content()
        .chunks(width)
        .map(|row| {
            let mut covered = 0u16;
            row.iter()
                .map(|cell| {
                    let text = if covered > 0 { String::new() } else { printable(cell) };
                    covered = covered.max(cell.cell_width()).saturating_sub(1);
                    let (fg, bg) = (hex(cell.fg), hex(cell.bg));
                    let (fg, bg) = if cell.modifier.contains(Modifier::REVERSED) {
                        (
                            bg.unwrap_or_else(|| BG.to_owned()),
                            Some(fg.unwrap_or_else(|| FG.to_owned())),
                        )
                    } else {
                        (fg.unwrap_or_else(|| FG.to_owned()), bg)
                    };
                    Drawn {
                        text,
                        fg,
                        bg,
                        modifier: cell.modifier,
                    }
                })
                .collect()
        })
        .collect()
}

/// A cell's symbol with control characters (which XML forbids) as spaces.
fn printable(cell: &Cell) -> String {
    cell.symbol()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The screen as plain text: one line per row, wide characters once,
/// trailing spaces trimmed, each line ending in a newline.
pub fn to_text(buffer: &Buffer) -> String {
    let mut out = String::new();
    for row in drawn(buffer) {
        let line: String = row.iter().map(|d| d.text.as_str()).collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The screen as an SVG document that looks like the terminal.
pub fn to_svg(buffer: &Buffer) -> String {
    let rows = drawn(buffer);
    let cols = usize::from(buffer.area.width);
    let (w, h) = (PAD * 2.0 + cols as f64 * CELL_W, PAD * 2.0 + rows.len() as f64 * CELL_H);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" rx="8" fill="{BG}"/>"#);
    let _ = writeln!(out, r#"<g shape-rendering="crispEdges">"#);
    for (y, row) in rows.iter().enumerate() {
        let top = PAD + y as f64 * CELL_H;
        let mut x = 0;
        while x < row.len() {
            let Some(bg) = &row[x].bg else {
                x += 1;
                continue;
            };
            let start = x;
            while x < row.len() && row[x].bg.as_ref() == Some(bg) {
                x += 1;
            }
            let _ = writeln!(
                out,
                r#"<rect x="{:.1}" y="{top:.0}" width="{:.1}" height="{CELL_H:.0}" fill="{bg}"/>"#,
                PAD + start as f64 * CELL_W,
                (x - start) as f64 * CELL_W + 0.3,
            );
        }
    }
    let _ = writeln!(out, "</g>");
    let _ = writeln!(out, r#"<g font-family="{FONT}" font-size="14">"#);
    for (y, row) in rows.iter().enumerate() {
        let baseline = PAD + y as f64 * CELL_H + BASELINE;
        let mut x = 0;
        while x < row.len() {
            let (fg, modifier) = (&row[x].fg, row[x].modifier);
            let start = x;
            let mut text = String::new();
            while x < row.len() && row[x].fg == *fg && row[x].modifier == modifier {
                text.push_str(&row[x].text);
                x += 1;
            }
            if text.trim().is_empty() || modifier.contains(Modifier::HIDDEN) {
                continue;
            }
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{baseline:.0}" fill="{fg}"{} textLength="{:.1}" xml:space="preserve">"#,
                PAD + start as f64 * CELL_W,
                style_attributes(modifier),
                (x - start) as f64 * CELL_W,
            );
            escape_into(&mut out, &text);
            out.push_str("</text>\n");
        }
    }
    out.push_str("</g>\n</svg>\n");
    out
}

/// SVG attributes for bold, dim, italic, underlined and crossed-out text.
fn style_attributes(m: Modifier) -> String {
    let mut a = String::new();
    if m.contains(Modifier::BOLD) {
        a.push_str(r#" font-weight="bold""#);
    }
    if m.contains(Modifier::DIM) {
        a.push_str(r#" opacity="0.6""#);
    }
    if m.contains(Modifier::ITALIC) {
        a.push_str(r#" font-style="italic""#);
    }
    match (m.contains(Modifier::UNDERLINED), m.contains(Modifier::CROSSED_OUT)) {
        (true, true) => a.push_str(r#" text-decoration="underline line-through""#),
        (true, false) => a.push_str(r#" text-decoration="underline""#),
        (false, true) => a.push_str(r#" text-decoration="line-through""#),
        (false, false) => {}
    }
    a
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// `ringside-20250131-142501`: the time `at` in UTC, to the second.
pub fn file_stem(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "ringside-{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes the screen into `dir` as `<stem>.svg` and `<stem>.txt`, the stem
/// made from the time now (`-2`, `-3`… when taken), never overwriting a file.
pub fn save(buffer: &Buffer, dir: &Path) -> io::Result<Saved> {
    let stem = file_stem(SystemTime::now());
    for n in 1..100 {
        let name = if n == 1 { stem.clone() } else { format!("{stem}-{n}") };
        let svg = dir.join(format!("{name}.svg"));
        let text = dir.join(format!("{name}.txt"));
        if text.exists() {
            continue;
        }
        match write_new(&svg, to_svg(buffer).as_bytes()) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            other => other?,
        }
        write_new(&text, to_text(buffer).as_bytes())?;
        return Ok(Saved { svg, text });
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{} already holds 99 screenshots named {stem}", dir.display()),
    ))
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::style::{Style, Stylize};
    use ratatui::text::{Line, Span};
    use ratatui::widgets::{Block, Paragraph};

    use super::*;

    /// A frame with borders, colours of every kind, braille, a wide
    /// character and text that XML must escape.
    fn frame() -> Buffer {
        let mut terminal = Terminal::new(TestBackend::new(30, 6)).unwrap();
        terminal
            .draw(|f| {
                let lines = vec![
                    Line::from(vec![
                        Span::styled("up", Style::new().fg(Color::Green).bold()),
                        Span::raw(" "),
                        Span::styled("killed", Style::new().fg(Color::Rgb(0x12, 0x34, 0x56))),
                        Span::raw(" "),
                        Span::styled("idx", Style::new().fg(Color::Indexed(196))),
                    ]),
                    Line::from("⣿⡇⠀⣀ <a & b> \"q\""),
                    Line::from(vec![Span::styled("sel", Style::new().reversed()), Span::raw(" 漢字!")]),
                ];
                let block = Block::bordered().title("ring".red());
                f.render_widget(Paragraph::new(lines).block(block), f.area());
            })
            .unwrap();
        terminal.backend().buffer().clone()
    }

    /// A small well-formedness check: tags balance and nest, attributes are
    /// quoted, entities are known, and no `<` or `&` stands loose in text.
    fn well_formed(xml: &str) -> Result<(), String> {
        let mut open: Vec<&str> = Vec::new();
        let mut rest = xml;
        while let Some(lt) = rest.find('<') {
            check_text(&rest[..lt])?;
            let end = rest[lt..].find('>').ok_or("an unclosed tag")? + lt;
            let tag = &rest[lt + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                match open.pop() {
                    Some(o) if o == name => {}
                    other => return Err(format!("</{name}> closes {other:?}")),
                }
            } else {
                let self_closing = tag.ends_with('/');
                let body = tag.trim_end_matches('/');
                let name = body.split_whitespace().next().ok_or("an empty tag")?;
                let attrs = &body[name.len()..];
                if !attrs.matches('"').count().is_multiple_of(2) || attrs.contains('<') {
                    return Err(format!("bad attributes in <{tag}>"));
                }
                if !self_closing {
                    open.push(name);
                }
            }
            rest = &rest[end + 1..];
        }
        check_text(rest)?;
        if open.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed {open:?}"))
        }
    }

    fn check_text(text: &str) -> Result<(), String> {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity) {
                return Err(format!("a loose & in {text:?}"));
            }
        }
        Ok(())
    }

    #[test]
    fn the_svg_is_well_formed_and_keeps_the_colours_and_characters() {
        let svg = to_svg(&frame());
        well_formed(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert!(
            well_formed("<svg><text>a < b</text></svg>").is_err(),
            "the check can fail"
        );
        assert!(well_formed("<svg><g></svg>").is_err());
        for colour in ["#b5bd68", "#123456", "#ff0000", "#cc6666", BG, FG] {
            assert!(svg.contains(&format!("fill=\"{colour}\"")), "{colour} in\n{svg}");
        }
        assert!(svg.contains(r#"font-weight="bold""#));
        for text in ["┌", "┘", "⣿⡇⠀⣀ &lt;a &amp; b&gt; &quot;q&quot;", "漢字!"] {
            assert!(svg.contains(text), "{text} in\n{svg}");
        }
        // Reversed text: the default colours swap.
        assert!(
            svg.contains(&format!(r#"fill="{BG}" textLength="25.2" xml:space="preserve">sel<"#)),
            "{svg}"
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"276\" height=\"126\""));
    }

    #[test]
    fn the_text_is_the_buffers_lines() {
        let lines = [
            "┌ring────────────────────────┐",
            "│up killed idx               │",
            "│⣿⡇⠀⣀ <a & b> \"q\"            │",
            "│sel 漢字!                   │",
            "│                            │",
            "└────────────────────────────┘",
        ];
        let mut plain = frame();
        plain.set_style(plain.area, Style::reset());
        assert_eq!(
            plain,
            Buffer::with_lines(lines),
            "the frame is what the test says it is"
        );
        let expected: String = lines.iter().map(|l| format!("{}\n", l.trim_end())).collect();
        assert_eq!(to_text(&frame()), expected);
        let blank = Buffer::with_lines(["  x  ", "     "]);
        assert_eq!(to_text(&blank), "  x\n\n");
    }

    #[test]
    fn names_come_from_the_time_and_never_overwrite() {
        let at = UNIX_EPOCH + std::time::Duration::from_secs(1_738_333_501);
        assert_eq!(file_stem(at), "ringside-20250131-142501");
        assert_eq!(file_stem(UNIX_EPOCH), "ringside-19700101-000000");
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let dir = std::env::temp_dir().join(format!("ringside-export-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let first = save(&frame(), &dir).unwrap();
        let second = save(&frame(), &dir).unwrap();
        assert_ne!(first, second);
        assert!(
            first
                .svg
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("ringside-")
        );
        assert_eq!(std::fs::read_to_string(&first.text).unwrap(), to_text(&frame()));
        assert_eq!(std::fs::read_to_string(&second.svg).unwrap(), to_svg(&frame()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
