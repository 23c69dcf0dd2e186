//! Sluice checks who is calling: bearer tokens from a local OpenID provider
//! (`common::oidc`, keys made per run), through the local host. Each bad
//! token is a 401 naming why, each missing role a 403 naming it, and none of
//! them changes the rollout.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common;
use common::oidc::{self, Provider};
use common::{raw, Rig};
use sluice::ports::identity::{TokenError, Verifier};

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn post(rig: &Rig, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let auth = token.map(bearer);
    let mut headers = vec![];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    raw(&rig.host.url(), "POST", path, body.to_string().into_bytes(), &headers).await
}

async fn get(rig: &Rig, path: &str, token: Option<&str>) -> (u16, Value) {
    let auth = token.map(bearer);
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    raw(&rig.host.url(), "GET", path, Vec::new(), &headers).await
}

fn gate_spec(rig: &Rig) -> Value {
    rig.spec(json!([{"setWeight": 20}, {"approval": {"minApprovers": 2}}, {"setWeight": 50}, {"pause": {"duration": "1h"}}]))
}

/// A rollout started by the orders pipeline, waiting at its two-person gate.
async fn started(rig: &Rig, idp: &Provider) -> String {
    let pipeline = idp.token(&idp.github_claims("contoso/orders", "production"));
    let (status, body) = post(rig, "/api/rollouts", Some(&pipeline), gate_spec(rig)).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["createdBy"], "contoso/orders (production)", "the pipeline is named by its repository and environment");
    let id = body["id"].as_str().expect("id").to_string();
    wait_phase(rig, idp, &id, "AwaitingApproval").await;
    id
}

/// Polls as a reader until the rollout is in `phase`.
async fn wait_phase(rig: &Rig, idp: &Provider, id: &str, phase: &str) -> Value {
    let reader = idp.person("oid-reader", "rita@contoso.com", &["Sluice.Reader"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get(rig, &format!("/api/rollouts/{id}"), Some(&reader)).await;
        if body["phase"] == phase {
            return body;
        }
        assert!(std::time::Instant::now() < deadline, "never {phase}: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn history_len(rig: &Rig, id: &str, token: &str) -> usize {
    let (status, body) = get(rig, &format!("/api/rollouts/{id}"), Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body["history"].as_array().map(Vec::len).unwrap_or(0)
}

#[tokio::test]
async fn every_bad_token_is_a_401_naming_why_and_changes_nothing() {
    let idp = Provider::start().await;
    let rig = Rig::start_with_issuers(idp.issuers()).await;
    let id = started(&rig, &idp).await;
    let reader = idp.person("oid-reader", "rita@contoso.com", &["Sluice.Reader"]);
    let before = history_len(&rig, &id, &reader).await;
    let operator = |claims: Value| claims;
    let now = chrono::Utc::now().timestamp();
    let good = idp.person_claims("oid-op", "olga@contoso.com", &["Sluice.Operator"]);
    let with = |key: &str, value: Value| {
        let mut c = operator(good.clone());
        c[key] = value;
        c
    };
    let header = |alg: &str, kid: &str| json!({"alg": alg, "typ": "JWT", "kid": kid});
    let hs256 = {
        use base64::Engine as _;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2lnbmF0dXJl", b64(&header("HS256", oidc::KID)), b64(&good))
    };
    let none = {
        use base64::Engine as _;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.", b64(&header("none", oidc::KID)), b64(&good))
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("wrong audience", idp.token(&with("aud", json!("api://someone-else"))), "audience"),
        ("unknown issuer", idp.token(&with("iss", json!("https://login.microsoftonline.com/evil/v2.0"))), "issuer"),
        ("forged signature", oidc::sign(&idp.stranger, &header("RS256", oidc::KID), &good), "signature"),
        ("alg none", none, "only RS256"),
        ("HMAC", hs256, "only RS256"),
        ("expired", idp.token(&with("exp", json!(now - 3600))), "expired"),
        ("not yet valid", idp.token(&with("nbf", json!(now + 3600))), "not valid before"),
        ("unknown key", oidc::sign(&idp.key, &header("RS256", "no-such-key"), &good), "signing key"),
        ("another tenant", idp.token(&with("tid", json!("00000000-0000-0000-0000-000000000001"))), "'tid'"),
        ("not a JWT", "abc".to_string(), "not a JWT"),
        // An ID token for Sluice's app (same issuer, audience and keys) is no access token.
        ("an ID token", idp.token(&with("nonce", json!("n-0S6_WzA2Mj"))), "'idtyp'"),
    ];
    for (case, token, says) in cases {
        let (status, body) = post(&rig, &format!("/api/rollouts/{id}/abort"), Some(&token), json!({"reason": case})).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(body["error"], "invalid_token", "{case}: {body}");
        assert!(body["message"].as_str().unwrap_or("").contains(says), "{case}: {body}");
    }
    // No token at all, or App Service's principal header forged: the header proves nothing here.
    let (status, body) =
        raw(&rig.host.url(), "POST", &format!("/api/rollouts/{id}/abort"), b"{}".to_vec(), &[("x-ms-client-principal-name", "admin")])
            .await;
    assert_eq!((status, body["error"].as_str()), (401, Some("missing_token")), "{body}");
    let (status, _) = get(&rig, "/api/rollouts", None).await;
    assert_eq!(status, 401, "reads need a token too");
    let (status, body) = get(&rig, &format!("/api/rollouts/{id}"), Some(&reader)).await;
    assert_eq!((status, body["phase"].as_str()), (200, Some("AwaitingApproval")), "{body}");
    assert_eq!(history_len(&rig, &id, &reader).await, before, "nothing was recorded by a refused call");
}

#[tokio::test]
async fn roles_decide_who_may_act_and_a_refusal_names_the_missing_role() {
    let idp = Provider::start().await;
    let rig = Rig::start_with_issuers(idp.issuers()).await;
    let id = started(&rig, &idp).await;
    let reader = idp.person("oid-reader", "rita@contoso.com", &["Sluice.Reader"]);
    let (status, body) = post(&rig, &format!("/api/rollouts/{id}/abort"), Some(&reader), json!({})).await;
    assert_eq!((status, body["needs"].as_str()), (403, Some("Sluice.Operator")), "{body}");
    assert!(body["message"].as_str().unwrap_or("").contains("rita@contoso.com may not abort"), "{body}");
    // The pipeline that started it never approves, whatever its role.
    let pipeline = idp.token(&idp.github_claims("contoso/orders", "production"));
    let (status, body) = post(&rig, &format!("/api/rollouts/{id}/approve"), Some(&pipeline), json!({})).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["message"].as_str().unwrap_or("").contains("only a person approves"), "{body}");
    // A workflow no rule names holds no role.
    let stranger = idp.token(&idp.github_claims("evil/orders", "production"));
    let (status, body) = post(&rig, "/api/rollouts", Some(&stranger), gate_spec(&rig)).await;
    assert_eq!((status, body["needs"].as_str()), (403, Some("Sluice.Operator")), "{body}");
    // An operator may not write someone else's name.
    let olga = idp.person("oid-op", "olga@contoso.com", &["Sluice.Operator"]);
    let (status, body) = post(&rig, &format!("/api/rollouts/{id}/abort"), Some(&olga), json!({"by": "rita@contoso.com"})).await;
    assert_eq!((status, body["field"].as_str()), (403, Some("by")), "{body}");
    let status = rig.client.status(&id).await;
    assert!(status.is_err(), "the rig's own client has no token and is refused");
    let (code, body) = get(&rig, &format!("/api/rollouts/{id}"), Some(&reader)).await;
    assert_eq!((code, body["phase"].as_str()), (200, Some("AwaitingApproval")), "nothing changed: {body}");
}

#[tokio::test]
async fn two_signed_in_people_pass_a_two_person_gate_and_one_cannot_count_twice() {
    let idp = Provider::start().await;
    let rig = Rig::start_with_issuers(idp.issuers()).await;
    let id = started(&rig, &idp).await;
    let alice = idp.person("oid-alice", "alice@contoso.com", &["Sluice.Approver"]);
    let (status, body) = post(&rig, &format!("/api/rollouts/{id}/approve"), Some(&alice), json!({})).await;
    assert_eq!(status, 200, "{body}");
    // Alice again, under another display name: the same oid.
    let alias = idp.person("oid-alice", "Alice.Smith@contoso.com", &["Sluice.Approver"]);
    let (status, body) = post(&rig, &format!("/api/rollouts/{id}/approve"), Some(&alias), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap_or("").contains("already approved"), "{body}");
    let bob = idp.person("oid-bob", "bob@contoso.com", &["Sluice.Approver"]);
    let (status, body) = post(&rig, &format!("/api/rollouts/{id}/approve"), Some(&bob), json!({})).await;
    assert_eq!(status, 200, "{body}");
    let body = wait_phase(&rig, &idp, &id, "Progressing").await;
    let approved: Vec<&str> = body["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|e| e["summary"].as_str())
        .filter(|s| s.contains("approved by"))
        .collect();
    assert_eq!(approved.len(), 2, "{approved:?}");
    assert!(
        approved[0].contains("approved by alice@contoso.com (1/2)") && approved[1].contains("approved by bob@contoso.com (2/2)"),
        "{approved:?}"
    );
}

#[tokio::test]
async fn an_action_group_posts_alerts_with_its_entra_token_and_nobody_else_can() {
    let idp = Provider::start().await;
    let rig = Rig::start_with_issuers(idp.issuers()).await;
    let id = started(&rig, &idp).await;
    let admin = idp.person("oid-admin", "ada@contoso.com", &["Sluice.Admin"]);
    let alert = common::azure_alert("/subscriptions/s/providers/Microsoft.AlertsManagement/alerts/a1", "Fired");
    let (status, body) = post(&rig, "/api/alerts", Some(&admin), alert.clone()).await;
    assert_eq!((status, body["needs"].as_str()), (403, Some("ActionGroupsSecureWebhook")), "{body}");
    let forged = oidc::sign(
        &idp.stranger,
        &json!({"alg": "RS256", "kid": oidc::KID}),
        &idp.app_claims("oid-azns", "461e8683-5575-4561-ac7f-899cc907d62a", &["ActionGroupsSecureWebhook"]),
    );
    let (status, _) = post(&rig, "/api/alerts", Some(&forged), alert.clone()).await;
    assert_eq!(status, 401);
    let action_group = idp.token(&idp.app_claims("oid-azns", "461e8683-5575-4561-ac7f-899cc907d62a", &["ActionGroupsSecureWebhook"]));
    let (status, body) = post(&rig, "/api/alerts", Some(&action_group), alert).await;
    assert_eq!(status, 202, "{body}");
    wait_phase(&rig, &idp, &id, "RolledBack").await;
}

#[tokio::test]
async fn keys_are_fetched_once_and_an_unknown_kid_does_not_make_a_fetch_storm() {
    let idp = Provider::start().await;
    let verifier = Verifier::new(idp.issuers()).expect("verifier");
    let now = chrono::Utc::now().timestamp();
    let alice = idp.person("oid-alice", "alice@contoso.com", &["Sluice.Approver"]);
    for _ in 0..3 {
        let who = verifier.verify(&alice, now).await.expect("valid");
        assert_eq!(who.id, format!("{}/oid-alice", oidc::TENANT));
    }
    assert_eq!(idp.key_fetches.load(std::sync::atomic::Ordering::Relaxed), 1, "cached");
    let claims = idp.person_claims("oid-alice", "alice@contoso.com", &[]);
    for n in 0..20 {
        let unknown = oidc::sign(&idp.key, &json!({"alg": "RS256", "kid": format!("made-up-{n}")}), &claims);
        assert!(matches!(verifier.verify(&unknown, now).await, Err(TokenError::UnknownKey(_))));
    }
    assert_eq!(
        idp.key_fetches.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "made-up key ids within {:?} of the last fetch fetch nothing",
        sluice::ports::identity::keys::REFRESH_FLOOR
    );
    // The skew: a token a little past its exp still passes, one past the skew does not.
    let mut late = idp.person_claims("oid-alice", "alice@contoso.com", &[]);
    late["exp"] = json!(now - 30);
    assert!(verifier.verify(&idp.token(&late), now).await.is_ok());
    late["exp"] = json!(now - 61);
    assert!(matches!(verifier.verify(&idp.token(&late), now).await, Err(TokenError::Expired(_))));
}

/// GitHub's token service as the toolkit calls it: GET `$ACTIONS_ID_TOKEN_REQUEST_URL&audience=…`
/// with the request token as a bearer; answers `{"value": token}` — a fresh one every time.
async fn github_token_service(idp: std::sync::Arc<Provider>) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    type Shared = (std::sync::Arc<Provider>, std::sync::Arc<std::sync::atomic::AtomicUsize>);
    async fn mint(
        State((idp, calls)): State<Shared>,
        headers: HeaderMap,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> Result<axum::Json<Value>, StatusCode> {
        let authorized = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer job-request-token");
        if !authorized || q.get("api-version").map(String::as_str) != Some("2.0") {
            return Err(StatusCode::UNAUTHORIZED);
        }
        let mut claims = idp.github_claims("contoso/orders", "production");
        claims["aud"] = json!(q.get("audience").cloned().unwrap_or_default());
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(axum::Json(json!({"count": 1, "value": idp.token(&claims)})))
    }
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind(common::loopback()).await.expect("bind");
    let url = format!("http://{}/token?api-version=2.0", listener.local_addr().expect("addr"));
    let app = axum::Router::new().route("/token", axum::routing::get(mint)).with_state((idp, calls.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_job_starts_and_follows_with_its_own_token_fetched_for_every_call() {
    let idp = std::sync::Arc::new(Provider::start().await);
    let rig = Rig::start_with_issuers(idp.issuers()).await;
    let (url, calls) = github_token_service(idp.clone()).await;
    let spec = rig.dir.path().join("rollout.json");
    std::fs::write(&spec, rig.spec(json!([{"setWeight": 20}, {"approval": {}}])).to_string()).expect("spec written");
    let sluice = |args: &[&str]| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
            .args(args)
            .env("SLUICE_URL", rig.host.url())
            .env("SLUICE_GITHUB_OIDC_AUDIENCE", oidc::GITHUB_AUDIENCE)
            .env("ACTIONS_ID_TOKEN_REQUEST_URL", &url)
            .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "job-request-token")
            .env_remove("SLUICE_KEY")
            .env_remove("SLUICE_TOKEN")
            .env_remove("SLUICE_ENTRA_APP")
            .output()
    };
    let out = sluice(&["start", spec.to_str().expect("utf-8"), "--id", "gh-run-1", "--json"]).await.expect("runs");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let out = sluice(&["watch", "gh-run-1", "--until-approval"]).await.expect("runs");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let fetched = calls.load(std::sync::atomic::Ordering::Relaxed);
    assert!(fetched >= 3, "a token per call (start, then each poll of the follow), got {fetched}");
    let body = wait_phase(&rig, &idp, "gh-run-1", "AwaitingApproval").await;
    assert_eq!(body["createdBy"], "contoso/orders (production)");
    // A later stage failed: the job reports it with its token too, and still no key (the rig asks
    // one, as in Azure, where no token stands in).
    let out =
        sluice(&["report-failure", "gh-run-1", "--stage", "smoke-test", "--run-url", "https://github.com/contoso/orders/actions/runs/1"])
            .await
            .expect("runs");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    wait_phase(&rig, &idp, "gh-run-1", "RolledBack").await;
    // Outside a job there is no token to be had, and the CLI says what to do.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["status", "gh-run-1"])
        .env("SLUICE_URL", rig.host.url())
        .env("SLUICE_GITHUB_OIDC_AUDIENCE", oidc::GITHUB_AUDIENCE)
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        .output()
        .await
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("id-token: write"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn doctor_reports_which_callers_and_roles_the_deployment_accepts() {
    let idp = Provider::start().await;
    let rig = Rig::start_with_issuers(idp.issuers()).await;
    let reader = idp.person("oid-reader", "rita@contoso.com", &["Sluice.Reader"]);
    let (status, body) = post(&rig, "/api/doctor", Some(&reader), gate_spec(&rig)).await;
    assert_eq!((status, body["needs"].as_str()), (403, Some("Sluice.Operator")), "the checks call peers with Sluice's identity: {body}");
    let operator = idp.person("oid-op", "olga@contoso.com", &["Sluice.Operator"]);
    let (status, report) = post(&rig, "/api/doctor", Some(&operator), gate_spec(&rig)).await;
    assert_eq!(status, 200, "{report}");
    let check = report["checks"].as_array().expect("checks").iter().find(|c| c["name"] == "callers").expect("a callers check").clone();
    let detail = check["detail"].as_str().unwrap_or("");
    assert_eq!(check["verdict"], "ok", "{check}");
    assert!(detail.contains(&idp.entra_issuer()) && detail.contains("Sluice.Approver"), "{detail}");
    assert!(detail.contains("repo:contoso/orders:environment:production → Sluice.Operator"), "{detail}");
    let (status, _) = post(&rig, "/api/doctor", None, gate_spec(&rig)).await;
    assert_eq!(status, 401);
}

/// Whatever arrives in `Authorization` — noise, three parts of noise, or a
/// good token with one character changed — is a 401 and changes nothing;
/// never a 2xx, never a 5xx.
#[test]
fn any_authorization_header_but_a_good_token_is_a_401() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (idp, rig, id, good) = rt.block_on(async {
        let idp = Provider::start().await;
        let rig = Rig::start_with_issuers(idp.issuers()).await;
        let id = started(&rig, &idp).await;
        let good = idp.person("oid-op", "olga@contoso.com", &["Sluice.Operator"]);
        (idp, rig, id, good)
    });
    let reader = idp.person("oid-reader", "rita@contoso.com", &["Sluice.Reader"]);
    let before = rt.block_on(history_len(&rig, &id, &reader));
    let header = prop_oneof![
        ".{0,300}".prop_map(|s: String| s),
        "[A-Za-z0-9_-]{0,40}\\.[A-Za-z0-9_-]{0,400}\\.[A-Za-z0-9_-]{0,80}".prop_map(|t| format!("Bearer {t}")),
        (0..good.len(), any::<char>()).prop_map({
            let good = good.clone();
            move |(at, c)| {
                let mut chars: Vec<char> = good.chars().collect();
                let i = at % chars.len();
                chars[i] = if chars[i] == c { '!' } else { c };
                format!("Bearer {}", chars.into_iter().collect::<String>())
            }
        }),
    ];
    let mut runner = TestRunner::new(Config { cases: 96, failure_persistence: None, ..Config::default() });
    runner
        .run(&header, |value| {
            let (status, body) = rt.block_on(async {
                let http = reqwest::Client::new();
                let Ok(req) = http
                    .post(format!("{}/api/rollouts/{id}/abort", rig.host.url()))
                    .header("content-type", "application/json")
                    .header("authorization", value.as_str())
                    .body("{}")
                    .build()
                else {
                    return (401, Value::Null); // not sendable as a header at all
                };
                let answer = http.execute(req).await.expect("answered");
                (answer.status().as_u16(), answer.json::<Value>().await.unwrap_or(Value::Null))
            });
            prop_assert_eq!(status, 401, "{:?} → {}", value, body);
            Ok(())
        })
        .expect("every header refused");
    assert_eq!(rt.block_on(history_len(&rig, &id, &reader)), before, "nothing changed");
}

/// Issuers that hang, answer too much or lie: the token is refused with the
/// reason, in bounded time, and a hanging issuer is asked once per floor,
/// not once per request.
#[tokio::test]
async fn an_issuer_that_hangs_answers_too_much_or_lies_gets_its_tokens_refused() {
    use axum::routing::get;
    let idp = Provider::start().await;
    let silent = common::silent_peer().await;
    let listener = tokio::net::TcpListener::bind(common::loopback()).await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (liar_keys, huge_base) = (format!("{}/keys", idp.base), base.clone());
    let app = axum::Router::new()
        // Names another issuer than the one configured (and points at real keys).
        .route(
            "/liar/.well-known/openid-configuration",
            get(move || async move { axum::Json(json!({"issuer": "https://evil.example", "jwks_uri": liar_keys})) }),
        )
        // A discovery document of 9 MiB.
        .route("/huge/.well-known/openid-configuration", get(|| async { "x".repeat(9 << 20) }));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let rules = sluice::domain::access::SubjectRule::parse_list("repo:contoso/orders:*=Operator").expect("rules");
    let now = chrono::Utc::now().timestamp();
    for (issuer, says) in
        [(silent.clone(), "timed out"), (format!("{huge_base}/liar"), "names the issuer"), (format!("{huge_base}/huge"), "longer than")]
    {
        let verifier = Verifier::new(vec![sluice::ports::identity::IssuerConfig::github(&issuer, oidc::GITHUB_AUDIENCE, rules.clone())])
            .expect("verifier");
        let mut claims = idp.github_claims("contoso/orders", "production");
        claims["iss"] = json!(issuer);
        let token = idp.token(&claims);
        let began = std::time::Instant::now();
        let refused = verifier.verify(&token, now).await.expect_err("no keys, no entry");
        assert!(matches!(&refused, TokenError::KeysUnavailable(why) if why.contains(says)), "{issuer}: {refused}");
        assert!(began.elapsed() < sluice::ports::identity::keys::FETCH_TIMEOUT * 3, "{issuer}: bounded by the fetch timeout");
        // Within the floor the issuer is not asked again: the refusal is at once.
        let again = std::time::Instant::now();
        assert!(matches!(verifier.verify(&token, now).await, Err(TokenError::KeysUnavailable(_))));
        assert!(again.elapsed() < Duration::from_secs(1), "{issuer}: asked again within the floor");
    }
}

/// Every function is anonymous at the Functions host, so Sluice asks its own
/// key: a token stands in for it where Sluice checks tokens, except on the
/// two functions whose callers only hold a static credential; without
/// tokens every call needs it. A refusal names the header and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_needs_no_key_beside_it_and_static_callers_keep_the_key() {
    let idp = Provider::start().await;
    let rig = Rig::start_with_issuers(idp.issuers()).await;
    let url = rig.host.url();
    let reader = bearer(&idp.person("oid-reader", "rita@contoso.com", &["Sluice.Reader"]));
    let with_token = [("authorization", reader.as_str())];
    let key = [("x-functions-key", common::API_KEY)];
    let refused = |(status, body): (u16, Value), error: &str, field: &str| {
        assert_eq!((status, body["error"].as_str(), body["field"].as_str()), (401, Some(error), Some(field)), "{body}");
    };
    let (status, body) = raw(&url, "GET", "/api/rollouts", Vec::new(), &with_token).await;
    assert_eq!(status, 200, "a token alone reads: {body}");
    refused(raw(&url, "GET", "/api/rollouts", Vec::new(), &key).await, "missing_token", "authorization");
    refused(raw(&url, "GET", "/api/rollouts", Vec::new(), &[]).await, "missing_token", "authorization");
    // Prometheus and the agentless task send a key and nothing else.
    refused(raw(&url, "GET", "/api/metrics", Vec::new(), &with_token).await, "missing_key", "x-functions-key");
    let wrong = [("x-functions-key", "not-the-key-0123456789abcdef")];
    refused(raw(&url, "GET", "/api/metrics", Vec::new(), &wrong).await, "invalid_key", "x-functions-key");
    let (status, body) = raw(&url, "GET", "/api/metrics", Vec::new(), &key).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = raw(&url, "GET", &format!("/api/metrics?code={}", common::API_KEY), Vec::new(), &[]).await;
    assert_eq!(status, 200, "the key as a scrape job's `code` parameter");
    refused(raw(&url, "POST", "/api/pipelines/azure?rollout=r1", b"{}".to_vec(), &with_token).await, "missing_key", "x-functions-key");
    // The page holds no data; the alert webhook has its own check.
    let page = reqwest::get(format!("{url}/api/dashboard")).await.expect("answers");
    assert_eq!(page.status().as_u16(), 200);

    // Without tokens (signIn: none) every call but those two needs the key.
    let keyed = Rig::start_keyed().await;
    let url = keyed.host.url();
    let spec = keyed.spec(json!([{"setWeight": 20}, {"approval": {}}])).to_string().into_bytes();
    let json = ("content-type", "application/json");
    refused(raw(&url, "POST", "/api/rollouts", spec.clone(), &[json]).await, "missing_key", "x-functions-key");
    refused(raw(&url, "POST", "/api/rollouts", spec.clone(), &[json, ("x-functions-key", "abc")]).await, "invalid_key", "x-functions-key");
    refused(raw(&url, "GET", "/api/waves", Vec::new(), &[]).await, "missing_key", "x-functions-key");
    let (status, body) = raw(&url, "GET", "/api/rollouts", Vec::new(), &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(keyed.host.app.engine.store.list(&Default::default()).await.expect("list").len(), 0, "nothing was started");
    let (status, body) =
        raw(&url, "POST", "/api/rollouts", spec, &[json, ("x-functions-key", common::API_KEY), ("x-sluice-user", "pipeline")]).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = raw(&url, "GET", &format!("/api/rollouts?code={}", common::API_KEY), Vec::new(), &[]).await;
    assert_eq!((status, body["rollouts"].as_array().map(Vec::len)), (200, Some(1)), "{body}");
    let alert = json!({"schemaId": "azureMonitorCommonAlertSchema", "data": {"essentials": {"alertId": "a1", "alertRule": "r", "monitorCondition": "Fired", "alertTargetIDs": []}}});
    let (status, body) = raw(&url, "POST", &format!("/api/alerts?token={}", common::TOKEN), alert.to_string().into_bytes(), &[json]).await;
    assert_eq!(status, 202, "the alert webhook asks its own token, not the key: {body}");
}

/// The CLI as an AzureCLI@2 step on the test's service connection runs it: the
/// connection's ids, the job's OIDC service at `oidc_request_uri`, no key or other sign-in.
fn azure_pipelines_step(rig: &Rig, idp: &Provider, oidc_request_uri: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env("SLUICE_URL", rig.host.url())
        .env("SLUICE_AZURE_PIPELINES_APP", oidc::CLIENT)
        .env("SYSTEM_OIDCREQUESTURI", oidc_request_uri)
        .env("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID", oidc::ADO_CONNECTION)
        .env("AZURESUBSCRIPTION_CLIENT_ID", oidc::ADO_CLIENT)
        .env("AZURESUBSCRIPTION_TENANT_ID", oidc::TENANT)
        .env("SLUICE_ENTRA_AUTHORITY", &idp.base)
        .env_remove("SLUICE_KEY")
        .env_remove("SLUICE_TOKEN")
        .env_remove("SLUICE_ENTRA_APP")
        .env_remove("SLUICE_GITHUB_OIDC_AUDIENCE");
    cmd
}

/// An Azure Pipelines job on a workload identity federation connection
/// signs in as that connection with no stored secret: for each token it asks
/// the job's OIDC service for a fresh assertion and trades it at Entra ID
/// (`--azure-pipelines`), so a follow outlives the ten-minute federated
/// token the Azure CLI would have kept. It starts, follows and reports, and
/// without the job's access token it says what to map and calls nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_pipelines_job_starts_follows_and_reports_as_its_service_connection() {
    let idp = Provider::start().await;
    let rig = Rig::start_with_issuers(idp.issuers()).await;
    let spec = rig.dir.path().join("rollout.json");
    std::fs::write(&spec, rig.spec(json!([{"setWeight": 20}, {"approval": {}}])).to_string()).expect("spec written");
    let job = |args: &[&str], access_token: Option<&str>| {
        let mut cmd = azure_pipelines_step(&rig, &idp, &format!("{}/ado/oidctoken", idp.base));
        cmd.args(args).env_remove("SYSTEM_ACCESSTOKEN");
        if let Some(t) = access_token {
            cmd.env("SYSTEM_ACCESSTOKEN", t);
        }
        cmd.output()
    };
    let ok = |out: std::process::Output| {
        assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    };
    let token = Some(oidc::ADO_JOB_TOKEN);
    ok(job(&["start", spec.to_str().expect("utf-8"), "--id", "ado-run-1"], token).await.expect("runs"));
    ok(job(&["watch", "ado-run-1", "--until-approval"], token).await.expect("runs"));
    let minted = idp.job_tokens.lock().expect("job tokens").len();
    assert!(minted >= 3, "a fresh assertion for each token (start, then each poll of the follow), got {minted}");
    assert!(idp.browser.grants().iter().all(|g| g == "client_credentials"), "{:?}", idp.browser.grants());
    let body = wait_phase(&rig, &idp, "ado-run-1", "AwaitingApproval").await;
    assert_eq!(body["createdBy"], oidc::ADO_CLIENT, "the connection's app, by its client id");
    ok(job(&["report-failure", "ado-run-1", "--stage", "smoke-test"], token).await.expect("runs"));
    wait_phase(&rig, &idp, "ado-run-1", "RolledBack").await;
    // Not mapped into the step: named, with the line that maps it, and nothing is asked of anyone.
    let before = idp.job_tokens.lock().expect("job tokens").len();
    let out = job(&["status", "ado-run-1"], None).await.expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("SYSTEM_ACCESSTOKEN: $(System.AccessToken)"), "{stderr}");
    assert_eq!(idp.job_tokens.lock().expect("job tokens").len(), before);
    // A job token Azure DevOps does not know is refused there, and the CLI says by whom.
    let out = job(&["status", "ado-run-1"], Some("someone-elses-token")).await.expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("OIDC token service answered HTTP 401"), "{stderr}");
    assert!(!stderr.contains("someone-elses-token"), "{stderr}");
}

/// Azure DevOps' OIDC service as a hostile peer: one that answers text that
/// is no token, one that answers without end, one that never answers. Each
/// call fails on its own (the endless answer cut at the cap, the silent one
/// at the 30 s timeout), saying which service failed, and no token is sent
/// to Entra ID or Sluice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_pipelines_sign_in_gives_up_on_a_lying_endless_or_silent_oidc_service() {
    use axum::routing::post;
    let idp = Provider::start().await;
    let rig = Rig::start_with_issuers(idp.issuers()).await;
    let endless = || {
        let chunk = axum::body::Bytes::from(vec![b'{'; 64 * 1024]);
        axum::body::Body::from_stream(futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone())))
    };
    let app = axum::Router::new()
        .route("/lies", post(|| async { r#"{"oidcToken": 7}"# }))
        .route("/endless", post(move || async move { endless() }))
        .route("/silent", post(std::future::pending::<&'static str>));
    let listener = tokio::net::TcpListener::bind(common::loopback()).await.expect("bind");
    let peer = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let job = |path: &str| {
        azure_pipelines_step(&rig, &idp, &format!("{peer}{path}"))
            .args(["status", "ado-run-1"])
            .env("SYSTEM_ACCESSTOKEN", oidc::ADO_JOB_TOKEN)
            .output()
    };
    let started = std::time::Instant::now();
    let (lies, endless, silent) = tokio::join!(job("/lies"), job("/endless"), job("/silent"));
    let took = started.elapsed();
    for (what, out, says) in
        [("lies", lies, "not the JSON expected"), ("endless", endless, "longer than"), ("silent", silent, "cannot be reached")]
    {
        let out = out.expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: {stderr}");
        assert!(stderr.contains("Azure DevOps") && stderr.contains(says), "{what}: {stderr}");
    }
    assert!(took < std::time::Duration::from_secs(60), "the silent peer held the CLI {took:?}");
    assert!(idp.browser.grants().is_empty(), "nothing reached Entra ID: {:?}", idp.browser.grants());
}
