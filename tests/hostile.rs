//! Hostile senders and hostile text (issue 36): each attack as it was
//! reproduced, kept as a regression test that performs it and shows it fail.
//! Beside the generated bad-input tests (`boundaries.rs`, `robustness.rs`):
//! those check that bad input is refused; these check that well-formed
//! input from the wrong place, or text made to deceive, achieves nothing.

use crate::common;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use common::*;

/// Request headers, as owned pairs.
type Headers = Vec<(&'static str, String)>;
/// A CLI run: its arguments and its environment.
type Run<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);

/// Attack 1a: a web page on the developer's machine posts to `sluice up`.
/// A cross-site "simple" request carries no JSON type (a Blob body has
/// none, a string `text/plain`); a page that asks with a JSON type carries
/// its `Origin`; DNS rebinding carries the page's own `Host`. Each is
/// refused with the header it got wrong, and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_drive_or_read_the_local_api() {
    let rig = Rig::start().await;
    let url = rig.host.url();
    let spec = serde_json::to_vec(&rig.spec(json!([{"setWeight": 20}, {"approval": {}}]))).expect("json");
    let port = rig.host.addr.port();
    let attacks: Vec<(Headers, u16, &str)> = vec![
        (vec![], 415, "content-type"),
        (vec![("content-type", "text/plain;charset=UTF-8".into())], 415, "content-type"),
        (vec![("content-type", "application/json".into()), ("origin", "https://attacker.example".into())], 403, "origin"),
        (vec![("content-type", "application/json".into()), ("origin", "null".into())], 403, "origin"),
        (vec![("content-type", "application/json".into()), ("host", format!("attacker.example:{port}"))], 403, "host"),
    ];
    for (headers, status, field) in &attacks {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (got, answer) = raw_exact(&url, "POST", "/api/rollouts", spec.clone(), &headers).await;
        assert_eq!((got, answer["field"].as_str()), (*status, Some(*field)), "{headers:?}: {answer}");
    }
    // A rebinding page cannot read either.
    let (got, answer) = raw_exact(&url, "GET", "/api/rollouts", Vec::new(), &[("host", "attacker.example")]).await;
    assert_eq!((got, answer["field"].as_str()), (403, Some("host")), "{answer}");
    assert_eq!(rig.client.list(false).await.expect("list")["rollouts"].as_array().map(Vec::len), Some(0), "nothing was started");
    // The dashboard itself (same origin, JSON) and the CLI (no Origin) still act.
    let own = format!("http://127.0.0.1:{port}");
    let headers = [("content-type", "application/json"), ("origin", own.as_str()), ("x-sluice-user", "ci")];
    let (got, answer) = raw_exact(&url, "POST", "/api/rollouts", spec.clone(), &headers).await;
    assert_eq!(got, 201, "{answer}");
    let id = answer["id"].as_str().expect("id").to_string();
    rig.wait_phase(&id, "AwaitingApproval").await;
    // An empty approval without a JSON type is refused as well: a POST with no body is a simple request too.
    let (got, answer) = raw_exact(&url, "POST", &format!("/api/rollouts/{id}/approve"), Vec::new(), &[("x-sluice-user", "alice")]).await;
    assert_eq!((got, answer["field"].as_str()), (415, Some("content-type")), "{answer}");
    assert_eq!(rig.client.status(&id).await.expect("status")["phase"], "AwaitingApproval");
}

/// Attack 1a, behind a tunnel: `sluice up --public-url https://…` serves its
/// dashboard under the public name, so that origin is its own; any other
/// origin is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_behind_a_tunnel_acts_and_other_origins_still_cannot() {
    let up = Upstreams::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let public = "https://sluice-dev.tunnel.example";
    let config = sluice::host::local::LocalConfig {
        root: repo_root(),
        data_dir: dir.path().to_path_buf(),
        addr: loopback(),
        alert_token: None,
        api_key: None,
        require_principal: false,
        issuers: Vec::new(),
        public_url: Some(format!("{public}/")),
        signed_in: None,
        write_token: None,
    };
    let host = sluice::host::local::start(config).await.expect("local host starts");
    let spec = serde_json::to_vec(&spec_for(&up.router_url, json!([{"setWeight": 20}, {"approval": {}}]))).expect("json");
    // A tunnel forwards the public name as Host; the page's Origin is the public URL's.
    let through = |origin: &'static str| {
        vec![("content-type", "application/json"), ("host", "sluice-dev.tunnel.example"), ("origin", origin), ("x-sluice-user", "ci")]
    };
    for foreign in ["https://attacker.example", "https://sluice-dev.tunnel.example.attacker.example", "null"] {
        let (got, answer) = raw_exact(&host.url(), "POST", "/api/rollouts", spec.clone(), &through(foreign)).await;
        assert_eq!((got, answer["field"].as_str()), (403, Some("origin")), "{foreign}: {answer}");
    }
    let (got, answer) = raw_exact(&host.url(), "POST", "/api/rollouts", spec, &through(public)).await;
    assert_eq!(got, 201, "the tunnel's own page starts a rollout: {answer}");
}

/// Attack 1c: another process or user on the machine posts to `sluice up`
/// as a tool would (no Origin, a JSON type). Writes need the token `sluice
/// up` keeps owner-only in its data directory — the CLI finds it there and
/// the dashboard gets it from its own page — while reads and the alert
/// webhook (which has its own token) need none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_to_sluice_up_need_the_token_it_keeps_in_its_data_directory() {
    let up_router = Upstreams::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("state");
    let up = UpProcess::spawn(&data, &[], &[], "warn").await;
    let spec = serde_json::to_vec(&spec_for(&up_router.router_url, json!([{"setWeight": 20}, {"approval": {}}]))).expect("json");
    let (got, answer) = raw(&up.url, "POST", "/api/rollouts", spec.clone(), &[("x-sluice-user", "ci")]).await;
    assert_eq!((got, answer["field"].as_str()), (401, Some("x-sluice-local-token")), "{answer}");
    let wrong = [("x-sluice-user", "ci"), ("x-sluice-local-token", "0123456789abcdef0123456789abcdef")];
    assert_eq!(raw(&up.url, "POST", "/api/rollouts", spec.clone(), &wrong).await.0, 401);
    let (got, listed) = raw(&up.url, "GET", "/api/rollouts", Vec::new(), &[]).await;
    assert_eq!((got, listed["rollouts"].as_array().map(Vec::len)), (200, Some(0)), "reads need no token, and nothing started");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("local-token")).expect("the token file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // With it: the rollout starts.
    let id =
        up.client("ci").start(&spec_for(&up_router.router_url, json!([{"setWeight": 20}, {"approval": {}}])), None).await.expect("started")
            ["id"]
            .as_str()
            .expect("id")
            .to_string();
    // The dashboard's own page carries it, so its buttons work.
    let page = reqwest::get(format!("{}/api/dashboard", up.url)).await.expect("page").text().await.expect("html");
    assert!(page.contains(&format!("<meta name=\"sluice-local-token\" content=\"{}\">", up.token)), "the page has the token");
    // The CLI finds the token in the data directory; elsewhere, it has none.
    let url = up.url.as_str();
    let cli = |data_dir: String| {
        let id = id.clone();
        async move {
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
            cmd.args(["abort", &id, "--reason", "done", "--as", "ci"]).env_clear().env("SLUICE_URL", url).env("SLUICE_DATA_DIR", data_dir);
            let out = cmd.output().await.expect("runs");
            (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
        }
    };
    let (code, said) = cli(dir.path().join("elsewhere").display().to_string()).await;
    assert!(code != Some(0) && said.contains("401"), "{code:?} {said}");
    let (code, said) = cli(data.display().to_string()).await;
    assert_eq!(code, Some(0), "{said}");
    // The alert webhook has its own token and needs none of this one.
    let alert = serde_json::to_vec(&azure_alert("no-local-token", "Fired")).expect("json");
    assert_eq!(raw(&up.url, "POST", &format!("/api/alerts?token={TOKEN}"), alert, &[]).await.0, 202);
}

/// Attack 1b: a spec chose the files Sluice writes (`~/.bashrc` as the
/// jsonl channel's `path`, any directory as the local backlog's `dir`).
/// Refused at the edge, naming the field; the file is never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_cannot_choose_where_sluice_writes_files() {
    let rig = Rig::start().await;
    let outside = tempfile::tempdir().expect("dir");
    let profile = outside.path().join(".bashrc");
    let mut spec = rig.spec(json!([{"setWeight": 20}]));
    spec["target"]["canary"]["version"] = json!("v2 $(id > owned)");
    spec["notifications"] = json!([{"provider": "jsonl", "settings": {"path": profile.display().to_string()}}]);
    spec["backlog"] = json!({"provider": "local", "settings": {"dir": outside.path().display().to_string()}});
    let err = rig.client.start(&spec, None).await.expect_err("refused").to_string();
    assert!(err.contains("422"), "{err}");
    for field in ["notifications[0].settings.path", "backlog.settings.dir"] {
        assert!(err.contains(field), "names {field}: {err}");
    }
    assert!(!profile.exists() && std::fs::read_dir(outside.path()).expect("dir").next().is_none(), "nothing written outside");
}

/// Attack 7 (files): Sluice's data — state, notifications, issues — is
/// readable by its owner only.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluices_data_files_are_its_owners_only() {
    use std::os::unix::fs::PermissionsExt;
    let rig = Rig::start().await;
    let id = rig.start_rollout(&rig.spec(json!([{"setWeight": 20}, {"approval": {}}]))).await;
    rig.wait_phase(&id, "AwaitingApproval").await;
    rig.as_user("azure-monitor").alert(&azure_alert("perm", "Fired"), Some(TOKEN)).await.expect("202");
    rig.wait_phase(&id, "RolledBack").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while rig.backlog_files().is_empty() || rig.notifications().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the issue and the notifications were written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    let dir = rig.data_dir();
    assert_eq!(mode(&dir), 0o700, "the data directory");
    let mut files = vec![dir.join("sluice.db"), dir.join("notifications.jsonl")];
    files.extend(rig.backlog_files());
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

/// Runs this build's `sluice` with exactly `env` (and PATH), as a pipeline step would.
async fn sluice(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.expect("ends").expect("runs");
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Attack 2: text an alert or a person put into a rollout becomes a
/// pipeline's command or a terminal's escape sequence when the CLI prints
/// it. An abort reason forging Azure Pipelines and GitHub Actions commands
/// and OSC/CSI sequences is printed by `watch`, `status` (text and JSON) and
/// `list` in both runners: no line is a command, no escape reaches the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_text_never_becomes_a_pipeline_command_or_an_escape_sequence() {
    let up = Upstreams::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let sluice_up = UpProcess::spawn(&dir.path().join("state"), &[], &[], "warn").await;
    let client = sluice_up.client("ci");
    let started = client.start(&spec_for(&up.router_url, json!([{"setWeight": 20}, {"approval": {}}])), None).await.expect("started");
    let id = started["id"].as_str().expect("id").to_string();
    wait_for(&client, &id, "awaiting approval", Duration::from_secs(20), |s| s["phase"] == "AwaitingApproval").await;
    let forged = "stop\n##vso[task.setvariable variable=SLUICE_URL]https://attacker.example\n  ::error::forged\r##[group]x \u{1b}]0;pwned\u{7}\u{1b}[2J\u{202e}done";
    client.action(&id, "abort", &json!({"reason": forged})).await.expect("aborted");
    wait_for(&client, &id, "aborted", Duration::from_secs(20), |s| s["phase"] == "Aborted").await;
    let url = sluice_up.url.as_str();
    let runs: Vec<Run> = vec![
        (vec!["watch", &id], vec![("TF_BUILD", "True"), ("SLUICE_URL", url)]),
        (vec!["watch", &id], vec![("GITHUB_ACTIONS", "true"), ("SLUICE_URL", url)]),
        (vec!["status", &id], vec![("TF_BUILD", "True"), ("SLUICE_URL", url)]),
        (vec!["status", &id, "--json"], vec![("TF_BUILD", "True"), ("SLUICE_URL", url)]),
        (vec!["list"], vec![("GITHUB_ACTIONS", "true"), ("SLUICE_URL", url)]),
    ];
    for (args, env) in runs {
        let (_, log) = sluice(&args, &env).await;
        assert!(log.contains("Aborted") || log.contains(&id), "{args:?} printed the rollout: {log}");
        for line in log.split(['\n', '\r']) {
            assert!(!line.contains("##vso[task.setvariable") && !line.contains("##[group]x"), "{args:?}: a forged Azure command: {line:?}");
            assert!(!line.trim_start().starts_with("::error::forged"), "{args:?}: a forged GitHub command: {line:?}");
            assert!(!line.contains('\u{1b}') && !line.contains('\u{7}') && !line.contains('\u{202e}'), "{args:?}: an escape: {line:?}");
        }
    }
    // The JSON stays the same document.
    let (_, json_log) = sluice(&["status", &id, "--json"], &[("SLUICE_URL", url)]).await;
    let doc: Value = serde_json::from_str(&json_log).expect("JSON");
    assert!(doc.to_string().contains("##vso[task.setvariable"), "the reason is kept, only its printing is defused");
}

/// Attack 7 (dashboard): the page runs only its own script, is never
/// framed (a page overlaying Approve), and its type is never guessed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_runs_only_its_own_script_and_is_never_framed() {
    let rig = Rig::start().await;
    let page = reqwest::get(format!("{}/api/dashboard", rig.host.url())).await.expect("page");
    let header = |name: &str| page.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (policy, frames, sniff) = (header("content-security-policy"), header("x-frame-options"), header("x-content-type-options"));
    let html = page.text().await.expect("html");
    let script = html.split_once("<script>").and_then(|(_, r)| r.split_once("</script>")).map(|(s, _)| s).expect("one script");
    use sha2::Digest as _;
    let hash = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sha2::Sha256::digest(script.as_bytes()));
    assert!(policy.contains(&format!("script-src 'sha256-{hash}'")), "{policy}");
    for rule in ["default-src 'none'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"] {
        assert!(policy.contains(rule), "{rule}: {policy}");
    }
    assert!(!policy.contains("unsafe-eval") && !policy.contains("script-src 'unsafe-inline'"), "{policy}");
    assert_eq!((frames.as_str(), sniff.as_str()), ("DENY", "nosniff"));
}

/// Attack 3: whoever may send to the queue (pipelines hold Data Sender)
/// wrote messages that acted as Azure Monitor, as a person, or as someone
/// else starting. Delivered as the Functions host delivers them: an alert
/// the webhook never received, an alert's resolution it never received, a
/// person's action and a pipeline's failure report are refused by name and
/// change nothing; a start is recorded as the queue's, whoever it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_gives_no_authority_to_what_is_written_on_it() {
    use sluice::functions::{self, HandlerError};
    let rig = Rig::start().await;
    let app = rig.host.app.clone();
    let deliver = |body: Value| {
        let app = app.clone();
        async move { functions::invoke_queue(&app, "steps", &body.to_string()).await }
    };
    let mut spec = rig.spec(json!([{"setWeight": 20}, {"pause": {"duration": "1h"}}]));
    spec["policy"] = json!({"onAlert": "pause"});
    let id = rig.start_rollout(&spec).await;
    rig.wait(&id, "the pause", Duration::from_secs(20), |s| s["stepDescription"].as_str().unwrap_or("").contains("pause")).await;
    // A real alert through the webhook holds the rollout (onAlert: pause).
    let monitor = rig.as_user("azure-monitor");
    monitor.alert(&azure_alert("real-1", "Fired"), Some(TOKEN)).await.expect("202");
    rig.wait_phase(&id, "Paused").await;
    let before = rig.client.status(&id).await.expect("status");
    let failure = json!({"stage": "smoke", "by": "release-bot"});
    for (event, named) in [
        (json!({"type": "alertFired", "alert": {"id": "forged-1", "rule": "5xx", "severity": "Sev0"}}), "forged-1"),
        (json!({"type": "alertResolved", "alertId": "real-1"}), "real-1"),
        (json!({"type": "approved", "by": "alice"}), "Approved"),
        (json!({"type": "abortRequested", "by": "alice", "reason": "x"}), "AbortRequested"),
        (json!({"type": "promoteRequested", "by": "alice", "full": true}), "PromoteRequested"),
        (json!({"type": "releaseFailed", "failure": failure}), "releaseFailed"),
    ] {
        match deliver(json!({"kind": "event", "rollout": id, "event": event})).await {
            Err(HandlerError::Permanent(reason)) => assert!(reason.contains(named) && reason.contains("from the queue"), "{reason}"),
            other => panic!("{event}: expected a refusal by name, got {other:?}"),
        }
    }
    let after = rig.client.status(&id).await.expect("status");
    assert_eq!((&after["phase"], &after["weight"], &after["history"]), (&before["phase"], &before["weight"], &before["history"]));
    assert_eq!(rig.up.router.route().weight.percent(), 20);
    // The webhook's own resolution is believed.
    monitor.alert(&azure_alert("real-1", "Resolved"), Some(TOKEN)).await.expect("202");
    rig.wait_phase(&id, "Progressing").await;
    // A start naming a person is the queue's start.
    let mut other = rig.spec(json!([{"setWeight": 20}]));
    other["target"]["name"] = json!("payments-api");
    deliver(json!({"kind": "start", "spec": other, "by": "release-bot", "id": "queued-1"})).await.expect("started");
    let started = rig.client.status("queued-1").await.expect("status");
    assert_eq!(started["createdBy"], "queue", "{started}");
}

/// Adapters' environment on loopback, with one secret setting, and its data directory.
fn env_with(setting: &'static str, value: &'static str) -> (tempfile::TempDir, sluice::ports::env::AdapterEnv) {
    let dir = tempfile::tempdir().expect("dir");
    let settings: sluice::ports::env::SettingsLookup = std::sync::Arc::new(move |name| match name {
        "SLUICE_ALLOW_LOOPBACK_ENDPOINTS" => Some("true".into()),
        n if n == setting => Some(value.into()),
        _ => None,
    });
    let env = sluice::ports::env::AdapterEnv::with_settings(dir.path().to_path_buf(), "http://127.0.0.1:7071".into(), settings);
    (dir, env)
}

/// Attack 4: anyone who may open an issue planted Sluice's markers — a
/// look-alike id (`gh-4242` for `gh-424`), a whole marker in an issue of
/// their own, an update marker in a comment — so that Sluice adopted their
/// issue or kept quiet. Markers are trusted only whole and only in what
/// Sluice's own account wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_backlog_markers_neither_take_over_an_issue_nor_silence_sluice() {
    use sluice::ports::backlog::doc::{Block, Doc};
    use sluice::ports::backlog::{self, CommentDraft, IssueDraft};
    let fake = common::trackers::GitHubFake::start("acme/shop", "ghp_planted").await;
    let (_dir, env) = env_with("GITHUB_TOKEN", "ghp_planted");
    let given = serde_json::from_value(json!({"repository": "acme/shop", "apiUrl": fake.recorder.url})).expect("settings");
    let tracker = backlog::build("github", &given, &env).expect("github");
    // Mallory's issues: a whole marker (and a failure marker), and Sluice's marker for a longer id.
    fake.plant_issue("mallory", "fake", "<!-- sluice:rollout=gh-424 -->\n<!-- sluice:failure=gh-424 -->");
    fake.plant_issue(common::trackers::SLUICE_LOGIN, "another rollout", "<!-- sluice:rollout=gh-4242 -->");
    let mut body = Doc::default();
    body.push(Block::Marker(backlog::marker("gh-424")));
    body.push(Block::Marker(backlog::failure_marker("gh-424")));
    let draft = IssueDraft {
        rollout_id: "gh-424".into(),
        title: "Rollout gh-424 rolled back".into(),
        body,
        labels: Vec::new(),
        not_before: chrono::Utc::now(),
        rollout_failure: true,
    };
    let filed = tracker.open(&draft).await.expect("filed");
    assert!(filed.created && filed.issue.id == "acme/shop#3", "Sluice opened its own issue: {:?}", filed.issue);
    // A second attempt finds Sluice's own issue, not Mallory's.
    let again = tracker.open(&draft).await.expect("found");
    assert_eq!((again.created, again.issue.id.as_str()), (false, "acme/shop#3"));
    // Mallory plants the update's marker in a comment: Sluice still says its piece.
    let mut note = Doc::default();
    note.push(Block::Marker("sluice:update=gh-424/1".into()));
    fake.plant_comment(3, "mallory", "<!-- sluice:update=gh-424/1 -->");
    tracker.comment(&filed.issue, &CommentDraft { marker: "sluice:update=gh-424/1".into(), body: note.clone() }).await.expect("commented");
    assert_eq!(fake.comments(3).len(), 2, "Sluice's own comment was posted");
    // Its own comment, once there, is recognised: a retry posts nothing more.
    tracker.comment(&filed.issue, &CommentDraft { marker: "sluice:update=gh-424/1".into(), body: note }).await.expect("retried");
    assert_eq!(fake.comments(3).len(), 2);
}

/// Attack 5 (chat): text from outside paged a whole Slack channel
/// (`<!channel>` in the top-level text) and put a deceptive link into a
/// Teams card (`[Approve here](https://attacker.example/login)`).
#[test]
fn chat_messages_neither_page_a_channel_nor_show_a_foreign_link() {
    let mut note = sluice::ports::notify::Notification {
        kind: sluice::domain::rollout::NotifyKind::RolledBack,
        rollout_id: "r-1".into(),
        target: "orders".into(),
        stable_version: "v1".into(),
        canary_version: "v2".into(),
        phase: sluice::domain::rollout::Phase::RolledBack,
        stage: 0,
        title: "<!channel> rolled back".into(),
        text: "<!here> [Approve here](https://attacker.example/login) <@U123>".into(),
        facts: vec![("Cause".into(), "[click](https://attacker.example)".into())],
        links: Vec::new(),
        commands: Vec::new(),
        at: chrono::Utc::now(),
    };
    // Slack reads mentions in the top-level text and in mrkdwn (never in plain_text).
    fn mrkdwn(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if m.get("type") == Some(&json!("mrkdwn")) {
                    out.extend(m.get("text").and_then(Value::as_str).map(str::to_string));
                }
                m.values().for_each(|v| mrkdwn(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| mrkdwn(v, out)),
            _ => {}
        }
    }
    let slack = sluice::ports::notify::slack::message(&note);
    let mut read = vec![slack["text"].as_str().expect("top-level text").to_string()];
    mrkdwn(&slack, &mut read);
    for mention in ["<!channel>", "<!here>", "<@U123>"] {
        assert!(read.iter().all(|t| !t.contains(mention)), "{mention} reaches Slack: {read:?}");
    }
    note.title = "rolled back".into();
    let teams = sluice::ports::notify::teams::card(&note).to_string();
    assert!(!teams.contains("](https://attacker.example"), "a foreign link renders in Teams: {teams}");
}

/// Attack 4 (Azure DevOps): anyone who may edit work items tagged one of
/// their own with Sluice's rollout tag, and commented with Sluice's update
/// marker; Sluice opens its own work item instead of adopting theirs, finds
/// its own again, and still posts its update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_work_item_tag_does_not_take_over_the_rollouts_work_item() {
    use sluice::ports::backlog::{self, doc::Doc, IssueDraft};
    let fake = common::trackers::AdoFake::start("org", "proj", "ado-pat-planted").await;
    let (_dir, env) = env_with("AZURE_DEVOPS_PAT", "ado-pat-planted");
    let given = serde_json::from_value(json!({"organization": "org", "project": "proj", "orgUrl": format!("{}/org", fake.recorder.url)}))
        .expect("settings");
    let tracker = backlog::build("azureDevOps", &given, &env).expect("azure devops");
    let planted = fake.plant_item("Mallory <mallory@contoso.com>", "sluice-rollout-gh-424; sluice-failure-gh-424");
    let draft = IssueDraft {
        rollout_id: "gh-424".into(),
        title: "Rollout gh-424 rolled back".into(),
        body: Doc::default(),
        labels: Vec::new(),
        not_before: chrono::Utc::now(),
        rollout_failure: true,
    };
    let filed = tracker.open(&draft).await.expect("filed");
    assert!(filed.created && filed.issue.id != planted.to_string(), "Sluice opened its own: {:?}", filed.issue);
    let again = tracker.open(&draft).await.expect("found");
    assert_eq!((again.created, again.issue.id.as_str()), (false, filed.issue.id.as_str()));
    // Mallory's comment carrying the update's marker does not silence Sluice's own.
    let id: u64 = filed.issue.id.parse().expect("a work item id");
    let mut note = Doc::default();
    note.push(sluice::ports::backlog::doc::Block::Marker("sluice:update=gh-424/1".into()));
    fake.plant_comment(id, "mallory@contoso.com", "<p><small>sluice:update=gh-424/1</small></p>");
    let update = || sluice::ports::backlog::CommentDraft { marker: "sluice:update=gh-424/1".into(), body: note.clone() };
    tracker.comment(&filed.issue, &update()).await.expect("commented");
    assert_eq!(fake.comments(id).len(), 2, "Sluice's own comment was posted");
    tracker.comment(&filed.issue, &update()).await.expect("retried");
    assert_eq!(fake.comments(id).len(), 2, "and recognised on a retry");
}

/// Attack 7 (logs): an alert rule with a newline forged a `sluice.metric`
/// line, which Application Insights keeps and the README's queries count.
/// `sluice up` logs the rule; every event stays one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_in_a_log_event_cannot_forge_a_line() {
    let upstream = Upstreams::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let up = UpProcess::spawn(&dir.path().join("state"), &[], &[], "info").await;
    let client = up.client("ci");
    let id = client.start(&spec_for(&upstream.router_url, json!([{"setWeight": 20}, {"approval": {}}])), None).await.expect("started")
        ["id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_for(&client, &id, "the gate", Duration::from_secs(20), |s| s["phase"] == "AwaitingApproval").await;
    let mut alert = azure_alert("forging", "Fired");
    alert["data"]["essentials"]["alertRule"] = json!("5xx\nsluice.metric {\"outcome\":\"Succeeded\",\"forged\":true}\r\u{1b}[2J");
    client.alert(&alert, Some(TOKEN)).await.expect("202");
    wait_for(&client, &id, "rolled back", Duration::from_secs(20), |s| s["phase"] == "RolledBack").await;
    let log = up.output();
    assert!(log.contains("forged"), "the rule was logged: {log}");
    for line in log.lines() {
        assert!(!line.trim_start().starts_with("sluice.metric {\"outcome\":\"Succeeded\",\"forged\""), "a forged line: {line}");
        assert!(!line.contains('\u{1b}'), "an escape reached the log: {line:?}");
    }
}

/// Attack 7, the dev router: a user of the routed app sends `PUT
/// /_sluice/route` (or `promote`) to the address their traffic goes to, and
/// a web page aims at the admin listener. The traffic listener only proxies,
/// so the request reaches the app and the split is untouched; the admin
/// listener refuses a foreign `Host` or any `Origin`, and listens on
/// loopback only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_routers_admin_api_is_not_on_the_users_listener() {
    let up = Upstreams::start().await;
    let weight = json!({"weight": 100}).to_string().into_bytes();
    let json_type = [("content-type", "application/json")];
    let (got, answer) = raw_exact(&up.traffic_url, "PUT", "/_sluice/route", weight.clone(), &json_type).await;
    assert_eq!((got, answer["version"].as_str(), answer["path"].as_str()), (200, Some("v1"), Some("/_sluice/route")), "{answer}");
    let (_, answer) = raw_exact(&up.traffic_url, "POST", "/_sluice/promote", Vec::new(), &[]).await;
    assert_eq!(answer["path"].as_str(), Some("/_sluice/promote"), "proxied to the app: {answer}");
    let (_, answer) = raw_exact(&up.traffic_url, "GET", "/metrics", Vec::new(), &[]).await;
    assert_eq!(answer["path"].as_str(), Some("/metrics"), "the app's own /metrics: {answer}");
    let route = up.router.route();
    assert_eq!((route.weight.percent(), route.promoted), (0, false), "users changed nothing");

    let port = up.router_url.rsplit(':').next().unwrap_or_default().to_string();
    let rebound = format!("attacker.example:{port}");
    let page: [(&[(&str, &str)], &str); 3] = [
        (&[("content-type", "application/json"), ("origin", "https://attacker.example")], "origin"),
        (&[("content-type", "application/json"), ("origin", "null")], "origin"),
        (&[("content-type", "application/json"), ("host", rebound.as_str())], "host"),
    ];
    for (headers, named) in page {
        let (got, answer) = raw_exact(&up.router_url, "PUT", "/_sluice/route", weight.clone(), headers).await;
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(got == 403 && message.starts_with(named), "{headers:?}: {got} {answer}");
        let (got, _) = raw_exact(&up.router_url, "POST", "/_sluice/promote", Vec::new(), headers).await;
        assert_eq!(got, 403, "{headers:?}");
    }
    assert_eq!(up.router.route().weight.percent(), 0, "no page changed the split");
    let (got, answer) = raw_exact(&up.router_url, "PUT", "/_sluice/route", weight, &json_type).await;
    assert_eq!((got, answer["weight"].as_u64()), (200, Some(100)), "a local tool moves it: {answer}");

    let public = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let refused = up.router.serve(loopback(), public).await.err().map(|e| e.kind());
    assert_eq!(refused, Some(std::io::ErrorKind::InvalidInput), "the admin API listens on loopback only");
}
