//! The exact requests the Service Bus adapter makes, as the wire-level fake
//! records them: paths, the SAS signature (recomputed by the fake),
//! `BrokerProperties`, and settlement on the lock URL the broker returned.

use crate::common;

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use common::servicebus_fake::{FakeServiceBus, KEY, KEY_NAME, NAMESPACE};
use sluice::ports::queue::servicebus::{ServiceBusConnection, ServiceBusQueue};
use sluice::ports::queue::{OutMessage, Queue, QueueError};

async fn queue(fake: &FakeServiceBus, connection: &str) -> ServiceBusQueue {
    let conn = ServiceBusConnection::parse(connection).expect("connection string");
    ServiceBusQueue::new(&conn, "rollout-steps", fake.http_client(), Duration::from_secs(30)).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_settlements_are_exact_requests() {
    let fake = FakeServiceBus::start(Duration::from_secs(30)).await;
    let q = queue(&fake, &fake.connection_string()).await;
    let at = Utc::now() + TimeDelta::seconds(1);
    q.send(OutMessage { id: "r-1:due:3".into(), body: "{\"kind\":\"event\"}".into(), visible_at: Some(at), slot: None })
        .await
        .expect("send");
    q.send(OutMessage { id: "r-1:start".into(), body: "{\"kind\":\"start\"}".into(), visible_at: None, slot: None }).await.expect("send");
    let now_msg = q.receive(Duration::from_secs(30)).await.expect("receive").expect("the unscheduled one first");
    assert_eq!(now_msg.id, "r-1:start");
    q.renew(&now_msg, Duration::from_secs(30)).await.expect("renew");
    q.abandon(&now_msg).await.expect("abandon");
    let again = q.receive(Duration::from_secs(30)).await.expect("receive").expect("redelivered");
    assert_eq!(again.delivery_count, 2);
    q.complete(&again).await.expect("complete");
    // Scheduled to whole seconds, rounded up: visible within two seconds.
    let scheduled = loop {
        if let Some(d) = q.receive(Duration::from_secs(30)).await.expect("receive") {
            break d;
        }
        assert!(Utc::now() < at + TimeDelta::seconds(2), "not visible after its time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(Utc::now() >= at, "visible before its time");
    assert_eq!(scheduled.id, "r-1:due:3");
    q.complete(&scheduled).await.expect("complete");

    let seen = fake.seen();
    assert!(seen.iter().all(|s| s.auth_problem.is_none()), "every request carries a valid SAS: {seen:?}");
    let sends: Vec<_> = seen.iter().filter(|s| s.method == "POST" && s.path == "/rollout-steps/messages").collect();
    assert_eq!(sends.len(), 2);
    let scheduled_props = sends[0].broker_properties.as_ref().expect("BrokerProperties");
    assert_eq!(scheduled_props["MessageId"], "r-1:due:3");
    let when = DateTime::parse_from_rfc2822(scheduled_props["ScheduledEnqueueTimeUtc"].as_str().expect("RFC 2822 time")).expect("parses");
    assert_eq!(when.timestamp(), at.timestamp() + 1, "scheduled to the next whole second");
    let ttl = scheduled_props["TimeToLive"].as_f64().expect("TimeToLive in seconds");
    assert!(ttl >= 7.0 * 24.0 * 3600.0, "{ttl}");
    assert_eq!(sends[0].content_type.as_deref(), Some("application/json"));
    let immediate = sends[1].broker_properties.as_ref().expect("BrokerProperties");
    assert_eq!(immediate["MessageId"], "r-1:start");
    assert!(immediate.get("ScheduledEnqueueTimeUtc").is_none(), "no schedule for a message due now");
    let heads: Vec<_> = seen.iter().filter(|s| s.path == "/rollout-steps/messages/head").collect();
    assert!(!heads.is_empty() && heads.iter().all(|s| s.method == "POST" && s.query == "timeout=1"), "{heads:?}");
    // Settlements go to /{queue}/messages/{sequence}/{lock token}, from the Location header.
    let lock_paths: Vec<(String, String)> = seen
        .iter()
        .filter(|s| s.path.starts_with("/rollout-steps/messages/") && s.path != "/rollout-steps/messages/head")
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    let methods: Vec<&str> = lock_paths.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(methods, ["POST", "PUT", "DELETE", "DELETE"], "renew, abandon, complete, complete");
    assert!(lock_paths[2].1.ends_with(&again.lock_token), "{lock_paths:?}");
    assert!(lock_paths[0].1.ends_with(&now_msg.lock_token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_refused_and_never_echoed() {
    let fake = FakeServiceBus::start(Duration::from_secs(30)).await;
    let wrong = "d3Jvbmcta2V5LXRoYXQtaXMtbm90LXZhbGlk";
    let q =
        queue(&fake, &format!("Endpoint=sb://{NAMESPACE}.servicebus.windows.net/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={wrong}"))
            .await;
    let err = q.send(OutMessage { id: "x".into(), body: "{}".into(), visible_at: None, slot: None }).await.expect_err("refused");
    assert!(matches!(err, QueueError::Unavailable(_)), "{err:?}");
    assert!(!err.to_string().contains(wrong) && !err.to_string().contains(KEY), "{err}");
    assert_eq!(fake.seen()[0].auth_problem.as_deref(), Some("signature mismatch"));
}

#[test]
fn connection_strings_name_what_is_wrong_without_the_key() {
    let key = "c2VjcmV0LWtleS12YWx1ZQ";
    let good = ServiceBusConnection::parse(&format!(
        "Endpoint=sb://prod-ns.servicebus.windows.net/;SharedAccessKeyName=sender;SharedAccessKey={key};EntityPath=rollout-steps"
    ))
    .expect("parses");
    assert_eq!(
        (good.namespace.as_str(), good.key_name.as_str(), good.entity_path.as_deref()),
        ("prod-ns", "sender", Some("rollout-steps"))
    );
    assert!(!format!("{good:?}").contains(key), "Debug redacts the key");
    for (text, needle) in [
        (format!("SharedAccessKeyName=a;SharedAccessKey={key}"), "Endpoint is missing"),
        (format!("Endpoint=http://x;SharedAccessKeyName=a;SharedAccessKey={key}"), "must start with sb://"),
        (format!("Endpoint=sb://x.example.com/;SharedAccessKeyName=a;SharedAccessKey={key}"), "is not {namespace}.servicebus.windows.net"),
        (format!("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey={key}"), "SharedAccessKeyName is missing"),
        ("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=a".to_string(), "SharedAccessKey is missing"),
        (format!("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=a;SharedAccessKey{key}"), "part 3 is not key=value"),
    ] {
        let err = ServiceBusConnection::parse(&text).expect_err(&text).to_string();
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains(key), "the key leaked: {err}");
    }
}

/// Sending with the managed identity (no SAS key anywhere): the exact
/// request of the Service Bus REST "Send Message" operation, with a token
/// for `https://servicebus.azure.net` and the scheduled time in RFC 1123.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_sends_are_exact_requests() {
    use common::recorder::{Recorded, Recorder};
    use sluice::ports::queue::servicebus_identity::ServiceBusSender;
    let fake = Recorder::start(|r: &Recorded| {
        if r.path == "/msi/token" {
            let resource = r.param("resource").unwrap_or_default();
            let token = if resource == "https://servicebus.azure.net" { "sb-token" } else { "wrong-audience" };
            let expires = (Utc::now() + TimeDelta::hours(1)).timestamp().to_string();
            return (200, vec![], serde_json::json!({"access_token": token, "expires_on": expires}).to_string());
        }
        match r.header("authorization") {
            Some("Bearer sb-token") if r.path == "/rollout-steps/messages" && r.method == "POST" => (201, vec![], String::new()),
            Some("Bearer sb-token") => (404, vec![], String::new()),
            _ => (401, vec![], "<Error><Code>401</Code></Error>".into()),
        }
    })
    .await;
    let settings =
        std::collections::BTreeMap::from([("IDENTITY_ENDPOINT", format!("{}/msi/token", fake.url)), ("IDENTITY_HEADER", "h".to_string())]);
    let credential = sluice::ports::azure::auth::AzureCredential::from_settings(&|k| settings.get(k).cloned()).expect("identity");
    let q = ServiceBusSender::new(
        "ns.servicebus.windows.net",
        "rollout-steps",
        Some(&fake.url),
        reqwest::Client::new(),
        std::sync::Arc::new(credential),
    );
    let at = DateTime::parse_from_rfc3339("2030-01-02T03:04:05.250Z").expect("time").with_timezone(&Utc);
    q.send(OutMessage { id: "r-1:wake:1".into(), body: "{\"kind\":\"wake\"}".into(), visible_at: Some(at), slot: None })
        .await
        .expect("send");
    q.send(OutMessage { id: "r-1:start".into(), body: "{\"kind\":\"start\"}".into(), visible_at: None, slot: None }).await.expect("send");
    let sends: Vec<Recorded> = fake.seen().into_iter().filter(|r| r.path == "/rollout-steps/messages").collect();
    assert_eq!(sends.len(), 2);
    let props: serde_json::Value = serde_json::from_str(sends[0].header("brokerproperties").expect("BrokerProperties")).expect("json");
    assert_eq!(props["MessageId"], "r-1:wake:1");
    assert_eq!(props["ScheduledEnqueueTimeUtc"], "Wed, 02 Jan 2030 03:04:06 GMT", "RFC 1123, rounded up to the second");
    assert!(props["TimeToLive"].as_u64().expect("seconds") > 7 * 24 * 3600);
    assert_eq!(sends[0].body, "{\"kind\":\"wake\"}");
    assert_eq!(sends[0].header("content-type"), Some("application/json"));
    let second: serde_json::Value = serde_json::from_str(sends[1].header("brokerproperties").expect("props")).expect("json");
    assert!(second.get("ScheduledEnqueueTimeUtc").is_none(), "visible now: no schedule");
    // Every call receive-side is refused: in Azure the Functions trigger receives.
    assert!(matches!(q.receive(Duration::from_secs(1)).await, Err(QueueError::Config(_))));
    // An identity without the role: the error says which role it needs, and holds no token.
    let wrong = Recorder::start(|r: &Recorded| {
        if r.path == "/msi/token" {
            let expires = (Utc::now() + TimeDelta::hours(1)).timestamp().to_string();
            return (200, vec![], serde_json::json!({"access_token": "sb-token", "expires_on": expires}).to_string());
        }
        (401, vec![], String::new())
    })
    .await;
    let settings =
        std::collections::BTreeMap::from([("IDENTITY_ENDPOINT", format!("{}/msi/token", wrong.url)), ("IDENTITY_HEADER", "h".to_string())]);
    let credential = sluice::ports::azure::auth::AzureCredential::from_settings(&|k| settings.get(k).cloned()).expect("identity");
    let q = ServiceBusSender::new("ns", "rollout-steps", Some(&wrong.url), reqwest::Client::new(), std::sync::Arc::new(credential));
    let error = q.send(OutMessage { id: "x".into(), body: "{}".into(), visible_at: None, slot: None }).await.expect_err("401").to_string();
    assert!(error.contains("Azure Service Bus Data Sender") && !error.contains("sb-token"), "{error}");
}
