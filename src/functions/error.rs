//! The handlers' refusals, each turned into one response in one place:
//! 400 bad input (naming the field), 401 no token, 403 who may not act,
//! 404 unknown, 405, 409 state conflict, 413, 415, 422 invalid spec,
//! 500 a handler that failed, 503 a store or queue that is down. The body is
//! always `{"error": code, "message", "field"?, ...}`.

use serde_json::{json, Map, Value};

use super::HttpResponse;
use crate::domain::ids::InvalidValue;
use crate::domain::rollout::{Refusal, RefusalKind, Rollout};
use crate::domain::spec::Problems;
use crate::ports::store::StoreError;
use crate::shell::engine::EngineError;

/// A request the handler refuses, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code (`invalid_field`, `forbidden`).
    pub code: &'static str,
    /// What is wrong, for a person.
    pub message: String,
    /// The field at fault, when one is.
    pub field: Option<String>,
    /// More to say (`problems`, `phase`, `activeRollout`).
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// Any refusal.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), field: None, extra: Map::new() }
    }

    /// Names the field at fault.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// Adds a key to the body.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// 400: a field of the input is wrong.
    pub fn invalid_field(field: &str, message: impl std::fmt::Display) -> Self {
        ApiError::new(400, "invalid_field", format!("{field}: {message}")).field(field)
    }

    /// 400 from a value that failed its newtype's rule.
    pub fn invalid_value(field: &str, e: &InvalidValue) -> Self {
        ApiError::invalid_field(field, &e.message)
    }

    /// 403: who is acting may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "forbidden", message)
    }

    /// 404: no rollout with this id.
    pub fn no_rollout(id: &str) -> Self {
        ApiError::new(404, "not_found", format!("no rollout with id '{}'", crate::domain::ids::shown(id))).field("id")
    }

    /// 422: the spec has problems, each with its path.
    pub fn invalid_spec(problems: &Problems) -> Self {
        ApiError::new(422, "invalid_spec", format!("the spec has {} problem(s)", problems.len()))
            .with("problems", json!(problems.iter().collect::<Vec<_>>()))
    }

    /// 403 or 409 for a refused request, with where the rollout is.
    pub fn refused(refusal: &Refusal, rollout: &Rollout) -> Self {
        let e = match refusal.kind {
            RefusalKind::Forbidden => ApiError::forbidden(&refusal.reason),
            RefusalKind::Conflict => ApiError::new(409, "not_applied", &refusal.reason),
        };
        e.with("phase", json!(rollout.phase)).with("step", json!(rollout.stage + 1))
    }

    /// The response: one JSON shape for every refusal.
    pub fn response(&self) -> HttpResponse {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.code));
        body.insert("message".into(), json!(self.message));
        if let Some(f) = &self.field {
            body.insert("field".into(), json!(f));
        }
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        let mut response = HttpResponse::json(self.status, &Value::Object(body));
        if self.status == 401 {
            // RFC 6750: a 401 says which scheme would do.
            response.headers.push(("www-authenticate".into(), "Bearer".into()));
        }
        response
    }
}

impl From<ApiError> for HttpResponse {
    fn from(e: ApiError) -> HttpResponse {
        e.response()
    }
}

impl From<&StoreError> for ApiError {
    fn from(e: &StoreError) -> ApiError {
        match e {
            StoreError::NotFound(id) => ApiError::no_rollout(id),
            StoreError::TargetBusy { target, active } => ApiError::new(
                409,
                "target_busy",
                format!("target '{target}' already has an active rollout: {active}; wait for it to finish or abort it"),
            )
            .with("activeRollout", json!(active)),
            StoreError::AlreadyExists(id) => ApiError::new(409, "id_taken", format!("a rollout with id '{id}' already exists")).field("id"),
            other => ApiError::new(503, "store_unavailable", other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::from(&e)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::NotFound(id) => ApiError::no_rollout(&id),
            EngineError::Store(s) => ApiError::from(&s),
            EngineError::Invalid(m) => ApiError::new(400, "invalid", m),
            other => ApiError::new(503, "unavailable", other.to_string()),
        }
    }
}
