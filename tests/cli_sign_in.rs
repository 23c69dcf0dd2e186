//! The CLI signs in to a Sluice behind App Service authentication: a token
//! from the Azure CLI (a fake `az` on PATH that answers as
//! `az account get-access-token --output json` is documented to) or one given
//! with `--token`, sent as `Authorization: Bearer` next to the function key,
//! and never printed.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::recorder::{Recorded, Recorder};

const APP: &str = "0f4a1c2e-1111-2222-3333-444455556666";

/// A fake `az` that records its arguments and prints `answer` (or fails with `stderr`).
fn fake_az(dir: &Path, answer: &str, fail_with: Option<&str>) {
    let script = match fail_with {
        None => format!("#!/bin/sh\necho \"$@\" >> \"{}/az-args\"\ncat <<'EOF'\n{answer}\nEOF\n", dir.display()),
        Some(err) => format!("#!/bin/sh\necho \"{err}\" >&2\nexit 1\n"),
    };
    let path = dir.join("az");
    std::fs::write(&path, script).expect("write az");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn sluice(az_dir: &Path, url: &str, args: &[&str]) -> Output {
    let path = format!("{}:{}", az_dir.display(), std::env::var("PATH").unwrap_or_default());
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env("PATH", path)
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_ENTRA_APP")
        .env_remove("SLUICE_KEY")
        .args(args)
        .args(["--url", url])
        .output()
        .expect("sluice runs")
}

fn list_answer(_: &Recorded) -> common::recorder::Answer {
    (200, vec![("content-type".into(), "application/json".into())], r#"{"rollouts":[]}"#.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_cli_token_for_the_app_goes_with_the_function_key() {
    let fake = Recorder::start(list_answer).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let expires = chrono::Utc::now().timestamp() + 3600;
    fake_az(
        dir.path(),
        &format!(
            r#"{{"accessToken":"eyJ-from-az","expiresOn":"2026-12-01 23:59:10.000000","expires_on":{expires},"tenant":"t","tokenType":"Bearer"}}"#
        ),
        None,
    );
    let out = sluice(dir.path(), &fake.url, &["list", "--json", "--key", "fn-key", "--entra", APP]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/api/rollouts");
    assert_eq!(seen[0].header("authorization"), Some("Bearer eyJ-from-az"));
    assert_eq!(seen[0].header("x-functions-key"), Some("fn-key"));
    let args = std::fs::read_to_string(dir.path().join("az-args")).expect("az ran");
    assert_eq!(args.trim(), format!("account get-access-token --resource {APP} --output json"));
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!printed.contains("eyJ-from-az"), "the token was printed:\n{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_token_is_sent_as_is_and_az_is_not_run() {
    let fake = Recorder::start(list_answer).await;
    let dir = tempfile::tempdir().expect("tempdir");
    fake_az(dir.path(), "{}", None);
    let out = sluice(dir.path(), &fake.url, &["list", "--json", "--token", "eyJ-pipeline"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fake.seen()[0].header("authorization"), Some("Bearer eyJ-pipeline"));
    assert!(!dir.path().join("az-args").exists(), "az ran although a token was given");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sign_in_says_why_and_calls_nothing() {
    let fake = Recorder::start(list_answer).await;
    let dir = tempfile::tempdir().expect("tempdir");
    fake_az(dir.path(), "", Some("ERROR: Please run 'az login' to setup account."));
    let out = sluice(dir.path(), &fake.url, &["list", "--entra", APP]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("az login") && stderr.contains(&format!("--resource {APP}")), "{stderr}");
    assert!(fake.seen().is_empty(), "a call went out without its token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_without_sign_in_says_how_to_sign_in() {
    // What App Service authentication answers an unauthenticated API call with (unauthenticatedClientAction Return401).
    let fake = Recorder::start(|_: &Recorded| (401, vec![], String::new())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = sluice(dir.path(), &fake.url, &["list", "--key", "fn-key"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--entra") && stderr.contains("--token"), "{stderr}");
    assert_eq!(fake.seen()[0].header("authorization"), None);

    // Sluice's own 401 (a wrong alert token, say) is shown as it is.
    let sluice_401 = Recorder::start(|_: &Recorded| {
        (
            401,
            vec![("content-type".into(), "application/json".into())],
            r#"{"error":"unauthorized","message":"missing or wrong alert token","field":"token"}"#.into(),
        )
    })
    .await;
    let out = sluice(dir.path(), &sluice_401.url, &["list", "--key", "fn-key"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing or wrong alert token") && !stderr.contains("--entra"), "{stderr}");
}
