//! A local OpenID Connect provider: RSA keys made for this run by the
//! `openssl` command (so the tokens are signed by another implementation
//! than the one that checks them), discovery documents and key sets as
//! Entra ID (`/{tenant}/v2.0/.well-known/openid-configuration`, per
//! learn.microsoft.com/entra/identity-platform/access-tokens) and GitHub
//! Actions (`/.well-known/openid-configuration`, per
//! docs.github.com/en/actions/reference/security/oidc) publish them, and
//! tokens minted for people, pipelines and action groups. A browser signs
//! in at its `/{tenant}/oauth2/v2.0/authorize`, `/token` and `/logout` as
//! Entra ID's v2.0 endpoints answer a single-page app
//! (learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow:
//! PKCE with S256, the code in the fragment for `response_mode=fragment`,
//! CORS on the token endpoint, refresh tokens for `offline_access`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

use sluice::ports::identity::IssuerConfig;

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT: &str = "0f4a1c2e-1111-2222-3333-444455556666";
pub const GITHUB_AUDIENCE: &str = "api://sluice-tests";
pub const KID: &str = "run-key-1";
/// An Azure Pipelines service connection (workload identity federation): its id, its app's client id.
pub const ADO_CONNECTION: &str = "5f1d2c3b-aaaa-4bbb-8ccc-000000000001";
pub const ADO_CLIENT: &str = "9a8b7c6d-aaaa-4bbb-8ccc-000000000002";
/// The job's `System.AccessToken`.
pub const ADO_JOB_TOKEN: &str = "job-access-token-not-a-jwt";

/// The provider, running.
pub struct Provider {
    pub base: String,
    /// The key it publishes.
    pub key: PathBuf,
    /// A key it does not publish (a forger's).
    pub stranger: PathBuf,
    /// How many times a key set was fetched.
    pub key_fetches: Arc<AtomicUsize>,
    /// The browser sign-in: who signs in next, and what the token endpoint did.
    pub browser: Arc<Browser>,
    /// OIDC tokens an Azure Pipelines job was given.
    pub job_tokens: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// A person, as the sign-in page would sign them in.
#[derive(Clone, Debug)]
pub struct Person {
    pub oid: String,
    pub upn: String,
    pub roles: Vec<String>,
}

/// The provider's side of browser sign-ins.
#[derive(Default)]
pub struct Browser {
    /// Who the authorize endpoint signs in (nobody: it answers 400).
    pub person: Mutex<Option<Person>>,
    /// The next access token is already expired (past the verifier's skew).
    pub expire_next: AtomicBool,
    /// Grants answered, by `grant_type`, and sign-outs.
    pub grants: Mutex<Vec<String>>,
    /// Codes issued: code → (PKCE challenge, redirect URI, person).
    codes: Mutex<HashMap<String, (String, String, Person)>>,
    /// Refresh tokens issued → person.
    refresh: Mutex<HashMap<String, Person>>,
}

impl Browser {
    pub fn sign_in_as(&self, oid: &str, upn: &str, roles: &[&str]) {
        let person = Person { oid: oid.into(), upn: upn.into(), roles: roles.iter().map(|r| r.to_string()).collect() };
        *self.person.lock().expect("person") = Some(person);
    }

    pub fn grants(&self) -> Vec<String> {
        self.grants.lock().expect("grants").clone()
    }
}

fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs (installed by scripts/test from Debian's openssl package)");
    if let Some(bytes) = input {
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(bytes).expect("written");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("openssl ends");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn new_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path.to_str().expect("utf-8")], None);
    path
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The key's public half as a JWK.
fn jwk(key: &Path, kid: &str) -> Value {
    let out = String::from_utf8(openssl(&["rsa", "-in", key.to_str().expect("utf-8"), "-noout", "-modulus"], None)).expect("text");
    let hex = out.trim().trim_start_matches("Modulus=");
    let n: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
    json!({"kty": "RSA", "use": "sig", "kid": kid, "n": b64(&n), "e": "AQAB"})
}

/// A JWT with `header` and `claims`, signed RS256 by `key` (any other `alg` in the header is kept as written).
pub fn sign(key: &Path, header: &Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = openssl(&["dgst", "-sha256", "-sign", key.to_str().expect("utf-8")], Some(input.as_bytes()));
    format!("{input}.{}", b64(&signature))
}

#[derive(Clone)]
struct Published {
    base: String,
    keys: Value,
    fetches: Arc<AtomicUsize>,
    key: PathBuf,
    browser: Arc<Browser>,
    job_tokens: Arc<Mutex<Vec<String>>>,
}

impl Provider {
    pub async fn start() -> Provider {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = new_key(dir.path(), "issuer.pem");
        let stranger = new_key(dir.path(), "stranger.pem");
        let listener = tokio::net::TcpListener::bind(super::loopback()).await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let key_fetches = Arc::new(AtomicUsize::new(0));
        let browser = Arc::new(Browser::default());
        let job_tokens = Arc::new(Mutex::new(Vec::new()));
        let state = Published {
            job_tokens: job_tokens.clone(),
            base: base.clone(),
            keys: json!({"keys": [jwk(&key, KID)]}),
            fetches: key_fetches.clone(),
            key: key.clone(),
            browser: browser.clone(),
        };
        let app = Router::new()
            .route(&format!("/{TENANT}/v2.0/.well-known/openid-configuration"), get(entra_discovery))
            .route("/github/.well-known/openid-configuration", get(github_discovery))
            .route("/keys", get(keys))
            .route(&format!("/{TENANT}/oauth2/v2.0/authorize"), get(authorize))
            .route(&format!("/{TENANT}/oauth2/v2.0/token"), post(token_grant))
            .route(&format!("/{TENANT}/oauth2/v2.0/logout"), get(logout))
            .route("/ado/oidctoken", post(ado_oidc_token))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Provider { base, key, stranger, key_fetches, browser, job_tokens, _dir: dir }
    }

    pub fn entra_issuer(&self) -> String {
        format!("{}/{TENANT}/v2.0", self.base)
    }

    pub fn github_issuer(&self) -> String {
        format!("{}/github", self.base)
    }

    /// What a deployment with both issuers configures; the rule gives contoso/orders' production environment Operator.
    pub fn issuers(&self) -> Vec<IssuerConfig> {
        let rules = sluice::domain::access::SubjectRule::parse_list("repo:contoso/orders:environment:production=Operator").expect("rules");
        vec![IssuerConfig::entra(&self.base, TENANT, CLIENT), IssuerConfig::github(&self.github_issuer(), GITHUB_AUDIENCE, rules)]
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    /// An Entra v2.0 token's claims for a signed-in person (delegated: it has `scp`).
    pub fn person_claims(&self, oid: &str, upn: &str, roles: &[&str]) -> Value {
        let now = Self::now();
        json!({"iss": self.entra_issuer(), "aud": CLIENT, "tid": TENANT, "oid": oid, "sub": format!("pairwise-{oid}"),
               "preferred_username": upn, "name": upn, "scp": "access_as_user", "roles": roles, "azp": "cli-app",
               "iat": now, "nbf": now - 5, "exp": now + 3600, "ver": "2.0"})
    }

    /// An app-only Entra token's claims (an action group, a service connection).
    pub fn app_claims(&self, oid: &str, app_id: &str, roles: &[&str]) -> Value {
        let now = Self::now();
        json!({"iss": self.entra_issuer(), "aud": CLIENT, "tid": TENANT, "oid": oid, "sub": oid, "azp": app_id,
               "idtyp": "app", "roles": roles, "iat": now, "nbf": now - 5, "exp": now + 3600, "ver": "2.0"})
    }

    /// A GitHub Actions token's claims for a job in `environment`.
    pub fn github_claims(&self, repository: &str, environment: &str) -> Value {
        let now = Self::now();
        json!({"iss": self.github_issuer(), "aud": GITHUB_AUDIENCE,
               "sub": format!("repo:{repository}:environment:{environment}"), "repository": repository,
               "environment": environment, "ref": "refs/heads/main", "iat": now, "nbf": now - 5, "exp": now + 300})
    }

    /// Signed by the published key.
    pub fn token(&self, claims: &Value) -> String {
        sign(&self.key, &json!({"alg": "RS256", "typ": "JWT", "kid": KID}), claims)
    }

    /// A person's token.
    pub fn person(&self, oid: &str, upn: &str, roles: &[&str]) -> String {
        self.token(&self.person_claims(oid, upn, roles))
    }
}

async fn entra_discovery(State(p): State<Published>) -> Json<Value> {
    Json(json!({"issuer": format!("{}/{TENANT}/v2.0", p.base), "jwks_uri": format!("{}/keys", p.base),
                "id_token_signing_alg_values_supported": ["RS256"]}))
}

async fn github_discovery(State(p): State<Published>) -> Json<Value> {
    Json(json!({"issuer": format!("{}/github", p.base), "jwks_uri": format!("{}/keys", p.base),
                "id_token_signing_alg_values_supported": ["RS256"]}))
}

async fn keys(State(p): State<Published>) -> Json<Value> {
    p.fetches.fetch_add(1, Ordering::Relaxed);
    Json(p.keys)
}

fn bad_request(error: &str, why: &str) -> Response {
    let mut r = (StatusCode::BAD_REQUEST, Json(json!({"error": error, "error_description": why}))).into_response();
    r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, header::HeaderValue::from_static("*"));
    r
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to.to_string())]).into_response()
}

/// Signs in whoever the test named and sends the browser back with a code
/// in the fragment; anything but a public client's PKCE request is a 400.
async fn authorize(State(p): State<Published>, Query(q): Query<HashMap<String, String>>) -> Response {
    let field = |k: &str| q.get(k).cloned().unwrap_or_default();
    if field("client_id") != CLIENT || field("response_type") != "code" || field("code_challenge_method") != "S256" {
        return bad_request("invalid_request", "a public client's code flow with PKCE (S256) is expected");
    }
    if field("response_mode") != "fragment" || !field("scope").split(' ').any(|s| s == format!("api://{CLIENT}/access_as_user")) {
        return bad_request("invalid_request", "Sluice's page asks for its scope, with the answer in the fragment");
    }
    let Some(person) = p.browser.person.lock().expect("person").clone() else {
        return bad_request("access_denied", "nobody is signed in at the provider");
    };
    let code = uuid::Uuid::new_v4().to_string();
    p.browser.codes.lock().expect("codes").insert(code.clone(), (field("code_challenge"), field("redirect_uri"), person));
    redirect(&format!("{}#code={code}&state={}", field("redirect_uri"), field("state")))
}

/// The token endpoint: a code with its PKCE verifier, or a refresh token.
async fn token_grant(State(p): State<Published>, body: axum::body::Bytes) -> Response {
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    let grant = field("grant_type");
    p.browser.grants.lock().expect("grants").push(grant.clone());
    if grant == "client_credentials" {
        return service_connection_grant(&p, &form).await;
    }
    if field("client_id") != CLIENT {
        return bad_request("invalid_client", "unknown client");
    }
    let person = match grant.as_str() {
        "authorization_code" => {
            let Some((challenge, redirect_uri, person)) = p.browser.codes.lock().expect("codes").remove(&field("code")) else {
                return bad_request("invalid_grant", "the code is unknown or used");
            };
            let digest = <sha2::Sha256 as sha2::Digest>::digest(field("code_verifier").as_bytes());
            if b64(&digest) != challenge || redirect_uri != field("redirect_uri") {
                return bad_request("invalid_grant", "the code verifier or redirect URI does not match");
            }
            person
        }
        "refresh_token" => match p.browser.refresh.lock().expect("refresh").get(&field("refresh_token")).cloned() {
            Some(person) => person,
            None => return bad_request("invalid_grant", "the refresh token is unknown"),
        },
        _ => return bad_request("unsupported_grant_type", "only authorization_code and refresh_token"),
    };
    let now = chrono::Utc::now().timestamp();
    let roles: Vec<&str> = person.roles.iter().map(String::as_str).collect();
    let mut claims = json!({"iss": format!("{}/{TENANT}/v2.0", p.base), "aud": CLIENT, "tid": TENANT, "oid": person.oid,
        "sub": format!("pairwise-{}", person.oid), "preferred_username": person.upn, "name": person.upn, "scp": "access_as_user",
        "roles": roles, "azp": CLIENT, "iat": now, "nbf": now - 5, "exp": now + 3600, "ver": "2.0"});
    if p.browser.expire_next.swap(false, Ordering::SeqCst) {
        claims["nbf"] = json!(now - 900);
        claims["exp"] = json!(now - 600);
    }
    let key = p.key.clone();
    let access =
        tokio::task::spawn_blocking(move || sign(&key, &json!({"alg": "RS256", "typ": "JWT", "kid": KID}), &claims)).await.expect("signed");
    let refresh = uuid::Uuid::new_v4().to_string();
    p.browser.refresh.lock().expect("refresh").insert(refresh.clone(), person);
    let mut r = Json(json!({"token_type": "Bearer", "access_token": access, "expires_in": 3600, "refresh_token": refresh,
                            "scope": format!("api://{CLIENT}/access_as_user")}))
    .into_response();
    r.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, header::HeaderValue::from_static("*"));
    r
}

/// Ends the session and goes back where the page asked.
async fn logout(State(p): State<Published>, Query(q): Query<HashMap<String, String>>) -> Response {
    p.browser.grants.lock().expect("grants").push("logout".into());
    match q.get("post_logout_redirect_uri") {
        Some(to) => redirect(to),
        None => bad_request("invalid_request", "post_logout_redirect_uri"),
    }
}

/// Azure DevOps' OIDC token service as Microsoft's clients call it (azure-identity's
/// `AzurePipelinesCredential`): `POST {System.OidcRequestUri}?api-version=7.1&serviceConnectionId=ID`,
/// `Authorization: Bearer {System.AccessToken}`, no body; `{"oidcToken": …}`, a new one each time.
async fn ado_oidc_token(State(p): State<Published>, Query(q): Query<HashMap<String, String>>, headers: axum::http::HeaderMap) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if auth != format!("Bearer {ADO_JOB_TOKEN}") {
        // Azure DevOps answers a browser's sign-in redirect unless told not to.
        return match headers.get("x-tfs-fedauthredirect").and_then(|v| v.to_str().ok()) {
            Some("Suppress") => (StatusCode::UNAUTHORIZED, "the job's access token").into_response(),
            _ => (StatusCode::FOUND, [(header::LOCATION, "https://spsprodweu5.vssps.visualstudio.com/_signin")]).into_response(),
        };
    }
    if q.get("api-version").map(String::as_str) != Some("7.1") || q.get("serviceConnectionId").map(String::as_str) != Some(ADO_CONNECTION) {
        return (StatusCode::BAD_REQUEST, format!("api-version and serviceConnectionId: {q:?}")).into_response();
    }
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": "https://vstoken.dev.azure.com/contoso-org-id", "aud": "api://AzureADTokenExchange",
        "sub": "sc://contoso/orders/orders-prod", "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "nbf": now, "exp": now + 600});
    let key = p.key.clone();
    let token = tokio::task::spawn_blocking(move || sign(&key, &json!({"alg": "RS256", "typ": "JWT"}), &claims)).await.expect("signed");
    p.job_tokens.lock().expect("job tokens").push(token.clone());
    Json(json!({"oidcToken": token})).into_response()
}

/// Entra's client credentials grant with a federated assertion: the service connection's app,
/// proving itself with a job token the OIDC service issued, gets an app token for Sluice with the
/// role assigned to it. It lives a minute, so a caller that keeps it five minutes short of its end
/// mints one for every call.
async fn service_connection_grant(p: &Published, form: &HashMap<String, String>) -> Response {
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    if field("client_id") != ADO_CLIENT {
        return bad_request("invalid_client", "unknown client");
    }
    if field("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
        return bad_request("invalid_request", "client_assertion_type");
    }
    if !p.job_tokens.lock().expect("job tokens").contains(&field("client_assertion")) {
        return bad_request("invalid_client", "the assertion is no token Azure DevOps issued");
    }
    if field("scope") != format!("{CLIENT}/.default") {
        return bad_request("invalid_scope", "scope");
    }
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": format!("{}/{TENANT}/v2.0", p.base), "aud": CLIENT, "tid": TENANT, "oid": "oid-orders-prod-connection",
        "sub": "oid-orders-prod-connection", "azp": ADO_CLIENT, "idtyp": "app", "roles": ["Sluice.Operator"],
        "iat": now, "nbf": now - 5, "exp": now + 60, "ver": "2.0"});
    let key = p.key.clone();
    let access =
        tokio::task::spawn_blocking(move || sign(&key, &json!({"alg": "RS256", "typ": "JWT", "kid": KID}), &claims)).await.expect("signed");
    Json(json!({"token_type": "Bearer", "access_token": access, "expires_in": 60})).into_response()
}
