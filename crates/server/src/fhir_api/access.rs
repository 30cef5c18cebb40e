//! Every FHIR request passes here twice. On the way in the bearer token is checked once
//! (signature, issuer, audience, expiry, and the grant's liveness) and turned into an
//! [`oauth::Access`] that travels in the request's extensions; a missing or bad token is a 401
//! with `WWW-Authenticate: Bearer` (RFC 6750) and an OperationOutcome. On the way out the
//! interaction is written to the audit trail, denials included.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use oauth::access::Access;
use oauth::Refusal;
use store::AuditRecord;

use crate::error::ApiError;
use crate::AppState;

/// The patient an interaction concerned, when a handler knows it better than the token does.
#[derive(Debug, Clone)]
pub struct AuditPatient(pub String);

pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let access = match token {
        None if state.config.dev_open_access => Ok(state.open_access.clone()),
        None => Err(unauthorized_missing()),
        Some(token) => match state.auth.access_for_token(&token).await {
            Ok(access) => Ok(access),
            Err(e) if e.code == oauth::ErrorCode::InvalidToken => Err(unauthorized(&e.description)),
            Err(e) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", e.description).into_response()),
        },
    };
    let (access, response) = match access {
        Ok(access) => {
            request.extensions_mut().insert(access.clone());
            (Some(access), next.run(request).await)
        }
        Err(response) => (None, response),
    };
    let mut response = response;
    // Health records are for this caller only, now: no browser or proxy may keep a copy (a
    // cached read would outlive a revoked grant).
    response.headers_mut().entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    let patient = response.extensions().get::<AuditPatient>().map(|p| p.0.clone());
    state.audit.record(audit_record(
        &state,
        &method,
        &path,
        query.as_deref(),
        access.as_deref(),
        patient,
        response.status(),
    ));
    response
}

/// What the audit trail keeps of one interaction.
fn audit_record(
    state: &AppState,
    method: &Method,
    path: &str,
    query: Option<&str>,
    access: Option<&Access>,
    patient: Option<String>,
    status: StatusCode,
) -> AuditRecord {
    let segments: Vec<&str> = path.trim_start_matches("/fhir").split('/').filter(|s| !s.is_empty()).collect();
    let (interaction, action) = interaction_of(method, &segments);
    let token = access.and_then(|a| a.token.as_ref());
    let outcome = if status.is_success() {
        0
    } else if status.is_server_error() {
        8
    } else {
        4
    };
    AuditRecord {
        id: 0,
        recorded_ms: store::clock::epoch_ms(state.store.clock().now()),
        interaction: interaction.into(),
        action: action.into(),
        outcome,
        status: i64::from(status.as_u16()),
        user_id: token.and_then(|t| t.grant.user_id.as_ref()).map(|u| u.to_string()),
        fhir_user: token
            .and_then(|t| t.claims.fhir_user.clone())
            .or_else(|| access.and_then(|a| a.user()).and_then(|u| u.fhir_user.clone())),
        client_id: token.map(|t| t.grant.client_id.to_string()),
        grant_id: token.map(|t| t.grant.grant_id.to_string()),
        patient_id: access.and_then(|a| a.patient.clone()).or(patient).or_else(|| match segments.as_slice() {
            // A refused request names its patient only in the path, if at all.
            ["Patient", id, ..] if !id.starts_with('_') && !id.starts_with('$') => Some((*id).to_owned()),
            _ => None,
        }),
        // The export status and file URLs (`/bulk/…`) are not FHIR resources.
        resource_type: segments
            .first()
            .filter(|s| !s.starts_with('_') && !s.starts_with('$') && !path.starts_with("/bulk/"))
            .map(|s| (*s).to_owned()),
        resource_id: segments
            .get(1)
            .filter(|s| !s.starts_with('_') && !s.starts_with('$') && !path.starts_with("/bulk/"))
            .map(|s| (*s).to_owned()),
        detail: detail(&segments, query),
    }
}

/// The REST interaction and AuditEvent action of a request.
fn interaction_of(method: &Method, segments: &[&str]) -> (&'static str, &'static str) {
    match (method.as_str(), segments) {
        ("POST", []) => ("transaction", "E"),
        ("GET" | "POST", [op]) if op.starts_with('$') => ("operation", "E"),
        ("GET" | "POST", [_, op]) if op.starts_with('$') => ("operation", "E"),
        (_, ["bulk", ..]) => ("operation", "R"),
        ("GET", ["_history"]) => ("history-system", "R"),
        ("GET", [_]) => ("search-type", "E"),
        ("POST", [_]) => ("create", "C"),
        ("PUT", [_]) => ("update", "U"),
        ("DELETE", [_]) => ("delete", "D"),
        ("GET", [_, "_history"]) => ("history-type", "R"),
        ("POST", [_, "_search"]) => ("search-type", "E"),
        ("GET", [_, _]) => ("read", "R"),
        ("PUT", [_, _]) => ("update", "U"),
        ("DELETE", [_, _]) => ("delete", "D"),
        ("GET", [_, _, "_history"]) => ("history-instance", "R"),
        ("GET" | "POST", [_, _, op]) if op.starts_with('$') => ("operation", "E"),
        ("GET", [_, _, "_history", _]) => ("vread", "R"),
        _ => ("other", "E"),
    }
}

/// The operation or query, kept for the audit trail (search parameters describe what was looked
/// for; tokens never travel in the query).
fn detail(segments: &[&str], query: Option<&str>) -> Option<String> {
    let op = segments.iter().find(|s| s.starts_with('$')).map(|s| (*s).to_owned());
    match (op, query.filter(|q| !q.is_empty())) {
        (Some(op), Some(q)) => Some(format!("{op}?{}", truncate(q))),
        (Some(op), None) => Some(op),
        (None, Some(q)) => Some(truncate(q)),
        (None, None) => None,
    }
}

fn truncate(q: &str) -> String {
    q.chars().take(500).collect()
}

/// 401 for a request without a token: the challenge names no error (RFC 6750 §3.1).
fn unauthorized_missing() -> Response {
    let mut response = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "login",
        "this FHIR API needs an access token (Authorization: Bearer …); see /.well-known/smart-configuration",
    )
    .into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"portico\""));
    response
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

/// A refusal as an answer: 403 with an OperationOutcome for a missing scope (RFC 6750's
/// `insufficient_scope` in the challenge), 404 for what the caller may not know exists.
pub fn refused(r: Refusal, what: &str) -> ApiError {
    match r {
        Refusal::Scope(why) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", why),
        Refusal::Hidden => ApiError::not_found(format!("{what} is not known")),
    }
}
