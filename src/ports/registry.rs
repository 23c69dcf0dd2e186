//! The provider names every port's registry knows, gathered for spec
//! validation so an unknown `provider:` is rejected before anything moves
//! instead of failing mid-rollout.

use crate::domain::spec::ProviderNames;

fn names_of<F>(registry: &[(&'static str, F)]) -> Vec<&'static str> {
    registry.iter().map(|(name, _)| *name).collect()
}

/// Names accepted in specs, per port.
pub fn names() -> ProviderNames {
    ProviderNames {
        traffic: names_of(crate::ports::traffic::PROVIDERS),
        metrics: names_of(crate::ports::metrics::PROVIDERS),
        backlog: names_of(crate::ports::backlog::PROVIDERS),
        notify: names_of(crate::ports::notify::PROVIDERS),
    }
}
