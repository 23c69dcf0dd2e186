//! A tiny document model for issue text, so one draft renders both as
//! Markdown (GitHub, local files) and as HTML (Azure DevOps fields and
//! comments). Every piece of text is escaped for its target: an alert's
//! summary cannot inject markup into anyone's tracker.

/// A run of inline text.
#[derive(Debug, Clone, PartialEq)]
pub enum Span {
    /// Plain text.
    Text(String),
    /// Bold.
    Strong(String),
    /// Monospace.
    Code(String),
    /// A link (text, URL).
    Link(String, String),
}

/// A block of the document.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A section heading.
    Heading(String),
    /// A paragraph.
    Para(Vec<Span>),
    /// A bulleted list.
    List(Vec<Vec<Span>>),
    /// A table: header and rows of plain text.
    Table {
        /// Column names.
        head: Vec<String>,
        /// Cells.
        rows: Vec<Vec<String>>,
    },
    /// Preformatted text, such as a log excerpt.
    Code(String),
    /// A machine-readable marker (hidden in Markdown, small print in HTML).
    Marker(String),
}

/// A document: blocks in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Doc {
    /// The blocks.
    pub blocks: Vec<Block>,
}

/// Shorthand for plain text.
pub fn text(s: impl Into<String>) -> Span {
    Span::Text(s.into())
}

/// Shorthand for bold text.
pub fn strong(s: impl Into<String>) -> Span {
    Span::Strong(s.into())
}

/// Shorthand for monospace text.
pub fn code(s: impl Into<String>) -> Span {
    Span::Code(s.into())
}

impl Doc {
    /// Appends a block.
    pub fn push(&mut self, block: Block) {
        self.blocks.push(block);
    }

    /// Appends another document.
    pub fn extend(&mut self, other: Doc) {
        self.blocks.extend(other.blocks);
    }

    /// GitHub-flavoured Markdown.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading(h) => out.push_str(&format!("## {}\n\n", md_text(h))),
                Block::Para(spans) => out.push_str(&format!("{}\n\n", md_spans(spans))),
                Block::List(items) => {
                    for item in items {
                        out.push_str(&format!("- {}\n", md_spans(item)));
                    }
                    out.push('\n');
                }
                Block::Table { head, rows } => {
                    out.push_str(&format!("| {} |\n", head.iter().map(|h| md_cell(h)).collect::<Vec<_>>().join(" | ")));
                    out.push_str(&format!("|{}\n", "---|".repeat(head.len())));
                    for row in rows {
                        out.push_str(&format!("| {} |\n", row.iter().map(|c| md_cell(c)).collect::<Vec<_>>().join(" | ")));
                    }
                    out.push('\n');
                }
                Block::Code(c) => {
                    // A fence longer than any backtick run inside cannot be closed by the text.
                    let fence = "`".repeat(longest_run(c, '`').max(2) + 1);
                    out.push_str(&format!("{fence}text\n{}\n{fence}\n\n", c.trim_end()));
                }
                Block::Marker(m) => out.push_str(&format!("<!-- {} -->\n", m.replace("--", "- -"))),
            }
        }
        out
    }

    /// HTML for rich-text fields.
    pub fn html(&self) -> String {
        let mut out = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading(h) => out.push_str(&format!("<h2>{}</h2>", esc(h))),
                Block::Para(spans) => out.push_str(&format!("<p>{}</p>", html_spans(spans))),
                Block::List(items) => {
                    out.push_str("<ul>");
                    for item in items {
                        out.push_str(&format!("<li>{}</li>", html_spans(item)));
                    }
                    out.push_str("</ul>");
                }
                Block::Table { head, rows } => {
                    out.push_str("<table><tr>");
                    for h in head {
                        out.push_str(&format!("<th>{}</th>", esc(h)));
                    }
                    out.push_str("</tr>");
                    for row in rows {
                        out.push_str("<tr>");
                        for c in row {
                            out.push_str(&format!("<td>{}</td>", esc(c)));
                        }
                        out.push_str("</tr>");
                    }
                    out.push_str("</table>");
                }
                Block::Code(c) => out.push_str(&format!("<pre>{}</pre>", esc(c.trim_end()))),
                Block::Marker(m) => out.push_str(&format!("<p><small>{}</small></p>", esc(m))),
            }
        }
        out
    }
}

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn longest_run(s: &str, c: char) -> usize {
    s.split(|x| x != c).map(str::len).max().unwrap_or(0)
}

/// Text as Markdown shows it and nothing more: angle brackets would be
/// read as HTML, a newline would end the block, Markdown's punctuation
/// would make links, images, emphasis or code; and `@name` or `#123` would
/// notify a team or cross-reference an issue (GitHub finds those in the
/// rendered text, so a backslash does not stop them: a word joiner does).
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' | '\n' => out.push(' '),
            '@' | '#' => {
                out.push(c);
                out.push('\u{2060}');
            }
            '\\' | '`' | '*' | '_' | '[' | ']' | '!' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn md_cell(s: &str) -> String {
    md_text(s).replace('|', "\\|")
}

fn md_spans(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| match s {
            Span::Text(t) => md_text(t),
            Span::Strong(t) => {
                // Emphasis must not start or end with a space, or it is not emphasis.
                let inner = t.trim();
                let lead = t.strip_suffix(t.trim_start()).unwrap_or("");
                let trail = t.strip_prefix(t.trim_end()).unwrap_or("");
                if inner.is_empty() {
                    t.clone()
                } else {
                    format!("{lead}**{}**{trail}", md_text(inner))
                }
            }
            Span::Code(t) => {
                // Delimiters longer than any backtick run inside: the text cannot close the span.
                let t = t.replace(['\r', '\n'], " ");
                match longest_run(&t, '`') {
                    0 => format!("`{t}`"),
                    run => {
                        let ticks = "`".repeat(run + 1);
                        format!("{ticks} {t} {ticks}")
                    }
                }
            }
            Span::Link(t, url) => format!("[{}]({})", md_text(&t.replace(['[', ']'], "")), url.replace([' ', ')', '(', '<', '>'], "")),
        })
        .collect()
}

fn html_spans(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| match s {
            Span::Text(t) => esc(t),
            Span::Strong(t) => format!("<b>{}</b>", esc(t)),
            Span::Code(t) => format!("<code>{}</code>", esc(t)),
            Span::Link(t, url) => format!("<a href=\"{}\">{}</a>", esc(url), esc(t)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Doc {
        let mut d = Doc::default();
        d.push(Block::Heading("What <happened>".into()));
        d.push(Block::Para(vec![text("a & b "), strong("v2"), text(" "), code("x|y"), text(" "), strong("Cause: "), text("x")]));
        d.push(Block::List(vec![vec![Span::Link("status".into(), "http://h/a?b=1&c=2".into())]]));
        d.push(Block::Table { head: vec!["k".into(), "v".into()], rows: vec![vec!["a|b".into(), "<script>".into()]] });
        d.push(Block::Marker("sluice:rollout=r-1".into()));
        d
    }

    #[test]
    fn markdown_escapes_what_would_break_the_layout() {
        let md = sample().markdown();
        assert_eq!(
            md,
            "## What &lt;happened&gt;\n\na & b **v2** `x|y` **Cause:** x\n\n- [status](http://h/a?b=1&c=2)\n\n| k | v |\n|---|---|\n| a\\|b | &lt;script&gt; |\n\n<!-- sluice:rollout=r-1 -->\n"
        );
    }

    #[test]
    fn outside_text_makes_no_link_image_mention_reference_or_broken_code() {
        let hostile =
            "cc @contoso/oncall see #12 ![x](https://beacon.example/p.png) [Approve here](https://attacker.example/login) **loud**";
        let mut d = Doc::default();
        d.push(Block::Para(vec![text(hostile), text(" "), code("a `` b ` c")]));
        let md = d.markdown();
        for made in ["![x](", "[Approve here](", "**loud**", "@contoso", "#12"] {
            assert!(!md.contains(made), "{made} survives in {md}");
        }
        assert!(md.contains("@\u{2060}contoso/oncall") && md.contains("\\[Approve here\\]"), "{md}");
        // The code span's delimiters outnumber any run inside it.
        assert!(md.contains("``` a `` b ` c ```"), "{md}");
    }

    #[test]
    fn code_blocks_cannot_be_closed_by_their_text() {
        let mut d = Doc::default();
        d.push(Block::Code("a ``` b\n<script>\n".into()));
        assert_eq!(d.markdown(), "````text\na ``` b\n<script>\n````\n\n");
        assert_eq!(d.html(), "<pre>a ``` b\n&lt;script&gt;</pre>");
    }

    #[test]
    fn html_escapes_all_text() {
        let html = sample().html();
        assert_eq!(
            html,
            "<h2>What &lt;happened&gt;</h2><p>a &amp; b <b>v2</b> <code>x|y</code> <b>Cause: </b>x</p><ul><li><a href=\"http://h/a?b=1&amp;c=2\">status</a></li></ul><table><tr><th>k</th><th>v</th></tr><tr><td>a|b</td><td>&lt;script&gt;</td></tr></table><p><small>sluice:rollout=r-1</small></p>"
        );
    }
}
