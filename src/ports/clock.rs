//! The time, as a port: the engine and the embedded queue read it only
//! through this, so tests (and the crash tests' restarts) control it.

use chrono::{DateTime, Utc};

/// The time, injectable.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
