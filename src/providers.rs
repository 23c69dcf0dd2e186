//! The provider names every port knows, gathered for spec validation so an
//! unknown `provider:` is rejected up front instead of failing mid-rollout.

use crate::spec::ProviderNames;

/// Names accepted in specs, per port.
pub fn names() -> ProviderNames {
    ProviderNames {
        traffic: vec!["local"],
        metrics: vec!["local"],
        backlog: vec!["local"],
        notify: vec!["console", "jsonl"],
    }
}
