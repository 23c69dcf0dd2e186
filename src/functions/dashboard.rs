//! `dashboard` (HTTP, `GET dashboard/{id?}`): a page that draws a rollout's
//! timeline — canary weight over time, phase bands, measurements and
//! decisions — from the API, refreshing while it runs. People would rather
//! look at a timeline than read logs.

use super::error::ApiError;
use super::{App, HttpRequest, HttpResponse};

const PAGE: &str = include_str!("dashboard.html");

/// Serves the page (the same page lists rollouts or shows one).
pub async fn handle(_app: &App, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    if req.method != "GET" {
        return Err(ApiError::new(405, "method_not_allowed", "the dashboard is read with GET"));
    }
    Ok(HttpResponse::html(PAGE.to_string()))
}
