//! Every integration test in one binary: one link of the crate instead of
//! one per file, and the slow, waiting tests of different files overlap.
//! Each file of `tests/` is a module here; `common` and `router_fakes` are
//! the helpers they share.

mod common;
mod router_fakes;

mod alert_sources;
mod azure_costs;
mod azure_wire;
mod backlog_notify;
mod boundaries;
mod cli_sign_in;
mod cli_validate;
mod conformance;
mod crash;
mod custom_handler;
mod dashboard;
mod demo;
mod doctor;
mod hostile;
mod identity;
mod infra;
mod local_host_flows;
mod pipeline;
mod prometheus;
mod readme;
mod release_policies;
mod replay;
mod restart;
mod robustness;
mod router_wire;
mod servicebus_wire;
mod waves;
