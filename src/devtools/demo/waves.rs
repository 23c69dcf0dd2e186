//! `sluice demo --waves`: one release across two regions. Each region is a
//! sample API in two versions behind its own local router, with its own
//! load. Wave 1 (eastus) goes 20 → 50 → 100 %, bakes, and is promoted; wave
//! 2 (westeurope) starts only then, and its v2 fails: analysis rolls it
//! back, the release halts, eastus stays on v2 (it baked), and the release
//! files one backlog issue naming the wave and target.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{loopback, notifications_written, prepare_data_dir, say, DemoError, DemoOptions, DemoReport};
use crate::cli::client::Client;
use crate::devtools::load::Load;
use crate::devtools::router::{Router, Upstream};
use crate::devtools::sample_app::{self, Fault};
use crate::domain::rollout::Phase;
use crate::host::local::{self, LocalConfig};

/// The longest the story may take before it counts as stuck.
const DEADLINE: Duration = Duration::from_secs(80);

/// One region: two versions behind a router, with load.
struct Region {
    name: &'static str,
    router: Arc<Router>,
    /// The router's admin API, which the spec names.
    url: String,
    load: Load,
}

async fn region(name: &'static str, v2_errors_per_mille: u32, rps: u32) -> Result<Region, DemoError> {
    let setup = |e: std::io::Error| DemoError::Setup(e.to_string());
    let (v1, _) = sample_app::serve("v1", Arc::new(Fault::default()), loopback()).await.map_err(setup)?;
    let faulty = Arc::new(Fault::default());
    faulty.errors_per_mille.store(v2_errors_per_mille, Ordering::Relaxed);
    let (v2, _) = sample_app::serve("v2", faulty, loopback()).await.map_err(setup)?;
    let router = Router::new(
        Upstream { name: "stable".into(), version: "v1".into(), url: format!("http://{v1}") },
        Upstream { name: "canary".into(), version: "v2".into(), url: format!("http://{v2}") },
    );
    let at = router.serve(loopback(), loopback()).await.map_err(setup)?;
    let load = Load::start(&at.traffic_url(), rps, 4);
    Ok(Region { name, router, url: at.admin_url(), load })
}

/// The release the demo's pipeline posts.
pub fn waves_spec(east_url: &str, west_url: &str) -> Value {
    let target = |name: &str, url: &str| {
        json!({"name": name, "router": {"provider": "local", "settings": {"url": url}},
               "stable": {"name": "stable", "version": "v1"}, "canary": {"name": "canary", "version": "v2"}})
    };
    let steps = json!([
        {"setWeight": 20}, {"analysis": {"templates": ["error-rate"]}},
        {"setWeight": 50}, {"pause": {"duration": "3s"}}
    ]);
    json!({
        "name": "orders",
        "version": "v2",
        "waves": [
            {"name": "eastus", "targets": [target("orders-eastus", east_url)], "strategy": {"canary": {"steps": steps}}, "bake": "4s"},
            {"name": "westeurope", "targets": [target("orders-westeurope", west_url)], "strategy": {"canary": {"steps": steps}}}
        ],
        "onFailure": {"earlierWaves": "stay"},
        "analysisTemplates": [{"name": "error-rate", "metrics": [
            {"name": "error-rate", "provider": "local", "query": "error_rate", "successCondition": "< 0.02",
             "interval": "2s", "count": 2, "minSampleSize": 10}
        ]}],
        "policy": {"onAlert": "rollback"},
        "backlog": {"provider": "local"},
        "notifications": [{"provider": "jsonl"}]
    })
}

/// Runs the waves story and checks its outcome.
pub async fn run(opts: DemoOptions) -> Result<DemoReport, DemoError> {
    let earlier_notifications = prepare_data_dir(&opts)?;
    let east = region("eastus", 0, opts.rps / 2).await?;
    let west = region("westeurope", 200, opts.rps / 2).await?;
    let host = local::start(LocalConfig {
        root: opts.root.clone(),
        data_dir: opts.data_dir.clone(),
        addr: loopback(),
        alert_token: None,
        api_key: None,
        require_principal: false,
        issuers: Vec::new(),
        public_url: None,
        signed_in: None,
        write_token: None,
    })
    .await
    .map_err(|e| DemoError::Setup(e.to_string()))?;
    let base = host.url();
    say("Sluice demo: one release, two waves");
    for r in [&east, &west] {
        say(format!("  {:<11} router {} in front of v1 and v2, ~{} requests/s", r.name, r.url, opts.rps / 2));
    }
    say(format!("  Sluice      {base}  (state in {})", opts.data_dir.display()));
    say("  westeurope's v2 answers 20% of requests with 500s; eastus's v2 is healthy.");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let pipeline = Client::new(&base, None, "azure-pipelines");
    let started = pipeline.start_release(&waves_spec(&east.url, &west.url), None).await?;
    let id = started["id"].as_str().unwrap_or_default().to_string();
    say(format!("\nThe pipeline posts the release: {id}  (eastus, bake 4s → westeurope)"));
    say(format!("  dashboard: {base}/api/dashboard?release={id}\n"));
    let began = Instant::now();
    let followed = tokio::time::timeout(
        DEADLINE,
        crate::cli::waves::watch(&pipeline, &id, Duration::from_millis(250), false, |line| {
            say(format!("  {:>5.1}s {}", began.elapsed().as_secs_f64(), line.trim_start()))
        }),
    )
    .await;
    let status = match followed {
        Ok(status) => status?,
        Err(_) => {
            say("  the demo ran out of time; aborting the release");
            let _ = pipeline.release_action(&id, "abort", &json!({"reason": "demo timed out"})).await;
            pipeline.release(&id).await?
        }
    };
    let seconds = began.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (east_totals, west_totals) = (east.load.stop().await, west.load.stop().await);
    let status = if status["phase"] == "Halted" {
        super::with_backlog_issue(status, super::ISSUE_WAIT, || pipeline.release(&id)).await?
    } else {
        status
    };
    let phase_of = |w: usize| status.pointer(&format!("/waves/{w}/targets/0/phase")).and_then(Value::as_str).unwrap_or("").to_string();
    let issue: Option<PathBuf> =
        status.pointer("/backlog/issue/url").and_then(Value::as_str).and_then(|u| u.strip_prefix("file://")).map(PathBuf::from);
    let (east_route, west_route) = (east.router.route(), west.router.route());
    let problem = if status["phase"] != "Halted" {
        Some(format!("expected the release to halt, got {}", status["phase"]))
    } else if phase_of(0) != "Succeeded" || !east_route.promoted {
        Some(format!("expected eastus to stay promoted, got {} (router promoted: {})", phase_of(0), east_route.promoted))
    } else if phase_of(1) != "RolledBack" || u8::from(west_route.weight) != 0 || west_route.promoted {
        Some(format!("expected westeurope back on v1, got {} at {}%", phase_of(1), west_route.weight))
    } else if issue.as_ref().map(|p| !p.exists()).unwrap_or(true) {
        Some("no backlog issue was written for the release".into())
    } else if east_totals.failures() > 0 {
        Some(format!("{} requests failed in eastus", east_totals.failures()))
    } else {
        None
    };
    say("\nResult");
    print!("{}", crate::cli::waves::release_text(&status));
    say(format!("  release        {id}: {} after {seconds:.1}s", status["phase"].as_str().unwrap_or("")));
    say(format!(
        "  eastus         {} requests, v2 served {}, failed: {}",
        east_totals.total(),
        east_totals.served_by("v2"),
        east_totals.failures()
    ));
    say(format!(
        "  westeurope     {} requests, v2 served {} before the rollback, failed: {}",
        west_totals.total(),
        west_totals.served_by("v2"),
        west_totals.failures()
    ));
    if let Some(p) = &issue {
        say(format!("  backlog issue  {}", p.display()));
    }
    match &problem {
        None => {
            say("  verdict        OK: westeurope's canary was rolled back and the release halted; eastus stays on v2, as the policy says")
        }
        Some(p) => say(format!("  verdict        NOT OK: {p}")),
    }
    if opts.hold {
        say(format!("\nStill serving for the dashboard: {base}/api/dashboard?release={id}  (Ctrl-C to stop)"));
        let _ = tokio::signal::ctrl_c().await;
    }
    host.stop().await;
    let phase = match phase_of(1).as_str() {
        "RolledBack" => Phase::RolledBack,
        "Succeeded" => Phase::Succeeded,
        _ => Phase::Aborted,
    };
    let notifications = notifications_written(&opts).saturating_sub(earlier_notifications);
    Ok(DemoReport { rollout_id: id, phase, load: west_totals, issue, notifications, ok: problem.is_none(), problem, seconds })
}
