//! What the Functions host reads and matches, emulated for both hosts:
//! function definitions from `function.json` (trigger, binding names, HTTP
//! output), the copies built into the binary, route templates as the host
//! matches them (`rollouts/{id?}/{action?}`), and query strings.

use std::collections::BTreeMap;

use serde_json::Value;

/// A function's trigger, as `function.json` declares it.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// HTTP, with its route template and methods.
    Http {
        /// Route template, e.g. `rollouts/{id?}/{action?}`.
        route: RouteTemplate,
        /// Allowed methods, upper case.
        methods: Vec<String>,
        /// `function`, `anonymous`, `admin`.
        auth_level: String,
    },
    /// A timer with an NCRONTAB schedule.
    Timer {
        /// Six fields, seconds first.
        schedule: String,
    },
    /// A Service Bus queue.
    ServiceBus {
        /// Queue name.
        queue: String,
        /// App-setting prefix of the connection.
        connection: String,
    },
}

/// A timer's NCRONTAB schedule as the Functions host reads it: six fields,
/// seconds first, no year.
pub fn ncrontab(schedule: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder().seconds(Seconds::Required).year(Year::Disallowed).build().parse(schedule).map_err(|e| e.to_string())
}

/// One function: a folder in `functions/`.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionDef {
    /// Folder name.
    pub name: String,
    /// What triggers it.
    pub trigger: Trigger,
    /// The trigger binding's name (`req`, `msg`, `timer`): its key in an invocation's `Data`.
    pub binding: String,
    /// The HTTP output binding's name (`res`), for HTTP functions.
    pub http_output: Option<String>,
}

/// The `function.json` files built into the binary (the custom handler serves
/// from these; `sluice up` reads the files on disk like the Functions host).
pub const EMBEDDED: &[(&str, &str)] = &[
    ("alerts", include_str!("../../functions/alerts/function.json")),
    ("api", include_str!("../../functions/api/function.json")),
    ("dashboard", include_str!("../../functions/dashboard/function.json")),
    ("doctor", include_str!("../../functions/doctor/function.json")),
    ("gate", include_str!("../../functions/gate/function.json")),
    ("metrics", include_str!("../../functions/metrics/function.json")),
    ("pipelines", include_str!("../../functions/pipelines/function.json")),
    ("releases", include_str!("../../functions/releases/function.json")),
    ("report", include_str!("../../functions/report/function.json")),
    ("slack", include_str!("../../functions/slack/function.json")),
    ("steps", include_str!("../../functions/steps/function.json")),
    ("tick", include_str!("../../functions/tick/function.json")),
    ("waves", include_str!("../../functions/waves/function.json")),
];

/// Reads one `function.json`.
pub fn parse_function_json(name: &str, text: &str) -> Result<FunctionDef, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("functions/{name}/function.json: {e}"))?;
    let bindings = doc.get("bindings").and_then(Value::as_array).ok_or_else(|| format!("functions/{name}/function.json: no bindings"))?;
    let trigger = bindings
        .iter()
        .find(|b| b.get("direction").and_then(Value::as_str) == Some("in"))
        .ok_or_else(|| format!("functions/{name}/function.json: no input binding"))?;
    let s = |key: &str| trigger.get(key).and_then(Value::as_str).map(str::to_string);
    let trigger = match s("type").as_deref() {
        Some("httpTrigger") => Trigger::Http {
            route: RouteTemplate::parse(&s("route").unwrap_or_else(|| name.to_string())),
            methods: trigger
                .get("methods")
                .and_then(Value::as_array)
                .map(|m| m.iter().filter_map(Value::as_str).map(str::to_ascii_uppercase).collect())
                .unwrap_or_else(|| vec!["GET".into(), "POST".into()]),
            auth_level: s("authLevel").unwrap_or_else(|| "function".into()),
        },
        Some("timerTrigger") => {
            Trigger::Timer { schedule: s("schedule").ok_or_else(|| format!("functions/{name}: timer without schedule"))? }
        }
        Some("serviceBusTrigger") => Trigger::ServiceBus {
            queue: s("queueName").ok_or_else(|| format!("functions/{name}: serviceBusTrigger without queueName"))?,
            connection: s("connection").unwrap_or_else(|| "ServiceBusConnection".into()),
        },
        other => return Err(format!("functions/{name}/function.json: unsupported trigger {other:?}")),
    };
    let binding = s("name").ok_or_else(|| format!("functions/{name}/function.json: the trigger binding has no name"))?;
    let http_output = bindings
        .iter()
        .find(|b| b.get("type").and_then(Value::as_str) == Some("http") && b.get("direction").and_then(Value::as_str) == Some("out"))
        .and_then(|b| b.get("name").and_then(Value::as_str))
        .map(str::to_string);
    Ok(FunctionDef { name: name.to_string(), trigger, binding, http_output })
}

/// The embedded definitions, parsed.
pub fn embedded_definitions() -> Result<Vec<FunctionDef>, String> {
    EMBEDDED.iter().map(|(name, text)| parse_function_json(name, text)).collect()
}

/// A Functions route template: literal segments, `{name}`, `{name?}`, `{*rest}`;
/// constraints such as `{id:alpha}` are accepted and ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteTemplate {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Param { name: String, optional: bool, catch_all: bool },
}

impl RouteTemplate {
    /// Parses a template.
    pub fn parse(text: &str) -> Self {
        let segments = text
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(inner) => {
                    let catch_all = inner.starts_with('*');
                    let inner = inner.trim_start_matches('*');
                    let optional = inner.ends_with('?');
                    let name = inner.trim_end_matches('?').split(':').next().unwrap_or("").to_string();
                    Segment::Param { name, optional, catch_all }
                }
                None => Segment::Literal(s.to_ascii_lowercase()),
            })
            .collect();
        RouteTemplate { text: text.to_string(), segments }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Matches a path (without the route prefix); returns the parameters.
    pub fn matches(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
        let mut params = BTreeMap::new();
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => {
                    if parts.get(i).map(|p| p.to_ascii_lowercase()) != Some(l.clone()) {
                        return None;
                    }
                    i += 1;
                }
                Segment::Param { name, catch_all: true, .. } => {
                    if i < parts.len() {
                        params.insert(name.clone(), parts[i..].join("/"));
                    }
                    i = parts.len();
                }
                Segment::Param { name, optional, .. } => match parts.get(i) {
                    Some(p) => {
                        params.insert(name.clone(), percent_decode(p));
                        i += 1;
                    }
                    None if *optional => {}
                    None => return None,
                },
            }
        }
        (i == parts.len()).then_some(params)
    }
}

/// Parses a query string (`a=1&b=x+y`, percent-escapes decoded; the last of a repeated key wins).
pub fn parse_query(q: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// Decodes `%xx` escapes in a path segment (invalid escapes are kept as written).
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// Finds the HTTP function for a path under the route prefix.
pub fn route_http<'a>(defs: &'a [FunctionDef], prefix: &str, method: &str, path: &str) -> RouteMatch<'a> {
    let prefix = prefix.trim_matches('/');
    let rest = path.trim_start_matches('/');
    let rest = if prefix.is_empty() { Some(rest) } else { rest.strip_prefix(prefix).filter(|r| r.is_empty() || r.starts_with('/')) };
    let Some(rest) = rest else { return RouteMatch::NotFound };
    let mut wrong_method = false;
    for def in defs {
        if let Trigger::Http { route, methods, .. } = &def.trigger {
            if let Some(params) = route.matches(rest) {
                if methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
                    return RouteMatch::Found(def, params);
                }
                wrong_method = true;
            }
        }
    }
    if wrong_method {
        RouteMatch::MethodNotAllowed
    } else {
        RouteMatch::NotFound
    }
}

/// The result of routing an HTTP request.
pub enum RouteMatch<'a> {
    /// The function and its route parameters.
    Found(&'a FunctionDef, BTreeMap<String, String>),
    /// A route matched but not with this method.
    MethodNotAllowed,
    /// Nothing matched.
    NotFound,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::HANDLERS;

    #[test]
    fn route_templates_match_like_the_functions_host() {
        let t = RouteTemplate::parse("rollouts/{id?}/{action?}");
        assert_eq!(t.matches("rollouts"), Some(BTreeMap::new()));
        let m = t.matches("/rollouts/r-1/approve/").expect("matches");
        assert_eq!((m["id"].as_str(), m["action"].as_str()), ("r-1", "approve"));
        assert_eq!(t.matches("rollouts/a/b/c"), None);
        assert_eq!(t.matches("alerts"), None);
        let t = RouteTemplate::parse("files/{*rest}");
        assert_eq!(t.matches("files/a/b").expect("matches")["rest"], "a/b");
        let t = RouteTemplate::parse("items/{id:int}");
        assert_eq!(t.matches("items/7").expect("matches")["id"], "7");
        assert_eq!(t.matches("items"), None);
    }

    #[test]
    fn every_embedded_function_has_a_handler_and_back() {
        let defs = embedded_definitions().expect("valid function.json files");
        let mut names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        names.sort();
        assert_eq!(names, HANDLERS);
        let on_disk: Vec<String> = {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("functions");
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .expect("functions/")
                .filter_map(|e| e.ok())
                .filter(|e| e.path().join("function.json").exists())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(on_disk, HANDLERS);
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/functions");
        for name in HANDLERS {
            assert!(src.join(format!("{name}.rs")).exists(), "src/functions/{name}.rs mirrors functions/{name}/");
        }
    }

    #[test]
    fn every_http_function_is_anonymous_at_the_host_and_sluice_asks_its_own_key() {
        use crate::functions::access::{key_rule, KeyRule};
        let defs = embedded_definitions().expect("valid");
        let http: Vec<(&str, &str)> = defs
            .iter()
            .filter_map(|d| match &d.trigger {
                Trigger::Http { auth_level, .. } => Some((d.name.as_str(), auth_level.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(http.len(), 11, "{http:?}");
        // A host key would stand in front of a caller whose token is all it holds.
        for (name, level) in &http {
            assert_eq!(*level, "anonymous", "{name}");
        }
        let rule = |name: &str| key_rule(name);
        // Callers with a static credential only: Prometheus, Azure DevOps' agentless task.
        assert_eq!((rule("metrics"), rule("pipelines")), (KeyRule::Always, KeyRule::Always));
        // Its own check (URL token or Entra), and a page that holds no data.
        assert_eq!((rule("alerts"), rule("dashboard")), (KeyRule::Never, KeyRule::Never));
        // Slack signs its clicks with the app's signing secret and cannot send a key.
        assert_eq!(rule("slack"), KeyRule::Never);
        for name in ["api", "doctor", "gate", "releases", "report", "waves"] {
            assert_eq!(rule(name), KeyRule::UnlessTokens, "{name}");
        }
        assert_eq!(rule("a-function-added-later"), KeyRule::Always, "fail closed");
        assert!(matches!(route_http(&defs, "api", "GET", "/api/metrics"), RouteMatch::Found(d, _) if d.name == "metrics"));
        assert!(matches!(route_http(&defs, "api", "GET", "/api/report"), RouteMatch::Found(d, _) if d.name == "report"));
    }

    #[test]
    fn routing_distinguishes_not_found_and_wrong_method() {
        let defs = embedded_definitions().expect("valid");
        assert!(matches!(route_http(&defs, "api", "POST", "/api/alerts"), RouteMatch::Found(d, _) if d.name == "alerts"));
        assert!(matches!(route_http(&defs, "api", "DELETE", "/api/alerts"), RouteMatch::MethodNotAllowed));
        assert!(matches!(route_http(&defs, "api", "GET", "/api/nothing"), RouteMatch::NotFound));
        assert!(matches!(route_http(&defs, "api", "GET", "/apix/rollouts"), RouteMatch::NotFound));
        assert!(
            matches!(route_http(&defs, "api", "GET", "/api/rollouts/r1"), RouteMatch::Found(d, p) if d.name == "api" && p["id"] == "r1")
        );
    }

    #[test]
    fn percent_decoding_and_queries() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
        assert_eq!(percent_decode("%é%"), "%é%");
        let q = parse_query("active=true&phase=Paused&x=a+b");
        assert_eq!((q["active"].as_str(), q["phase"].as_str(), q["x"].as_str()), ("true", "Paused", "a b"));
    }
}
