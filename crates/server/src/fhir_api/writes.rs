//! create, update, delete (plain and conditional).

use std::sync::Arc;

use auth::Interaction;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use oauth::access::Access;
use serde_json::Value;
use store::{EntryResult, RestWrite, RestWriteKind};

use super::{guard, known_type, possible_id};
use crate::error::ApiError;
use crate::request::{if_match, FhirBody, Prefer};
use crate::response;
use crate::AppState;

pub async fn create(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path(rtype): Path<String>,
    body: FhirBody,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    if rtype == "Subscription" {
        check_type(&body.value, &rtype)?;
        return super::subscriptions::create(&state, &access, &body.value).await;
    }
    server_written(&rtype)?;
    check_type(&body.value, &rtype)?;
    let restriction = guard::restriction(&access, &rtype, Interaction::Create)?;
    guard::content(&restriction, &rtype, &body.value)?;
    if body.headers.contains_key("if-none-exist") {
        guard::unrestricted(&restriction, "a conditional create")?;
    }
    let if_none_exist = if_none_exist(&body.headers, &rtype);
    let prefer = Prefer::from_headers(&body.headers);
    // If-Match goes to the store, which refuses it on a create as it does in a Bundle entry.
    let if_match = if_match(&body.headers)?;
    let result = state
        .store
        .rest_write(RestWrite { kind: RestWriteKind::Create { resource: body.value }, if_none_exist, if_match })
        .await?;
    Ok(written(&state, result, &prefer))
}

pub async fn update(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path((rtype, id)): Path<(String, String)>,
    body: FhirBody,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    server_written(&rtype)?;
    check_type(&body.value, &rtype)?;
    let restriction = guard::restriction(&access, &rtype, Interaction::Update)?;
    // An existing resource must be one the caller may change; a new one needs create permission.
    if possible_id(&rtype, &id).is_ok() && state.store.read(&rtype, &id).await? != store::ReadOutcome::NotFound {
        if !state.store.visible(&rtype, &id, &restriction).await? {
            return Err(ApiError::not_found(format!("{rtype}/{id} is not known")));
        }
    } else {
        guard::restriction(&access, &rtype, Interaction::Create)?;
    }
    guard::content(&restriction, &rtype, &body.value)?;
    // The body's id is checked against the URL by the store, by the same rule as for a Bundle
    // entry (missing or different: 400).
    let prefer = Prefer::from_headers(&body.headers);
    let if_match = if_match(&body.headers)?;
    let result = state
        .store
        .rest_write(RestWrite {
            kind: RestWriteKind::Update { url: format!("{rtype}/{id}"), resource: body.value },
            if_none_exist: if_none_exist(&body.headers, &rtype),
            if_match,
        })
        .await?;
    Ok(written(&state, result, &prefer))
}

pub async fn conditional_update(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
    body: FhirBody,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    server_written(&rtype)?;
    check_type(&body.value, &rtype)?;
    let restriction = guard::restriction(&access, &rtype, Interaction::Update)?;
    guard::unrestricted(&restriction, "a conditional update")?;
    let query =
        query.filter(|q| !q.is_empty()).ok_or_else(|| ApiError::bad_request("PUT on a type needs search criteria"))?;
    let prefer = Prefer::from_headers(&body.headers);
    let if_match = if_match(&body.headers)?;
    let result = state
        .store
        .rest_write(RestWrite {
            kind: RestWriteKind::Update { url: format!("{rtype}?{query}"), resource: body.value },
            if_none_exist: if_none_exist(&body.headers, &rtype),
            if_match,
        })
        .await?;
    Ok(written(&state, result, &prefer))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    if rtype == "Subscription" {
        no_body(&body)?;
        possible_id(&rtype, &id)?;
        return super::subscriptions::delete(&state, &access, &id).await;
    }
    server_written(&rtype)?;
    no_body(&body)?;
    possible_id(&rtype, &id)?;
    let restriction = guard::restriction(&access, &rtype, Interaction::Delete)?;
    if !state.store.visible(&rtype, &id, &restriction).await?
        && state.store.read(&rtype, &id).await? != store::ReadOutcome::NotFound
    {
        return Err(ApiError::not_found(format!("{rtype}/{id} is not known")));
    }
    delete_url(&state, &rtype, format!("{rtype}/{id}"), &headers).await
}

pub async fn conditional_delete(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    server_written(&rtype)?;
    no_body(&body)?;
    let restriction = guard::restriction(&access, &rtype, Interaction::Delete)?;
    guard::unrestricted(&restriction, "a conditional delete")?;
    let query = query
        .filter(|q| !q.is_empty())
        .ok_or_else(|| ApiError::bad_request("DELETE on a type needs search criteria"))?;
    delete_url(&state, &rtype, format!("{rtype}?{query}"), &headers).await
}

async fn delete_url(state: &AppState, rtype: &str, url: String, headers: &HeaderMap) -> Result<Response, ApiError> {
    let result = state
        .store
        .rest_write(RestWrite {
            kind: RestWriteKind::Delete { url },
            if_none_exist: if_none_exist(headers, rtype),
            if_match: if_match(headers)?,
        })
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let (Some(version), Some(lu)) = (result.version, result.last_updated_ms) {
        response::version_headers(response.headers_mut(), version, lu);
    }
    Ok(response)
}

/// `If-None-Exist: [Type?]query` as the store's `ifNoneExist` (the store refuses it on anything
/// but a create, as for a Bundle entry).
fn if_none_exist(headers: &HeaderMap, rtype: &str) -> Option<String> {
    let value = headers.get("if-none-exist")?.to_str().unwrap_or_default();
    let query = value.strip_prefix(rtype).and_then(|rest| rest.strip_prefix('?')).unwrap_or(value);
    Some(query.to_string())
}

/// A DELETE carries no body: one that does is refused (as a Bundle entry's resource on a DELETE
/// is), not silently ignored.
fn no_body(body: &Bytes) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(())
    } else {
        Err(ApiError::bad_request("a DELETE carries no body"))
    }
}

/// The audit trail is written by the server alone; subscriptions have their own create and
/// delete (they are not stored resources, so they have no update, conditional or not).
fn server_written(rtype: &str) -> Result<(), ApiError> {
    if rtype == "Subscription" {
        return Err(super::subscriptions::update_refused());
    }
    if rtype == "AuditEvent" {
        Err(guard::forbidden("AuditEvent resources are written by the server; they cannot be created or changed"))
    } else {
        Ok(())
    }
}

fn check_type(body: &Value, rtype: &str) -> Result<(), ApiError> {
    let body_type = body.get("resourceType").and_then(Value::as_str).unwrap_or_default();
    if body_type == rtype {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("resourceType '{body_type}' does not match the URL's type {rtype}")))
    }
}

fn written(state: &AppState, result: EntryResult, prefer: &Prefer) -> Response {
    let status = if result.status.starts_with("201") { StatusCode::CREATED } else { StatusCode::OK };
    match result.resource {
        Some(stored) => response::written(
            status,
            stored,
            &state.config.base_url,
            prefer,
            status == StatusCode::CREATED || result.location.is_some(),
        ),
        None => {
            let mut r = status.into_response();
            if let Some(location) = result.location {
                if let Ok(v) = header::HeaderValue::from_str(&format!("{}/{location}", state.config.base_url)) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
            }
            r
        }
    }
}
