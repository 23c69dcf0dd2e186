//! Real Prometheus and Alertmanager (Debian packages `prometheus` and
//! `prometheus-alertmanager`, installed by `scripts/test`), each started on a
//! free loopback port with a generated configuration. If a binary is missing
//! or does not become ready, the test fails loudly: no silent skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub url: String,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

fn binary(env: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var(env).map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} is not installed ({}); run scripts/test, which installs the Debian package {package}. These tests need the real thing and do not skip.",
        path.display(),
        env
    );
    path
}

/// `GET /-/ready` answered 200 (a plain HTTP/1.0 request, no client needed).
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

fn wait_ready(server: &mut Server, what: &str) {
    let started = Instant::now();
    loop {
        if ready(&server.url) {
            return;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            let log = std::fs::read_to_string(server.dir.path().join("log")).unwrap_or_default();
            panic!("{what} exited ({status}) before it was ready:\n{log}");
        }
        if started.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(server.dir.path().join("log")).unwrap_or_default();
            panic!("{what} was not ready within 60s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spawn(bin: &Path, args: Vec<String>, dir: tempfile::TempDir, port: u16) -> Server {
    let log = std::fs::File::create(dir.path().join("log")).expect("log");
    let child = Command::new(bin)
        .args(&args)
        .current_dir(dir.path())
        .stdout(Stdio::from(log.try_clone().expect("log")))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap_or_else(|e| panic!("{} did not start: {e}", bin.display()));
    Server { child, url: format!("http://127.0.0.1:{port}"), dir }
}

/// Prometheus scraping `target` (host:port) every second, with optional alert
/// rules and an Alertmanager (host:port).
pub fn prometheus(target: &str, rules: Option<&str>, alertmanager: Option<&str>) -> Server {
    let bin = binary("SLUICE_PROMETHEUS_BIN", "/usr/bin/prometheus", "prometheus");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut config = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
    if let Some(r) = rules {
        std::fs::write(dir.path().join("rules.yml"), r).expect("rules");
        config.push_str("rule_files: [rules.yml]\n");
    }
    if let Some(am) = alertmanager {
        config.push_str(&format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{am}']\n"));
    }
    config.push_str(&format!(
        "scrape_configs:\n  - job_name: sluice-router\n    metrics_path: /metrics\n    static_configs:\n      - targets: ['{target}']\n"
    ));
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
    let data = dir.path().join("data");
    let args = vec![
        "--config.file=prometheus.yml".to_string(),
        format!("--storage.tsdb.path={}", data.display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--storage.tsdb.retention.time=1h".to_string(),
    ];
    let mut server = spawn(&bin, args, dir, port);
    wait_ready(&mut server, "Prometheus");
    server
}

/// Alertmanager sending every alert at once to `webhook` with a bearer token.
pub fn alertmanager(webhook: &str, token: &str) -> Server {
    let bin = binary("SLUICE_ALERTMANAGER_BIN", "/usr/bin/prometheus-alertmanager", "prometheus-alertmanager");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = format!(
        "route:\n  receiver: sluice\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: sluice\n    webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n        \
         http_config:\n          authorization:\n            type: Bearer\n            credentials: {token}\n"
    );
    std::fs::write(dir.path().join("alertmanager.yml"), config).expect("config");
    let data = dir.path().join("data");
    let args = vec![
        "--config.file=alertmanager.yml".to_string(),
        format!("--storage.path={}", data.display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".to_string(),
    ];
    let mut server = spawn(&bin, args, dir, port);
    wait_ready(&mut server, "Alertmanager");
    server
}
