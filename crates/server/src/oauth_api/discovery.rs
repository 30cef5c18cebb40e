//! Discovery: SMART configuration, OpenID configuration, JWKS (public, cacheable, CORS-open).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;

fn public_json(body: serde_json::Value, max_age: u32) -> Response {
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&format!("public, max-age={max_age}")) {
        response.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    response
}

pub async fn smart_configuration(State(state): State<AppState>) -> Response {
    public_json(state.auth.smart_configuration(), 300)
}

pub async fn openid_configuration(State(state): State<AppState>) -> Response {
    public_json(state.auth.openid_configuration(), 300)
}

pub async fn jwks(State(state): State<AppState>) -> Response {
    match state.auth.jwks().await {
        // Short: a rotated key must reach verifiers quickly.
        Ok(jwks) => public_json(jwks, 60),
        Err(e) => super::OAuthResponse(e).into_response(),
    }
}
