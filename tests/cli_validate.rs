//! The CLI as a person or a pipeline uses it: `sluice validate`, and every
//! command line the README shows.

use std::process::Command;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

#[test]
fn examples_validate_with_a_one_line_plan_each() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("examples").map(|e| e.expect("entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    let out = sluice().arg("validate").args(&files).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), files.len());
    assert!(stdout.lines().all(|l| l.contains(": ok: ")), "{stdout}");
}

#[test]
fn the_pipeline_specs_validate_once_the_runner_fills_them_and_say_what_is_unset_otherwise() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pipelines");
    let specs = [dir.join("orders-api.rollout.json"), dir.join("azure-pipelines/orders-api.rollout.json")];
    let filled = [
        ("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000000"),
        ("RESOURCE_GROUP", "orders-prod"),
        ("APP_NAME", "orders-api"),
        ("STABLE_VERSION", "2026.11.30.1"),
        ("RELEASE_VERSION", "9f2c1e7"),
        ("GITHUB_REPOSITORY", "contoso/orders-api"),
        ("GITHUB_SHA", "9f2c1e7"),
        ("ADO_ORGANIZATION", "contoso"),
        ("SYSTEM_TEAMPROJECT", "orders"),
    ];
    let out = sluice().args(["validate", "--fill-env"]).args(&specs).envs(filled).output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.lines().all(|l| l.contains(": ok: orders-api 2026.11.30.1 → 9f2c1e7 ")), "{stdout}");
    let out = sluice()
        .args(["validate", "--fill-env"])
        .arg(&specs[0])
        .env_remove("RELEASE_VERSION")
        .envs(filled[..4].iter().copied())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("target.canary.version: ${RELEASE_VERSION} is not set in the environment"), "{stdout}");
    // Given names or prefixes, nothing else is filled (issue 36: a function key became a canary version).
    let listed = ["validate", "--fill-env=AZURE_SUBSCRIPTION_ID,RESOURCE_GROUP,APP_NAME,STABLE_VERSION,GITHUB_"];
    let out = sluice().args(listed).arg(&specs[0]).envs(filled).output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("${RELEASE_VERSION} is not among the names --fill-env was given"), "{stdout}");
    let mut allowed = listed.to_vec();
    allowed[1] = "--fill-env=AZURE_SUBSCRIPTION_ID,RESOURCE_GROUP,APP_NAME,STABLE_VERSION,RELEASE_VERSION,GITHUB_";
    let out = sluice().args(&allowed).arg(&specs[0]).envs(filled).output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // A secret is never filled, listed or not.
    let scratch = tempfile::tempdir().expect("tempdir");
    let secret = scratch.path().join("secret-spec.json");
    let doc = std::fs::read_to_string(&specs[0]).expect("spec").replace("${RELEASE_VERSION}", "${SLUICE_FUNCTION_KEY}");
    std::fs::write(&secret, doc).expect("write");
    let out = sluice()
        .args(["validate", "--fill-env=SLUICE_"])
        .arg(&secret)
        .envs(filled)
        .env("SLUICE_FUNCTION_KEY", "k3y")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("${SLUICE_FUNCTION_KEY} names a secret") && !stdout.contains("k3y"), "{stdout}");
}

#[test]
fn a_spec_with_five_mistakes_gets_all_of_them_and_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "target:\n  name: api\n  router: { provider: nginx }\n  stable: { name: s, version: v1 }\n  canary: { name: c, version: v2 }\n\
         strategy:\n  canary:\n    steps:\n      - setWeight: 140\n      - pause: { duration: soon }\n      - analysis: { templates: [missing] }\n\
         policy: { onAlert: sometimes }\nextra: 1\n",
    )
    .expect("write");
    let out = sluice().arg("validate").arg(&path).output().expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for path in [
        "extra:",
        "policy.onAlert:",
        "strategy.canary.steps[0].setWeight: 140 is over 100",
        "strategy.canary.steps[1].pause.duration:",
        "strategy.canary.steps[2].analysis.templates[0]:",
        "target.router.provider:",
    ] {
        assert!(stdout.contains(path), "missing {path} in:\n{stdout}");
    }
    assert!(stdout.contains("6 problems"), "{stdout}");
}

#[test]
fn a_missing_file_is_an_error_not_a_validation_result() {
    let out = sluice().args(["validate", "/nonexistent/spec.json"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent/spec.json"));
}

#[test]
fn a_hostile_rollout_id_on_the_command_line_is_refused_before_any_call() {
    let five_thousand = "x".repeat(5000);
    let cjk = format!("a{}", "界".repeat(22));
    for id in ["../../escape", "/etc/passwd", "✓", five_thousand.as_str(), cjk.as_str()] {
        // No server at this address: the refusal must come from parsing, not from a failed call.
        let out = sluice().args(["status", id, "--url", "http://127.0.0.1:9"]).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{id:.40}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("may only use letters") || stderr.contains("characters; the most is 63"), "{stderr}");
        let out = sluice().args(["approve", id, "--url", "http://127.0.0.1:9"]).output().expect("runs");
        assert_eq!(out.status.code(), Some(2), "{id:.40}");
    }
}

#[test]
fn a_release_validates_wave_by_wave_and_its_problems_carry_release_paths() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/releases/three-regions.json");
    let out = sluice().arg("validate").arg(&example).output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(": ok: release orders v2: eastus [1]: canary: 5%"), "{stdout}");
    assert!(stdout.contains("100% → pause 1d → promote ⇒ westeurope [1]"), "{stdout}");
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&example).expect("example")).expect("json");
    doc["waves"][1]["targets"][0]["canary"]["version"] = serde_json::json!("v3");
    doc["waves"][2]["strategy"] = serde_json::json!({"canary": {"steps": [{"setWeight": 140}]}});
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("release.json");
    std::fs::write(&bad, doc.to_string()).expect("write");
    let out = sluice().arg("validate").arg(&bad).output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("waves[2].strategy.canary.steps[0].setWeight: 140 is over 100"), "{stdout}");
    // The schema stage reports first; with the step fixed, the version mismatch shows.
    doc["waves"][2]["strategy"] = serde_json::json!({"canary": {"steps": [{"setWeight": 40}]}});
    std::fs::write(&bad, doc.to_string()).expect("write");
    let out = sluice().arg("validate").arg(&bad).output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("waves[1].targets[0].canary.version: 'v3' is not the release's version 'v2'"), "{stdout}");
}

/// `sluice --version` names the version (Cargo.toml, shared by the CLI and
/// the package) and the commit it was built from (build.rs).
#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let out = sluice().arg("--version").output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let head = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("git runs");
    let head = String::from_utf8_lossy(&head.stdout);
    let short: String = head.trim().chars().take(12).collect();
    assert_eq!(short.len(), 12, "this test runs in a Git checkout");
    assert_eq!(stdout.trim(), format!("sluice {} (commit {short})", env!("CARGO_PKG_VERSION")));
}

/// The `sluice` command lines the README shows: in its shell blocks and
/// its inline code (`cargo run --release -- …` or `sluice …`),
/// cut at a comment, a pipe or a redirection. `approve\|reject` names each.
fn readme_command_lines() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let mut lines: Vec<String> = Vec::new();
    let mut fenced = false;
    let mut terminal = false;
    for line in readme.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            fenced = !fenced;
            // In a terminal block only `$ ` lines are commands; the rest is what they print.
            terminal = fenced && info.trim() == "console";
            continue;
        }
        if fenced {
            let line = match line.trim_start().strip_prefix("$ ") {
                Some(command) => command,
                None if terminal => continue,
                None => line.trim_start(),
            };
            if let Some((_, rest)) = line.split_once("cargo run --release -- ") {
                lines.push(rest.to_string());
            } else if let Some(rest) = line.strip_prefix("sluice ") {
                lines.push(rest.to_string());
            }
        } else {
            let code = line.split('`').skip(1).step_by(2);
            lines.extend(
                code.filter_map(|c| c.strip_prefix("sluice ").or_else(|| c.strip_prefix("cargo run --release -- "))).map(str::to_string),
            );
        }
    }
    let mut commands = Vec::new();
    for line in lines {
        let line = line.split(" #").next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(first) = words.next().filter(|w| !w.starts_with('-')) else { continue };
        let rest: Vec<&str> = words.take_while(|w| !matches!(*w, "|" | ">" | "2>" | "&&" | ";" | "&")).collect();
        let flags: Vec<String> = rest
            .iter()
            .map(|w| w.trim_start_matches(['[', '(']).trim_end_matches([']', ')', ',', '.', ';']))
            .filter(|w| w.starts_with("--") && *w != "--help")
            .map(|w| w.split('=').next().unwrap_or(w).to_string())
            .collect();
        for name in first.split(['|', '\\']).filter(|n| !n.is_empty()) {
            commands.push((name.to_string(), flags.clone()));
        }
    }
    commands
}

/// The README and the binary agree on every command line the README shows:
/// each subcommand exists and takes each flag written beside it (a drift,
/// such as `--full` shown for a verb that never took it, fails here).
#[test]
fn every_command_line_in_the_readme_names_a_subcommand_and_flags_the_binary_has() {
    let commands = readme_command_lines();
    assert!(commands.len() >= 40, "the README's command lines were not found: {commands:?}");
    let mut helps: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for (name, flags) in &commands {
        let help = helps.entry(name.clone()).or_insert_with(|| {
            let out = sluice().args([name.as_str(), "--help"]).output().expect("runs");
            assert!(out.status.success(), "the README shows `sluice {name}`, which the binary does not have");
            String::from_utf8_lossy(&out.stdout).into_owned()
        });
        for flag in flags {
            let takes = help
                .match_indices(flag.as_str())
                .any(|(at, _)| !help[at + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-'));
            assert!(takes, "the README shows `sluice {name} … {flag}`, which `sluice {name} --help` does not list");
        }
    }
    for verb in ["up", "start", "watch", "approve", "promote", "replay", "sample-api", "load", "bench", "demo"] {
        assert!(helps.contains_key(verb), "the README shows `sluice {verb}` somewhere: {:?}", helps.keys());
    }
}
