//! Scrubbing credentials out of text Sluice did not write (a pipeline's log
//! excerpt) before it reaches history, issues or notifications. A pipeline
//! masks the secrets it knows; this catches the shapes it may not: bearer
//! and basic credentials, `key=value` and `"key": "value"` secrets (any
//! key ending in `_SECRET`, `_PASSWORD`, `_TOKEN`, `_KEY` too), `--password`
//! style flags and `az login -p`, credentials in a URL's user info, chat
//! webhook paths, GitHub tokens and JWTs.

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

/// Key endings that mark a secret (`DB_PASSWORD`, `AZURE_CLIENT_SECRET`, `NPM_TOKEN`).
const SECRET_ENDINGS: &[&str] =
    &["secret", "password", "passwd", "pwd", "token", "accesstoken", "key", "apikey", "credentials", "pat", "connectionstring"];

/// Hosts whose URL path is itself the credential (incoming webhooks).
const WEBHOOK_HOSTS: &[&str] = &["hooks.slack.com", "webhook.office.com", "outlook.office.com", "discord.com/api/webhooks"];

/// Whether `key` (a setting, a flag or a JSON name) names a secret:
/// `password`, `DB_PASSWORD`, `client-secret`, `clientSecret`.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.trim_start_matches('-');
    let lower = key.to_ascii_lowercase();
    SECRET_KEYS.contains(&lower.as_str())
        || SECRET_ENDINGS.iter().any(|end| {
            let Some(head) = lower.strip_suffix(end) else { return false };
            // A word boundary before the ending: `_`, `-`, `.`, or camelCase's capital.
            let camel = key.get(head.len()..).is_some_and(|e| e.starts_with(|c: char| c.is_ascii_uppercase())) && !head.is_empty();
            head.is_empty() || head.ends_with(['_', '-', '.']) || camel
        })
}

/// Token prefixes GitHub gives its credentials.
const TOKEN_PREFIXES: &[&str] = &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"];

/// `text` with every credential-shaped value replaced by [`REDACTED`].
pub fn secrets(text: &str) -> String {
    text.split_inclusive('\n').map(line).collect()
}

fn line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut after_scheme = false;
    // `az login -p SECRET` / `--password SECRET`: only a login's `-p` is a password.
    let login = text.to_ascii_lowercase().contains("login");
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
            let bare = word.trim_matches(['"', '\'', '{', ',']);
            let labelled = bare.strip_suffix([':', '=']).map(|k| k.trim_matches(['"', '\'']));
            let flag = (bare.starts_with("--") && is_secret_key(bare)) || (login && bare == "-p");
            let scheme = matches!(lower.trim_matches(['"', '\'']), "bearer" | "basic");
            after_scheme = scheme || labelled.is_some_and(is_secret_key) || flag;
        }
    }
    out
}

fn word_scrubbed(word: &str) -> String {
    let bare = word.trim_matches(['"', '\'', ',', ';']);
    if TOKEN_PREFIXES.iter().any(|p| bare.starts_with(p)) || is_jwt(bare) {
        return word.replace(bare, REDACTED);
    }
    let word = &url_scrubbed(word);
    let word = &json_pairs_scrubbed(word);
    // key=value pairs, joined by ; & or ? (connection strings, URLs).
    let mut out = String::with_capacity(word.len());
    let mut rest: &str = word;
    while let Some(at) = rest.find('=') {
        let (key_part, tail) = rest.split_at(at);
        let separator = tail.get(..1).unwrap_or("");
        let value_and_more = tail.get(1..).unwrap_or("");
        let key = key_part.rsplit(['?', '&', ';', '"', '\'', '{', ',']).next().unwrap_or("").to_ascii_lowercase();
        out.push_str(key_part);
        out.push_str(separator);
        let end = value_and_more.find(['&', ';', '"', '\'', ',', '}']).unwrap_or(value_and_more.len());
        let (value, after) = value_and_more.split_at(end);
        if is_secret_key(&key) && !value.is_empty() {
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

/// A URL's user info (`https://x-access-token:ghs_…@github.com`) and a
/// webhook's path (the path is the credential), also JSON-escaped (`\\/`).
fn url_scrubbed(word: &str) -> String {
    let (sep, slash) = if word.contains(":\\/\\/") { (":\\/\\/", "\\/") } else { ("://", "/") };
    let Some((scheme, rest)) = word.split_once(sep) else { return word.to_string() };
    let (authority, path, slash) = match rest.split_once(slash) {
        Some((a, p)) => (a, p, slash),
        None => (rest, "", ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{REDACTED}@{host}"),
        None => authority.to_string(),
    };
    let plain = format!("{authority}/{}", path.replace("\\/", "/")).to_ascii_lowercase();
    if !path.is_empty() && WEBHOOK_HOSTS.iter().any(|h| plain.contains(h)) {
        let core = path.trim_end_matches(['"', '\'', '}', ',', ')', ']']);
        let after = path.strip_prefix(core).unwrap_or("");
        return format!("{scheme}{sep}{authority}{slash}{REDACTED}{after}");
    }
    format!("{scheme}{sep}{authority}{slash}{path}")
}

/// `"key":"value"` pairs in one word (compact JSON) whose key names a secret.
fn json_pairs_scrubbed(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some((before, after)) = rest.split_once("\":\"") {
        out.push_str(before);
        out.push_str("\":\"");
        let key = before.rsplit('"').next().unwrap_or("");
        let (value, tail) = after.split_once('"').unwrap_or((after, ""));
        out.push_str(if is_secret_key(key) && !value.is_empty() { REDACTED } else { value });
        if after.contains('"') {
            out.push('"');
        }
        rest = tail;
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
            // The forms issue 36 found in pipeline logs.
            ("git clone https://x-access-token:ghs_abc@github.com/o/r.git", "git clone https://[redacted]@github.com/o/r.git"),
            ("az login --service-principal -u app -p s3cr3t --tenant t", "az login --service-principal -u app -p [redacted] --tenant t"),
            (
                "AZURE_CLIENT_SECRET=abc123 DB_PASSWORD=pw NPM_TOKEN=t",
                "AZURE_CLIENT_SECRET=[redacted] DB_PASSWORD=[redacted] NPM_TOKEN=[redacted]",
            ),
            (r#"{"user":"u","password":"hunter2","n":1}"#, r#"{"user":"u","password":"[redacted]","n":1}"#),
            (r#"{"clientSecret": "abc"}"#, r#"{"clientSecret": [redacted]"#),
            ("deploy --password=hunter2 --verbose", "deploy --password=[redacted] --verbose"),
            ("psql --password hunter2", "psql --password [redacted]"),
            ("post https://hooks.slack.com/services/T000/B000/XXXX failed", "post https://hooks.slack.com/[redacted] failed"),
            (r#"{"url":"https:\/\/hooks.slack.com\/services\/T000\/B000\/XXXX"}"#, r#"{"url":"https:\/\/hooks.slack.com\/[redacted]"}"#),
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
