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
