//! Sluice: a progressive-delivery controller for Azure. A pipeline posts a
//! rollout; Sluice moves real traffic from the stable version to the new one
//! in phases, checks health with automated analysis, waits for people where
//! the plan says so, and on an alert or a breached metric puts all traffic
//! back on stable at once and opens an issue in the team's backlog.
//!
//! Layers, inside out:
//! - pure: [`spec`] (the spec and its validation) and [`rollout`] (the plan
//!   and the state machine `decide(state, event, now)`);
//! - ports, one folder each, with their adapters and a provider registry:
//!   [`store`], [`queue`], [`traffic`], [`metrics`], [`backlog`], [`notify`];
//!   alert sources in [`alerts`];
//! - [`engine`]: load, decide, act, save — shared by every handler;
//! - [`functions`]: the thin handlers, one per `functions/<name>/`;
//! - [`host`]: the local host (`sluice up`) and the Azure custom handler.

pub mod adapters;
pub mod alerts;
pub mod azure_auth;
pub mod azure_http;
pub mod backlog;
pub mod bench;
pub mod client;
pub mod config;
pub mod demo;
pub mod engine;
pub mod functions;
pub mod host;
pub mod messages;
pub mod metrics;
pub mod notify;
pub mod package;
pub mod providers;
pub mod queue;
pub mod rollout;
pub mod router;
pub mod spec;
pub mod store;
pub mod traffic;
pub mod view;
