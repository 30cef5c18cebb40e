//! Who is calling the FHIR API: the bearer token is checked once per request (signature, issuer,
//! audience, expiry, and the grant's liveness) and the result travels in the request's
//! extensions. A token that fails the check is a 401 with `WWW-Authenticate: Bearer
//! error="invalid_token"` and an OperationOutcome; discovery documents and `/metadata` stay public.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::AppState;

/// The verified token of the request, when it carried one.
#[derive(Clone)]
#[allow(dead_code)] // read by enforcement
pub struct Caller(pub Option<oauth::TokenAccess>);

pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let caller = match token {
        None => Caller(None),
        Some(token) => match state.auth.authenticate_bearer(&token).await {
            Ok(access) => Caller(Some(access)),
            Err(e) if e.code == oauth::ErrorCode::InvalidToken => return unauthorized(&e.description),
            Err(e) => {
                return ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", e.description).into_response()
            }
        },
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// 401 with the RFC 6750 challenge and an OperationOutcome saying why.
pub fn unauthorized(why: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "login", format!("the access token is not valid: {why}"))
            .into_response();
    let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{}\"", why.replace(['"', '\\'], "'"));
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}
