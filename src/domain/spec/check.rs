//! Checks a spec document: structurally against the JSON Schema generated
//! from the spec types (so the committed schema and the validator cannot
//! disagree), then the cross-field rules a schema cannot express. Both
//! passes work on the raw JSON value and collect every problem instead of
//! stopping at the first, which is what serde alone would do.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::{parse_duration_ms, Condition, Problem, ProviderNames};

/// A location in a document, rendered as `a.b[3].c`.
#[derive(Clone, Default)]
struct Path(Vec<Segment>);

#[derive(Clone)]
enum Segment {
    Key(String),
    Index(usize),
}

impl Path {
    fn key(&self, k: &str) -> Path {
        let mut p = self.clone();
        p.0.push(Segment::Key(k.to_string()));
        p
    }

    fn index(&self, i: usize) -> Path {
        let mut p = self.clone();
        p.0.push(Segment::Index(i));
        p
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Segment::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    fn problem(&self, message: impl Into<String>) -> Problem {
        Problem { path: self.render(), message: message.into() }
    }
}

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(super::json_schema)
}

/// Checks `doc` against the spec's JSON Schema.
pub(super) fn structural(doc: &Value, providers: &ProviderNames) -> Vec<Problem> {
    against_schema(schema(), doc, providers)
}

/// Checks `doc` against any schema generated from Sluice's types (the spec,
/// the step messages), with every problem named by its path.
pub fn against_schema(root: &Value, doc: &Value, providers: &ProviderNames) -> Vec<Problem> {
    let checker = SchemaCheck { root, providers };
    let mut out = Vec::new();
    checker.check(root, doc, &Path::default(), &mut out);
    out
}

struct SchemaCheck<'a> {
    root: &'a Value,
    providers: &'a ProviderNames,
}

impl<'a> SchemaCheck<'a> {
    fn resolve(&self, schema: &'a Value) -> &'a Value {
        let mut s = schema;
        // Follow plain references (`{"$ref": "#/$defs/X"}`) a bounded number of times.
        for _ in 0..16 {
            match s.get("$ref").and_then(Value::as_str) {
                Some(r) if s.as_object().map(|o| o.len()) == Some(1) => match self.lookup(r) {
                    Some(target) => s = target,
                    None => return s,
                },
                _ => return s,
            }
        }
        s
    }

    fn lookup(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    fn check(&self, schema: &'a Value, value: &Value, path: &Path, out: &mut Vec<Problem>) {
        let s = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                out.push(path.problem("is not allowed here"));
                return;
            }
            Value::Object(s) => s,
            _ => return,
        };
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            if let Some(target) = self.lookup(r) {
                self.check(target, value, path, out);
            }
        }
        if let Some(types) = s.get("type") {
            let names: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !names.is_empty() && !names.iter().any(|t| type_matches(t, value)) {
                let wanted: Vec<&str> = names.iter().map(|t| type_words(t)).collect();
                out.push(path.problem(format!("expected {}, found {}", wanted.join(" or "), describe(value))));
                return;
            }
        }
        if let Some(Value::Array(allowed)) = s.get("enum") {
            if !allowed.contains(value) {
                out.push(path.problem(format!("{} is not one of: {}", describe_short(value), list_values(allowed))));
                return;
            }
        }
        if let Some(c) = s.get("const") {
            if c != value {
                out.push(path.problem(format!("{} is not {}", describe_short(value), describe_short(c))));
                return;
            }
        }
        self.check_number(s, value, path, out);
        self.check_string(s, value, path, out);
        self.check_array(s, value, path, out);
        self.check_object(s, value, path, out);
        if let Some(Value::Array(branches)) = s.get("allOf") {
            for b in branches {
                self.check(b, value, path, out);
            }
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(Value::Array(branches)) = s.get(key) {
                self.check_alternatives(branches, value, path, out);
            }
        }
    }

    fn check_number(&self, s: &Map<String, Value>, value: &Value, path: &Path, out: &mut Vec<Problem>) {
        let Some(n) = value.as_f64() else { return };
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            if n > max {
                out.push(path.problem(format!("{} is over {}", value, num(max))));
            }
        }
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            if n < min {
                out.push(path.problem(format!("{} is under {}", value, num(min))));
            }
        }
        if let Some(min) = s.get("exclusiveMinimum").and_then(Value::as_f64) {
            if n <= min {
                out.push(path.problem(format!("{} must be over {}", value, num(min))));
            }
        }
    }

    fn check_string(&self, s: &Map<String, Value>, value: &Value, path: &Path, out: &mut Vec<Problem>) {
        let Some(text) = value.as_str() else { return };
        if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
            if (text.chars().count() as u64) < min {
                out.push(path.problem("must not be empty"));
                return;
            }
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
            let length = text.chars().count() as u64;
            if length > max {
                out.push(path.problem(format!("is {length} characters long; at most {max} are allowed")));
                return;
            }
        }
        match s.get("x-sluice-format").and_then(Value::as_str) {
            Some("duration") => {
                if let Err(e) = parse_duration_ms(text) {
                    out.push(path.problem(e));
                }
            }
            Some("condition") => {
                if let Err(e) = Condition::parse(text) {
                    out.push(path.problem(e));
                }
            }
            Some("name") => {
                if let Err(e) = check_name(text) {
                    out.push(path.problem(e));
                }
            }
            Some("actor") => {
                if let Err(e) = crate::domain::ids::Actor::parse(text) {
                    out.push(path.problem(e.message));
                }
            }
            Some("time-zone") => {
                if let Err(e) = crate::domain::window::ZoneName::parse(text) {
                    out.push(path.problem(e.0));
                }
            }
            Some("clock-time") => {
                if let Err(e) = crate::domain::window::ClockTime::parse(text) {
                    out.push(path.problem(e.0));
                }
            }
            Some("local-time") => {
                if let Err(e) = crate::domain::window::LocalStamp::parse(text) {
                    out.push(path.problem(e.0));
                }
            }
            Some("url-path") if !text.starts_with('/') || text.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                out.push(path.problem("must be a path starting with '/', without spaces (e.g. /healthz)"));
            }
            Some("request-id") => {
                if let Err(e) = crate::domain::ids::RequestId::parse(text) {
                    out.push(path.problem(e.message));
                }
            }
            _ => {}
        }
        if let Some(kind) = s.get("x-sluice-provider").and_then(Value::as_str) {
            if let Some(known) = self.providers.for_kind(kind) {
                if !known.contains(&text) {
                    out.push(path.problem(format!("unknown {kind} provider '{text}' (known: {})", known.join(", "))));
                }
            }
        }
    }

    fn check_array(&self, s: &'a Map<String, Value>, value: &Value, path: &Path, out: &mut Vec<Problem>) {
        let Some(items) = value.as_array() else { return };
        if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < min {
                out.push(path.problem(format!("needs at least {min} item{}", if min == 1 { "" } else { "s" })));
            }
        }
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
            if (items.len() as u64) > max {
                // The limit keeps one rollout's state within what a store keeps in one entity.
                out.push(path.problem(format!("has {} items; at most {max} are allowed", items.len())));
                return;
            }
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.check(item_schema, item, &path.index(i), out);
            }
        }
    }

    fn check_object(&self, s: &'a Map<String, Value>, value: &Value, path: &Path, out: &mut Vec<Problem>) {
        let Some(obj) = value.as_object() else { return };
        let props = s.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = s.get("required") {
            for r in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    out.push(path.key(r).problem("is required"));
                }
            }
        }
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(prop_schema) => self.check(prop_schema, v, &path.key(k), out),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        let known: Vec<&str> = props.map(|p| p.keys().map(String::as_str).collect()).unwrap_or_default();
                        out.push(path.key(k).problem(format!("unknown field (expected one of: {})", known.join(", "))));
                    }
                    Some(extra) => self.check(extra, v, &path.key(k), out),
                    None => {}
                },
            }
        }
    }

    /// `oneOf`/`anyOf`: passes if one branch passes; otherwise reports the
    /// problems of the branch the value most plausibly meant, so that
    /// `{"setWeight": 140}` says "140 is over 100" rather than "matches nothing".
    fn check_alternatives(&self, branches: &'a [Value], value: &Value, path: &Path, out: &mut Vec<Problem>) {
        let mut best: Option<(i64, Vec<Problem>)> = None;
        for b in branches {
            let mut trial = Vec::new();
            self.check(b, value, path, &mut trial);
            if trial.is_empty() {
                return;
            }
            let score = self.relevance(b, value) * 1000 - trial.len() as i64;
            if best.as_ref().map(|(s, _)| score > *s).unwrap_or(true) {
                best = Some((score, trial));
            }
        }
        let resolved: Vec<&Value> = branches.iter().map(|b| self.resolve(b)).collect();
        // An enum written as one `const` per variant.
        let consts: Vec<Value> = resolved.iter().filter_map(|b| b.get("const").cloned()).collect();
        if consts.len() == resolved.len() && !consts.is_empty() {
            out.push(path.problem(format!("{} is not one of: {}", describe_short(value), list_values(&consts))));
            return;
        }
        if let Some(problem) = self.unknown_tag(&resolved, value, path) {
            out.push(problem);
            return;
        }
        match best {
            Some((score, problems)) if score >= 1000 => out.extend(problems),
            _ => {
                // Nothing plausible: say what shapes are accepted.
                let keys: Vec<String> = resolved
                    .iter()
                    .filter_map(|b| b.get("required").and_then(Value::as_array))
                    .filter(|r| r.len() == 1)
                    .filter_map(|r| r[0].as_str().map(str::to_string))
                    .collect();
                if !keys.is_empty() && keys.len() == resolved.len() {
                    let found = match value.as_object() {
                        Some(o) if !o.is_empty() => {
                            format!("found {}", o.keys().cloned().collect::<Vec<_>>().join(", "))
                        }
                        Some(_) => "found an empty object".to_string(),
                        None => format!("found {}", describe(value)),
                    };
                    out.push(path.problem(format!("expects exactly one of the keys {}; {found}", keys.join(", "))));
                } else if let Some((_, problems)) = best {
                    out.extend(problems);
                } else {
                    out.push(path.problem("does not match any accepted form"));
                }
            }
        }
    }

    /// A tagged union (`"test": "errorRate"` or `"test": "latency"`) given a
    /// tag none of its branches has: name the tags, not one branch's.
    fn unknown_tag(&self, branches: &[&'a Value], value: &Value, path: &Path) -> Option<Problem> {
        let obj = value.as_object()?;
        let first = branches.first()?.get("properties").and_then(Value::as_object)?;
        for key in first.keys() {
            let tags: Option<Vec<Value>> = branches
                .iter()
                .map(|b| b.pointer(&format!("/properties/{key}")).map(|p| self.resolve(p)).and_then(|p| p.get("const")).cloned())
                .collect();
            let (Some(tags), Some(given)) = (tags, obj.get(key)) else { continue };
            if !tags.contains(given) {
                return Some(path.key(key).problem(format!("{} is not one of: {}", describe_short(given), list_values(&tags))));
            }
        }
        None
    }

    /// How plausibly a value was meant for a branch: its type fits, and for
    /// objects, how many of the branch's required keys it has.
    fn relevance(&self, branch: &'a Value, value: &Value) -> i64 {
        let b = self.resolve(branch);
        if let Some(t) = b.get("type") {
            let names: Vec<&str> = match t {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            if !names.is_empty() && !names.iter().any(|t| type_matches(t, value)) {
                return 0;
            }
        }
        if b.get("const").is_some() {
            return 0;
        }
        // A tag (`"kind": "event"`, `"type": "approved"`) decides the branch.
        let mut tagged = 1;
        if let (Some(obj), Some(props)) = (value.as_object(), b.get("properties").and_then(Value::as_object)) {
            for (k, p) in props {
                match (self.resolve(p).get("const"), obj.get(k)) {
                    (Some(c), Some(v)) if c == v => tagged = 100,
                    (Some(_), Some(_)) => return 0,
                    _ => {}
                }
            }
        }
        let plausible = match (value.as_object(), b.get("required").and_then(Value::as_array)) {
            (Some(obj), Some(required)) => {
                let present = required.iter().filter_map(Value::as_str).filter(|k| obj.contains_key(*k)).count();
                if present == 0 {
                    0
                } else {
                    1 + present as i64
                }
            }
            (Some(_), None) => 1,
            _ => 1,
        };
        plausible * tagged
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().map(|f| f.fract() == 0.0 && f.abs() < 9.0e15).unwrap_or(false),
        _ => true,
    }
}

fn type_words(t: &str) -> &'static str {
    match t {
        "null" => "nothing (null)",
        "boolean" => "true or false",
        "object" => "an object",
        "array" => "a list",
        "string" => "a string",
        "number" => "a number",
        "integer" => "a whole number",
        _ => "something else",
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", short_json(s)),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn describe_short(v: &Value) -> String {
    match v {
        Value::String(s) => short_json(s),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
        other => other.to_string(),
    }
}

fn short_json(s: &str) -> String {
    let cut: String = s.chars().take(60).collect();
    if cut.len() < s.len() {
        format!("\"{cut}…\"")
    } else {
        Value::String(cut).to_string()
    }
}

fn list_values(values: &[Value]) -> String {
    values.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect::<Vec<_>>().join(", ")
}

fn num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// Names key storage rows and appear in URLs: the one plain-name rule of [`crate::domain::ids`].
pub fn check_name(text: &str) -> Result<(), String> {
    crate::domain::ids::check_plain_name(text)
}

/// Keys that hold secrets: those must come from app settings, because the
/// spec is stored with the rollout and shown in its history.
const SECRET_KEYS: &[&str] =
    &["token", "secret", "password", "pat", "apikey", "accesskey", "sharedaccesskey", "connectionstring", "webhookurl", "clientsecret"];

/// Rules that span fields: template references, unique names, counts that
/// must agree, and secrets written inline.
pub(super) fn cross_field(doc: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    let root = Path::default();
    let templates = template_metrics(doc, &mut out);

    let strategy = root.key("strategy");
    if let Some(canary) = doc.pointer("/strategy/canary") {
        let cp = strategy.key("canary");
        if let Some(steps) = canary.get("steps").and_then(Value::as_array) {
            for (i, step) in steps.iter().enumerate() {
                let sp = cp.key("steps").index(i);
                if let Some(a) = step.get("analysis") {
                    check_analysis(a, &sp.key("analysis"), &templates, &mut out);
                }
                if let Some(g) = step.get("approval") {
                    check_approval(g, &sp.key("approval"), &mut out);
                }
                if let Some(g) = step.pointer("/preview/approval") {
                    check_approval(g, &sp.key("preview").key("approval"), &mut out);
                }
            }
        }
        if let Some(a) = canary.get("analysis") {
            check_analysis(a, &cp.key("analysis"), &templates, &mut out);
        }
    }
    if let Some(bg) = doc.pointer("/strategy/blueGreen") {
        let bp = strategy.key("blueGreen");
        for key in ["prePromotionAnalysis", "postPromotionAnalysis"] {
            if let Some(a) = bg.get(key) {
                check_analysis(a, &bp.key(key), &templates, &mut out);
            }
        }
        if let Some(g) = bg.pointer("/preview/approval") {
            check_approval(g, &bp.key("preview").key("approval"), &mut out);
        }
        if let Some(g) = bg.get("approval") {
            check_approval(g, &bp.key("approval"), &mut out);
            if bg.get("autoPromoteAfter").is_some() {
                out.push(bp.key("autoPromoteAfter").problem(
                    "cannot be combined with approval (use approval.timeout with onTimeout: proceed to promote without an answer)",
                ));
            }
        }
    }

    if let (Some(s), Some(c)) = (doc.pointer("/target/stable"), doc.pointer("/target/canary")) {
        if s == c && s.is_object() {
            out.push(root.key("target").key("canary").problem("is the same as target.stable: nothing would change"));
        }
    }
    if doc.pointer("/policy/onInconclusive").and_then(Value::as_str) == Some("extend")
        && doc.pointer("/policy/maxExtensions").and_then(Value::as_u64) == Some(0)
    {
        out.push(root.key("policy").key("maxExtensions").problem("must be at least 1 with onInconclusive: extend"));
    }
    if let Some(f) = doc.pointer("/policy/fixForward").and_then(Value::as_object) {
        let listed = f.get("alerts").and_then(Value::as_array).is_some_and(|a| !a.is_empty());
        if !listed && f.get("firingAtStart") != Some(&Value::Bool(true)) {
            out.push(root.key("policy").key("fixForward").problem("name the alerts it fixes (alerts) or set firingAtStart: true"));
        }
    }
    if let Some(w) = doc.pointer("/policy/windows").and_then(|w| serde_json::from_value(w.clone()).ok()) {
        let at = root.key("policy").key("windows");
        out.extend(
            crate::domain::window::problems(&w)
                .into_iter()
                .map(|(path, message)| Problem { path: format!("{}.{path}", at.render()), message }),
        );
    }
    find_inline_secrets(doc, &root, &mut out);
    out
}

/// Template name → the metric names it defines; duplicates and bad metrics reported.
fn template_metrics(doc: &Value, out: &mut Vec<Problem>) -> BTreeMap<String, Vec<String>> {
    let mut map = BTreeMap::new();
    let Some(list) = doc.get("analysisTemplates").and_then(Value::as_array) else { return map };
    let base = Path::default().key("analysisTemplates");
    for (i, t) in list.iter().enumerate() {
        let tp = base.index(i);
        let metrics = t.get("metrics").and_then(Value::as_array).cloned().unwrap_or_default();
        for (j, m) in metrics.iter().enumerate() {
            check_metric(m, &tp.key("metrics").index(j), out);
        }
        let names = metric_names(&metrics);
        if let Some(dup) = first_duplicate(&names) {
            out.push(tp.key("metrics").problem(format!("metric name '{dup}' is used twice")));
        }
        if let Some(name) = t.get("name").and_then(Value::as_str) {
            if map.insert(name.to_string(), names).is_some() {
                out.push(tp.key("name").problem(format!("template '{name}' is defined twice")));
            }
        }
    }
    map
}

fn metric_names(metrics: &[Value]) -> Vec<String> {
    metrics.iter().filter_map(|m| m.get("name").and_then(Value::as_str)).map(str::to_string).collect()
}

fn first_duplicate(names: &[String]) -> Option<&String> {
    let mut seen = BTreeSet::new();
    names.iter().find(|n| !seen.insert(n.as_str()))
}

fn check_analysis(a: &Value, path: &Path, templates: &BTreeMap<String, Vec<String>>, out: &mut Vec<Problem>) {
    let refs: Vec<(usize, &str)> = a
        .get("templates")
        .and_then(Value::as_array)
        .map(|ts| ts.iter().enumerate().filter_map(|(i, t)| t.as_str().map(|s| (i, s))).collect())
        .unwrap_or_default();
    let inline = a.get("metrics").and_then(Value::as_array).cloned().unwrap_or_default();
    if refs.is_empty() && inline.is_empty() && a.is_object() {
        out.push(path.problem("needs at least one template or metric"));
    }
    let mut names: Vec<String> = Vec::new();
    for (i, name) in refs {
        match templates.get(name) {
            Some(metrics) => names.extend(metrics.iter().cloned()),
            None => {
                let known: Vec<&str> = templates.keys().map(String::as_str).collect();
                let known = if known.is_empty() { "none are defined".to_string() } else { format!("known: {}", known.join(", ")) };
                out.push(path.key("templates").index(i).problem(format!("no analysis template named '{name}' ({known})")));
            }
        }
    }
    for (j, m) in inline.iter().enumerate() {
        check_metric(m, &path.key("metrics").index(j), out);
    }
    names.extend(metric_names(&inline));
    if let Some(dup) = first_duplicate(&names) {
        out.push(path.problem(format!("metric name '{dup}' appears twice in this analysis")));
    }
}

fn check_metric(m: &Value, path: &Path, out: &mut Vec<Problem>) {
    if let Some(interval) = m.get("interval").and_then(Value::as_str) {
        if let Ok(ms) = parse_duration_ms(interval) {
            if ms < 1_000 {
                out.push(path.key("interval").problem(format!("'{interval}' is shorter than the 1s minimum")));
            }
        }
    }
    if m.get("sampleQuery").is_some() && m.get("minSampleSize").is_none() {
        out.push(path.key("sampleQuery").problem("has no effect without minSampleSize"));
    }
}

fn check_approval(g: &Value, path: &Path, out: &mut Vec<Problem>) {
    let min = g.get("minApprovers").and_then(Value::as_u64).unwrap_or(1);
    if let Some(list) = g.get("approvers").and_then(Value::as_array) {
        let distinct: BTreeSet<&str> = list.iter().filter_map(Value::as_str).collect();
        if !distinct.is_empty() && (distinct.len() as u64) < min {
            out.push(path.key("minApprovers").problem(format!(
                "{min} approvers are needed but only {} {} allowed",
                distinct.len(),
                if distinct.len() == 1 { "person is" } else { "people are" }
            )));
        }
    }
}

fn find_inline_secrets(v: &Value, path: &Path, out: &mut Vec<Problem>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = path.key(k);
                let is_settings_value = path.0.iter().any(|s| matches!(s, Segment::Key(x) if x == "settings"));
                // A chat webhook's URL is its credential: whoever has it can post.
                let is_channel = matches!(path.0.first(), Some(Segment::Key(x)) if x == "notifications");
                let key = k.to_ascii_lowercase();
                if is_settings_value && k == super::PREVIEW_HEADERS_SETTING {
                    out.push(here.problem("is set by Sluice for a preview's smoke check, never by a spec"));
                    continue;
                } else if is_settings_value && (SECRET_KEYS.contains(&key.as_str()) || (is_channel && key == "url")) {
                    out.push(
                        here.problem(format!(
                            "looks like a secret written inline; put it in an app setting and reference it as {k}Setting"
                        )),
                    );
                    continue;
                }
                find_inline_secrets(child, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                find_inline_secrets(item, &path.index(i), out);
            }
        }
        _ => {}
    }
}

/// A preview is a look before any user sees the canary: it comes before the
/// first weight above 0, once, through a router that has a way to show it.
pub(super) fn previews(doc: &Value, providers: &ProviderNames) -> Vec<Problem> {
    let mut out = Vec::new();
    let provider = doc.pointer("/target/router/provider").and_then(Value::as_str).unwrap_or_default();
    let no_way = providers.no_preview.iter().find(|(name, _)| *name == provider).map(|(_, why)| *why);
    let refused =
        |path: &Path| path.problem(format!("the {provider} router cannot show the canary without user traffic: {}", no_way.unwrap_or("")));
    if doc.pointer("/strategy/blueGreen/preview").is_some() && no_way.is_some() {
        out.push(refused(&Path::default().key("strategy").key("blueGreen").key("preview")));
    }
    let Some(steps) = doc.pointer("/strategy/canary/steps").and_then(Value::as_array) else { return out };
    let steps_path = Path::default().key("strategy").key("canary").key("steps");
    let mut users_reached = false;
    let mut seen = false;
    for (i, step) in steps.iter().enumerate() {
        if step.get("setWeight").and_then(Value::as_u64).is_some_and(|w| w > 0) {
            users_reached = true;
        }
        if step.get("preview").is_none() {
            continue;
        }
        let here = steps_path.index(i).key("preview");
        if no_way.is_some() {
            out.push(refused(&here));
        } else if seen {
            out.push(here.problem("only one preview step is allowed"));
        } else if users_reached {
            out.push(here.problem("comes after users already reach the canary: put it before the first setWeight above 0"));
        }
        seen = true;
    }
    out
}
