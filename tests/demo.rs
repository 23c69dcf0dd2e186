//! `sluice demo` in every variant ends on its own and exits 0 when Sluice did
//! the right thing (the demo checks its own outcome: zero failed requests on
//! success; a rollback and a backlog issue on the fault and alert variants).

use std::process::Command;

fn demo(args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("demo")
        .args(args)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("the demo runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Apart from the others, so its wait for the window (up to 80 s) overlaps them.
#[test]
fn the_window_demo_waits_for_its_window_and_goes_on_at_the_opening() {
    let (code, out) = demo(&["--window"]);
    assert_eq!(code, 0, "sluice demo --window failed:\n{out}");
    assert!(out.contains(": Succeeded after") && out.contains("verdict        OK"), "{out}");
    assert!(out.contains("Pending → Paused") && out.contains("start held: outside the deployment window"), "{out}");
    assert!(out.contains("deployment window open") && out.contains("failed: 0"), "{out}");
}

#[test]
fn every_demo_variant_does_the_right_thing() {
    for (args, expect) in [
        (vec![], "Succeeded"),
        (vec!["--fault", "errors"], "RolledBack"),
        (vec!["--fault", "latency"], "RolledBack"),
        (vec!["--alert"], "RolledBack"),
        // Analysis through a real Prometheus scraping the router (installed by scripts/test).
        (vec!["--prometheus"], "Succeeded"),
        // The statistical judges: a healthy canary passes once it has its sample,
        // and the latency fault is caught by Mann-Whitney (the demo checks the evidence).
        (vec!["--judge", "statistical"], "Succeeded"),
        (vec!["--judge", "statistical", "--fault", "latency"], "RolledBack"),
        // Users pinned by affinity keep reaching v2 after the revert: Sluice measures until
        // they are gone (the demo checks the rollback check saw them) and records the observed split.
        (vec!["--sticky"], "RolledBack"),
        // One release, two regions as two waves: the second wave's canary fails, the
        // release halts, and the first wave stays promoted.
        (vec!["--waves"], "Halted"),
    ] {
        let (code, out) = demo(&args);
        assert_eq!(code, 0, "sluice demo {args:?} failed:\n{out}");
        assert!(out.contains(&format!(": {expect} after")), "{args:?}:\n{out}");
        assert!(out.contains("verdict        OK"), "{args:?}:\n{out}");
        if args == ["--sticky"] {
            assert!(out.contains("observed split ") && out.contains("after revert   canary traffic stopped"), "{out}");
        }
        if args == ["--waves"] {
            assert!(out.contains("wave 1 eastus [promoted]") && out.contains("orders-westeurope        RolledBack"), "{out}");
            assert!(out.contains("backlog issue  "), "{out}");
        }
        if expect == "RolledBack" {
            assert!(out.contains("backlog issue  "), "{args:?}:\n{out}");
        } else {
            assert!(out.contains("failed: 0"), "{args:?}:\n{out}");
        }
    }
}
