//! Text from a server made safe to print where people and pipelines read
//! it. A status carries words from outside (alert summaries, abort reasons,
//! provider errors); printed as they are, they could clear or retitle a
//! terminal (ESC and OSC sequences) or become a pipeline's command:
//! - the Azure Pipelines agent runs `##vso[` found anywhere in a line
//!   (`message.IndexOf("##vso[")`, case-sensitive) and ends a line at a
//!   bare `\r` (microsoft/azure-pipelines-agent, `Command.cs` and
//!   `ReadLine`); its own neutraliser turns `##vso` into `**vso`;
//! - the GitHub Actions runner runs a line that starts with `::` after
//!   leading whitespace is trimmed (actions/runner `ActionCommand.TryParseV2`),
//!   and its older form `##[`.
//!
//! Only the CLI's own annotation lines (`cli::ci`) are commands.

/// `text` for a terminal or a pipeline's log: control characters dropped
/// (newlines and tabs kept), bidirectional overrides dropped, and every
/// workflow-command form defused visibly.
pub fn for_terminal(text: &str) -> String {
    let kept: String = text.chars().filter(|c| *c == '\n' || *c == '\t' || !(c.is_control() || is_bidi_control(*c))).collect();
    let defused = defuse_hashes(&kept);
    let mut out = String::with_capacity(defused.len());
    for (i, line) in defused.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let body = line.trim_start();
        match (body.strip_prefix("::"), line.strip_suffix(body)) {
            (Some(command), Some(indent)) => {
                out.push_str(indent);
                out.push_str(": :");
                out.push_str(command);
            }
            _ => out.push_str(line),
        }
    }
    out
}

/// JSON text for a pipeline's log: the same document, with `#` and the
/// bidirectional controls written as `\uXXXX` inside strings, so no
/// `##vso[` or `##[` appears and no text is reordered (a JSON string is one
/// line: its newlines and control characters are already escaped, and
/// neither character can occur outside a string).
pub fn json_for_log(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c == '#' || is_bidi_control(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// `##vso` (any case) becomes `**vso`, as the agent's own neutraliser does,
/// and `##[` becomes `**[`.
fn defuse_hashes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some((before, after)) = rest.split_once("##") {
        let command = after.starts_with('[') || after.get(..3).is_some_and(|w| w.eq_ignore_ascii_case("vso"));
        out.push_str(before);
        out.push_str(if command { "**" } else { "##" });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Unicode's bidirectional embeddings, overrides and isolates: they make a
/// terminal show text in another order than it is.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_pipeline_commands_and_escape_sequences_are_defused() {
        let hostile = "aborted\n##vso[task.setvariable variable=SLUICE_URL]https://attacker.example\n  ::error::forged\r::add-mask::x\u{1b}]0;pwned\u{7}\u{1b}[2J ##[group]g x##VSO[task.complete]";
        let safe = for_terminal(hostile);
        for line in safe.lines() {
            assert!(!line.contains("##vso[") && !line.to_ascii_lowercase().contains("##vso") && !line.contains("##["), "{line:?}");
            assert!(!line.trim_start().starts_with("::"), "{line:?}");
        }
        assert!(!safe.chars().any(|c| c.is_control() && c != '\n' && c != '\t'), "{safe:?}");
        assert!(safe.contains("**vso[task.setvariable variable=SLUICE_URL]https://attacker.example"), "the words stay readable: {safe}");
        assert!(safe.contains("  : :error::forged"), "{safe}");
    }

    #[test]
    fn ordinary_text_is_unchanged() {
        let text = "rollout r-1: 5% → 20% · waiting for approval\n\tissue #42 ## notes: a::b";
        assert_eq!(for_terminal(text), text);
    }

    #[test]
    fn json_for_a_log_is_the_same_document_without_a_command() {
        let doc = serde_json::json!({"reason": "x\n##vso[task.setvariable variable=A]b \u{202e}", "tag": "#1"});
        let text = json_for_log(&serde_json::to_string_pretty(&doc).expect("json"));
        assert!(!text.contains('#') && !text.contains('\u{202e}'), "{text}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&text).expect("still JSON"), doc);
    }
}
