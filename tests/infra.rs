//! The Bicep in `infra/` agrees with the code: every app setting it sets is
//! one Sluice (or the Functions host) reads, the queue is the one the
//! `steps` function listens on, and the queue's limits are the ones the
//! adapters assume. (No Bicep compiler can be installed here; `az bicep
//! build -f infra/main.bicep` checks the syntax where one is.)

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).expect(rel)
}

#[test]
fn app_settings_are_ones_sluice_or_the_host_reads() {
    let bicep = read("infra/main.bicep");
    let host_settings = ["FUNCTIONS_EXTENSION_VERSION", "APPLICATIONINSIGHTS_CONNECTION_STRING"];
    let known: Vec<&str> = sluice::shell::config::SETTINGS.iter().map(|(n, _)| *n).collect();
    let mut names = Vec::new();
    for line in bicep.lines() {
        if let Some(rest) = line.trim().strip_prefix("{ name: '") {
            if let Some(name) = rest.split('\'').next() {
                if rest.contains("value:") {
                    names.push(name.to_string());
                }
            }
        }
    }
    assert!(names.len() >= 10, "found {names:?}");
    for name in &names {
        let base = name.split("__").next().unwrap_or(name);
        assert!(
            known.contains(&name.as_str()) || known.contains(&base) || host_settings.contains(&name.as_str()),
            "infra sets {name}, which nothing reads"
        );
    }
    for required in ["FUNCTIONS_WORKER_RUNTIME", "SLUICE_STORE", "SLUICE_QUEUE", "SLUICE_ALERT_TOKEN"] {
        assert!(names.iter().any(|n| n == required), "infra does not set {required}");
    }
    assert!(bicep.contains("{ name: 'FUNCTIONS_WORKER_RUNTIME', value: 'Custom' }"));
}

#[test]
fn the_queue_matches_the_trigger_and_the_adapters() {
    let bicep = read("infra/main.bicep");
    let steps: serde_json::Value = serde_json::from_str(&read("functions/steps/function.json")).expect("json");
    let queue = steps["bindings"][0]["queueName"].as_str().expect("queueName");
    assert!(bicep.contains(&format!("var queueName = '{queue}'")), "the Bicep queue is not {queue}");
    assert!(bicep.contains(&format!("maxDeliveryCount: {}", sluice::ports::queue::MAX_DELIVERY_COUNT)));
    assert!(bicep.contains("requiresDuplicateDetection: true"));
    assert!(bicep.contains("duplicateDetectionHistoryTimeWindow: 'PT10M'"));
    assert!(bicep.contains("lockDuration: 'PT1M'") && bicep.contains("{ name: 'SLUICE_SERVICEBUS_LOCK_SECONDS', value: '60' }"));
    assert!(bicep.contains("useCommonAlertSchema: true"), "the alert webhook expects the Common Alert Schema");
}
