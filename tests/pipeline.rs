//! The release pipeline's Sluice steps, played as a pipeline runs them:
//! the composite action's script (`examples/pipelines/github/actions/sluice/
//! sluice.sh`) and the CLI against a real `sluice up` with the demo's local
//! target — a build failure before any rollout, a good release, a bad one,
//! a smoke test failing mid-rollout, the gate — plus the Service Bus start
//! and the GitHub deployment statuses against wire-level fakes.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use common::recorder::{Recorded, Recorder};
use common::{metric, repo_root, Upstreams};
use sluice::devtools::load::Load;

fn sluice_sh() -> PathBuf {
    repo_root().join("examples/pipelines/github/actions/sluice/sluice.sh")
}

/// PATH with this build's `sluice` first, as the action's install step leaves it.
fn path_with_sluice() -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_sluice")).parent().expect("bin dir").to_path_buf();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

/// One pipeline step: `sluice.sh STEP` (or the CLI with `args`) in a clean
/// environment holding only what a runner would set.
async fn step(program: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env_clear().env("PATH", path_with_sluice()).env("HOME", std::env::temp_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(120), cmd.output()).await.expect("the step ends").expect("the step runs")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The spec template a team keeps in its repository: placeholders filled by the runner's environment.
fn spec_template(router_url: &str, steps: Value) -> Value {
    json!({
        "target": {
            "name": "orders-api",
            "router": {"provider": "local", "settings": {"url": router_url}},
            "stable": {"name": "stable", "version": "v1"},
            "canary": {"name": "canary", "version": "${RELEASE_VERSION}"}
        },
        "strategy": {"canary": {"steps": steps}},
        "backlog": {"provider": "local"},
        "notifications": [{"provider": "jsonl"}]
    })
}

struct Pipeline {
    up: common::UpProcess,
    dir: tempfile::TempDir,
    spec: PathBuf,
}

impl Pipeline {
    async fn start(router_url: &str, steps: Value) -> Pipeline {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = dir.path().join("orders-api.rollout.json");
        std::fs::write(&spec, spec_template(router_url, steps).to_string()).expect("spec");
        let up = common::UpProcess::spawn(&dir.path().join("state"), &[], &[], "warn").await;
        Pipeline { up, dir, spec }
    }

    /// What a GitHub runner sets for the action's script.
    fn github_env(&self, release: &str) -> Vec<(&'static str, String)> {
        vec![
            ("GITHUB_ACTIONS", "true".into()),
            ("GITHUB_STEP_SUMMARY", self.dir.path().join(format!("summary-{release}.md")).display().to_string()),
            ("SLUICE_URL", self.up.url.clone()),
            ("SLUICE_LOCAL_TOKEN", self.up.token.clone()),
            ("SLUICE_USER", "octocat".into()),
            ("SLUICE_SPEC", self.spec.display().to_string()),
            ("SLUICE_RELEASE", release.into()),
            ("SLUICE_RUN_URL", format!("https://github.com/contoso/orders-api/actions/runs/{release}")),
            ("RELEASE_VERSION", format!("v2-{release}")),
        ]
    }

    fn issues(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> =
            common::walk(&self.dir.path().join("state/backlog")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "md")).collect();
        files.sort();
        files
    }

    fn issue(&self, release: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("state/backlog/{release}.md"))).unwrap_or_default()
    }

    async fn status(&self, id: &str) -> Value {
        self.up.client("test").status(id).await.expect("status")
    }
}

fn with(env: &[(&'static str, String)], extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    env.iter().chain(extra).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_failure_before_any_rollout_opens_one_issue_through_report_failure() {
    let up = Upstreams::start().await;
    let p = Pipeline::start(&up.router_url, json!([{"setWeight": 50}, {"pause": {}}])).await;
    let log = p.dir.path().join("build.log");
    std::fs::write(&log, "compiling orders-api\nerror[E0308]: mismatched types\ncurl -H 'Authorization: Bearer s3cr3t-t0ken' https://x\n")
        .expect("log");
    let env = with(&p.github_env("gh-101"), &[("SLUICE_STAGE", "build".into()), ("SLUICE_LOG_FILE", log.display().to_string())]);
    let out = step(&sluice_sh(), &["report-failure"], &env).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("release gh-101: opened"), "{}", text(&out));
    assert_eq!(p.issues().len(), 1, "{:?}", p.issues());
    let issue = p.issue("gh-101");
    assert!(issue.contains("Release of orders-api v2-gh-101 failed: stage 'build'"), "{issue}");
    assert!(issue.contains("error[E0308]: mismatched types"), "the log's end is the evidence: {issue}");
    assert!(issue.contains("https://github.com/contoso/orders-api/actions/runs/gh-101"), "{issue}");
    assert!(!issue.contains("s3cr3t-t0ken") && issue.contains("Bearer [redacted]"), "credentials are scrubbed: {issue}");
    // The re-run of the failed job reports again: the same issue, a comment, never a second issue.
    let again = with(&p.github_env("gh-101"), &[("SLUICE_STAGE", "build".into())]);
    let out = step(&sluice_sh(), &["report-failure"], &again).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("release gh-101: commented"), "{}", text(&out));
    assert_eq!(p.issues().len(), 1);
    // The re-run gets past the build, and its rollout fails too: still the release's one issue.
    let sluice = Path::new(env!("CARGO_BIN_EXE_sluice"));
    let start = step(sluice, &["start", &p.spec.display().to_string(), "--fill-env", "--id", "gh-101"], &p.github_env("gh-101")).await;
    assert!(start.status.success(), "{}", text(&start));
    let client = p.up.client("t");
    common::wait_for(&client, "gh-101", "paused", Duration::from_secs(30), |s| s["phase"] == "Paused").await;
    let smoke = step(&sluice_sh(), &["report-failure"], &with(&p.github_env("gh-101"), &[("SLUICE_STAGE", "smoke-test".into())])).await;
    assert!(smoke.status.success(), "{}", text(&smoke));
    let told = |s: &Value| s["backlog"]["state"] == "opened" && s["backlog"]["reported"]["failure"] == true;
    let filed = common::wait_for(&client, "gh-101", "the failure told on the issue", Duration::from_secs(30), told).await;
    assert_eq!(filed["phase"], "RolledBack");
    assert_eq!(p.issues().len(), 1, "{:?}", p.issues());
    let issue = p.issue("gh-101");
    assert!(issue.contains("stage 'build'"), "{issue}");
    assert!(
        issue.contains("## The rollout failed too: gh-101") && issue.contains("**Failed stage:** smoke-test"),
        "both failures in one issue: {issue}"
    );
    // A bad report changes nothing and says which field.
    let bad = with(&p.github_env("gh-102"), &[("SLUICE_STAGE", "build".into()), ("SLUICE_RUN_URL", "javascript:alert(1)".into())]);
    let out = step(&sluice_sh(), &["report-failure"], &bad).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("runUrl"), "{}", text(&out));
    assert_eq!(p.issues().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_release_exits_0_with_the_summary_and_a_bad_one_exits_1_with_one_issue() {
    let up = Upstreams::start().await;
    let _load = Load::start(&up.traffic_url, 200, 4);
    let steps = json!([{"setWeight": 50}, {"analysis": {"metrics": [metric("errors", "error_rate", "< 0.05", Some(2))]}}]);
    let p = Pipeline::start(&up.router_url, steps.clone()).await;

    // The automated gate passes: nothing runs on the target.
    let gate = step(&sluice_sh(), &["gate"], &p.github_env("gh-201")).await;
    assert!(gate.status.success(), "{}", text(&gate));

    let env = p.github_env("gh-201");
    let out = step(&sluice_sh(), &["rollout"], &env).await;
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(!log.contains('\u{1b}'), "no ANSI in a pipeline's log: {log:?}");
    assert!(log.starts_with("started gh-201") && log.contains("::group::Sluice rollout gh-201\n") && log.contains("::endgroup::"), "{log}");
    assert!(log.contains("Succeeded"), "{log}");
    let summary = std::fs::read_to_string(p.dir.path().join("summary-gh-201.md")).expect("the job summary is written");
    assert!(summary.starts_with("## Sluice: rollout gh-201 succeeded\n"), "{summary}");
    assert!(summary.contains("| Succeeded | 100% |"), "{summary}");
    assert!(summary.contains(&format!("({}/api/dashboard/gh-201)", p.up.url)), "{summary}");
    // Re-running the same job is the same release: nothing starts twice.
    let rerun = step(&sluice_sh(), &["rollout"], &env).await;
    assert_eq!(rerun.status.code(), Some(0), "{}", text(&rerun));
    assert_eq!(p.status("gh-201").await["phase"], "Succeeded");

    // The bad release (a fresh router: the first one now serves the promoted version as
    // stable): the canary fails its analysis, Sluice rolls back, the step fails.
    let bad = Upstreams::start().await;
    bad.fail_canary(400);
    let _bad_load = Load::start(&bad.traffic_url, 200, 4);
    let bad_spec = p.dir.path().join("bad.rollout.json");
    std::fs::write(&bad_spec, spec_template(&bad.router_url, steps).to_string()).expect("spec");
    let env = with(&p.github_env("gh-202"), &[("SLUICE_SPEC", bad_spec.display().to_string())]);
    let out = step(&sluice_sh(), &["rollout"], &env).await;
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("::error title=Sluice rollout gh-202%3A RolledBack::"), "{log}");
    let summary = std::fs::read_to_string(p.dir.path().join("summary-gh-202.md")).expect("summary");
    assert!(summary.starts_with("## Sluice: rollout gh-202 rolled back\n"), "{summary}");
    // Azure Pipelines sees the same rollout through its logging commands.
    let ado = step(
        Path::new(env!("CARGO_BIN_EXE_sluice")),
        &["watch", "gh-202"],
        &[("TF_BUILD", "True".into()), ("SLUICE_URL", p.up.url.clone()), ("SLUICE_LOCAL_TOKEN", p.up.token.clone())],
    )
    .await;
    let ado_log = text(&ado);
    assert_eq!(ado.status.code(), Some(1), "{ado_log}");
    assert!(ado_log.contains("##[group]Sluice rollout gh-202\n") && ado_log.contains("##[endgroup]"), "{ado_log}");
    assert!(ado_log.contains("##vso[task.logissue type=error]Sluice rollout gh-202: RolledBack: "), "{ado_log}");
    // The failure path runs report-failure for the rollout stage: one issue for the release.
    let report = with(&env, &[("SLUICE_STAGE", "rollout".into())]);
    let out = step(&sluice_sh(), &["report-failure"], &report).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("release gh-202: commented"), "{}", text(&out));
    assert_eq!(p.issues(), vec![p.dir.path().join("state/backlog/gh-202.md")], "exactly one issue, the failed release's");
    assert!(p.issue("gh-202").contains("Pipeline stage 'rollout' failed"), "{}", p.issue("gh-202"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smoke_test_failing_mid_rollout_rolls_it_back_and_the_gate_says_why_not_before() {
    let up = Upstreams::start().await;
    let p = Pipeline::start(&up.router_url, json!([{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}])).await;
    let start = step(
        Path::new(env!("CARGO_BIN_EXE_sluice")),
        &["start", &p.spec.display().to_string(), "--fill-env", "--id", "gh-301"],
        &p.github_env("gh-301"),
    )
    .await;
    assert!(start.status.success(), "{}", text(&start));
    common::wait_for(&p.up.client("t"), "gh-301", "paused", Duration::from_secs(30), |s| s["phase"] == "Paused").await;

    let gate = step(&sluice_sh(), &["gate"], &p.github_env("gh-302")).await;
    assert_eq!(gate.status.code(), Some(1), "{}", text(&gate));
    assert!(text(&gate).contains("rolloutActive: rollout gh-301 of orders-api is still running"), "{}", text(&gate));

    let report = with(&p.github_env("gh-301"), &[("SLUICE_STAGE", "smoke-test".into())]);
    let out = step(&sluice_sh(), &["report-failure"], &report).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("release gh-301: rollingBack"), "{}", text(&out));
    let client = p.up.client("t");
    let done = common::wait_for(&client, "gh-301", "rolled back", Duration::from_secs(30), |s| s["phase"] == "RolledBack").await;
    assert_eq!(done["weight"], 0);
    assert!(done["failure"].as_str().is_some_and(|f| f.contains("pipeline stage 'smoke-test' failed")), "{done}");
    common::wait_for(&client, "gh-301", "issue filed", Duration::from_secs(30), |s| s.pointer("/backlog/issue").is_some()).await;
    assert_eq!(p.issues().len(), 1);
    assert!(p.issue("gh-301").contains("Failed stage:"), "{}", p.issue("gh-301"));
    let gate = step(&sluice_sh(), &["gate"], &p.github_env("gh-302")).await;
    assert!(gate.status.success(), "the rollback is over: the next release may begin: {}", text(&gate));
}

/// `sluice start --queue` posts the Start message as the Service Bus REST
/// "Send Message" call documents it (see `ports/queue/servicebus_identity.rs`):
/// `POST {namespace}/{queue}/messages`, `Authorization: Bearer`,
/// `BrokerProperties` with the message id, the body the step message.
#[tokio::test]
async fn a_pipeline_start_through_service_bus_is_the_exact_send() {
    let fake = Recorder::start(|r: &Recorded| match (r.method.as_str(), r.path.as_str(), r.header("authorization")) {
        ("POST", "/rollout-steps/messages", Some("Bearer pipeline-sb-token")) => (201, vec![], String::new()),
        _ => (401, vec![], String::new()),
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, spec_template("http://127.0.0.1:9", json!([{"setWeight": 50}])).to_string()).expect("spec");
    let queue = format!("{}/rollout-steps", fake.url);
    let args = ["start", spec.to_str().expect("path"), "--fill-env", "--id", "gh-401", "--queue", &queue, "--as", "github-actions"];
    let env = [("SLUICE_SERVICEBUS_TOKEN", "pipeline-sb-token".to_string()), ("RELEASE_VERSION", "abc123".to_string())];
    let out = step(Path::new(env!("CARGO_BIN_EXE_sluice")), &args, &env).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("queued the start of gh-401"), "{}", text(&out));
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    let sent = &seen[0];
    assert_eq!(sent.header("content-type"), Some("application/json"));
    let props: Value = serde_json::from_str(sent.header("brokerproperties").expect("BrokerProperties")).expect("json");
    assert_eq!(props["MessageId"], "start:gh-401", "the pipeline's id makes a re-run a duplicate");
    assert!(props.get("ScheduledEnqueueTimeUtc").is_none());
    let body = sent.json();
    assert_eq!((body["kind"].as_str(), body["id"].as_str(), body["by"].as_str()), (Some("start"), Some("gh-401"), Some("github-actions")));
    assert_eq!(body["spec"]["target"]["canary"]["version"], "abc123", "placeholders filled before sending");
    assert!(sluice::shell::messages::StepMessage::parse(&sent.body).is_ok(), "the steps handler takes it as it is");
    // Without the role, the pipeline hears which role is missing; the token is never printed.
    let refused = step(
        Path::new(env!("CARGO_BIN_EXE_sluice")),
        &args,
        &[("SLUICE_SERVICEBUS_TOKEN", "wrong".into()), ("RELEASE_VERSION", "x".into())],
    )
    .await;
    assert_eq!(refused.status.code(), Some(2));
    assert!(text(&refused).contains("Azure Service Bus Data Sender") && !text(&refused).contains("wrong"), "{}", text(&refused));
}

/// A fake GitHub deployments API, from github/rest-api-description
/// (`/repos/{owner}/{repo}/deployments`, `…/deployments/{id}/statuses`,
/// API version 2022-11-28): it keeps deployments and statuses as GitHub does.
#[derive(Default)]
struct Deployments {
    deployments: Vec<Value>,
    statuses: Vec<(u64, Value)>,
}

fn github_deployments_fake(state: Arc<Mutex<Deployments>>) -> impl Fn(&Recorded) -> common::recorder::Answer + Send + Sync + 'static {
    move |r: &Recorded| {
        let mut s = state.lock().expect("state");
        let ok = r.header("authorization") == Some("Bearer gh-deploy-token")
            && r.header("accept") == Some("application/vnd.github+json")
            && r.header("x-github-api-version") == Some("2022-11-28")
            && r.header("user-agent").is_some_and(|u| u.starts_with("sluice/"));
        if !ok {
            return (401, vec![], json!({"message": "Bad credentials"}).to_string());
        }
        let segments: Vec<&str> = r.path.trim_start_matches("/repos/contoso/orders-api/").split('/').collect();
        match (r.method.as_str(), segments.as_slice()) {
            ("GET", ["deployments"]) => {
                let env = r.param("environment");
                let git_ref = r.param("ref");
                let list: Vec<Value> = s
                    .deployments
                    .iter()
                    .rev()
                    .filter(|d| {
                        env.as_deref().map_or(true, |e| d["environment"] == e) && git_ref.as_deref().map_or(true, |g| d["ref"] == g)
                    })
                    .cloned()
                    .collect();
                (200, vec![], Value::Array(list).to_string())
            }
            ("POST", ["deployments"]) => {
                let mut d = r.json();
                d["id"] = json!(1000 + s.deployments.len() as u64);
                s.deployments.push(d.clone());
                (201, vec![], d.to_string())
            }
            ("GET", ["deployments", id, "statuses"]) => {
                let id: u64 = id.parse().unwrap_or(0);
                let list: Vec<Value> = s.statuses.iter().rev().filter(|(d, _)| *d == id).map(|(_, st)| st.clone()).collect();
                (200, vec![], Value::Array(list).to_string())
            }
            ("POST", ["deployments", id, "statuses"]) => {
                let id: u64 = id.parse().unwrap_or(0);
                s.statuses.push((id, r.json()));
                (201, vec![], json!({"id": s.statuses.len()}).to_string())
            }
            _ => (404, vec![], json!({"message": "Not Found"}).to_string()),
        }
    }
}

fn notification(kind: sluice::domain::rollout::NotifyKind, rollout: &str, canary: &str) -> sluice::ports::notify::Notification {
    sluice::ports::notify::Notification {
        kind,
        rollout_id: rollout.into(),
        target: "orders-api".into(),
        stable_version: "v1".into(),
        canary_version: canary.into(),
        phase: sluice::domain::rollout::Phase::Progressing,
        stage: 0,
        title: format!("orders-api {canary}: {kind:?}"),
        text: String::new(),
        facts: vec![],
        links: vec![("Timeline".into(), format!("https://sluice.example/api/dashboard/{rollout}"))],
        commands: vec![],
        at: chrono::Utc::now(),
    }
}

#[tokio::test]
async fn github_deployments_show_each_rollout_and_its_outcome() {
    use sluice::domain::rollout::NotifyKind;
    let state = Arc::new(Mutex::new(Deployments::default()));
    let fake = Recorder::start(github_deployments_fake(state.clone())).await;
    let env = sluice::ports::env::AdapterEnv::with_settings(
        std::env::temp_dir(),
        "https://sluice.example".into(),
        // The fake listens on loopback, which a deployment would refuse.
        Arc::new(|k: &str| match k {
            "GITHUB_TOKEN" => Some("gh-deploy-token".to_string()),
            "SLUICE_ALLOW_LOOPBACK_ENDPOINTS" => Some("true".to_string()),
            _ => None,
        }),
    );
    let settings = |git_ref: &str| -> sluice::ports::env::Settings {
        serde_json::from_value(json!({"repository": "contoso/orders-api", "environment": "production", "ref": git_ref, "apiUrl": fake.url}))
            .expect("settings")
    };
    // Release 1 succeeds; its first message delivered twice still makes one deployment.
    let first = sluice::ports::notify::build("githubDeployments", &settings("sha1"), &env).expect("channel");
    for kind in [NotifyKind::Started, NotifyKind::Started, NotifyKind::ApprovalNeeded, NotifyKind::Succeeded] {
        first.send(&notification(kind, "gh-1", "sha1")).await.expect("sent");
    }
    // Release 2 succeeds and replaces it; release 3 rolls back.
    let second = sluice::ports::notify::build("githubDeployments", &settings("sha2"), &env).expect("channel");
    for kind in [NotifyKind::Started, NotifyKind::Succeeded] {
        second.send(&notification(kind, "gh-2", "sha2")).await.expect("sent");
    }
    let third = sluice::ports::notify::build("githubDeployments", &settings("sha3"), &env).expect("channel");
    for kind in [NotifyKind::Started, NotifyKind::RollingBack, NotifyKind::RolledBack] {
        third.send(&notification(kind, "gh-3", "sha3")).await.expect("sent");
    }

    {
        let s = state.lock().expect("state");
        assert_eq!(s.deployments.len(), 3, "one deployment per rollout: {:?}", s.deployments);
        let d = &s.deployments[0];
        assert_eq!((d["ref"].as_str(), d["environment"].as_str()), (Some("sha1"), Some("production")));
        assert_eq!(d["auto_merge"], false);
        assert_eq!(d["required_contexts"], json!([]));
        assert_eq!(d["payload"]["sluiceRollout"], "gh-1");
        assert_eq!(d["production_environment"], true);
        let states = |id: u64| -> Vec<String> {
            s.statuses.iter().filter(|(d, _)| *d == id).map(|(_, st)| st["state"].as_str().unwrap_or("").to_string()).collect()
        };
        assert_eq!(states(1000), ["in_progress", "in_progress", "in_progress", "success", "inactive"], "gh-1, replaced by gh-2 at last");
        assert_eq!(states(1001), ["in_progress", "success"]);
        assert_eq!(states(1002), ["in_progress", "failure", "failure"]);
        let (_, progress) = &s.statuses[0];
        assert_eq!(progress["log_url"], "https://sluice.example/api/dashboard/gh-1");
        assert_eq!(progress["auto_inactive"], false);
        assert!(progress["description"].as_str().is_some_and(|t| t.chars().count() <= 140));
    }
    // A refused token is an error naming GitHub's answer, never the token.
    let bad_env = sluice::ports::env::AdapterEnv::with_settings(
        std::env::temp_dir(),
        String::new(),
        Arc::new(|k: &str| match k {
            "GITHUB_TOKEN" => Some("expired-token".to_string()),
            "SLUICE_ALLOW_LOOPBACK_ENDPOINTS" => Some("true".to_string()),
            _ => None,
        }),
    );
    let refused = sluice::ports::notify::build("githubDeployments", &settings("sha4"), &bad_env).expect("channel");
    let error = refused.send(&notification(NotifyKind::Started, "gh-4", "sha4")).await.expect_err("401").to_string();
    assert!(error.contains("401") && error.contains("Bad credentials") && !error.contains("expired-token"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_measures_the_error_budget_and_bad_requests_name_their_field() {
    let rig = common::Rig::start().await;
    let base = rig.host.url();
    let json_header = [("content-type", "application/json")];
    let mut spec = rig.spec(json!([{"setWeight": 50}]));
    // The local router's `healthy` is 1 while the canary answers its health check, else 0:
    // a budget left of 1 or 0.
    spec["policy"] = json!({"errorBudget": {"provider": "local", "query": "healthy", "minRemaining": 0.5}});
    let (status, answer) = common::raw(&base, "POST", "/api/gate", json!({"spec": spec}).to_string().into_bytes(), &json_header).await;
    assert_eq!((status, &answer["ready"]), (200, &json!(true)), "{answer}");
    // A budget source that reports the budget spent (0 left).
    let spent = Recorder::start(|_: &Recorded| (200, vec![], json!({"healthy": false}).to_string())).await;
    let mut spent_spec = spec.clone();
    spent_spec["policy"]["errorBudget"]["settings"] = json!({"url": spent.url});
    let (_, answer) = common::raw(&base, "POST", "/api/gate", json!({"spec": spent_spec}).to_string().into_bytes(), &json_header).await;
    assert_eq!(answer["ready"], false, "{answer}");
    assert_eq!(answer["reasons"][0]["code"], "errorBudget", "{answer}");
    assert!(answer["reasons"][0]["message"].as_str().is_some_and(|m| m.contains("below its minimum")), "{answer}");
    spec["policy"]["errorBudget"]["query"] = json!("no_such_series");
    let (_, answer) = common::raw(&base, "POST", "/api/gate", json!({"spec": spec}).to_string().into_bytes(), &json_header).await;
    assert_eq!(answer["ready"], false, "an unmeasurable budget is never a pass: {answer}");
    let (status, answer) = common::raw(&base, "GET", "/api/gate?target=orders-api", vec![], &[]).await;
    assert_eq!((status, &answer["ready"]), (200, &json!(true)), "{answer}");

    for (method, path, body, field) in [
        ("GET", "/api/gate", json!(null), "target"),
        ("GET", "/api/gate?target=orders-api&force=1", json!(null), "force"),
        ("POST", "/api/gate", json!({"target": "../etc"}), "target"),
        ("POST", "/api/releases/gh-9/failure", json!({"runUrl": "https://x"}), "stage"),
        ("POST", "/api/releases/gh-9/failure", json!({"stage": "build"}), "spec"),
        ("POST", "/api/releases/gh-9/failure", json!({"stage": "build", "spec": {"target": {"name": "x"}}}), ""),
        ("POST", "/api/releases/gh-9/failure", json!({"stage": "build\u{7}", "spec": spec}), "stage"),
        ("POST", "/api/releases/gh-9/failure", json!({"stage": "build", "spec": spec, "extra": 1}), "extra"),
    ] {
        let bytes = if body.is_null() { vec![] } else { body.to_string().into_bytes() };
        let (status, answer) = common::raw(&base, method, path, bytes, &json_header).await;
        assert!((400..500).contains(&status), "{method} {path} {body}: {status} {answer}");
        if !field.is_empty() {
            assert_eq!(answer["field"], field, "{method} {path} {body}: {answer}");
        }
    }
    let mut no_backlog = spec.clone();
    no_backlog.as_object_mut().expect("object").remove("backlog");
    let (status, answer) = common::raw(
        &base,
        "POST",
        "/api/releases/gh-9/failure",
        json!({"stage": "build", "spec": no_backlog}).to_string().into_bytes(),
        &json_header,
    )
    .await;
    assert_eq!((status, &answer["field"]), (400, &json!("spec.backlog")), "{answer}");
    assert!(rig.backlog_files().is_empty(), "no refused report filed anything");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_step_ends_at_the_approval_gate_with_how_to_approve_in_its_summary() {
    let up = Upstreams::start().await;
    let p = Pipeline::start(&up.router_url, json!([{"setWeight": 20}, {"approval": {"minApprovers": 1}}, {"setWeight": 100}])).await;
    let env = p.github_env("gh-501");
    let out = step(&sluice_sh(), &["start"], &env).await;
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("waiting for approval: `sluice approve gh-501"), "the approve command is in the log: {log}");
    let summary = std::fs::read_to_string(p.dir.path().join("summary-gh-501.md")).expect("the start step's summary");
    assert!(summary.starts_with("## Sluice: rollout gh-501 waits for approval\n"), "{summary}");
    assert!(summary.contains(&format!("[open the rollout's dashboard]({}/api/dashboard/gh-501)", p.up.url)), "{summary}");
    assert_eq!(p.status("gh-501").await["phase"], "AwaitingApproval");

    // The next step follows while a person approves; it ends with the rollout.
    let follow_env = with(&env, &[("GITHUB_STEP_SUMMARY", p.dir.path().join("summary-gh-501-follow.md").display().to_string())]);
    let follow = tokio::spawn({
        let script = sluice_sh();
        async move { step(&script, &["follow"], &follow_env).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let alice = p.up.client("alice");
    alice.action("gh-501", "approve", &json!({})).await.expect("alice approves");
    let out = follow.await.expect("the follow step");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let summary = std::fs::read_to_string(p.dir.path().join("summary-gh-501-follow.md")).expect("the follow step's summary");
    assert!(summary.starts_with("## Sluice: rollout gh-501 succeeded\n") && summary.contains("| alice |"), "{summary}");
}

/// The headers an `AzureFunction@1` task sends by default, as Microsoft's
/// task reference lists them (MicrosoftDocs/azure-devops-yaml-schema,
/// `task-reference/azure-function-v1.md`, input `headers`), for a plan on
/// `plan_url`.
fn agentless_task_headers(plan_url: &str, task: &str, token: &str) -> Vec<(String, String)> {
    [
        ("Content-Type", "application/json"),
        ("PlanUrl", plan_url),
        ("ProjectId", ADO_PROJECT),
        ("HubName", "build"),
        ("PlanId", ADO_PLAN),
        ("JobId", ADO_JOB),
        ("TimelineId", ADO_PLAN),
        ("TaskInstanceId", task),
        ("AuthToken", token),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

const ADO_PROJECT: &str = "6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c";
const ADO_PLAN: &str = "0f4e5b0c-1c3e-4a6a-9d43-4c9e2b8f3a11";
const ADO_JOB: &str = "3a7e60dc-c5b0-5009-86eb-0f217c12e2ea";

/// The task's request: `EndpointUrl` is `$(function)?code=$(key)&$(queryParameters)`
/// (microsoft/azure-pipelines-tasks, `Tasks/AzureFunctionV1/task.json`), so the
/// Functions key rides as `code` before the template's `rollout=ID`.
async fn register_wait(rig: &common::Rig, rollout: &str, headers: &[(String, String)]) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let path = format!("/api/pipelines/azure?code=function-key&rollout={rollout}");
    common::raw_exact(&rig.host.url(), "POST", &path, b"{}".to_vec(), &headers).await
}

/// The Azure Pipelines rollout waits in an agentless job: its task registers
/// here and Sluice answers it when the rollout ends, with the event the
/// Post Event API documents (learn.microsoft.com/rest/api/azure/devops/
/// distributedtask/events/post-event: `POST {collection}/{project}/_apis/
/// distributedtask/hubs/{hub}/plans/{plan}/events`, body `name`, `taskId`,
/// `jobId`, `result`), the job's token as the bearer — and only then. An
/// Azure DevOps that is away is tried again by the timer; a bad header is
/// named; the token is never shown and goes to no other address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agentless_azure_pipelines_job_is_answered_when_the_rollout_ends() {
    let status = Arc::new(Mutex::new(200u16));
    let answer = status.clone();
    let ado = Recorder::start(move |_| (*answer.lock().expect("status"), vec![], String::new())).await;
    let settings: sluice::ports::env::SettingsLookup =
        Arc::new(|name: &str| (name == "SLUICE_ALLOW_LOOPBACK_ENDPOINTS").then(|| "true".to_string()));
    let rig = common::Rig::start_with(move |dir, url| async move { sluice::host::local::embedded_engine_with(&dir, url, settings) }).await;
    let spec = rig.spec(json!([{"setWeight": 20}, {"approval": {}}]));
    let plan_url = format!("{}/contoso/", ado.url);
    let token = "eyJ0eXAiOiJKV1QiLCJhbGciOi.job-access-token.sig";
    let task = "61153303-347e-5f06-a6a1-ce2102bd68eb";
    let tick = || sluice::functions::invoke_timer(&rig.host.app, "tick", false);

    let id = rig.start_rollout(&spec).await;
    rig.wait_phase(&id, "AwaitingApproval").await;
    let (code, body) = register_wait(&rig, &id, &agentless_task_headers(&plan_url, task, token)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!((body["answered"].as_str(), body["taskInstanceId"].as_str()), (Some("when the rollout ends"), Some(task)), "{body}");

    // Refused, each naming what is wrong, and nothing kept.
    let mut missing = agentless_task_headers(&plan_url, task, token);
    missing.retain(|(k, _)| k != "TaskInstanceId");
    let mut elsewhere = agentless_task_headers("https://collector.attacker.example/", task, token);
    elsewhere.push(("x-extra".into(), "1".into()));
    let mut not_json = agentless_task_headers(&plan_url, task, token);
    not_json[0].1 = "text/plain".into();
    for (rollout, headers, code, field) in [
        (id.as_str(), missing, 400, "TaskInstanceId"),
        (id.as_str(), elsewhere, 403, "PlanUrl"),
        (id.as_str(), not_json, 415, "content-type"),
        ("no-such-rollout", agentless_task_headers(&plan_url, task, token), 404, "id"),
    ] {
        let (got, body) = register_wait(&rig, rollout, &headers).await;
        assert_eq!((got, body["field"].as_str()), (code, Some(field)), "{body}");
        assert!(!body.to_string().contains(token), "the token is never echoed: {body}");
    }
    let kept = rig.host.app.engine.store.pipeline_waits(None, 0).await.expect("waits");
    assert_eq!(kept.len(), 1, "only the good registration is kept: {kept:?}");

    // While the rollout runs, nothing is sent, not even by the timer.
    let report = tick().await.expect("tick");
    assert_eq!(report["pipelineWaits"]["waiting"], 1, "{report}");
    assert!(ado.seen().is_empty(), "{:?}", ado.seen());

    rig.as_user("alice").action(&id, "approve", &json!({})).await.expect("approved");
    rig.wait_phase(&id, "Succeeded").await;
    wait_until(|| !ado.seen().is_empty()).await;
    let sent = ado.seen();
    assert_eq!(sent.len(), 1, "one answer: {sent:?}");
    let event = &sent[0];
    assert_eq!(event.method, "POST");
    assert_eq!(event.path, format!("/contoso/{ADO_PROJECT}/_apis/distributedtask/hubs/build/plans/{ADO_PLAN}/events"));
    assert_eq!(event.param("api-version").as_deref(), Some("7.1"));
    assert_eq!(event.header("authorization"), Some(format!("Bearer {token}").as_str()));
    assert!(event.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{event:?}");
    assert_eq!(event.json(), json!({"name": "TaskCompleted", "taskId": task, "jobId": ADO_JOB, "result": "succeeded"}));
    assert!(rig.host.app.engine.store.pipeline_waits(None, 0).await.expect("waits").is_empty(), "answered, then forgotten");
    let status_doc = rig.client.status(&id).await.expect("status");
    assert!(!status_doc.to_string().contains(token), "the token is in no status or history");

    // A task that registers after the end is answered at once (after its request returns).
    let late = "71153303-347e-5f06-a6a1-ce2102bd68eb";
    let (code, body) = register_wait(&rig, &id, &agentless_task_headers(&plan_url, late, token)).await;
    assert_eq!((code, body["answered"].as_str()), (200, Some("now")), "{body}");
    assert!(wait_until(|| ado.seen().iter().any(|r| r.json()["taskId"] == late)).await, "{:?}", ado.seen());

    // A rollout a person aborts fails its task; Azure DevOps away at that
    // moment is tried again by the timer, and answered once it is back.
    *status.lock().expect("status") = 503;
    // The first rollout's promotion left v2 on the router's stable side: the next ones go from v2.
    let mut spec = spec;
    spec["target"]["stable"]["version"] = json!("v2");
    spec["target"]["canary"]["version"] = json!("v1");
    let second = rig.start_rollout(&spec).await;
    rig.wait_phase(&second, "AwaitingApproval").await;
    let third = "81153303-347e-5f06-a6a1-ce2102bd68eb";
    assert_eq!(register_wait(&rig, &second, &agentless_task_headers(&plan_url, third, token)).await.0, 200);
    rig.as_user("alice").action(&second, "abort", &json!({"reason": "not today"})).await.expect("aborted");
    rig.wait_phase(&second, "Aborted").await;
    let tried = wait_until(|| ado.seen().iter().any(|r| r.json()["taskId"] == third)).await;
    assert!(tried, "tried when it ended: {:?}", ado.seen());
    assert_eq!(rig.host.app.engine.store.pipeline_waits(None, 0).await.expect("waits").len(), 1, "kept for the timer");
    *status.lock().expect("status") = 200;
    let report = tick().await.expect("tick");
    assert_eq!(report["pipelineWaits"]["answered"], 1, "{report}");
    let last = ado.seen().into_iter().rfind(|r| r.json()["taskId"] == third).expect("answered");
    assert_eq!(last.json()["result"], "failed");
    assert!(rig.host.app.engine.store.pipeline_waits(None, 0).await.expect("waits").is_empty());

    // An Azure DevOps that accepts and never answers keeps nobody waiting:
    // the person's abort returns at once, and the task is kept for the timer.
    let hanging_url = format!("{}/contoso/", common::silent_peer().await);
    let fourth = rig.start_rollout(&spec).await;
    rig.wait_phase(&fourth, "AwaitingApproval").await;
    let task = "91153303-347e-5f06-a6a1-ce2102bd68eb";
    assert_eq!(register_wait(&rig, &fourth, &agentless_task_headers(&hanging_url, task, token)).await.0, 200);
    let asked = std::time::Instant::now();
    rig.as_user("alice").action(&fourth, "abort", &json!({"reason": "hung tracker"})).await.expect("aborted");
    assert!(asked.elapsed() < Duration::from_secs(5), "the abort waited {:?} for Azure DevOps", asked.elapsed());
    rig.wait_phase(&fourth, "Aborted").await;
    let kept = rig.host.app.engine.store.pipeline_waits(Some(&fourth), 0).await.expect("waits");
    assert_eq!(kept.len(), 1, "kept until Azure DevOps answers: {kept:?}");
}

/// Polls `done` for up to ten seconds.
async fn wait_until(done: impl Fn() -> bool) -> bool {
    for _ in 0..100 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}
