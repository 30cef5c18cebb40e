//! Link's HTTP API (`portico link serve`): handlers parse, call the `link` crate and map the
//! result. App calls carry `Authorization: Bearer <secret key>`; errors are JSON
//! `{"error", "error_description"}`; the browser-facing connect and callback routes answer with
//! redirects or readable pages.

mod connect;
mod connections;
mod directory;

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use link::ids::AppId;
use link::{Link, LinkError};
use serde_json::{json, Value};
use tower_http::trace::TraceLayer;

/// Link's request bodies are small JSON documents.
const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct LinkState {
    pub link: Link,
}

/// The whole Link application.
pub fn router(link: Link) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(directory::ready))
        .route("/link/v1/directory/brands", get(directory::brands))
        .route("/link/v1/directory/{category}", get(directory::category))
        .route("/link/v1/directory/{category}/search/{term}", get(directory::search))
        .route("/link/v1/connect/{endpoint}", get(connect::connect))
        .route("/link/v1/callback", get(connect::callback))
        .route("/link/v1/token", post(connections::token))
        .route("/link/v1/connections", get(connections::list))
        .route("/link/v1/connections/{id}", get(connections::one).delete(connections::revoke))
        .route("/link/v1/connections/{id}/fetch", post(connections::fetch_connection))
        .route("/link/v1/connections/{id}/fhir/{*path}", get(connections::passthrough))
        .route("/link/v1/persons/{person}/fetch", post(connections::fetch_person))
        .route("/link/v1/jobs/{id}", get(connections::job))
        .route("/link/v1/jobs/{id}/result", get(connections::job_result))
        .fallback(|| async { ApiError(LinkError::not_found("no such Link endpoint")).into_response() })
        .method_not_allowed_fallback(|| async {
            error_json(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "this method is not supported here", None)
        })
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            // The matched route, never the query string (codes and states travel there).
            let route = req.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |p| p.as_str());
            tracing::info_span!("link", method = req.method().as_str(), route)
        }))
        .with_state(LinkState { link })
}

/// Serve Link until `stop` completes.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    link: Link,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(link)).with_graceful_shutdown(stop).await
}

/// A Link error as an HTTP answer.
pub struct ApiError(pub LinkError);

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> ApiError {
        ApiError(e)
    }
}

fn error_json(status: StatusCode, code: &str, description: &str, extra: Option<(&str, Value)>) -> Response {
    let mut body = json!({"error": code, "error_description": description});
    if let Some((k, v)) = extra {
        body[k] = v;
    }
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        if e.is_internal() {
            tracing::error!(error = %e, "Link internal error");
            return error_json(
                StatusCode::INTERNAL_SERVER_ERROR,
                e.code(),
                "internal error; nothing was changed",
                None,
            );
        }
        let text = e.to_string();
        let status = match &e {
            LinkError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            LinkError::NotFound(_) => StatusCode::NOT_FOUND,
            LinkError::BadRequest(_) | LinkError::InvalidGrant(_) => StatusCode::BAD_REQUEST,
            LinkError::Conflict(_) | LinkError::ReauthorizationRequired => StatusCode::CONFLICT,
            LinkError::Transient(_) | LinkError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            LinkError::Gone(_) => StatusCode::GONE,
            LinkError::Portal(_) => StatusCode::BAD_GATEWAY,
            LinkError::Storage(_) | LinkError::Vault(_) | LinkError::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let extra = match &e {
            LinkError::Transient(job) => Some(("transactionId", json!(job))),
            _ => None,
        };
        let mut response = error_json(status, e.code(), &text, extra);
        match &e {
            LinkError::Throttled { retry_after_seconds } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_seconds.to_string()) {
                    response.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            LinkError::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"link\""));
            }
            LinkError::Transient(job) => {
                if let Ok(v) = HeaderValue::from_str(job.as_str()) {
                    response.headers_mut().insert("link-transaction-id", v);
                }
            }
            _ => {}
        }
        response
    }
}

/// The calling app, from `Authorization: Bearer <secret key>`.
pub struct CallingApp(pub AppId);

impl FromRequestParts<LinkState> for CallingApp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &LinkState) -> Result<Self, Self::Rejection> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        Ok(CallingApp(state.link.authenticate_app(key).await?))
    }
}

/// A JSON request body (an empty body is `None`).
pub fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<Option<Value>, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(LinkError::bad_request("the request body is larger than 1 MiB").into());
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if !essence.is_empty() && essence != "application/json" && !essence.ends_with("+json") {
        return Err(LinkError::bad_request(format!("the body must be JSON (got {essence})")).into());
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| LinkError::bad_request(format!("the body is not valid JSON: {e}")).into())
}
