//! The demo's load generator: a steady stream of requests from simulated
//! users through the router, each counted by outcome and by the version that
//! answered, so downtime and exposure are measured, not claimed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

/// Simulated users.
pub const USERS: u64 = 500;

/// What the load saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Successful answers per version.
    pub ok: BTreeMap<String, u64>,
    /// Failed answers (5xx or no answer) per version (`unknown` if none answered).
    pub failed: BTreeMap<String, u64>,
    /// Users served at least once by each version.
    pub users: BTreeMap<String, BTreeSet<u64>>,
    /// Users who got at least one failure.
    pub users_failed: BTreeSet<u64>,
}

impl LoadReport {
    /// All failed requests.
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    /// All requests.
    pub fn total(&self) -> u64 {
        self.ok.values().sum::<u64>() + self.failures()
    }

    /// Requests answered by a version (ok or failed).
    pub fn served_by(&self, version: &str) -> u64 {
        self.ok.get(version).copied().unwrap_or(0) + self.failed.get(version).copied().unwrap_or(0)
    }
}

/// A running load generator.
pub struct Load {
    report: Arc<Mutex<LoadReport>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `workers` workers sending about `rps` requests per second in total to `url`.
    pub fn start(url: &str, rps: u32, workers: u32) -> Load {
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let (stop, stop_rx) = watch::channel(false);
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(64).build().unwrap_or_default();
        let period = Duration::from_secs_f64(workers.max(1) as f64 / rps.max(1) as f64);
        let tasks = (0..workers.max(1))
            .map(|w| {
                let (client, report, mut stop) = (client.clone(), report.clone(), stop_rx.clone());
                let url = url.trim_end_matches('/').to_string();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut n: u64 = w as u64;
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {}
                            _ = stop.changed() => return,
                        }
                        let user = (n * 2654435761) % USERS;
                        n += workers as u64;
                        let result = client.get(format!("{url}/api/orders/{n}")).header("x-user-id", user.to_string()).send().await;
                        let (version, ok) = match result {
                            Ok(r) => {
                                let v = r.headers().get("x-app-version").and_then(|v| v.to_str().ok()).unwrap_or("unknown").to_string();
                                let ok = r.status().is_success() && r.bytes().await.is_ok();
                                (v, ok)
                            }
                            Err(_) => ("unknown".to_string(), false),
                        };
                        let Ok(mut rep) = report.lock() else { return };
                        *if ok { rep.ok.entry(version.clone()) } else { rep.failed.entry(version.clone()) }.or_default() += 1;
                        rep.users.entry(version).or_default().insert(user);
                        if !ok {
                            rep.users_failed.insert(user);
                        }
                    }
                })
            })
            .collect();
        Load { report, stop, tasks }
    }

    /// What was seen so far.
    pub fn report(&self) -> LoadReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Stops and returns the totals.
    pub async fn stop(self) -> LoadReport {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }
}
