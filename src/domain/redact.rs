//! Scrubbing credentials out of text Sluice did not write (a pipeline's log
//! excerpt) before it reaches history, issues or notifications. A pipeline
//! masks the secrets it knows; this catches the shapes it may not: bearer
//! and basic credentials, `key=value` secrets in connection strings and
//! query strings, GitHub tokens and JWTs.

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Keys whose value is a secret in `key=value` or `key: value` text (compared in lower case).
const SECRET_KEYS: &[&str] = &[
    "accountkey",
    "sharedaccesskey",
    "sig",
    "password",
    "pwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "apikey",
    "api_key",
    "api-key",
    "code",
    "x-functions-key",
    "ocp-apim-subscription-key",
];

/// Token prefixes GitHub gives its credentials.
const TOKEN_PREFIXES: &[&str] = &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"];

/// `text` with every credential-shaped value replaced by [`REDACTED`].
pub fn secrets(text: &str) -> String {
    text.split_inclusive('\n').map(line).collect()
}

fn line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_scheme = false;
    for piece in text.split_inclusive([' ', '\t']) {
        let word = piece.trim_end_matches([' ', '\t', '\n', '\r']);
        let gap = piece.get(word.len()..).unwrap_or("");
        let lower = word.to_ascii_lowercase();
        if after_scheme && !word.is_empty() {
            out.push_str(REDACTED);
        } else {
            out.push_str(&word_scrubbed(word));
        }
        out.push_str(gap);
        if !word.is_empty() {
            let bare = lower.trim_matches(['"', '\'']);
            let labelled = bare.strip_suffix([':', '=']).map(|k| k.trim_matches(['"', '\'']));
            after_scheme = matches!(bare, "bearer" | "basic") || labelled.is_some_and(|k| SECRET_KEYS.contains(&k));
        }
    }
    out
}

fn word_scrubbed(word: &str) -> String {
    let bare = word.trim_matches(['"', '\'', ',', ';']);
    if TOKEN_PREFIXES.iter().any(|p| bare.starts_with(p)) || is_jwt(bare) {
        return word.replace(bare, REDACTED);
    }
    // key=value pairs, joined by ; & or ? (connection strings, URLs).
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(at) = rest.find('=') {
        let (key_part, tail) = rest.split_at(at);
        let separator = tail.get(..1).unwrap_or("");
        let value_and_more = tail.get(1..).unwrap_or("");
        let key = key_part.rsplit(['?', '&', ';', '"', '\'', '{', ',']).next().unwrap_or("").to_ascii_lowercase();
        out.push_str(key_part);
        out.push_str(separator);
        let end = value_and_more.find(['&', ';', '"', '\'', ',', '}']).unwrap_or(value_and_more.len());
        let (value, after) = value_and_more.split_at(end);
        if SECRET_KEYS.contains(&key.as_str()) && !value.is_empty() {
            out.push_str(REDACTED);
        } else {
            out.push_str(value);
        }
        rest = after;
        if let Some(stripped) = rest.get(..1) {
            out.push_str(stripped);
            rest = rest.get(1..).unwrap_or("");
        }
    }
    out.push_str(rest);
    out
}

fn is_jwt(word: &str) -> bool {
    let parts: Vec<&str> = word.split('.').collect();
    parts.len() == 3
        && word.starts_with("eyJ")
        && parts.iter().all(|p| p.len() >= 8 && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn credentials_of_every_known_shape_are_replaced() {
        let cases = [
            ("curl -H 'Authorization: Bearer abc.def' https://x", "curl -H 'Authorization: Bearer [redacted] https://x"),
            ("AccountName=dev;AccountKey=c2VjcmV0==;EndpointSuffix=core", "AccountName=dev;AccountKey=[redacted];EndpointSuffix=core"),
            ("GET https://h/api/x?code=k3y&limit=2 500", "GET https://h/api/x?code=[redacted]&limit=2 500"),
            ("token ghp_0123456789abcdef leaked", "token [redacted] leaked"),
            ("sv=2021&sig=AbC%2F&se=2026", "sv=2021&sig=[redacted]&se=2026"),
            ("password: hunter2", "password: [redacted]"),
            ("jwt eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2Q", "jwt [redacted]"),
        ];
        for (input, expected) in cases {
            assert_eq!(secrets(input), expected, "{input}");
        }
    }

    #[test]
    fn ordinary_log_lines_are_left_as_they_are() {
        let log = "error[E0308]: mismatched types\n  --> src/main.rs:4:5\nhttps://example.com/a?page=2\ntest result: FAILED. 3 passed; 1 failed\n";
        assert_eq!(secrets(log), log);
    }

    proptest! {
        #[test]
        fn never_panics_and_keeps_the_line_count(text in "\\PC{0,200}(\n\\PC{0,50}){0,4}") {
            let out = secrets(&text);
            prop_assert_eq!(out.matches('\n').count(), text.matches('\n').count());
        }
    }
}
