//! Notifications printed to the terminal running Sluice.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Notification, Notifier, NotifyError};
use crate::ports::env::{AdapterEnv, AdapterError, Settings};

/// Prints to standard output.
pub struct Console;

/// Builds the console channel (no settings).
pub fn build(_settings: &Settings, _env: &AdapterEnv) -> Result<Arc<dyn Notifier>, AdapterError> {
    Ok(Arc::new(Console))
}

/// The text a console shows for a notification.
pub fn render(n: &Notification) -> String {
    let mut out = format!("[notify] {} — {}", n.title, n.text);
    for (k, v) in &n.facts {
        out.push_str(&format!("\n[notify]   {k}: {v}"));
    }
    for (name, url) in &n.links {
        out.push_str(&format!("\n[notify]   {name}: {url}"));
    }
    for c in &n.commands {
        out.push_str(&format!("\n[notify]   $ {c}"));
    }
    out
}

#[async_trait]
impl Notifier for Console {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        println!("{}", render(n));
        Ok(())
    }
}
