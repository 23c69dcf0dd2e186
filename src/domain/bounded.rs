//! Outside text, bounded: every string a peer or a caller hands Sluice
//! (alert summaries, provider and router errors, reasons, links) is cut to
//! a few KB where it enters the decision core, marked as cut, so no event
//! can outgrow a store's entity, an issue body or a chat card.

/// Most characters kept of a message (an error, a reason, a summary).
pub const MESSAGE_CHARS: usize = 2_000;
/// Most characters kept of a name or an id (a rule, a severity, an alert id).
pub const NAME_CHARS: usize = 256;
/// Most caveats a router may report.
pub const CAVEATS: usize = 10;

/// `text` cut to `max` characters, with a mark saying how much was cut.
pub fn cap(text: &str, max: usize) -> String {
    let total = text.chars().count();
    if total <= max {
        return text.to_string();
    }
    let mut kept: String = text.chars().take(max).collect();
    kept.push_str(&format!("… [cut: {} more characters]", total - max));
    kept
}

/// `text` in at most `max` characters, the last an ellipsis when it was
/// cut: for a title or a card field whose length a service limits.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut kept: String = text.chars().take(max.saturating_sub(1)).collect();
    kept.push('…');
    kept
}

/// [`cap`] in place.
pub fn cap_in_place(text: &mut String, max: usize) {
    if text.chars().count() > max {
        *text = cap(text, max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_and_marked() {
        assert_eq!(cap("héllo", 5), "héllo");
        assert_eq!(cap("héllo wörld", 5), "héllo… [cut: 6 more characters]");
        let huge = "界".repeat(300_000);
        let cut = cap(&huge, MESSAGE_CHARS);
        assert!(cut.chars().count() < MESSAGE_CHARS + 40, "{}", cut.len());
        assert!(cut.ends_with("[cut: 298000 more characters]"));
        let mut s = "x".repeat(10);
        cap_in_place(&mut s, 4);
        assert_eq!(s, "xxxx… [cut: 6 more characters]");
        assert_eq!((clip("héllo", 5), clip("héllo wörld", 5), clip("ab", 0)), ("héllo".into(), "héll…".into(), "…".into()));
    }
}
