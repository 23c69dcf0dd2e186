//! What `sluice doctor` reports: one finding per thing checked, from where
//! Sluice runs, before a first rollout. Each port's adapters check what only
//! they know (ARM permissions, token scopes, a query run now); the shell
//! gathers the findings and puts the blockers first.

use serde::{Deserialize, Serialize};

/// How much a finding matters. Ordered: blockers sort first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The rollout would fail (or could not roll back): fix it first.
    Blocker,
    /// It may work, but something is unverified or unusual.
    Warning,
    /// Checked and fine.
    Ok,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The part of the spec or of Sluice it is about: `router`, `analysis`, `backlog`, `notifications`, `store`, `queue`.
    pub area: String,
    /// What was checked, e.g. `permission Microsoft.Web/sites/config/write`.
    pub name: String,
    /// How much it matters.
    pub verdict: Verdict,
    /// What was found, in words a responder acts on (never a secret).
    pub detail: String,
}

impl Check {
    fn new(verdict: Verdict, area: &str, name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check { area: area.to_string(), name: name.into(), verdict, detail: detail.into() }
    }

    /// A finding that is fine.
    pub fn ok(area: &str, name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(Verdict::Ok, area, name, detail)
    }

    /// A finding worth a look.
    pub fn warning(area: &str, name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(Verdict::Warning, area, name, detail)
    }

    /// A finding that stops a rollout.
    pub fn blocker(area: &str, name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(Verdict::Blocker, area, name, detail)
    }
}

/// Whether an ARM action pattern (`*`, `Microsoft.Web/*`, `*/read`) covers
/// an action, case-insensitively, as role definitions match them.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let action = action.to_ascii_lowercase();
    let parts: Vec<&str> = pattern.split('*').collect();
    let Some((first, rest)) = parts.split_first() else { return false };
    let Some(mut remaining) = action.strip_prefix(first) else { return false };
    let Some((last, middle)) = rest.split_last() else { return remaining.is_empty() };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = remaining.get(at + part.len()..).unwrap_or(""),
            None => return false,
        }
    }
    remaining.ends_with(last)
}

/// Whether the permissions ARM lists for a caller
/// (`GET {scope}/providers/Microsoft.Authorization/permissions`) allow an
/// action: some entry's `actions` cover it and the same entry's
/// `notActions` do not.
pub fn allowed(permissions: &serde_json::Value, action: &str) -> bool {
    let list = |entry: &serde_json::Value, key: &str| -> Vec<String> {
        entry
            .get(key)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    };
    permissions.get("value").and_then(|v| v.as_array()).into_iter().flatten().any(|entry| {
        list(entry, "actions").iter().any(|p| action_matches(p, action))
            && !list(entry, "notActions").iter().any(|p| action_matches(p, action))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn action_patterns_match_as_role_definitions_do() {
        assert!(action_matches("*", "Microsoft.Web/sites/config/write"));
        assert!(action_matches("Microsoft.Web/*", "microsoft.web/sites/config/write"));
        assert!(action_matches("*/read", "Microsoft.Web/sites/read"));
        assert!(action_matches("Microsoft.Web/sites/*/action", "Microsoft.Web/sites/slots/slotsswap/action"));
        assert!(!action_matches("*/read", "Microsoft.Web/sites/config/write"));
        assert!(!action_matches("Microsoft.Web/sites/read", "Microsoft.Web/sites/readx"));
        assert!(!action_matches("Microsoft.Storage/*", "Microsoft.Web/sites/read"));
    }

    #[test]
    fn not_actions_take_away_within_their_own_entry_only() {
        let reader_and_contributor = json!({"value": [
            {"actions": ["*/read"], "notActions": []},
            {"actions": ["Microsoft.Web/sites/*"], "notActions": ["Microsoft.Web/sites/slots/slotsswap/action"]},
        ]});
        assert!(allowed(&reader_and_contributor, "Microsoft.Web/sites/config/write"));
        assert!(!allowed(&reader_and_contributor, "Microsoft.Web/sites/slots/slotsswap/action"));
        assert!(allowed(&reader_and_contributor, "Microsoft.Web/sites/read"));
        assert!(!allowed(&json!({}), "Microsoft.Web/sites/read"));
    }

    #[test]
    fn blockers_sort_first() {
        let mut v = [Verdict::Ok, Verdict::Blocker, Verdict::Warning];
        v.sort();
        assert_eq!(v, [Verdict::Blocker, Verdict::Warning, Verdict::Ok]);
    }
}
