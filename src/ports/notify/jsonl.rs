//! Notifications appended as JSON lines to a file (`.sluice/notifications.jsonl`
//! by default), for scripts and tests. Settings: `path` (optional).

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Notification, Notifier, NotifyError};
use crate::ports::env::{opt_str, AdapterEnv, AdapterError, Settings};

/// Appends to a file.
pub struct JsonLines {
    path: PathBuf,
}

/// Builds the channel.
pub fn build(settings: &Settings, env: &AdapterEnv) -> Result<Arc<dyn Notifier>, AdapterError> {
    let path = opt_str(settings, "path").map(PathBuf::from).unwrap_or_else(|| env.data_dir.join("notifications.jsonl"));
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
                let _ = std::fs::create_dir_all(dir);
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| NotifyError::Failed(format!("cannot open {}: {e}", path.display())))?;
            f.write_all(line.as_bytes()).map_err(|e| NotifyError::Failed(e.to_string()))
        })
        .await
        .map_err(|e| NotifyError::Failed(e.to_string()))?
    }
}
