//! Type-level search by GET and by POST `_search`.

use axum::body::Bytes;
use std::sync::Arc;

use auth::Interaction;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use fhir::search::{self, Handling};
use oauth::access::Access;

use super::access::AuditPatient;
use super::{bundles, guard, known_type};
use crate::error::ApiError;
use crate::request::{query_pairs, Prefer};
use crate::AppState;

pub async fn search_get(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    let pairs = query_pairs(query.as_deref());
    run(&state, &access, &rtype, pairs, &headers).await
}

/// `POST [type]/_search` with an `application/x-www-form-urlencoded` body (query string
/// parameters, if any, are added to the body's).
pub async fn search_post(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path((rtype, op)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    if rtype == "Patient" && op == "$member-match" {
        return super::member_match::member_match(&state, &access, &body).await;
    }
    if op != "_search" {
        return Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            format!("POST is not allowed on {rtype}/{op}"),
        ));
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if !body.is_empty() && !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "POST _search takes an application/x-www-form-urlencoded body",
        ));
    }
    let mut pairs = query_pairs(query.as_deref());
    pairs.extend(form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())));
    run(&state, &access, &rtype, pairs, &headers).await
}

async fn run(
    state: &AppState,
    access: &Access,
    rtype: &str,
    pairs: Vec<(String, String)>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if rtype == "AuditEvent" {
        return super::audit_events::search(state, access, &pairs).await;
    }
    if rtype == "Subscription" {
        return super::subscriptions::search(state, access).await;
    }
    let restriction = guard::restriction(access, rtype, Interaction::Search)?;
    let prefer = Prefer::from_headers(headers);
    let handling = if prefer.lenient { Handling::Lenient } else { Handling::Strict };
    let request = search::parse(fhir::Registry::r4(), rtype, &pairs, handling)?;
    // The Bundle's links repeat the request's own parameters, so they are part of the key.
    let answer_key = format!("{pairs:?}");
    let text = state
        .store
        .search_rendered(&request, &restriction, &answer_key, |page| bundles::searchset(state, &request, &pairs, page))
        .await?;
    let mut response = crate::response::fhir_json(StatusCode::OK, text);
    // The patient searched for, for the audit trail.
    let patient = pairs.iter().find_map(|(k, v)| match k.as_str() {
        "patient" | "subject" | "_id" if rtype == "Patient" || k != "_id" => {
            Some(v.trim_start_matches("Patient/").to_owned()).filter(|p| !p.contains([',', '/', '|']))
        }
        _ => None,
    });
    if let Some(p) = patient {
        response.extensions_mut().insert(AuditPatient(p));
    }
    Ok(response)
}
