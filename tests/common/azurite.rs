//! Azurite, the real Table Storage emulator (npm package `azurite`,
//! installed by `scripts/test`), started in memory on a free loopback port.
//! If it is missing or cannot start, the test fails loudly: no silent skip.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's well-known development account key (public, documented).
pub const DEV_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn binary() -> PathBuf {
    std::env::var("SLUICE_AZURITE_TABLE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| super::repo_root().join(".tools/node_modules/.bin/azurite-table"))
}

impl Azurite {
    pub fn start() -> Azurite {
        let bin = binary();
        assert!(
            bin.exists(),
            "Azurite is not installed at {}; run scripts/test, which installs the pinned npm package `azurite` into .tools/. \
             These tests need a real Table Storage emulator and do not skip.",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let log = std::fs::File::create(dir.path().join("azurite.log")).expect("log file");
        let child = Command::new(&bin)
            .args(["--inMemoryPersistence", "--skipApiVersionCheck", "--disableTelemetry", "--tableHost", "127.0.0.1", "--tablePort"])
            .arg(port.to_string())
            .current_dir(dir.path())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("Azurite at {} did not start: {e}", bin.display()));
        let mut azurite = Azurite { child, port, _dir: dir };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = azurite.child.try_wait() {
                let log = std::fs::read_to_string(azurite._dir.path().join("azurite.log")).unwrap_or_default();
                panic!("Azurite exited ({status}) before listening:\n{log}");
            }
            assert!(started.elapsed() < Duration::from_secs(60), "Azurite did not listen on port {port} within 60s");
            std::thread::sleep(Duration::from_millis(50));
        }
        azurite
    }

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
