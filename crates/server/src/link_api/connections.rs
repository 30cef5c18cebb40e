//! Connections, fetches, jobs and the FHIR pass-through.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use link::fetch::FetchRequest;
use link::ids::{ConnectionId, JobId};
use link::jobs::{JobStatus, Target};
use link::LinkError;
use serde_json::{json, Value};

use super::{json_body, ApiError, CallingApp, LinkState};

fn connection_id(text: &str) -> Result<ConnectionId, ApiError> {
    text.parse().map_err(|_| LinkError::not_found(format!("connection {text} is not known")).into())
}

fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse().map_err(|_| LinkError::not_found(format!("job {text} is not known")).into())
}

fn fhir_json(status: StatusCode, value: &Value) -> Response {
    fhir_text(status, value.to_string())
}

fn fhir_text(status: StatusCode, text: String) -> Response {
    let mut r = (status, text).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /link/v1/token {"code": C}`
pub async fn token(
    State(state): State<LinkState>,
    CallingApp(app): CallingApp,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value = json_body(&headers, &body)?.ok_or_else(|| LinkError::bad_request("the body must be {\"code\": …}"))?;
    let code = value.get("code").and_then(Value::as_str).ok_or_else(|| LinkError::bad_request("code is required"))?;
    let view = state.link.redeem_code(&app, code).await?;
    let mut r = axum::Json(view).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `GET /link/v1/connections[?person=P]`
pub async fn list(
    State(state): State<LinkState>,
    CallingApp(app): CallingApp,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let person = query.get("person").map(String::as_str);
    Ok(axum::Json(state.link.connections(&app, person).await?).into_response())
}

/// `GET /link/v1/connections/{id}`
pub async fn one(
    State(state): State<LinkState>,
    CallingApp(app): CallingApp,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = connection_id(&id)?;
    Ok(axum::Json(state.link.connection_view(&app, &id).await?).into_response())
}

/// `DELETE /link/v1/connections/{id}`
pub async fn revoke(
    State(state): State<LinkState>,
    CallingApp(app): CallingApp,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = connection_id(&id)?;
    Ok(axum::Json(state.link.revoke_connection(&app, &id).await?).into_response())
}

fn fetch_request(headers: &HeaderMap, body: &Bytes) -> Result<FetchRequest, ApiError> {
    match json_body(headers, body)? {
        None => Ok(FetchRequest::default()),
        Some(v) => {
            serde_json::from_value(v).map_err(|e| LinkError::bad_request(format!("the fetch request: {e}")).into())
        }
    }
}

fn respond_async(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
}

async fn fetch(
    state: &LinkState,
    app: link::ids::AppId,
    target: Target,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let request = fetch_request(headers, body)?;
    if respond_async(headers) {
        let started = state.link.start_fetch(&app, &target, request, false).await?;
        let mut r = (StatusCode::ACCEPTED, axum::Json(json!({"transactionId": started.job}))).into_response();
        if let Ok(v) = HeaderValue::from_str(started.job.as_str()) {
            r.headers_mut().insert("link-transaction-id", v);
        }
        let location = format!("{}/link/v1/jobs/{}", state.link.config().base_url, started.job);
        if let Ok(v) = HeaderValue::from_str(&location) {
            r.headers_mut().insert(header::CONTENT_LOCATION, v);
        }
        return Ok(r);
    }
    let (job, status, text) = state.link.fetch_now(&app, &target, request).await?;
    let mut r = if status == JobStatus::Failed {
        // Nothing came back: the OperationOutcomes say why.
        let bundle: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let issues: Vec<Value> = bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["resource"]["resourceType"] == "OperationOutcome")
            .flat_map(|e| e["resource"]["issue"].as_array().cloned().unwrap_or_default())
            .collect();
        fhir_json(StatusCode::BAD_GATEWAY, &json!({"resourceType": "OperationOutcome", "issue": issues}))
    } else {
        fhir_text(StatusCode::OK, text)
    };
    if let Ok(v) = HeaderValue::from_str(job.as_str()) {
        r.headers_mut().insert("link-transaction-id", v);
    }
    Ok(r)
}

/// `POST /link/v1/connections/{id}/fetch` (`Prefer: respond-async` for a job)
pub async fn fetch_connection(
    State(state): State<LinkState>,
    CallingApp(app): CallingApp,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = connection_id(&id)?;
    fetch(&state, app, Target::Connection(id), &headers, &body).await
}

/// `POST /link/v1/persons/{person}/fetch`
pub async fn fetch_person(
    State(state): State<LinkState>,
    CallingApp(app): CallingApp,
    Path(person): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if person.is_empty() || person.len() > 256 {
        return Err(LinkError::bad_request("person must be 1 to 256 characters").into());
    }
    fetch(&state, app, Target::Person(person), &headers, &body).await
}

/// `GET /link/v1/jobs/{id}`
pub async fn job(
    State(state): State<LinkState>,
    CallingApp(app): CallingApp,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    let status = state.link.job_status(&app, &id).await?;
    let mut r = axum::Json(status).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `GET /link/v1/jobs/{id}/result`
pub async fn job_result(
    State(state): State<LinkState>,
    CallingApp(app): CallingApp,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    Ok(fhir_text(StatusCode::OK, state.link.job_result(&app, &id).await?))
}

/// `GET /link/v1/connections/{id}/fhir/{type}[/{id}][?params]`
pub async fn passthrough(
    State(state): State<LinkState>,
    CallingApp(app): CallingApp,
    Path((id, path)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let id = connection_id(&id)?;
    let value = state.link.passthrough(&app, &id, &path, query.as_deref()).await?;
    Ok(fhir_json(StatusCode::OK, &value))
}
