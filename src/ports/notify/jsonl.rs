//! Notifications appended as JSON lines to a file (`.sluice/notifications.jsonl`
//! in the data directory), for scripts and tests. No settings: a spec never
//! chooses a file path.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Notification, Notifier, NotifyError};
use crate::ports::env::{AdapterEnv, AdapterError, Settings};

/// Appends to a file.
pub struct JsonLines {
    path: PathBuf,
}

/// Builds the channel.
pub fn build(settings: &Settings, env: &AdapterEnv) -> Result<Arc<dyn Notifier>, AdapterError> {
    env.configuration_only("jsonl", settings, "path")?;
    let path = env.data_dir.join("notifications.jsonl");
    Ok(Arc::new(JsonLines { path }))
}

#[async_trait]
impl Notifier for JsonLines {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let mut line = serde_json::to_string(n).map_err(|e| NotifyError::Failed(e.to_string()))?;
        line.push('\n');
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = path.parent() {
                let _ = crate::ports::env::create_private_dir(dir);
            }
            let mut f = crate::ports::env::open_private_append(&path)
                .map_err(|e| NotifyError::Failed(format!("cannot open {}: {e}", path.display())))?;
            f.write_all(line.as_bytes()).map_err(|e| NotifyError::Failed(e.to_string()))
        })
        .await
        .map_err(|e| NotifyError::Failed(e.to_string()))?
    }
}
