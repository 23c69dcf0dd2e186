//! One event, one line. Log fields carry outside text (an alert's rule, a
//! provider's error); written as they are, a newline in one would start a
//! line of the attacker's choosing — in Azure, a `sluice.metric` line that
//! Application Insights keeps and the README's queries count. Every event
//! is written with its inner line breaks escaped and control characters
//! dropped (the terminal's colour codes kept where colours are on).

use std::io::{self, Write};

/// A writer for `tracing_subscriber::fmt` (which writes each event whole).
pub struct OneLine<W: Write> {
    inner: W,
    ansi: bool,
}

impl<W: Write> OneLine<W> {
    /// Over `inner`; `ansi` keeps ESC for colour codes.
    pub fn new(inner: W, ansi: bool) -> Self {
        OneLine { inner, ansi }
    }
}

/// `event` as one line: inner `\n` and `\r` written as `\n` and `\r`, other
/// control characters dropped, ESC kept only for colours.
pub fn one_line(event: &str, ansi: bool) -> String {
    let (body, end) = match event.strip_suffix('\n') {
        Some(body) => (body, "\n"),
        None => (event, ""),
    };
    let mut out = String::with_capacity(event.len() + 8);
    for c in body.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            '\u{1b}' if ansi => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push_str(end);
    out
}

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(one_line(&String::from_utf8_lossy(buf), self.ansi).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_cannot_start_a_line() {
        let forged = "INFO alert delivered rule=5xx\nsluice.metric {\"outcome\":\"Succeeded\"}\r\u{1b}]0;x\u{7}\n";
        let line = one_line(forged, false);
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(line.ends_with('\n') && !line.contains("\nsluice.metric") && !line.contains('\u{1b}'), "{line:?}");
        assert!(line.contains("rule=5xx\\nsluice.metric"), "the text stays readable: {line:?}");
    }

    #[test]
    fn colours_survive_where_they_are_on() {
        let coloured = "\u{1b}[32mINFO\u{1b}[0m ready\n";
        assert_eq!(one_line(coloured, true), coloured);
        assert_eq!(one_line(coloured, false), "[32mINFO[0m ready\n");
    }
}
