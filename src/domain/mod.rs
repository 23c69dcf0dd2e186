//! The pure domain: what a rollout is and how it moves, with no I/O, no
//! clock and no randomness of its own. Everything hard lives here, and
//! everything here is unit- and property-tested.

pub mod access;
pub mod alert_keys;
pub mod backoff;
pub mod bounded;
pub mod format;
pub mod health;
pub mod ids;
pub mod parse;
pub mod pipeline_wait;
pub mod redact;
pub mod release;
pub mod rollout;
pub mod spec;
pub mod stats;
pub mod window;
