//! Sluice: a progressive-delivery controller for Azure. A pipeline posts a
//! rollout; Sluice moves real traffic from the stable version to the new one
//! in phases, checks health with automated analysis, waits for people where
//! the plan says so, and on an alert or a breached metric puts all traffic
//! back on stable at once and opens an issue in the team's backlog.
//!
//! # Layout
//!
//! Each layer is a folder; dependencies point inwards only (a layer uses
//! the ones above it in this list, never one below):
//!
//! - [`domain`] — pure: [`domain::ids`] (the newtypes every edge parses
//!   into) and [`domain::parse`] (typed JSON naming the field at fault),
//!   [`domain::spec`] (the spec and its validation), [`domain::rollout`]
//!   (the plan, analysis judge and the state machine
//!   `decide(state, event, now) -> (state', commands)`, one file per event
//!   family), [`domain::pipeline_wait`] (an Azure Pipelines agentless task
//!   waiting on a rollout) and [`domain::backoff`]. No I/O, no clock.
//! - [`ports`] — one folder per port (trait in `mod.rs`, adapters beside it,
//!   one registry line each): [`ports::store`], [`ports::queue`],
//!   [`ports::traffic`], [`ports::metrics`], [`ports::backlog`],
//!   [`ports::notify`], the alert sources [`ports::alerts`] and the time
//!   [`ports::clock`]; with what adapters share ([`ports::env`],
//!   [`ports::reach`] — where credentials may go, [`ports::azure`],
//!   [`ports::registry`], [`ports::local_router`]) and
//!   [`ports::azure_pipelines`] (answering a waiting pipeline task).
//! - [`shell`] — the application shell: [`shell::engine`] (load → decide →
//!   effects → save), [`shell::messages`] (the step-message wire format) and
//!   [`shell::config`] (app settings).
//! - [`functions`] — the handlers, one per `functions/<name>/function.json`,
//!   thin: parse the input at the edge, call the engine, answer.
//! - [`host`] — the two ways handlers are driven: the local host (`sluice
//!   up`) and the Azure Functions custom handler (`sluice serve`), with the
//!   Functions-host machinery they share (function.json, routes, envelopes).
//! - [`cli`] — the client, views and packaging behind `src/main.rs`.
//! - [`devtools`] (feature `devtools`, on by default) — demo, benchmarks,
//!   sample API, load generator and local router: never in the package
//!   `sluice serve` runs from.

// Nothing from outside may panic a handler: no byte slicing of strings.
#![cfg_attr(not(test), warn(clippy::string_slice))]

pub mod cli;
#[cfg(feature = "devtools")]
pub mod devtools;
pub mod domain;
pub mod functions;
pub mod host;
pub mod ports;
pub mod shell;
