//! How rollouts look in a terminal: `status`, `list`, `doctor`, and `watch`'s live
//! timeline (one line per decision, and the live canary-versus-stable
//! numbers), shared by the CLI and the demo.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli::client::{Client, ClientError};
use crate::domain::rollout::Phase;

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.2}%", v * 100.0)).unwrap_or_else(|| "–".into())
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}ms")).unwrap_or_else(|| "–".into())
}

/// One line of live numbers, if the status has them.
pub fn live_line(status: &Value) -> Option<String> {
    let live = status.get("live").filter(|l| !l.is_null())?;
    let side = |name: &str| {
        let x = &live[name];
        format!("{name} {} req err {} p95 {}", x["requests"].as_u64().unwrap_or(0), pct(x["errorRate"].as_f64()), ms(x["p95Ms"].as_f64()))
    };
    Some(format!("last {}s: {} | {}", live["windowSecs"].as_u64().unwrap_or(0), side("canary"), side("stable")))
}

/// A history entry as one timeline line.
pub fn history_line(e: &Value) -> String {
    let at = s(e, "at");
    let time = at.get(11..19).unwrap_or(at);
    let (from, to) = (s(e, "from"), s(e, "to"));
    let phase = if from == to { to.to_string() } else { format!("{from} → {to}") };
    let by = e.get("by").and_then(Value::as_str).map(|b| format!(" [{b}]")).unwrap_or_default();
    format!("{time}  {phase:<28} {:>3}%  {}{by}", e["weight"].as_u64().unwrap_or(0), s(e, "summary"))
}

/// The `status` view.
pub fn status_text(v: &Value) -> String {
    let mut out = format!(
        "{}  {} {} → {}\n  phase:    {}\n  step:     {} ({})\n  weight:   {}% on {}\n  waiting:  {}\n  plan:     {}\n",
        s(v, "id"),
        s(v, "target"),
        s(v, "stable"),
        s(v, "canary"),
        s(v, "phase"),
        s(v, "step"),
        s(v, "stepDescription"),
        v["weight"].as_u64().unwrap_or(0),
        s(v, "canary"),
        s(v, "waitingFor"),
        s(v, "plan"),
    );
    if let Some(o) = v.get("observedSplit").filter(|o| o.is_object()) {
        let flag = if o["acted"].as_bool() == Some(true) { "  (sustained difference)" } else { "" };
        out.push_str(&format!(
            "  observed: {:.1}% of {} requests on the canary ({}% asked){flag}\n",
            o["share"].as_f64().unwrap_or(0.0),
            o["requests"].as_u64().unwrap_or(0),
            o["requested"].as_u64().unwrap_or(0)
        ));
    }
    let ended = v["phase"] == "RollingBack" || !v["finishedAt"].is_null();
    if let Some(p) = v.get("preview").filter(|p| p.is_object() && !ended) {
        let headers: String =
            p["headers"].as_object().into_iter().flatten().map(|(k, h)| format!(" -H '{k}: {}'", h.as_str().unwrap_or(""))).collect();
        out.push_str(&format!("  preview:  {}{headers}\n            {}\n", s(p, "url"), s(p, "how")));
    }
    for caveat in v.get("routerCaveats").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        out.push_str(&format!("  caveat:   {caveat}\n"));
    }
    if let Some(f) = v.get("failure").and_then(Value::as_str) {
        out.push_str(&format!("  failure:  {f}\n"));
    }
    if let Some(url) = v.pointer("/backlog/issue/url").and_then(Value::as_str) {
        out.push_str(&format!("  issue:    {url}\n"));
    } else if v.pointer("/backlog/state").and_then(Value::as_str) == Some("opening") {
        let attempts = v.pointer("/backlog/attempts").and_then(Value::as_u64).unwrap_or(0);
        let error = v.pointer("/backlog/lastError").and_then(Value::as_str).map(|e| format!(": {e}")).unwrap_or_default();
        out.push_str(&format!("  issue:    being opened (attempt {attempts}{error})\n"));
    }
    if let Some(l) = live_line(v) {
        out.push_str(&format!("  live:     {l}\n"));
    }
    if let Some(h) = v.get("history").and_then(Value::as_array) {
        out.push_str("  history:\n");
        for e in h {
            out.push_str(&format!("    {}\n", history_line(e)));
        }
    }
    out
}

/// The `list` view.
pub fn list_text(v: &Value) -> String {
    let rows = v.get("rollouts").and_then(Value::as_array).cloned().unwrap_or_default();
    if rows.is_empty() {
        return "no rollouts\n".into();
    }
    let mut out = format!("{:<44} {:<18} {:<16} {:>6} {:>7}  {}\n", "ID", "TARGET", "PHASE", "STEP", "WEIGHT", "CHANGE");
    for r in rows {
        out.push_str(&format!(
            "{:<44} {:<18} {:<16} {:>6} {:>6}%  {} → {}\n",
            s(&r, "id"),
            s(&r, "target"),
            s(&r, "phase"),
            s(&r, "step"),
            r["weight"].as_u64().unwrap_or(0),
            s(&r, "stable"),
            s(&r, "canary")
        ));
    }
    out
}

/// The release-health report as a table: one row per service, then everyone.
pub fn report_text(v: &Value) -> String {
    let day = |key: &str| s(v, key).get(..10).unwrap_or("?").to_string();
    let mut out = format!("Release health, {} → {}\n\n", day("from"), day("to"));
    out.push_str(&format!(
        "{:<20} {:>7} {:>6} {:>6} {:>6} {:>8}  {:<16} {:>7} {:>10} {:>10} {:>7} {:>6}\n",
        "SERVICE", "DEPLOYS", "/WEEK", "FAILED", "CFR", "MTTR", "CAUGHT AT", "ESCAPED", "EXPOSED", "APPR WAIT", "ABORTED", "ACTIVE"
    ));
    let rows = v.get("services").and_then(Value::as_array).cloned().unwrap_or_default();
    for h in rows.iter().chain(std::iter::once(&v["overall"])) {
        out.push_str(&health_row(h));
    }
    out.push_str("\nCFR: rolled back / (succeeded + rolled back). MTTR: trigger → all traffic back on stable. CAUGHT AT: failures by canary weight;\n");
    out.push_str("ESCAPED: failures found only at 100 %. EXPOSED: requests served by canaries that were rolled back. APPR WAIT: mean per gated rollout.\n");
    out.push_str(&trend_text(&v["trend"]));
    out
}

/// The trend as rows of bars: `+` succeeded, `x` rolled back, `-` aborted.
fn trend_text(t: &Value) -> String {
    let buckets = t["buckets"].as_array().cloned().unwrap_or_default();
    if buckets.is_empty() {
        return String::new();
    }
    let per = match t["bucketDays"].as_u64().unwrap_or(1) {
        1 => "day".to_string(),
        n => format!("{n} days"),
    };
    let mut out = format!("\nFinished per {per} (+ succeeded, x rolled back, - aborted)\n");
    for b in &buckets {
        let n = |key: &str| usize::try_from(b[key].as_u64().unwrap_or(0)).unwrap_or(0);
        let bar = |c: &str, k: usize| c.repeat(k.min(60));
        let day = s(b, "from").get(..10).unwrap_or("?").to_string();
        let bars = format!("{}{}{}", bar("+", n("deployments")), bar("x", n("failed")), bar("-", n("aborted")));
        out.push_str(format!("{day}  {bars}").trim_end());
        out.push('\n');
    }
    out
}

fn health_row(h: &Value) -> String {
    let n = |key: &str| h[key].as_u64().unwrap_or(0);
    let secs = |key: &str| h[key].as_f64().map(span_text).unwrap_or_else(|| "–".into());
    let cfr = h["changeFailureRate"].as_f64().map(|x| format!("{:.0}%", x * 100.0)).unwrap_or_else(|| "–".into());
    let caught = h["caughtAt"].as_object().map(|m| {
        let mut by: Vec<(u64, u64)> = m.iter().map(|(w, c)| (w.parse().unwrap_or(0), c.as_u64().unwrap_or(0))).collect();
        by.sort_unstable();
        by.iter().map(|(w, c)| format!("{w}%:{c}")).collect::<Vec<_>>().join(" ")
    });
    format!(
        "{:<20} {:>7} {:>6.2} {:>6} {:>6} {:>8}  {:<16} {:>7} {:>10} {:>10} {:>7} {:>6}\n",
        s(h, "service"),
        n("deployments"),
        h["deploysPerWeek"].as_f64().unwrap_or(0.0),
        n("failed"),
        cfr,
        secs("meanTimeToRestoreSecs"),
        caught.filter(|c| !c.is_empty()).unwrap_or_else(|| "–".into()),
        n("escaped"),
        n("exposureRequests"),
        secs("meanApprovalWaitSecs"),
        n("aborted"),
        n("active"),
    )
}

/// A measured span as people read it, as the dashboard writes it: `<1ms`, `48ms`, `3.1s`, `2.5min`, `1.2h`.
fn span_text(secs: f64) -> String {
    match secs {
        s if s < 0.0005 => "<1ms".into(),
        s if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        s if s < 120.0 => format!("{s:.1}s"),
        s if s < 7200.0 => format!("{:.1}min", s / 60.0),
        s => format!("{:.1}h", s / 3600.0),
    }
}

/// Adds a finding made by the CLI itself to `doctor`'s report, keeping
/// blockers first and `ready` true only without one.
pub fn add_check(report: &mut Value, check: Value) {
    let rank = |c: &Value| match s(c, "verdict") {
        "blocker" => 0,
        "warning" => 1,
        _ => 2,
    };
    let blocker = rank(&check) == 0;
    if let Some(checks) = report.get_mut("checks").and_then(Value::as_array_mut) {
        checks.push(check);
        checks.sort_by_key(rank);
    }
    if blocker {
        report["ready"] = Value::Bool(false);
    }
}

/// `doctor`'s findings, one line each, blockers first (as Sluice sorted
/// them), and a last line saying whether a rollout can start.
pub fn doctor_text(v: &Value) -> String {
    let checks = v.get("checks").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut out = String::new();
    let mut blockers = 0;
    for c in &checks {
        let mark = match s(c, "verdict") {
            "blocker" => {
                blockers += 1;
                "BLOCKER"
            }
            "warning" => "warning",
            _ => "ok",
        };
        out.push_str(&format!("{mark:<8} {:<14} {}: {}\n", s(c, "area"), s(c, "name"), s(c, "detail")));
    }
    if v.get("ready") == Some(&Value::Bool(true)) {
        out.push_str(&format!("ready: {} checks, no blocker\n", checks.len()));
    } else {
        out.push_str(&format!("not ready: {blockers} blocker(s) to fix before a rollout\n"));
    }
    out
}

/// Tracks what `watch` has shown, so each poll prints only what is new.
pub struct Watcher {
    shown: usize,
    last_live: Option<Instant>,
    live_every: Duration,
    changes_only: bool,
    approval_hint: Option<String>,
    hinted: bool,
}

impl Watcher {
    /// A watcher printing live numbers at most every `live_every`.
    pub fn new(live_every: Duration) -> Self {
        Watcher { shown: 0, last_live: None, live_every, changes_only: false, approval_hint: None, hinted: false }
    }

    /// The same watcher, printing `hint` (how to approve) once each time the rollout waits for approval.
    pub fn with_approval_hint(mut self, hint: String) -> Self {
        self.approval_hint = Some(hint);
        self
    }

    /// A watcher for a pipeline's log: one line per phase or weight change, no live numbers.
    pub fn changes_only() -> Self {
        Watcher { changes_only: true, ..Watcher::new(Duration::MAX) }
    }

    /// Lines to print for a fresh status.
    pub fn update(&mut self, status: &Value) -> Vec<String> {
        let mut lines = Vec::new();
        let history = status.get("history").and_then(Value::as_array).cloned().unwrap_or_default();
        let fresh = history.len() > self.shown;
        for e in history.iter().skip(self.shown).filter(|e| !self.changes_only || crate::cli::ci::is_change(e)) {
            lines.push(history_line(e));
        }
        self.shown = self.shown.max(history.len());
        let awaiting = s(status, "phase") == "AwaitingApproval";
        if let Some(hint) = self.approval_hint.as_ref().filter(|_| awaiting && !self.hinted) {
            lines.push(hint.clone());
        }
        self.hinted = awaiting;
        if self.changes_only {
            return lines;
        }
        let due = self.last_live.map(|t| t.elapsed() >= self.live_every).unwrap_or(true);
        if let Some(live) = live_line(status) {
            if due || fresh {
                lines.push(format!("          {live} · waiting for {}", s(status, "waitingFor")));
                self.last_live = Some(Instant::now());
            }
        }
        lines
    }
}

/// The terminal phase of a status, if it has one.
pub fn terminal_phase(status: &Value) -> Option<Phase> {
    Phase::parse(s(status, "phase")).filter(|p| p.is_terminal())
}

/// What `watch` prints while a rollout waits at a gate: a command that
/// works as printed once NAME is filled in (whoever started the rollout may
/// not approve it), and the dashboard.
pub fn approval_hint(id: &str, base: &str) -> String {
    format!(
        "          waiting for approval: `sluice approve {id} --url {base} --as NAME` (NAME: an approver other than whoever started it), or open {base}/api/dashboard/{id}"
    )
}

/// How long `start --watch` waits for the rollout it just started to exist
/// (a start posted to the queue exists once Sluice has taken the message).
pub const APPEAR_WITHIN: Duration = Duration::from_secs(120);

/// Follows a rollout until it finishes — or, with `until_approval`, until
/// it waits for approval — printing through `print`; the phase it stopped at
/// and the last status. A rollout not found within `appear_within` (zero:
/// at the first look) is the 404 it answered.
pub async fn watch(
    client: &Client,
    id: &str,
    poll: Duration,
    mut watcher: Watcher,
    (until_approval, appear_within): (bool, Duration),
    mut print: impl FnMut(String),
) -> Result<(Phase, Value), ClientError> {
    let appear_by = Instant::now() + appear_within;
    let mut seen = false;
    loop {
        let status = match client.status(id).await {
            Ok(status) => status,
            Err(ClientError::Http { status: 404, .. }) if !seen && Instant::now() < appear_by => {
                tokio::time::sleep(poll).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        seen = true;
        for line in watcher.update(&status) {
            print(line);
        }
        if let Some(phase) = terminal_phase(&status) {
            return Ok((phase, status));
        }
        if until_approval && s(&status, "phase") == "AwaitingApproval" {
            return Ok((Phase::AwaitingApproval, status));
        }
        tokio::time::sleep(poll).await;
    }
}

/// The `gate` answer: ready, or each reason not.
pub fn gate_text(v: &Value) -> String {
    if v.get("ready") == Some(&Value::Bool(true)) {
        let within = if v.pointer("/window/open") == Some(&Value::Bool(true)) { ", inside its deployment windows" } else { "" };
        return format!("ready: {} may be released{within}\n", s(v, "target"));
    }
    let mut out = format!("not ready: {}\n", s(v, "target"));
    for r in v.get("reasons").and_then(Value::as_array).into_iter().flatten() {
        out.push_str(&format!("  {}: {}\n", s(r, "code"), s(r, "message")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pipeline_log_gets_one_line_per_change_and_the_approval_hint_each_time_it_waits() {
        let mut w = Watcher::changes_only().with_approval_hint("approve: sluice approve r-1".into());
        let entry = |from: &str, to: &str, cause: &str| json!({"at": "2026-12-02T10:00:00Z", "from": from, "to": to, "weight": 20, "cause": cause, "summary": cause});
        let mut history = vec![entry("Pending", "Progressing", "Start"), entry("Progressing", "Progressing", "Measured")];
        let lines = w.update(&json!({"phase": "Progressing", "history": history, "live": {"windowSecs": 5}}));
        assert_eq!(lines.len(), 1, "a measurement that changes nothing, and live numbers, stay out: {lines:?}");
        history.push(entry("Progressing", "AwaitingApproval", "TrafficConfirmed"));
        let lines = w.update(&json!({"phase": "AwaitingApproval", "history": history}));
        assert_eq!(lines.last().map(String::as_str), Some("approve: sluice approve r-1"), "{lines:?}");
        assert!(w.update(&json!({"phase": "AwaitingApproval", "history": history})).is_empty(), "said once per wait");
        w.update(&json!({"phase": "Progressing", "history": history}));
        assert_eq!(w.update(&json!({"phase": "AwaitingApproval", "history": history})), ["approve: sluice approve r-1"]);
    }

    #[test]
    fn a_restore_faster_than_a_millisecond_reads_as_such_not_as_zero() {
        let row = |mttr: Value| health_row(&json!({"service": "orders", "meanTimeToRestoreSecs": mttr, "meanApprovalWaitSecs": 3.1}));
        let words = |line: String| line.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(words(row(json!(0.0)))[5], "<1ms");
        assert_eq!(words(row(json!(0.048)))[5], "48ms");
        assert_eq!(words(row(Value::Null))[5], "–", "no rollback restored: nothing to average");
        assert_eq!(words(row(json!(0.048)))[9], "3.1s");
        assert_eq!(words(row(json!(150.0)))[5], "2.5min");
    }

    #[test]
    fn the_trend_is_a_row_of_marks_per_bucket() {
        let trend = json!({"bucketDays": 1, "buckets": [
            {"from": "2026-12-01T00:00:00Z", "deployments": 2, "failed": 1, "aborted": 0},
            {"from": "2026-12-02T00:00:00Z", "deployments": 0, "failed": 0, "aborted": 1},
            {"from": "2026-12-03T00:00:00Z", "deployments": 0, "failed": 0, "aborted": 0}]});
        let text = trend_text(&trend);
        assert_eq!(text.lines().skip(2).collect::<Vec<_>>(), ["2026-12-01  ++x", "2026-12-02  -", "2026-12-03"], "{text}");
        assert!(text.contains("Finished per day"), "{text}");
        assert_eq!(trend_text(&json!(null)), "", "an older Sluice without a trend: nothing");
    }
}
