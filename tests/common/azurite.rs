//! Azurite, the real Table Storage emulator (npm package `azurite`,
//! installed by `scripts/test`), started in memory on a free loopback port.
//! If it is missing or cannot start, the test fails loudly: no silent skip.

use std::path::PathBuf;

pub use sluice::devtools::azurite::Azurite;

fn binary() -> PathBuf {
    std::env::var("SLUICE_AZURITE_TABLE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| super::repo_root().join(".tools/node_modules/.bin/azurite-table"))
}

/// Starts Azurite, or fails the test saying how to get it.
pub fn start() -> Azurite {
    let bin = binary();
    assert!(
        bin.exists(),
        "Azurite is not installed at {}; run scripts/test, which installs the pinned npm package `azurite` into .tools/. \
         These tests need a real Table Storage emulator and do not skip.",
        bin.display()
    );
    Azurite::start(&bin).unwrap_or_else(|e| panic!("{e}"))
}
