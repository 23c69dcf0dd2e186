//! One mutex per rollout id, so work on a rollout in this process is serial
//! (other processes are kept out by the store's ETag).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

/// One mutex per rollout, so work on a rollout in this process is serial.
#[derive(Default)]
pub(super) struct KeyedLocks {
    map: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    pub(super) fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.map.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(lock) = map.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        if map.len() > 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key.to_string(), Arc::downgrade(&lock));
        lock
    }
}
