//! Text that fits the screen: cut with an ellipsis, or wrapped at words.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// Columns `s` takes on screen.
pub fn width(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// `s` in at most `max` columns: whole, or cut with `…` at the end.
pub fn fit(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > max {
            break;
        }
        out.push(c);
        used += w;
    }
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('…');
    out
}

/// `s` in at most `max` columns, cut at a word with `…` when it is too long.
pub fn fit_words(s: &str, max: usize) -> String {
    if width(s) <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    for word in s.split_whitespace() {
        let next = if out.is_empty() {
            word.to_owned()
        } else {
            format!("{out} {word}")
        };
        if width(&next) + 1 > max {
            break;
        }
        out = next;
    }
    if out.is_empty() {
        return fit(s, max);
    }
    out.push('…');
    out
}

/// `s` wrapped at spaces into lines of at most `max` columns, at most
/// `lines` of them; when it does not fit, the last line ends with `…`.
/// A word longer than a line is cut.
pub fn wrap(s: &str, max: usize, lines: usize) -> Vec<String> {
    if max == 0 || lines == 0 {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    let mut line = String::new();
    let words: Vec<&str> = s.split_whitespace().collect();
    for (i, word) in words.iter().enumerate() {
        let needed = if line.is_empty() {
            width(word)
        } else {
            width(&line) + 1 + width(word)
        };
        if needed <= max {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
            continue;
        }
        if !line.is_empty() {
            out.push(std::mem::take(&mut line));
        }
        if out.len() == lines {
            // No room for this word: the last line says there is more.
            let last = out.pop().unwrap_or_default();
            out.push(fit_words(&format!("{last} {}", words[i..].join(" ")), max));
            return out;
        }
        line = if width(word) > max {
            fit(word, max)
        } else {
            (*word).to_owned()
        };
    }
    if !line.is_empty() {
        if out.len() == lines {
            let last = out.pop().unwrap_or_default();
            out.push(fit_words(&format!("{last} {line}"), max));
        } else {
            out.push(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_with_an_ellipsis() {
        assert_eq!(fit("api-1", 10), "api-1");
        assert_eq!(fit("connection refused", 12), "connection…");
        assert_eq!(fit("abc", 0), "");
        assert!(width(&fit("▲ up and away", 6)) <= 6);
    }

    #[test]
    fn wrap_breaks_at_words_and_says_when_it_stops() {
        let text = "api-2 left: 5 of 20 sessions moved (25.0%) — modulo would have moved 80.0%, ideal 33.3%";
        let two = wrap(text, 50, 2);
        assert_eq!(two.len(), 2);
        assert!(two.iter().all(|l| width(l) <= 50));
        assert_eq!(two.join(" "), text);
        let one = wrap(text, 50, 1);
        assert_eq!(one.len(), 1);
        assert!(one[0].ends_with('…'), "{one:?}");
        assert_eq!(one[0], "api-2 left: 5 of 20 sessions moved (25.0%) —…");
        assert_eq!(wrap("short", 50, 3), ["short"]);
    }
}
