//! Ports and their adapters: one folder per port, the trait in its
//! `mod.rs`, each adapter one file beside it, and a registry line naming
//! it. Adapters depend on the domain, never on the shell or the hosts.

pub mod alerts;
pub mod azure;
pub mod azure_pipelines;
pub mod backlog;
pub mod clock;
pub mod env;
pub mod github;
pub mod identity;
pub mod local_router;
pub mod metrics;
pub mod notify;
pub mod preflight;
pub mod queue;
pub mod reach;
pub mod registry;
pub mod store;
pub mod traffic;
