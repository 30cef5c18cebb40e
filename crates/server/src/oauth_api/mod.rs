//! The SMART / OAuth 2 endpoints under `/auth/` and the discovery documents. Handlers parse the
//! request, call the authorization server (`oauth` crate) and map its answer; OAuth errors become
//! JSON here, in one place.

mod authorize;
mod discovery;
mod endpoints;
mod form;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use oauth::{Challenge, ErrorCode, OAuthError};

use crate::AppState;

pub(crate) use form::{cookie, set_cookie, SESSION_COOKIE};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/smart-configuration", get(discovery::smart_configuration))
        .route("/.well-known/openid-configuration", get(discovery::openid_configuration))
        .route("/auth/jwks", get(discovery::jwks))
        .route("/auth/authorize", get(authorize::authorize_get).post(authorize::authorize_post))
        .route("/auth/signin", get(authorize::signin_page).post(authorize::signin_submit))
        .route("/auth/patient", get(authorize::patient_page).post(authorize::patient_submit))
        .route("/auth/consent", get(authorize::consent_page).post(authorize::consent_submit))
        .route("/auth/token", post(endpoints::token))
        .route("/auth/introspect", post(endpoints::introspect))
        .route("/auth/revoke", post(endpoints::revoke))
        .route("/auth/register", post(endpoints::register))
        .route("/auth/launch", post(endpoints::launch))
}

/// The FHIR-base copies of the discovery documents, nested at `{base}/.well-known`.
pub fn fhir_routes() -> Router<AppState> {
    Router::new()
        .route("/smart-configuration", get(discovery::smart_configuration))
        .route("/openid-configuration", get(discovery::openid_configuration))
}

/// Tokens and errors must never be cached (RFC 6749 §5.1).
pub(crate) fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// JSON with `Cache-Control: no-store`.
pub(crate) fn json_no_store(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let text = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
    let mut response = (status, text).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(response.headers_mut());
    response
}

/// An OAuth error as RFC 6749 §5.2 spells it (and RFC 6750 §3 for bearer tokens).
pub(crate) struct OAuthResponse(pub OAuthError);

impl From<OAuthError> for OAuthResponse {
    fn from(e: OAuthError) -> Self {
        OAuthResponse(e)
    }
}

impl IntoResponse for OAuthResponse {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        let mut response = json_no_store(status, &e.body());
        let challenge = match (e.code, e.challenge) {
            (ErrorCode::InvalidClient, Challenge::Basic) => Some("Basic realm=\"portico\"".to_owned()),
            (ErrorCode::InvalidToken, _) => Some(format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                e.description.replace(['"', '\\'], "'")
            )),
            _ => None,
        };
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}
