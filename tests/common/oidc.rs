//! A local OpenID Connect provider: RSA keys made for this run by the
//! `openssl` command (so the tokens are signed by another implementation
//! than the one that checks them), discovery documents and key sets as
//! Entra ID (`/{tenant}/v2.0/.well-known/openid-configuration`, per
//! learn.microsoft.com/entra/identity-platform/access-tokens) and GitHub
//! Actions (`/.well-known/openid-configuration`, per
//! docs.github.com/en/actions/reference/security/oidc) publish them, and
//! tokens minted for people, pipelines and action groups.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

use sluice::ports::identity::IssuerConfig;

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT: &str = "0f4a1c2e-1111-2222-3333-444455556666";
pub const GITHUB_AUDIENCE: &str = "api://sluice-tests";
pub const KID: &str = "run-key-1";

/// The provider, running.
pub struct Provider {
    pub base: String,
    /// The key it publishes.
    pub key: PathBuf,
    /// A key it does not publish (a forger's).
    pub stranger: PathBuf,
    /// How many times a key set was fetched.
    pub key_fetches: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
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

fn b64(bytes: &[u8]) -> String {
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
}

impl Provider {
    pub async fn start() -> Provider {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = new_key(dir.path(), "issuer.pem");
        let stranger = new_key(dir.path(), "stranger.pem");
        let listener = tokio::net::TcpListener::bind(super::loopback()).await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let key_fetches = Arc::new(AtomicUsize::new(0));
        let state = Published { base: base.clone(), keys: json!({"keys": [jwk(&key, KID)]}), fetches: key_fetches.clone() };
        let app = Router::new()
            .route(&format!("/{TENANT}/v2.0/.well-known/openid-configuration"), get(entra_discovery))
            .route("/github/.well-known/openid-configuration", get(github_discovery))
            .route("/keys", get(keys))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        Provider { base, key, stranger, key_fetches, _dir: dir }
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
