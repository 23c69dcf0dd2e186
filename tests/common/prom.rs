//! Real Prometheus and Alertmanager for tests (the library starts them; a
//! missing binary fails the test loudly — `scripts/test` installs them).

pub use sluice::devtools::prometheus::Server;

pub fn prometheus(target: &str, rules: Option<&str>, alertmanager: Option<&str>) -> Server {
    sluice::devtools::prometheus::start_prometheus(target, rules, alertmanager).unwrap_or_else(|e| panic!("{e}"))
}

pub fn alertmanager(webhook: &str, token: &str) -> Server {
    sluice::devtools::prometheus::start_alertmanager(webhook, token).unwrap_or_else(|e| panic!("{e}"))
}

pub fn start_sluice_scrape(target: &str, key: &str) -> Server {
    sluice::devtools::prometheus::start_prometheus_scraping_sluice(target, key).unwrap_or_else(|e| panic!("{e}"))
}
