//! What each Azure router does beyond the shared conformance suite, against
//! the same wire-level fakes: the exact bodies written, what a router refuses
//! and says, the caveats it reports, and the order of a rollback's writes.

use crate::router_fakes;

use chrono::Utc;
use serde_json::{json, Value};

use router_fakes::{
    env_for, router_and_fake, target, AppConfigModel, ContainerAppsModel, FakeRouter, GatewayApiModel, CONTAINER_APP, ORIGIN_GROUP, POOL,
    ROUTE_PATH, SITE, SITE_HOST, SLOT_HOST,
};
use sluice::domain::ids::Weight;

fn w(p: u64) -> Weight {
    Weight::new(p).expect("weight")
}

fn writes(fake: &FakeRouter) -> Vec<(String, String, Value)> {
    fake.seen().into_iter().filter(|r| r.method != "GET").map(|r| (r.method.clone(), r.path.clone(), r.json())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_apps_split_by_revision_and_refuse_single_revision_mode() {
    let (router, fake) = router_and_fake("containerApps").await;
    router.set_weight(w(20)).await.expect("20%");
    assert_eq!(
        writes(&fake),
        [(
            "PATCH".to_string(),
            CONTAINER_APP.to_string(),
            json!({"location": "East US", "properties": {"configuration": {"ingress": {"traffic": [
                {"revisionName": "orders--v1", "weight": 80}, {"revisionName": "orders--v2", "weight": 20}
            ]}}}})
        )]
    );
    router.promote(Utc::now()).await.expect("promote");
    router.scale_down_previous().await.expect("deactivate the old revision");
    assert!(fake.seen().iter().any(|r| r.method == "POST" && r.path == format!("{CONTAINER_APP}/revisions/orders--v1/deactivate")));

    // By traffic label alone: the labels name the revisions, and stay on the entries.
    let labelled = FakeRouter::start(ContainerAppsModel {
        traffic: json!([{"revisionName": "orders--v1", "label": "blue", "weight": 100}, {"latestRevision": true, "label": "green", "weight": 0}]),
        ..ContainerAppsModel::default()
    })
    .await;
    let t = target(
        json!({"provider": "containerApps", "settings": {"subscriptionId": "sub-1", "resourceGroup": "rg-1", "armEndpoint": labelled.url(),
        "app": "orders", "stableLabel": "blue", "canaryLabel": "green"}}),
    );
    let router = sluice::ports::traffic::build(&t, &env_for(&labelled)).expect("router");
    assert_eq!(router.current().await.expect("read").weight, w(0), "the latest revision, labelled green, has 0");
    router.set_weight(w(30)).await.expect("30%");
    assert_eq!(
        writes(&labelled)[0].2["properties"]["configuration"]["ingress"]["traffic"],
        json!([{"revisionName": "orders--v1", "label": "blue", "weight": 70}, {"revisionName": "orders--v2", "label": "green", "weight": 30}])
    );
    assert_eq!(labelled.share(), 30);

    let single = FakeRouter::start(ContainerAppsModel { mode: "Single", ..ContainerAppsModel::default() }).await;
    let t = target(
        json!({"provider": "containerApps", "settings": {"subscriptionId": "sub-1", "resourceGroup": "rg-1", "armEndpoint": single.url(),
        "app": "orders", "stableRevision": "orders--v1", "canaryRevision": "orders--v2"}}),
    );
    let router = sluice::ports::traffic::build(&t, &env_for(&single)).expect("router");
    let err = router.set_weight(w(5)).await.expect_err("single mode cannot split").to_string();
    assert!(err.contains("Single revision mode") && err.contains("set-mode --mode multiple"), "{err}");
    assert!(writes(&single).is_empty(), "nothing written to an app that cannot split");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_door_maps_percent_to_weights_and_never_leaves_the_group_dark() {
    let (router, fake) = router_and_fake("frontDoor").await;
    router.set_weight(w(5)).await.expect("5%");
    let bodies: Vec<(String, Value)> =
        writes(&fake).into_iter().map(|(_, p, b)| (p.trim_start_matches(ORIGIN_GROUP).to_string(), b)).collect();
    assert_eq!(
        bodies,
        [
            ("/origins/canary".to_string(), json!({"properties": {"weight": 50, "enabledState": "Enabled"}})),
            ("/origins/stable".to_string(), json!({"properties": {"weight": 950, "enabledState": "Enabled"}})),
        ]
    );
    router.promote(Utc::now()).await.expect("promote");
    let before = fake.seen().len();
    router.revert(true, Utc::now()).await.expect("revert");
    // After a promotion stable is disabled: it is enabled before the canary goes.
    let order: Vec<String> =
        fake.seen()[before..].iter().filter(|r| r.method == "PATCH").map(|r| r.path.replace(ORIGIN_GROUP, "")).collect();
    assert_eq!(order, ["/origins/stable", "/origins/canary"]);
    let before = fake.seen().len();
    router.set_weight(w(30)).await.expect("30%");
    router.revert(false, Utc::now()).await.expect("revert");
    // With stable serving, the fastest way off the canary is first.
    let last: Vec<String> =
        fake.seen()[before..].iter().filter(|r| r.method == "PATCH").map(|r| r.path.replace(ORIGIN_GROUP, "")).collect();
    assert_eq!(last[2..], ["/origins/canary", "/origins/stable"]);
    assert_eq!(fake.dark_moments(), 0, "an origin always served");
    let caveats = router.caveats().await;
    assert!(caveats.iter().any(|c| c.contains("per edge location")), "{caveats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_management_writes_the_pool_with_if_match_and_keeps_other_services() {
    let (router, fake) = router_and_fake("apiManagement").await;
    router.set_weight(w(25)).await.expect("25%");
    let patch = fake.seen().into_iter().find(|r| r.method == "PATCH").expect("patch");
    assert_eq!(patch.path, POOL);
    assert_eq!(patch.header("if-match"), Some("\"1\""), "the ETag read");
    let services = patch.json()["properties"]["pool"]["services"].clone();
    let weights: Vec<(String, u64)> = services
        .as_array()
        .expect("services")
        .iter()
        .map(|s| (s["id"].as_str().unwrap_or("").rsplit('/').next().unwrap_or("").to_string(), s["weight"].as_u64().unwrap_or(999)))
        .collect();
    assert_eq!(
        weights,
        [("orders-v1".into(), 75), ("orders-v2".into(), 25), ("orders-dr".into(), 1)],
        "the disaster-recovery backend kept its weight"
    );
    // A throttled conditional write is sent again with the ETag it read, and lands when nothing changed.
    let (router, fake) = router_and_fake("apiManagement").await;
    router.set_weight(w(10)).await.expect("10%");
    fake.faults(|f| f.hold_next_write = true);
    let err = router.set_weight(w(20)).await;
    assert!(err.is_ok(), "a retried write with the same ETag goes through: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_config_flag_moves_the_targeting_percentage_and_reverts_by_disabling() {
    let (router, fake) = router_and_fake("appConfigFlag").await;
    router.set_weight(w(10)).await.expect("10%");
    let put = fake.seen().into_iter().find(|r| r.method == "PUT").expect("put");
    assert_eq!(put.header("content-type"), Some("application/vnd.microsoft.appconfig.kv+json"));
    assert_eq!(put.header("if-match"), Some("\"etag-7\""));
    assert!(put
        .header("authorization")
        .unwrap_or("")
        .starts_with("HMAC-SHA256 Credential=ak-id-1&SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature="));
    let flag: Value = serde_json::from_str(put.json()["value"].as_str().expect("value")).expect("flag");
    assert_eq!(flag["enabled"], true);
    assert_eq!(
        flag["conditions"]["client_filters"][0]["parameters"]["Audience"],
        json!({"Users": ["qa@contoso.com"], "Groups": [], "DefaultRolloutPercentage": 10})
    );
    router.revert(false, Utc::now()).await.expect("revert");
    let last = fake.seen().into_iter().rfind(|r| r.method == "PUT").expect("put");
    let flag: Value = serde_json::from_str(last.json()["value"].as_str().expect("value")).expect("flag");
    assert_eq!((flag["enabled"].clone(), fake.share()), (json!(false), 0), "a rollback switches the flag off");
    router.promote(Utc::now()).await.expect("promote");
    assert_eq!(fake.share(), 100);
    let caveats = router.caveats().await;
    assert!(caveats.iter().any(|c| c.contains("next configuration refresh")), "{caveats:?}");

    // With a managed identity instead of an access key: a bearer token for App Configuration.
    let entra = FakeRouter::start(AppConfigModel::default()).await;
    let t = target(json!({"provider": "appConfigFlag", "settings": {"endpoint": entra.url(), "flag": "orders-v2", "label": "prod"}}));
    let router = sluice::ports::traffic::build(&t, &env_for(&entra)).expect("router");
    let err = router.current().await.expect_err("the fake wants HMAC").to_string();
    assert!(err.contains("401"), "{err}");
    let token = entra.recorder.seen().into_iter().find(|r| r.path == "/msi/token").expect("token request");
    // Microsoft Learn, "Microsoft Entra ID authentication - REST API reference" (App Configuration): the audience table.
    assert_eq!(token.param("resource").as_deref(), Some("https://appconfig.azure.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_applies_weights_server_side_with_the_version_read() {
    let (router, fake) = router_and_fake("gatewayApi").await;
    router.set_weight(w(30)).await.expect("30%");
    let apply = fake.seen().into_iter().find(|r| r.method == "PATCH").expect("apply");
    assert_eq!(apply.path, ROUTE_PATH);
    assert_eq!((apply.param("fieldManager").as_deref(), apply.param("force").as_deref()), (Some("sluice"), Some("true")));
    assert_eq!(apply.header("content-type"), Some("application/apply-patch+yaml"));
    assert_eq!(apply.header("authorization"), Some("Bearer sa-token-for-sluice"));
    let body = apply.json();
    assert_eq!(body["metadata"], json!({"name": "orders", "namespace": "shop", "resourceVersion": "1"}));
    assert_eq!(
        body["spec"]["rules"][0]["backendRefs"],
        json!([{"name": "orders-v1", "port": 80}]),
        "a rule that does not split is left alone"
    );
    assert_eq!(
        body["spec"]["rules"][1]["backendRefs"],
        json!([{"name": "orders-v1", "port": 80, "weight": 70}, {"name": "orders-v2", "port": 80, "weight": 30}])
    );
    assert!(body.get("status").is_none() && body["spec"].get("parentRefs").is_none(), "only the rules are applied");

    let mut pinned = GatewayApiModel::default();
    pinned.route["spec"]["rules"][1]["sessionPersistence"] = json!({"type": "Cookie", "sessionName": "orders"});
    let fake = FakeRouter::start(pinned).await;
    let t = target(json!({"provider": "gatewayApi", "settings": {"apiServer": fake.url(), "namespace": "shop", "route": "orders",
        "stableService": "orders-v1", "canaryService": "orders-v2", "tokenSetting": "K8S_TOKEN"}}));
    let router = sluice::ports::traffic::build(&t, &env_for(&fake)).expect("router");
    let caveats = router.caveats().await;
    assert!(caveats.iter().any(|c| c.contains("sessionPersistence")), "{caveats:?}");
    let err = sluice::ports::traffic::build(
        &target(json!({"provider": "gatewayApi", "settings": {"apiServer": fake.url(), "namespace": "shop", "route": "orders",
            "stableService": "orders-v1", "canaryService": "orders-v2", "tokenSetting": "K8S_TOKEN", "caCertificate": "not a pem"}})),
        &env_for(&fake),
    )
    .err()
    .expect("a bad CA is refused")
    .to_string();
    assert!(err.contains("caCertificate"), "{err}");
}

/// Each router's example spec validates and builds its adapter: the
/// settings it shows are the ones the router reads.
#[test]
fn every_router_has_an_example_spec_that_builds_its_adapter() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let env = sluice::ports::env::AdapterEnv::with_settings(
        std::env::temp_dir(),
        "http://sluice.test".into(),
        // A deployment's rules: the public cloud, and the example's AKS cluster listed.
        std::sync::Arc::new(|k: &str| match k {
            "SLUICE_AZURE_TOKEN" => Some("t".to_string()),
            "SLUICE_AKS_API_SERVERS" => Some("https://orders-aks-dns-1a2b3c4d.hcp.westeurope.azmk8s.io:443".to_string()),
            _ => None,
        }),
    );
    let mut covered = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples") {
        let path = entry.expect("entry").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).filter(|n| n.starts_with("router-")) else { continue };
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect(name);
        let (spec, _) = sluice::domain::spec::validate(&doc, &sluice::ports::registry::names()).unwrap_or_else(|p| panic!("{name}: {p:?}"));
        sluice::ports::traffic::build(&spec.target, &env).unwrap_or_else(|e| panic!("{name}: {e}"));
        covered.push(spec.target.router.provider.clone());
    }
    covered.extend(["local".to_string(), "appServiceSlots".to_string()]);
    for (provider, _) in sluice::ports::traffic::PROVIDERS {
        assert!(covered.iter().any(|c| c == provider), "no example for {provider}");
    }
}

/// A whole rollout through the local host on an Azure router's fake: the
/// router's caveats reach the status and the history with the first
/// confirmed weight, and an abort puts everyone back on stable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_on_front_door_records_its_caveats_and_reverts_on_abort() {
    use std::sync::Arc;
    use std::time::Duration;

    use sluice::host::local::{self, LocalConfig};
    use sluice::ports::clock::{Clock, SystemClock};

    let fake = FakeRouter::start(router_fakes::FrontDoorModel::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = env_for(&fake);
    let host = local::start_with(
        LocalConfig {
            root: std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            data_dir: dir.path().to_path_buf(),
            addr: "127.0.0.1:0".parse().expect("addr"),
            alert_token: None,
            api_key: None,
            require_principal: false,
            issuers: Vec::new(),
            public_url: None,
            signed_in: None,
            write_token: None,
        },
        move |data_dir, _| async move {
            let db = data_dir.join("sluice.db");
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let store = Arc::new(sluice::ports::store::sqlite::SqliteStore::open(&db).expect("store"));
            let queue = Arc::new(sluice::ports::queue::embedded::EmbeddedQueue::open(&db, clock.clone()).expect("queue"));
            Ok(Arc::new(sluice::shell::engine::Engine::new(store, queue, env, clock)))
        },
    )
    .await
    .expect("host");
    let client = sluice::cli::client::Client::new(&host.url(), None, "ci");
    let spec = json!({
        "target": {"name": "orders", "router": {"provider": "frontDoor", "settings": {"subscriptionId": "sub-1", "resourceGroup": "rg-1",
                    "armEndpoint": fake.url(), "profile": "edge", "originGroup": "orders", "stableOrigin": "stable", "canaryOrigin": "canary"}},
                   "stable": {"name": "stable", "version": "v1"}, "canary": {"name": "canary", "version": "v2"}},
        "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {}}]}},
        "backlog": {"provider": "local"}
    });
    let id = client.start(&spec, None).await.expect("start")["id"].as_str().expect("id").to_string();
    let mut status = Value::Null;
    for _ in 0..100 {
        status = client.status(&id).await.expect("status");
        if status["phase"] == "Paused" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["phase"], "Paused", "{status}");
    assert_eq!(fake.share(), 20);
    let caveats = status.pointer("/rollout/traffic/caveats").or_else(|| status.get("routerCaveats")).cloned().unwrap_or(Value::Null);
    assert!(caveats.to_string().contains("per edge location"), "{status}");
    let history = status["history"].to_string();
    assert!(history.contains("router caveat: frontDoor"), "{history}");
    client.action(&id, "abort", &json!({"reason": "enough"})).await.expect("abort");
    for _ in 0..100 {
        if client.status(&id).await.expect("status")["phase"] == "Aborted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(client.status(&id).await.expect("status")["phase"], "Aborted");
    assert_eq!((fake.share(), fake.dark_moments()), (0, 0), "everyone back on stable, never without an origin");
    host.stop().await;
}

/// The local router's labels are outside text: a refusal of swapped sides
/// quotes them printable and short, nobody is moved, and a revert to 0 is
/// never held by the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_router_refuses_swapped_sides_quoting_its_labels_safely() {
    use sluice::devtools::router::{Router, Upstream};
    let hostile = format!("\u{1b}[31m{}", "x".repeat(10_000));
    let side = |version: &str| Upstream { name: "side".into(), version: version.into(), url: "http://127.0.0.1:9".into() };
    // v2 on the stable side, where the spec moves traffic from v1 to v2: an earlier promotion's swap.
    let router = Router::new(side("v2"), side(&hostile));
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let listening = router.serve(any, any).await.expect("the router serves");
    let t = target(json!({"provider": "local", "settings": {"url": listening.admin_url()}}));
    let env = sluice::ports::env::AdapterEnv::with_settings(
        std::env::temp_dir(),
        "http://sluice.test".into(),
        std::sync::Arc::new(|_: &str| None),
    );
    let adapter = sluice::ports::traffic::build(&t, &env).expect("adapter");
    let refused = adapter.set_weight(Weight::new(5).expect("weight")).await.expect_err("swapped sides are refused").to_string();
    assert!(!refused.contains('\u{1b}') && refused.chars().count() < 600, "{refused}");
    assert!(refused.contains("the router serves v2 on its stable side"), "{refused}");
    assert_eq!(router.route().weight, Weight::ZERO, "nobody moved");
    assert_eq!(adapter.set_weight(Weight::ZERO).await.expect("a revert to 0 is not checked"), Weight::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_with_a_preview_show_the_canary_at_zero_and_the_next_split_ends_it() {
    // App Service: an explicit 0 % rule (the docs' condition for x-ms-routing-name), the slot's own address.
    let (router, fake) = router_and_fake("appServiceSlots").await;
    let preview = router.preview().await.expect("preview");
    assert_eq!((preview.url.as_str(), preview.headers.len()), (format!("https://{SLOT_HOST}").as_str(), 0));
    assert!(preview.how.contains(&format!("https://{SITE_HOST}/?x-ms-routing-name=canary")), "{}", preview.how);
    let rule = json!({"name": "canary", "actionHostName": SLOT_HOST, "reroutePercentage": 0.0});
    assert_eq!(
        writes(&fake),
        [("PATCH".to_string(), format!("{SITE}/config/web"), json!({"properties": {"experiments": {"rampUpRules": [rule]}}}))]
    );
    assert_eq!(fake.share(), 0, "no user is sent there");
    router.revert(false, Utc::now()).await.expect("revert");
    assert_eq!(writes(&fake)[1].2, json!({"properties": {"experiments": {"rampUpRules": []}}}), "a rollback ends the opt-in");

    // Container Apps: the canary revision labelled at weight 0, and the label's address.
    let (router, fake) = router_and_fake("containerApps").await;
    let preview = router.preview().await.expect("preview");
    assert_eq!(preview.url, "https://orders---preview.kindocean-a1b2c3.eastus.azurecontainerapps.io");
    let traffic = |i: usize| writes(&fake)[i].2["properties"]["configuration"]["ingress"]["traffic"].clone();
    assert_eq!(
        traffic(0),
        json!([{"revisionName": "orders--v1", "weight": 100}, {"revisionName": "orders--v2", "weight": 0, "label": "preview"}])
    );
    router.set_weight(w(10)).await.expect("10%");
    assert_eq!(traffic(1), json!([{"revisionName": "orders--v1", "weight": 90}, {"revisionName": "orders--v2", "weight": 10}]));
    router.preview().await.expect("again, as a redelivered step would");
    router.revert(false, Utc::now()).await.expect("revert");
    assert_eq!(
        traffic(3),
        json!([{"revisionName": "orders--v1", "weight": 100}, {"revisionName": "orders--v2", "weight": 0}]),
        "a rollback drops the label"
    );

    // Gateway API: a header rule first, as specific as the split's path, to the canary alone.
    let (router, fake) = router_and_fake("gatewayApi").await;
    let preview = router.preview().await.expect("preview");
    assert_eq!(preview.url, "https://orders.contoso.com");
    assert_eq!(preview.headers.get("x-sluice-preview").map(String::as_str), Some("canary"));
    let rules = writes(&fake)[0].2["spec"]["rules"].clone();
    assert_eq!(rules.as_array().map(Vec::len), Some(3), "{rules}");
    assert_eq!(
        rules[0],
        json!({"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                             "headers": [{"type": "Exact", "name": "x-sluice-preview", "value": "canary"}]}],
               "backendRefs": [{"name": "orders-v2", "port": 80}]})
    );
    assert_eq!(fake.share(), 0);
    router.set_weight(w(20)).await.expect("20%");
    assert_eq!(writes(&fake)[1].2["spec"]["rules"].as_array().map(Vec::len), Some(2), "the next split ends the preview");
    assert_eq!(fake.share(), 20);
    router.revert(false, Utc::now()).await.expect("revert to 0");
    router.preview().await.expect("preview");
    router.preview().await.expect("the same preview again, as a redelivered step would");
    assert_eq!(writes(&fake)[4].2["spec"]["rules"].as_array().map(Vec::len), Some(3), "one preview rule, not two");
    router.revert(false, Utc::now()).await.expect("revert");
    assert_eq!(writes(&fake)[5].2["spec"]["rules"].as_array().map(Vec::len), Some(2), "a rollback removes the preview rule");

    // A router without one says so (validation refuses the step before it gets here).
    let (router, fake) = router_and_fake("frontDoor").await;
    assert!(router.preview().await.is_err());
    assert!(writes(&fake).is_empty());
}
