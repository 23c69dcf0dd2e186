//! Sluice: a progressive-delivery controller for Azure. A pipeline posts a
//! rollout; Sluice moves real traffic from the stable version to the new one
//! in phases, checks health with automated analysis, waits for people where
//! the plan says so, and on an alert or a breached metric puts all traffic
//! back on stable at once and opens an issue in the team's backlog.
//!
//! Layers, inside out: [`spec`] and [`rollout`] are pure (the spec, its
//! validation and the state machine); the ports and adapters talk to the
//! outside; [`functions`] are the thin handlers; [`host`] drives them locally
//! or inside Azure Functions.

pub mod rollout;
pub mod spec;
pub mod providers;
