//! Azurite, the real Table Storage emulator (npm package `azurite`,
//! installed by `scripts/test` into `.tools/`), started in memory on a free
//! loopback port: for `sluice bench scale --store azurite` and the tests.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's well-known development account key (public, documented).
pub const DEV_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite table service; stopped when dropped.
pub struct Azurite {
    child: Child,
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

/// Why Azurite did not come up (with its log when it said something).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AzuriteError(String);

impl Azurite {
    /// Starts the `azurite-table` executable at `bin` and waits until it listens.
    pub fn start(bin: &Path) -> Result<Azurite, AzuriteError> {
        let fail = |what: String| AzuriteError(what);
        let dir = tempfile::tempdir().map_err(|e| fail(format!("tempdir: {e}")))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| fail(e.to_string()))?.port();
        let log = std::fs::File::create(dir.path().join("azurite.log")).map_err(|e| fail(format!("log file: {e}")))?;
        let log_too = log.try_clone().map_err(|e| fail(format!("log file: {e}")))?;
        let child = Command::new(bin)
            .args(["--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry", "--tableHost", "127.0.0.1", "--tablePort"])
            .arg(port.to_string())
            .current_dir(dir.path())
            .stdout(Stdio::from(log_too))
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| fail(format!("Azurite at {} did not start: {e}", bin.display())))?;
        let mut azurite = Azurite { child, port, dir };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = azurite.child.try_wait() {
                let log = std::fs::read_to_string(azurite.dir.path().join("azurite.log")).unwrap_or_default();
                return Err(fail(format!("Azurite exited ({status}) before listening:\n{log}")));
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(fail(format!("Azurite did not listen on port {port} within 60s")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(azurite)
    }

    /// Its process id (for its memory, which holds the data in memory).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A connection string for the development account.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={DEV_KEY};TableEndpoint=http://127.0.0.1:{}/devstoreaccount1;",
            self.port
        )
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
