//! Releases on the command line: a release drawn as its waves with their
//! rollouts, and `watch` following one until its outcome is known.

use std::time::Duration;

use serde_json::Value;

use super::client::{Client, ClientError};

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A release, wave by wave, each with its targets' rollouts.
pub fn release_text(v: &Value) -> String {
    let waves = v.get("waves").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = format!(
        "release {}: {} {} — {} (wave {}/{} {})\n",
        s(v, "id"),
        s(v, "name"),
        s(v, "version"),
        s(v, "phase"),
        v["wave"],
        waves.len(),
        s(v, "waveName")
    );
    for (i, wave) in waves.iter().enumerate() {
        let mut extras = Vec::new();
        if let Some(bake) = wave.get("bake").and_then(Value::as_str) {
            extras.push(format!("bake {bake}"));
        }
        if let Some(n) = wave.get("approval").and_then(Value::as_u64) {
            extras.push(format!("then {n} approval(s)"));
        }
        let extras = if extras.is_empty() { String::new() } else { format!(" · {}", extras.join(", ")) };
        out.push_str(&format!("  wave {} {} [{}]{extras}\n", i + 1, s(wave, "name"), s(wave, "state")));
        for t in wave.get("targets").and_then(Value::as_array).into_iter().flatten() {
            let phase = t.get("phase").and_then(Value::as_str).unwrap_or("not started");
            let reverted = match t.get("reverted") {
                Some(r) if r["done"] == Value::Bool(true) => ", reverted by policy",
                Some(_) => ", reverting by policy",
                None => "",
            };
            out.push_str(&format!("    {:<24} {:<18} {}\n", s(t, "target"), format!("{phase}{reverted}"), s(t, "rollout")));
        }
    }
    if let Some(f) = v.get("failure").filter(|f| !f.is_null()) {
        out.push_str(&format!("  halted: {}\n", s(f, "reason")));
    }
    if let Some(url) = v.pointer("/backlog/issue/url").and_then(Value::as_str) {
        out.push_str(&format!("  issue: {url}\n"));
    } else if v.pointer("/backlog/state").and_then(Value::as_str) == Some("Opening") {
        let why = v.pointer("/backlog/error").and_then(Value::as_str).unwrap_or("in progress");
        out.push_str(&format!("  issue: not filed yet ({why})\n"));
    }
    for h in v.get("history").and_then(Value::as_array).into_iter().flatten() {
        out.push_str(&format!("  {}  {:<10} {}\n", s(h, "at"), s(h, "by"), s(h, "message")));
    }
    out
}

/// One line per change of the release: its phase, or a target's.
fn changes(before: Option<&Value>, now: &Value) -> Vec<String> {
    let key = |v: &Value| -> Vec<String> {
        let mut k = vec![format!("{} wave {}", s(v, "phase"), v["wave"])];
        for wave in v.get("waves").and_then(Value::as_array).into_iter().flatten() {
            for t in wave.get("targets").and_then(Value::as_array).into_iter().flatten() {
                let phase = t.get("phase").and_then(Value::as_str).unwrap_or("-");
                k.push(format!(
                    "{} {}: {phase}{}",
                    s(wave, "name"),
                    s(t, "target"),
                    if t.get("reverted").is_some() { " (reverted)" } else { "" }
                ));
            }
        }
        k
    };
    let now_key = key(now);
    let old = before.map(key).unwrap_or_default();
    now_key.into_iter().filter(|line| !old.contains(line)).map(|line| format!("  {line}")).collect()
}

/// Follows a release until nothing is left to do (or, with `until_approval`,
/// until a gate waits for people); each change is printed as it happens.
pub async fn watch(
    client: &Client,
    id: &str,
    poll: Duration,
    until_approval: bool,
    mut print: impl FnMut(String),
) -> Result<Value, ClientError> {
    let mut last: Option<Value> = None;
    loop {
        let now = client.release(id).await?;
        for line in changes(last.as_ref(), &now) {
            print(line);
        }
        if now["settled"] == Value::Bool(true) || (until_approval && s(&now, "phase") == "AwaitingApproval") {
            return Ok(now);
        }
        last = Some(now);
        tokio::time::sleep(poll).await;
    }
}

/// The exit code a release's phase gives `watch` and `start --watch`:
/// 0 succeeded (or waits at a gate), 1 halted by a failure, 3 aborted.
pub fn exit_code(phase: &str) -> u8 {
    match phase {
        "Succeeded" | "AwaitingApproval" => 0,
        "Halted" => 1,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(phase: &str, second: Option<&str>) -> Value {
        json!({
            "id": "shop-1", "name": "shop", "version": "v2", "phase": phase, "wave": 2, "waveName": "west",
            "waves": [
                {"name": "east", "state": "promoted", "bake": "1h", "approval": 2,
                 "targets": [{"target": "shop-east", "rollout": "shop-1-w1-shop-east", "phase": "Succeeded"}]},
                {"name": "west", "state": "stopped",
                 "targets": [{"target": "shop-west", "rollout": "shop-1-w2-shop-west", "phase": second}]}
            ],
            "failure": {"wave": 1, "target": "shop-west", "reason": "target shop-west in wave west rolled back"},
            "backlog": {"state": "Opened", "issue": {"id": "7", "url": "file:///issues/7.md"}}
        })
    }

    #[test]
    fn a_release_is_drawn_as_waves_with_their_rollouts() {
        let text = release_text(&sample("Halted", Some("RolledBack")));
        assert!(text.starts_with("release shop-1: shop v2 — Halted (wave 2/2 west)"), "{text}");
        assert!(text.contains("  wave 1 east [promoted] · bake 1h, then 2 approval(s)"), "{text}");
        assert!(text.contains("shop-east") && text.contains("Succeeded") && text.contains("shop-1-w1-shop-east"), "{text}");
        assert!(text.contains("  halted: target shop-west in wave west rolled back"), "{text}");
        assert!(text.contains("  issue: file:///issues/7.md"), "{text}");
    }

    #[test]
    fn watch_prints_only_what_changed() {
        let before = sample("Running", None);
        let after = sample("Halted", Some("RolledBack"));
        let lines = changes(Some(&before), &after);
        assert_eq!(lines, vec!["  Halted wave 2".to_string(), "  west shop-west: RolledBack".to_string()]);
        assert!(changes(Some(&after), &after).is_empty());
        assert_eq!((exit_code("Succeeded"), exit_code("Halted"), exit_code("Aborted")), (0, 1, 3));
    }
}
