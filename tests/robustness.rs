//! Generated inputs at every entry point — the API's start and actions, the
//! doctor, the alert webhook, custom-handler envelopes for every trigger,
//! and queue messages — each a valid payload mutated into an invalid one: truncated,
//! a type swapped, a required field dropped, an unknown field added, 10 000
//! levels of nesting, huge and unicode strings, invalid UTF-8, the wrong
//! content type. For every case: no panic (an answer always comes back), a
//! 4xx (or, on the queue, a refusal that is never retried) naming the field,
//! and the store exactly as it was. `ROBUSTNESS_CASES` sets the cases per
//! entry point (default 128).

use crate::common;

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use common::*;
use sluice::functions::{self, HandlerError};
use sluice::host::custom_handler::{self, RunningServer};
use sluice::ports::store::ListFilter;

/// A valid payload, and where it can be broken.
struct Entry {
    name: &'static str,
    valid: Value,
    /// JSON pointers, with the JSON types that are wrong there.
    typed: Vec<(&'static str, &'static [Kind])>,
    /// JSON pointers of fields without which the payload is invalid.
    required: Vec<&'static str>,
    /// JSON pointers of strings with a bounded or restricted form.
    bounded: Vec<&'static str>,
    /// Of those, the plain names (ids, targets, request ids): ASCII only.
    names: Vec<&'static str>,
    /// Whether an added unknown field is refused (alert payloads accept them).
    strict: bool,
    /// Whether the entry reads HTTP (content type, bytes) or a queue message (text).
    http: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Text,
    Bool,
    List,
    Object,
}

const NOT_TEXT: &[Kind] = &[Kind::Number, Kind::Bool, Kind::List, Kind::Object];
const NOT_NUMBER: &[Kind] = &[Kind::Text, Kind::Bool, Kind::List, Kind::Object];
const NOT_BOOL: &[Kind] = &[Kind::Number, Kind::Text, Kind::List, Kind::Object];
const NOT_LIST: &[Kind] = &[Kind::Number, Kind::Text, Kind::Bool, Kind::Object];
const NOT_OBJECT: &[Kind] = &[Kind::Number, Kind::Text, Kind::Bool, Kind::List];
const SCALARS: &[Kind] = &[Kind::Number, Kind::Bool];

fn sample(kind: Kind) -> Value {
    match kind {
        Kind::Number => json!(7),
        Kind::Text => json!("seven"),
        Kind::Bool => json!(true),
        Kind::List => json!([1, "x"]),
        Kind::Object => json!({"x": 1}),
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(u16),
    Swap(usize, usize),
    Drop(usize),
    AddUnknown,
    Deep(usize),
    Huge(usize),
    Unicode(usize, usize),
    InvalidUtf8(usize),
    ContentType(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (1u16..1000).prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
        any::<usize>().prop_map(Mutation::Drop),
        Just(Mutation::AddUnknown),
        any::<usize>().prop_map(Mutation::Deep),
        any::<usize>().prop_map(Mutation::Huge),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Unicode(a, b)),
        any::<usize>().prop_map(Mutation::InvalidUtf8),
        any::<usize>().prop_map(Mutation::ContentType),
    ]
}

/// The field a refusal must name: exactly this, or this field or one of its parents.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Exactly(String),
    Within(String),
}

/// `/data/essentials/alertId` → `data.essentials.alertId`; `/alerts/0/status` → `alerts[0].status`.
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

const DEEP: &str = "\"__DEEP__\"";
const BAD_UTF8: &str = "\"__BAD_UTF8__\"";

struct Case {
    body: Vec<u8>,
    content_type: &'static str,
    expect: Expect,
}

fn pick<T: Clone>(items: &[T], i: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[i % items.len()].clone())
}

fn set(doc: &mut Value, pointer: &str, value: Value) {
    if let Some(slot) = doc.pointer_mut(pointer) {
        *slot = value;
    }
}

/// Applies a mutation; `None` when it does not apply to this entry point.
fn apply(entry: &Entry, m: &Mutation) -> Option<Case> {
    let json = |doc: &Value| serde_json::to_vec(doc).expect("json");
    let case = |doc: &Value, expect: Expect| Case { body: json(doc), content_type: "application/json", expect };
    let mut doc = entry.valid.clone();
    match m {
        Mutation::Truncate(per_mille) => {
            let full = json(&doc);
            let cut = (full.len() * *per_mille as usize / 1000).clamp(1, full.len() - 1);
            Some(Case { body: full[..cut].to_vec(), content_type: "application/json", expect: Expect::Exactly("body".into()) })
        }
        Mutation::Swap(f, k) => {
            let (pointer, kinds) = pick(&entry.typed, *f)?;
            set(&mut doc, pointer, sample(kinds[k % kinds.len()]));
            Some(case(&doc, Expect::Within(dotted(pointer))))
        }
        Mutation::Drop(f) => {
            let pointer = pick(&entry.required, *f)?;
            let (parent, key) = pointer.rsplit_once('/')?;
            doc.pointer_mut(if parent.is_empty() { "" } else { parent })?.as_object_mut()?.remove(key);
            Some(case(&doc, Expect::Within(dotted(pointer))))
        }
        Mutation::AddUnknown if entry.strict => {
            doc.as_object_mut()?.insert("colour".into(), json!("blue"));
            Some(case(&doc, Expect::Within("colour".into())))
        }
        Mutation::AddUnknown => None,
        Mutation::Deep(f) => {
            let (pointer, _) = pick(&entry.typed, *f)?;
            set(&mut doc, pointer, json!("__DEEP__"));
            let text = String::from_utf8(json(&doc)).expect("utf-8");
            let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
            Some(Case {
                body: text.replacen(DEEP, &deep, 1).into_bytes(),
                content_type: "application/json",
                expect: Expect::Exactly("body".into()),
            })
        }
        Mutation::Huge(f) => {
            let pointer = pick(&entry.bounded, *f)?;
            set(&mut doc, pointer, json!("界".repeat(100_000)));
            Some(case(&doc, Expect::Within(dotted(pointer))))
        }
        Mutation::Unicode(f, v) => {
            let pointer = pick(&entry.bounded, *f)?;
            // Control characters are wrong everywhere; letters of other scripts only in plain names.
            let bad = if entry.names.contains(&pointer) {
                ["a\u{0}b", "line\nbreak", "../../✓", "a界界界", "\u{202e}evil"][v % 5]
            } else {
                ["a\u{0}b", "line\nbreak", "\u{202e}evil\u{7}"][v % 3]
            };
            set(&mut doc, pointer, json!(bad));
            Some(case(&doc, Expect::Within(dotted(pointer))))
        }
        Mutation::InvalidUtf8(f) if entry.http => {
            let (pointer, _) = pick(&entry.typed, *f)?;
            set(&mut doc, pointer, json!("__BAD_UTF8__"));
            let mut body = Vec::new();
            let text = json(&doc);
            let at = text.windows(BAD_UTF8.len()).position(|w| w == BAD_UTF8.as_bytes())?;
            body.extend_from_slice(&text[..at]);
            body.extend_from_slice(b"\"\xff\xfe\xfd\"");
            body.extend_from_slice(&text[at + BAD_UTF8.len()..]);
            Some(Case { body, content_type: "application/json", expect: Expect::Exactly("body".into()) })
        }
        Mutation::InvalidUtf8(_) => None,
        Mutation::ContentType(i) if entry.http && entry.name != "envelope" => {
            let ct = ["text/plain", "application/xml", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"][i % 4];
            Some(Case { body: json(&doc), content_type: ct, expect: Expect::Exactly("content-type".into()) })
        }
        Mutation::ContentType(_) => None,
    }
}

/// Everything the store holds, to compare before and after.
async fn snapshot(app: &functions::App) -> Value {
    let store = &app.engine.store;
    let rollouts = store.list(&ListFilter::default()).await.expect("list");
    let mut histories = Vec::new();
    for r in &rollouts {
        histories.push(json!(store.history(&r.id).await.expect("history")));
    }
    json!({"rollouts": rollouts, "histories": histories, "alerts": store.alerts(1000).await.expect("alerts")})
}

fn check_field(expect: &Expect, field: &str, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(!field.is_empty(), "{what}: no field named");
    match expect {
        Expect::Exactly(f) => prop_assert_eq!(field, f.as_str(), "{}", what),
        Expect::Within(path) => prop_assert!(
            path.starts_with(field) || field.starts_with(path.as_str()),
            "{what}: named '{field}', expected '{path}' or a parent of it"
        ),
    }
    Ok(())
}

/// Where each HTTP entry point is posted.
struct Target {
    url: String,
    path: String,
}

async fn send_http(target: &Target, case: &Case) -> (u16, Value) {
    answered(
        reqwest::Client::new()
            .post(format!("{}{}", target.url, target.path))
            .header("content-type", case.content_type)
            .body(case.body.clone()),
    )
    .await
}

/// The status and JSON body of `request`'s answer; one always comes back.
async fn answered(request: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = request.send().await.expect("an answer always comes back (no panic, no dropped connection)");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn http_answer(status: u16, answer: &Value, case: &Case) -> Result<(), TestCaseError> {
    let what = format!("{status} {answer}");
    if status == 200 && answer["ReturnValue"]["error"] == "invalid_envelope" {
        // A Service Bus invocation is acknowledged instead (a 4xx would be retried ten times).
        prop_assert!(answer["Logs"][0].as_str().unwrap_or("").contains("acknowledged"), "{}", what);
        return check_field(&case.expect, answer["ReturnValue"]["field"].as_str().unwrap_or(""), &what);
    }
    prop_assert!((400..500).contains(&status), "expected a 4xx: {}", what);
    prop_assert!(answer.is_object(), "the body is JSON: {}", what);
    if status == 422 {
        // An invalid spec: every problem with its path (relative to the spec).
        prop_assert!(answer["problems"].as_array().map(|p| !p.is_empty()).unwrap_or(false), "{}", what);
        return Ok(());
    }
    check_field(&case.expect, answer["field"].as_str().unwrap_or(""), &what)
}

fn cases() -> u32 {
    std::env::var("ROBUSTNESS_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
}

fn run(entry: &Entry, rt: &tokio::runtime::Runtime, app: &Arc<functions::App>, target: Option<&Target>) {
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let before = rt.block_on(snapshot(app));
    let applied = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&mutation(), |m| {
        let Some(case) = apply(entry, &m) else { return Ok(()) };
        applied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match target {
            Some(target) => {
                let (status, answer) = rt.block_on(send_http(target, &case));
                http_answer(status, &answer, &case)?;
            }
            None => {
                let body = String::from_utf8(case.body.clone()).expect("queue bodies are text");
                match rt.block_on(functions::invoke_queue(app, "steps", &body)) {
                    Err(HandlerError::Permanent(reason)) => {
                        // "not a step message: <field>: <message>", or the whole body.
                        let field = reason.split(": ").nth(1).unwrap_or("");
                        let field = if reason.contains("not valid JSON") { "body" } else { field };
                        check_field(&case.expect, field, &reason)?;
                    }
                    other => prop_assert!(false, "{}: expected a refusal that is never retried, got {:?}", entry.name, other),
                }
            }
        }
        let after = rt.block_on(snapshot(app));
        prop_assert_eq!(&after, &before, "{}: {:?} changed the store", entry.name, m);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{}: {e}", entry.name);
    }
    let applied = applied.into_inner();
    assert!(applied >= cases() / 3, "{}: only {applied} of {} generated inputs applied", entry.name, cases());
}

struct World {
    rt: tokio::runtime::Runtime,
    rig: Rig,
    serve: RunningServer,
    id: String,
}

fn world() -> World {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (rig, serve, id) = rt.block_on(async {
        let rig = Rig::start().await;
        let id = rig.start_rollout(&rig.spec(json!([{"setWeight": 20}, {"approval": {"approvers": ["alice"]}}]))).await;
        rig.wait_phase(&id, "AwaitingApproval").await;
        let settings = sluice::host::HostSettings::embedded().expect("host.json");
        let defs = sluice::host::definitions::embedded_definitions().expect("defs");
        let serve = custom_handler::start(rig.host.app.clone(), settings, defs, loopback(), false).await.expect("serves");
        (rig, serve, id)
    });
    World { rt, rig, serve, id }
}

fn api_entries(w: &World) -> Vec<(Entry, Target)> {
    let url = w.rig.host.url();
    let start = Entry {
        name: "api start",
        valid: json!({"spec": w.rig.spec(json!([{"setWeight": 5}])), "by": "pipeline", "id": "robust-1"}),
        typed: vec![
            ("/by", NOT_TEXT),
            ("/id", NOT_TEXT),
            ("/spec/target", NOT_OBJECT),
            ("/spec/target/name", NOT_TEXT),
            ("/spec/strategy/canary/steps", NOT_LIST),
            ("/spec/strategy/canary/steps/0/setWeight", NOT_NUMBER),
        ],
        required: vec!["/by", "/spec/target", "/spec/strategy"],
        bounded: vec!["/by", "/id", "/spec/target/name"],
        names: vec!["/id", "/spec/target/name"],
        strict: true,
        http: true,
    };
    // The doctor takes the same spec; a bad one is refused before anything is checked.
    let doctor = Entry {
        name: "doctor",
        valid: json!({"spec": w.rig.spec(json!([{"setWeight": 5}]))}),
        typed: vec![
            ("/spec/target", NOT_OBJECT),
            ("/spec/target/name", NOT_TEXT),
            ("/spec/strategy/canary/steps", NOT_LIST),
            ("/spec/strategy/canary/steps/0/setWeight", NOT_NUMBER),
        ],
        required: vec!["/spec/target", "/spec/strategy"],
        bounded: vec!["/spec/target/name"],
        names: vec!["/spec/target/name"],
        strict: true,
        http: true,
    };
    let approve = Entry {
        name: "api approve",
        valid: json!({"by": "alice", "reason": "looks good", "step": 2, "full": false, "requestId": "req-robust"}),
        typed: vec![("/by", NOT_TEXT), ("/reason", NOT_TEXT), ("/step", NOT_NUMBER), ("/full", NOT_BOOL), ("/requestId", NOT_TEXT)],
        required: vec!["/by"],
        bounded: vec!["/by", "/requestId"],
        names: vec!["/requestId"],
        strict: true,
        http: true,
    };
    let alert = Entry {
        name: "alert webhook",
        valid: azure_alert("robust-alert", "Fired"),
        typed: vec![
            ("/schemaId", SCALARS),
            ("/data", NOT_OBJECT),
            ("/data/essentials/alertId", NOT_TEXT),
            ("/data/essentials/monitorCondition", NOT_TEXT),
            ("/data/essentials/alertTargetIDs", NOT_LIST),
            ("/data/essentials/configurationItems", NOT_LIST),
            ("/data/essentials/severity", NOT_TEXT),
            ("/data/customProperties", SCALARS),
        ],
        required: vec!["/data", "/data/essentials", "/data/essentials/alertId"],
        bounded: vec!["/data/essentials/monitorCondition"],
        names: vec![],
        strict: false,
        http: true,
    };
    let alertmanager = Entry {
        name: "alertmanager webhook",
        valid: json!({"version": "4", "receiver": "sluice", "status": "firing", "alerts": [
            {"status": "firing", "labels": {"alertname": "x", "sluice_target": "orders-api"}, "annotations": {}, "fingerprint": "f1"}]}),
        typed: vec![
            ("/alerts", NOT_LIST),
            ("/alerts/0/status", NOT_TEXT),
            ("/alerts/0/labels", NOT_OBJECT),
            ("/alerts/0/labels/alertname", NOT_TEXT),
        ],
        required: vec!["/alerts"],
        bounded: vec!["/alerts/0/status", "/status"],
        names: vec![],
        strict: false,
        http: true,
    };
    let id = &w.id;
    vec![
        (start, Target { url: url.clone(), path: "/api/rollouts".into() }),
        (doctor, Target { url: url.clone(), path: "/api/doctor".into() }),
        (approve, Target { url: url.clone(), path: format!("/api/rollouts/{id}/approve") }),
        (alert, Target { url: url.clone(), path: format!("/api/alerts?token={TOKEN}") }),
        (alertmanager, Target { url, path: format!("/api/alerts?token={TOKEN}") }),
    ]
}

fn envelope_entries(w: &World) -> Vec<(Entry, Target)> {
    let url = format!("http://{}", w.serve.addr);
    let harmless = json!({"kind": "wake", "rollout": w.id, "at": "2000-01-01T00:00:00Z"}).to_string();
    let base = |valid: Value, typed: Vec<(&'static str, &'static [Kind])>, required: Vec<&'static str>, bounded: Vec<&'static str>| Entry {
        name: "envelope",
        valid,
        typed,
        required,
        bounded,
        names: vec![],
        strict: false,
        http: true,
    };
    let steps = base(
        json!({"Data": {"msg": harmless}, "Metadata": {"DeliveryCount": "1", "MessageId": "\"m-1\""}}),
        vec![("/Data", NOT_OBJECT), ("/Data/msg", SCALARS), ("/Metadata", SCALARS), ("/Metadata/DeliveryCount", &[Kind::Bool])],
        vec!["/Data", "/Data/msg"],
        vec!["/Metadata/DeliveryCount"],
    );
    let tick = base(
        json!({"Data": {"timer": {"IsPastDue": false}}, "Metadata": {}}),
        vec![("/Data", NOT_OBJECT), ("/Data/timer", SCALARS), ("/Data/timer/IsPastDue", &[Kind::Number, Kind::List, Kind::Object])],
        vec!["/Data", "/Data/timer"],
        vec!["/Data/timer/IsPastDue"],
    );
    let http = |url: &str| {
        base(
            json!({"Data": {"req": {"Url": url, "Method": "GET", "Query": {}, "Headers": {}, "Params": {}}}, "Metadata": {}}),
            vec![
                ("/Data", NOT_OBJECT),
                ("/Data/req", SCALARS),
                ("/Data/req/Method", SCALARS),
                ("/Data/req/Url", SCALARS),
                ("/Data/req/Query", SCALARS),
                ("/Data/req/Headers", SCALARS),
                ("/Data/req/Params", SCALARS),
            ],
            vec!["/Data", "/Data/req", "/Data/req/Method", "/Data/req/Url"],
            vec![],
        )
    };
    vec![
        (steps, Target { url: url.clone(), path: "/steps".into() }),
        (tick, Target { url: url.clone(), path: "/tick".into() }),
        (http("http://localhost/api/rollouts"), Target { url: url.clone(), path: "/api".into() }),
        (http("http://localhost/api/alerts"), Target { url: url.clone(), path: "/alerts".into() }),
        (http("http://localhost/api/dashboard"), Target { url, path: "/dashboard".into() }),
    ]
}

fn queue_entries(w: &World) -> Vec<Entry> {
    let id = &w.id;
    let message = |name, valid, typed, required, bounded: Vec<&'static str>| Entry {
        name,
        valid,
        typed,
        required,
        names: bounded.iter().copied().filter(|p| !p.ends_with("/by")).collect(),
        bounded,
        strict: true,
        http: false,
    };
    vec![
        message(
            "queue start",
            json!({"kind": "start", "spec": w.rig.spec(json!([{"setWeight": 5}])), "by": "pipeline", "id": "robust-q"}),
            vec![("/by", NOT_TEXT), ("/id", NOT_TEXT)],
            vec!["/kind", "/spec", "/by"],
            vec!["/by", "/id"],
        ),
        message(
            "queue approved",
            json!({"kind": "event", "rollout": id, "event": {"type": "approved", "by": "alice", "stage": 1, "request": "req-q"}}),
            vec![
                ("/rollout", NOT_TEXT),
                ("/event", NOT_OBJECT),
                ("/event/by", NOT_TEXT),
                ("/event/stage", NOT_NUMBER),
                ("/event/request", NOT_TEXT),
            ],
            vec!["/kind", "/rollout", "/event", "/event/type", "/event/by"],
            vec!["/rollout", "/event/by", "/event/request"],
        ),
        message(
            "queue alert",
            json!({"kind": "event", "rollout": id, "event": {"type": "alertFired", "alert": {"id": "a-1", "rule": "5xx", "severity": "Sev1"}}}),
            vec![
                ("/event/alert", NOT_OBJECT),
                ("/event/alert/id", NOT_TEXT),
                ("/event/alert/rule", NOT_TEXT),
                ("/event/alert/severity", NOT_TEXT),
            ],
            vec!["/event/alert", "/event/alert/id", "/event/alert/rule"],
            vec!["/rollout"],
        ),
        message(
            "queue wake",
            json!({"kind": "wake", "rollout": id, "at": "2000-01-01T00:00:00Z"}),
            vec![("/rollout", NOT_TEXT), ("/at", NOT_TEXT)],
            vec!["/rollout", "/at"],
            vec!["/rollout"],
        ),
    ]
}

#[test]
fn generated_bad_input_at_every_entry_point_is_refused_by_name_and_changes_nothing() {
    let w = world();
    let app = w.rig.host.app.clone();
    for (entry, target) in api_entries(&w).iter().chain(envelope_entries(&w).iter()) {
        run(entry, &w.rt, &app, Some(target));
    }
    for entry in queue_entries(&w) {
        run(&entry, &w.rt, &app, None);
    }
    // The rollout the inputs aimed at is where it was.
    let status = w.rt.block_on(w.rig.client.status(&w.id)).expect("status");
    assert_eq!(status["phase"], "AwaitingApproval");
    assert_eq!(status["rollout"]["approvals"], Value::Null);
    let World { rt, serve, .. } = w;
    rt.block_on(serve.stop());
}

/// One way to break the `Authorization` header of a valid request.
#[derive(Debug, Clone)]
enum BadAuth {
    /// Another scheme, or none.
    Scheme(usize),
    /// `Bearer` and arbitrary text (ASCII or any non-control characters).
    Junk(String),
    /// The valid token cut short.
    Truncated(usize),
    /// One character of the valid token changed.
    Flipped(usize, char),
    /// A header with some `alg` and some `kid`, the valid payload and signature.
    Header(usize, usize),
    /// One claim given a type it must not have, signed by the issuer's own key.
    Claim(usize, usize),
    /// 10 000 levels of nesting in the header.
    Nested,
    /// 20 KiB of token.
    Huge,
}

/// Headers that carry the valid token (`{t}`) without presenting it as a bearer token.
const SCHEMES: [&str; 8] = ["{t}", "Basic {t}", "Token {t}", "Bearer{t}", "Bearer", "Bearer    ", "Negotiate {t}", "bearer"];
const ALGS: [&str; 8] = [r#""none""#, r#""HS256""#, r#""RS512""#, r#""ES256""#, r#""""#, "7", "null", "{}"];
const KIDS: [&str; 4] = [r#""no-such-key""#, "7", "[]", r#"{"k": 1}"#];
/// Each claim, with the JSON values it must never be accepted as (null only where the claim is required).
const WRONG_CLAIMS: [(&str, &[&str]); 10] = [
    ("exp", &[r#""soon""#, "{}", "[]", "null", "true", "1e400"]),
    ("nbf", &[r#""now""#, "{}", "[]", "true"]),
    ("iss", &["7", "{}", "[]", "null", "true"]),
    ("aud", &["7", "{}", "null", "true", "[]"]),
    ("tid", &["7", "{}", "[]", "null", "true", r#""other-tenant""#]),
    ("oid", &["7", "{}", "[]", "null", "true"]),
    ("roles", &[r#""Sluice.Approver""#, "7", "{}", "null", "true"]),
    ("scp", &["7", "{}", "[]", "null", "true"]),
    ("preferred_username", &["7", "{}", "[]", "true"]),
    ("sub", &["7", "{}", "[]", "true"]),
];

/// The generated breakages: text and positions too many to list.
fn bad_auth() -> impl Strategy<Value = BadAuth> {
    prop_oneof![
        "[ -~]{0,80}".prop_map(BadAuth::Junk),
        "\\PC{0,40}".prop_map(BadAuth::Junk),
        any::<usize>().prop_map(BadAuth::Truncated),
        (any::<usize>(), prop::char::range('-', 'z')).prop_map(|(i, c)| BadAuth::Flipped(i, c)),
    ]
}

/// The listed breakages, every one of them: a sample could miss the one that gets through.
fn every_listed_bad_auth() -> Vec<BadAuth> {
    let schemes = (0..SCHEMES.len()).map(BadAuth::Scheme);
    let headers = (0..ALGS.len()).flat_map(|a| (0..KIDS.len()).map(move |k| BadAuth::Header(a, k)));
    let claims = WRONG_CLAIMS.iter().enumerate().flat_map(|(c, (_, wrong))| (0..wrong.len()).map(move |k| BadAuth::Claim(c, k)));
    schemes.chain(headers).chain(claims).chain([BadAuth::Nested, BadAuth::Huge]).collect()
}

/// The header value `bad` makes of the valid `token` (claims `claims`).
fn broken(bad: &BadAuth, token: &str, claims: &Value, idp: &common::oidc::Provider) -> String {
    let segment = |json: &str| common::oidc::b64(json.as_bytes());
    let parts: Vec<&str> = token.split('.').collect();
    match bad {
        BadAuth::Scheme(i) => SCHEMES[*i].replace("{t}", token),
        BadAuth::Junk(text) => format!("Bearer {text}"),
        BadAuth::Truncated(at) => format!("Bearer {}", &token[..at % token.len()]),
        BadAuth::Flipped(at, c) => {
            let mut chars: Vec<char> = token.chars().collect();
            let i = at % chars.len();
            chars[i] = if chars[i] == *c {
                if *c == 'A' {
                    'B'
                } else {
                    'A'
                }
            } else {
                *c
            };
            format!("Bearer {}", chars.into_iter().collect::<String>())
        }
        BadAuth::Header(a, k) => {
            let header = format!(r#"{{"alg": {}, "typ": "JWT", "kid": {}}}"#, ALGS[*a], KIDS[*k]);
            format!("Bearer {}.{}.{}", segment(&header), parts[1], parts[2])
        }
        BadAuth::Claim(c, k) => {
            let (name, wrong) = WRONG_CLAIMS[*c];
            let mut claims = claims.clone();
            // `1e400` is no JSON number serde_json writes: splice the text in as written.
            claims[name] = json!("__WRONG__");
            let text = claims.to_string().replace(r#""__WRONG__""#, wrong[k % wrong.len()]);
            let header = json!({"alg": "RS256", "typ": "JWT", "kid": common::oidc::KID});
            format!("Bearer {}", sign_text(&idp.key, &header.to_string(), &text))
        }
        BadAuth::Nested => {
            format!("Bearer {}.{}.{}", segment(&format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))), parts[1], parts[2])
        }
        BadAuth::Huge => format!("Bearer {}", "a".repeat(20 * 1024)),
    }
}

/// A JWT of `header` and `claims` as written, signed RS256 by `key`.
fn sign_text(key: &std::path::Path, header: &str, claims: &str) -> String {
    let input = format!("{}.{}", common::oidc::b64(header.as_bytes()), common::oidc::b64(claims.as_bytes()));
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", key.to_str().expect("utf-8")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input.as_bytes()).expect("written");
    let out = child.wait_with_output().expect("openssl ends");
    format!("{input}.{}", common::oidc::b64(&out.stdout))
}

/// The header's bytes as they are (non-ASCII as obs-text), which `raw` would refuse to send.
async fn approve_with(url: &str, id: &str, authorization: &str) -> (u16, Value) {
    let value = reqwest::header::HeaderValue::from_bytes(authorization.as_bytes()).expect("no control characters");
    answered(
        reqwest::Client::new()
            .post(format!("{url}/api/rollouts/{id}/approve"))
            .header("content-type", "application/json")
            .header("authorization", value)
            .body("{}"),
    )
    .await
}

/// Where Sluice checks tokens, a valid approval with its `Authorization`
/// header broken every way above is a 401 naming the header
/// (`missing_token` or `invalid_token`), never a panic or a 5xx, and
/// changes nothing; the valid token itself then approves.
#[test]
fn generated_authorization_headers_are_refused_by_name_and_change_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (idp, rig, id) = rt.block_on(async {
        let idp = common::oidc::Provider::start().await;
        let rig = Rig::start_with_issuers(idp.issuers()).await;
        let pipeline = format!("Bearer {}", idp.token(&idp.github_claims("contoso/orders", "production")));
        let spec = rig.spec(json!([{"setWeight": 20}, {"approval": {}}]));
        let (status, body) =
            raw(&rig.host.url(), "POST", "/api/rollouts", spec.to_string().into_bytes(), &[("authorization", &pipeline)]).await;
        assert_eq!(status, 201, "{body}");
        let id = body["id"].as_str().expect("id").to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while rig.host.app.engine.store.load(&id).await.expect("load").map(|(r, _)| format!("{:?}", r.phase)).as_deref()
            != Some("AwaitingApproval")
        {
            assert!(std::time::Instant::now() < deadline, "never at the gate");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        (idp, rig, id)
    });
    let claims = idp.person_claims("oid-alice", "alice@contoso.com", &["Sluice.Approver"]);
    let token = idp.token(&claims);
    let url = rig.host.url();
    let before = rt.block_on(snapshot(&rig.host.app));
    let refused = |bad: BadAuth| -> Result<(), TestCaseError> {
        let header = broken(&bad, &token, &claims, &idp);
        let (status, answer) = rt.block_on(approve_with(&url, &id, &header));
        let what = format!("{bad:?}: {status} {answer}");
        prop_assert_eq!(status, 401, "{}", what);
        prop_assert!(matches!(answer["error"].as_str(), Some("missing_token" | "invalid_token")), "{}", what);
        prop_assert_eq!(answer["field"].as_str(), Some("authorization"), "{}", what);
        prop_assert_eq!(&rt.block_on(snapshot(&rig.host.app)), &before, "{} changed the store", what);
        Ok(())
    };
    let listed: Vec<String> = every_listed_bad_auth().into_iter().filter_map(|bad| refused(bad).err()).map(|e| e.to_string()).collect();
    assert!(listed.is_empty(), "{} listed breakages got through:\n{}", listed.len(), listed.join("\n"));
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    if let Err(e) = runner.run(&bad_auth(), refused) {
        panic!("{e}");
    }
    // The same request with the token unbroken is accepted: the refusals were the header's.
    let (status, answer) = rt.block_on(approve_with(&url, &id, &format!("Bearer {token}")));
    assert_eq!(status, 200, "{answer}");
}
