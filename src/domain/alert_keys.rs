//! Alert keys: the names an alert may use for a target, as index keys, so a
//! store can find the rollouts an alert concerns without reading the others.
//!
//! They restate two of the mapping rules of [`crate::ports::alerts`] as set
//! membership: a resource id of the alert equal to or below one of the
//! target's `resourceIds` (ignoring case and a trailing `/`), and a
//! configuration item equal to the target's name or the last segment of one
//! of its resource ids (ignoring case). A target is filed under its keys; an
//! alert looks up its keys; the two meet exactly when one of those rules
//! holds (a property test in `tests/alert_sources.rs` checks it against the
//! rules themselves). The label rules need no index: they name the rollout
//! or the target outright.

/// Normalises a resource id as the mapping rules compare it.
fn resource(id: &str) -> String {
    id.trim_end_matches('/').to_ascii_lowercase()
}

fn resource_key(id: &str) -> String {
    format!("r:{id}")
}

fn name_key(name: &str) -> String {
    format!("n:{}", name.to_ascii_lowercase())
}

/// The keys a target is filed under: each resource id, and its name and each
/// resource id's last segment as names.
pub fn target_keys(name: &str, resource_ids: &[String]) -> Vec<String> {
    let ids: Vec<String> = resource_ids.iter().map(|r| resource(r)).collect();
    let mut keys: Vec<String> = ids.iter().map(|id| resource_key(id)).collect();
    keys.push(name_key(name));
    keys.extend(ids.iter().filter_map(|id| id.rsplit('/').next()).map(name_key));
    keys.sort();
    keys.dedup();
    keys
}

/// The keys an alert is looked up by: each of its resource ids and every
/// ancestor of it (a slot lies below its app), and each configuration item.
pub fn alert_lookup_keys(target_ids: &[String], configuration_items: &[String]) -> Vec<String> {
    let mut keys = Vec::new();
    for t in target_ids.iter().map(|t| resource(t)) {
        for (i, _) in t.char_indices().filter(|&(_, c)| c == '/') {
            if let Some(ancestor) = t.get(..i) {
                keys.push(resource_key(ancestor));
            }
        }
        keys.push(resource_key(&t));
    }
    keys.extend(configuration_items.iter().map(|c| name_key(c)));
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_slot_alert_finds_its_app_and_names_meet_ignoring_case() {
        let target = target_keys("Orders-API", &strings(&["/subscriptions/S/resourceGroups/RG/providers/Microsoft.Web/sites/orders-app/"]));
        assert_eq!(
            target,
            strings(&["n:orders-api", "n:orders-app", "r:/subscriptions/s/resourcegroups/rg/providers/microsoft.web/sites/orders-app"])
        );
        let slot =
            alert_lookup_keys(&strings(&["/subscriptions/s/resourcegroups/rg/providers/microsoft.web/sites/orders-app/slots/canary"]), &[]);
        assert!(slot.iter().any(|k| target.contains(k)), "{slot:?}");
        // A sibling whose name starts the same is not below the app.
        let sibling = alert_lookup_keys(&strings(&["/subscriptions/s/resourcegroups/rg/providers/microsoft.web/sites/orders-app-2"]), &[]);
        assert!(!sibling.iter().any(|k| target.contains(k)), "{sibling:?}");
        let by_name = alert_lookup_keys(&[], &strings(&["ORDERS-APP"]));
        assert!(by_name.iter().any(|k| target.contains(k)));
    }
}
