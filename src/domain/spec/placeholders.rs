//! `${NAME}` placeholders in a spec template, filled from a pipeline's
//! environment (`--fill-env`): one spec file in the repository, the commit,
//! versions and resource names of each run filled in. Only string values
//! are touched, so a value can never break the document's structure; only
//! upper-case names are placeholders (Sluice's own `{{name}}` and any other
//! `$` text stay as written); a name that is not set is a problem with its
//! path, never an empty string. A name that looks like a credential
//! (`*_SECRET`, `*_PASSWORD`, `*_TOKEN`, `*_KEY`, `*_PAT`, `SYSTEM_ACCESSTOKEN`,
//! the rules of [`crate::domain::redact`]) is never filled: a spec is sent
//! to Sluice and shown in its status, so a template naming a runner's secret
//! would hand it over.

use serde_json::Value;

use super::problems::{Problem, Problems};

/// Fills every `${NAME}` in `doc`'s strings from `get`.
pub fn fill(doc: &mut Value, get: &dyn Fn(&str) -> Option<String>) -> Result<(), Problems> {
    fill_only(doc, get, &Names::Any)
}

/// Which names a fill may take (`--fill-env` or `--fill-env=RELEASE_,GITHUB_SHA`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Names {
    /// Any name that does not look like a secret.
    Any,
    /// Only these names, or names starting with one that ends in `_` (or `*`, dropped).
    Only(Vec<String>),
}

impl Names {
    /// From `--fill-env`'s value: empty is any name, else a comma-separated list.
    pub fn parse(list: &str) -> Names {
        let entries: Vec<String> = list.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_string).collect();
        if entries.is_empty() {
            Names::Any
        } else {
            Names::Only(entries)
        }
    }

    fn allows(&self, name: &str) -> bool {
        match self {
            Names::Any => true,
            Names::Only(entries) => entries.iter().any(|e| match e.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None if e.ends_with('_') => name.starts_with(e.as_str()),
                None => name == e,
            }),
        }
    }
}

/// Fills the `${NAME}`s that `names` allows; any other is a problem with its path.
pub fn fill_only(doc: &mut Value, get: &dyn Fn(&str) -> Option<String>, names: &Names) -> Result<(), Problems> {
    let mut problems = Vec::new();
    let allowed = |name: &str| if names.allows(name) { get(name) } else { None };
    let why = |name: &str| {
        if crate::domain::redact::is_secret_key(name) {
            format!("${{{name}}} names a secret; --fill-env never puts one into a spec")
        } else if !names.allows(name) {
            format!("${{{name}}} is not among the names --fill-env was given")
        } else {
            format!("${{{name}}} is not set in the environment")
        }
    };
    walk(doc, String::new(), &allowed, &why, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Problems::new(problems))
    }
}

fn walk(v: &mut Value, path: String, get: &dyn Fn(&str) -> Option<String>, why: &dyn Fn(&str) -> String, problems: &mut Vec<Problem>) {
    match v {
        Value::String(s) => match fill_text(s, get) {
            Ok(filled) => *s = filled,
            Err(refused) => problems.extend(refused.into_iter().map(|name| Problem { path: path.clone(), message: why(&name) })),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{i}]"), get, why, problems);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                walk(item, child, get, why, problems);
            }
        }
        _ => {}
    }
}

fn is_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The text with its placeholders filled, or the names that are not set
/// or name a secret.
fn fill_text(text: &str, get: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let inner = from.get(2..).unwrap_or("");
        match inner.find('}').map(|end| inner.split_at(end)) {
            Some((name, after)) if is_name(name) => {
                match get(name).filter(|_| !crate::domain::redact::is_secret_key(name)) {
                    Some(value) => out.push_str(&value),
                    None => missing.push(name.to_string()),
                }
                rest = after.get(1..).unwrap_or("");
            }
            _ => {
                out.push_str("${");
                rest = inner;
            }
        }
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(k: &str) -> Option<String> {
        match k {
            "SHA" => Some("abc123".into()),
            "QUOTE" => Some("a\"b".into()),
            _ => None,
        }
    }

    #[test]
    fn placeholders_are_filled_inside_strings_only() {
        let mut doc = json!({"canary": {"version": "${SHA}", "n": 5}, "q": "${QUOTE}", "own": "{{name}}", "shell": "$HOME ${lower} ${", "list": ["x-${SHA}-y"]});
        fill(&mut doc, &env).expect("filled");
        assert_eq!(
            doc,
            json!({"canary": {"version": "abc123", "n": 5}, "q": "a\"b", "own": "{{name}}", "shell": "$HOME ${lower} ${", "list": ["x-abc123-y"]})
        );
    }

    #[test]
    fn a_secret_is_never_filled_into_a_spec() {
        let all = |_: &str| Some("s3cr3t".to_string());
        for name in ["SLUICE_FUNCTION_KEY", "AZURE_CLIENT_SECRET", "SYSTEM_ACCESSTOKEN", "GITHUB_TOKEN", "AZURE_DEVOPS_PAT", "DB_PASSWORD"]
        {
            let mut doc = json!({"target": {"canary": {"version": format!("${{{name}}}")}}});
            let problems = fill(&mut doc, &all).expect_err(name).to_string();
            assert!(problems.contains("names a secret") && !problems.contains("s3cr3t"), "{problems}");
        }
        let mut doc = json!({"v": "${RELEASE_VERSION}", "s": "${AZURE_SUBSCRIPTION_ID}", "r": "${GITHUB_REPOSITORY}"});
        fill(&mut doc, &all).expect("ordinary names are filled");
    }

    #[test]
    fn a_list_of_names_or_prefixes_fills_only_those() {
        let all = |name: &str| Some(format!("<{name}>"));
        let names = Names::parse("RELEASE_, GITHUB_SHA,APP*");
        let mut doc = json!({"a": "${RELEASE_VERSION}", "b": "${GITHUB_SHA}", "c": "${APP_NAME}"});
        fill_only(&mut doc, &all, &names).expect("listed names are filled");
        assert_eq!(doc, json!({"a": "<RELEASE_VERSION>", "b": "<GITHUB_SHA>", "c": "<APP_NAME>"}));
        let mut doc = json!({"canary": {"version": "${SLUICE_URL}"}, "x": "${GITHUB_SHA_2}"});
        let problems = fill_only(&mut doc, &all, &names).expect_err("others are not").to_string();
        assert!(problems.contains("canary.version: ${SLUICE_URL} is not among the names --fill-env was given"), "{problems}");
        assert!(problems.contains("x: ${GITHUB_SHA_2} is not among"), "an exact name is not a prefix: {problems}");
        assert_eq!(Names::parse(""), Names::Any);
    }

    #[test]
    fn every_unset_name_is_a_problem_with_its_path() {
        let mut doc = json!({"target": {"canary": {"version": "${RELEASE_VERSION}"}}, "list": ["${SHA}", "${NOPE}"]});
        let problems = fill(&mut doc, &env).expect_err("unset names");
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            ["list[1]: ${NOPE} is not set in the environment", "target.canary.version: ${RELEASE_VERSION} is not set in the environment"]
        );
    }
}
