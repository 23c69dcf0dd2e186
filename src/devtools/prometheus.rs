//! Real Prometheus and Alertmanager processes (Debian packages
//! `prometheus` and `prometheus-alertmanager`), started on free loopback
//! ports with generated configuration: for `sluice demo --prometheus` and
//! the tests that need the real thing. A missing binary or one that never
//! becomes ready is an error that says so.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server; stopped when dropped.
pub struct Server {
    child: Child,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why a server could not be had.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

fn free_port() -> Result<u16, StartError> {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| StartError(e.to_string()))
}

/// Finds a binary: `$env`, else the Debian path, else `PATH`.
pub fn find(env: &str, debian_path: &str, name: &str) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    let debian = PathBuf::from(debian_path);
    if debian.exists() {
        return Some(debian);
    }
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.exists()))
}

/// `GET /-/ready` answered 200.
fn ready(url: &str) -> bool {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(format!("GET /-/ready HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

fn spawn(bin: PathBuf, args: Vec<String>, dir: tempfile::TempDir, port: u16, what: &str) -> Result<Server, StartError> {
    let log = std::fs::File::create(dir.path().join("log")).map_err(|e| StartError(e.to_string()))?;
    let err_log = log.try_clone().map_err(|e| StartError(e.to_string()))?;
    let child = Command::new(&bin)
        .args(&args)
        .current_dir(dir.path())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err_log))
        .spawn()
        .map_err(|e| StartError(format!("{} did not start: {e}", bin.display())))?;
    let mut server = Server { child, url: format!("http://127.0.0.1:{port}"), dir };
    let started = Instant::now();
    loop {
        if ready(&server.url) {
            return Ok(server);
        }
        let log = || std::fs::read_to_string(server.dir.path().join("log")).unwrap_or_default();
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(StartError(format!("{what} exited ({status}) before it was ready:\n{}", log())));
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(StartError(format!("{what} was not ready within 60s:\n{}", log())));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prometheus scraping `target` (host:port) every second, with optional
/// alert rules (YAML) and an Alertmanager (host:port).
pub fn start_prometheus(target: &str, rules: Option<&str>, alertmanager: Option<&str>) -> Result<Server, StartError> {
    let bin = prometheus_bin()?;
    let dir = tempfile::tempdir().map_err(|e| StartError(e.to_string()))?;
    let port = free_port()?;
    let mut config = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
    if let Some(r) = rules {
        std::fs::write(dir.path().join("rules.yml"), r).map_err(|e| StartError(e.to_string()))?;
        config.push_str("rule_files: [rules.yml]\n");
    }
    if let Some(am) = alertmanager {
        config.push_str(&format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am}']\n"));
    }
    config.push_str(&format!(
        "scrape_configs:\n  - job_name: sluice-router\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
    ));
    serve_prometheus(bin, dir, port, &config, "1h")
}

/// Prometheus scraping Sluice's own exposition (`/api/metrics` at `target`)
/// every second, sending Sluice's key as the `code` parameter as a
/// scrape job in Azure must.
pub fn start_prometheus_scraping_sluice(target: &str, key: &str) -> Result<Server, StartError> {
    let bin = prometheus_bin()?;
    let dir = tempfile::tempdir().map_err(|e| StartError(e.to_string()))?;
    let port = free_port()?;
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sluice\n    metrics_path: /api/metrics\n    \
         params:\n      code: ['{key}']\n    static_configs:\n      - targets: ['{target}']\n"
    );
    serve_prometheus(bin, dir, port, &config, "1h")
}

fn prometheus_bin() -> Result<PathBuf, StartError> {
    find("SLUICE_PROMETHEUS_BIN", "/usr/bin/prometheus", "prometheus")
        .ok_or_else(|| StartError("Prometheus is not installed: install the Debian package prometheus (scripts/test does)".into()))
}

/// Writes the configuration and starts Prometheus on `dir/data`.
fn serve_prometheus(bin: PathBuf, dir: tempfile::TempDir, port: u16, config: &str, retention: &str) -> Result<Server, StartError> {
    std::fs::write(dir.path().join("prometheus.yml"), config).map_err(|e| StartError(e.to_string()))?;
    let data = dir.path().join("data");
    let args = vec![
        "--config.file=prometheus.yml".to_string(),
        format!("--storage.tsdb.path={}", data.display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        format!("--storage.tsdb.retention.time={retention}"),
    ];
    spawn(bin, args, dir, port, "Prometheus")
}

/// Prometheus serving a recorded past, scraping nothing: `openmetrics` (an
/// OpenMetrics text file with timestamps, ending in `# EOF`) is written into
/// blocks with `promtool tsdb create-blocks-from openmetrics` before the
/// server starts, as Prometheus' "Backfilling from OpenMetrics format" docs
/// describe. For `sluice replay` tests of a known incident.
pub fn start_prometheus_with_history(openmetrics: &str) -> Result<Server, StartError> {
    let bin = prometheus_bin()?;
    let promtool = find("SLUICE_PROMTOOL_BIN", "/usr/bin/promtool", "promtool")
        .ok_or_else(|| StartError("promtool is not installed: it comes with the Debian package prometheus".into()))?;
    let dir = tempfile::tempdir().map_err(|e| StartError(e.to_string()))?;
    let data = dir.path().join("data");
    let input = dir.path().join("history.om");
    std::fs::write(&input, openmetrics).map_err(|e| StartError(e.to_string()))?;
    let out = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&data)
        .output()
        .map_err(|e| StartError(format!("{} did not start: {e}", promtool.display())))?;
    if !out.status.success() {
        return Err(StartError(format!(
            "promtool could not write the history ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let port = free_port()?;
    serve_prometheus(bin, dir, port, "global:\n  scrape_interval: 15s\n", "30d")
}

/// Alertmanager sending every alert at once to `webhook` with a bearer token.
pub fn start_alertmanager(webhook: &str, token: &str) -> Result<Server, StartError> {
    let bin = find("SLUICE_ALERTMANAGER_BIN", "/usr/bin/prometheus-alertmanager", "alertmanager").ok_or_else(|| {
        StartError("Alertmanager is not installed: install the Debian package prometheus-alertmanager (scripts/test does)".into())
    })?;
    let dir = tempfile::tempdir().map_err(|e| StartError(e.to_string()))?;
    let port = free_port()?;
    let config = format!(
        "route:\n  receiver: sluice\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: sluice\n    webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n        \
         http_config:\n          authorization:\n            type: Bearer\n            credentials: {token}\n"
    );
    std::fs::write(dir.path().join("alertmanager.yml"), config).map_err(|e| StartError(e.to_string()))?;
    let data = dir.path().join("data");
    let args = vec![
        "--config.file=alertmanager.yml".to_string(),
        format!("--storage.path={}", data.display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_string(),
    ];
    spawn(bin, args, dir, port, "Alertmanager")
}
