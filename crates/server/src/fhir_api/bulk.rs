//! Bulk Data Access 2.0 routes: the `$export` kick-offs, the status URL (poll, cancel) and the
//! file downloads. They parse the request, call the `bulk` exporter and map its answer.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bulk::{ExportRequest, JobId, Level, Status};
use fhir::outcome::{operation_outcome, Issue};
use oauth::access::Access;

use crate::error::ApiError;
use crate::response::fhir_json;
use crate::AppState;

fn exporter(state: &AppState) -> Result<&bulk::Exporter, ApiError> {
    state.bulk.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not-supported", "bulk export is turned off on this server")
    })
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The headers every kick-off needs: `Prefer: respond-async`, and an `Accept` a FHIR client sends.
fn check_headers(headers: &HeaderMap) -> Result<fhir::search::Handling, ApiError> {
    let prefer = header_text(headers, header::HeaderName::from_static("prefer"));
    if !bulk::request::respond_async(prefer) {
        return Err(ApiError::bad_request("a bulk export is asynchronous: send Prefer: respond-async"));
    }
    if let Some(accept) = header_text(headers, header::ACCEPT) {
        let fine = accept
            .split(',')
            .map(|a| a.split(';').next().unwrap_or("").trim())
            .any(|a| matches!(a, "application/fhir+json" | "application/json" | "*/*" | "application/*" | ""));
        if !fine {
            return Err(ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "not-supported",
                format!("the kick-off answers in application/fhir+json, not {accept}"),
            ));
        }
    }
    Ok(bulk::request::handling(prefer))
}

fn level_path(level: &Level) -> String {
    match level {
        Level::System => "/$export".into(),
        Level::Patient => "/Patient/$export".into(),
        Level::Group(id) => format!("/Group/{id}/$export"),
    }
}

async fn kick_off(
    state: &AppState,
    access: &Access,
    level: Level,
    request: impl FnOnce(fhir::search::Handling) -> Result<ExportRequest, bulk::BulkError>,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let exporter = exporter(state)?;
    let handling = check_headers(headers)?;
    let parsed = request(handling)?;
    let mut url = format!("{}{}", state.config.base_url.trim_end_matches('/'), level_path(&level));
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    let job = exporter.kick_off(access, level, parsed, url, handling).await?;
    let body = operation_outcome(&[Issue::information(format!("export accepted; poll {}", exporter.status_url(&job)))]);
    let mut response = fhir_json(StatusCode::ACCEPTED, body.to_string());
    if let Ok(v) = HeaderValue::from_str(&exporter.status_url(&job)) {
        response.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    Ok(response)
}

fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn kick_off_get(
    state: &AppState,
    access: &Access,
    level: Level,
    query: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query.as_deref());
    let lvl = level.clone();
    let parse = move |h| ExportRequest::from_pairs(fhir::Registry::r4(), &lvl, &pairs, h);
    kick_off(state, access, level, parse, query.as_deref(), headers).await
}

async fn kick_off_post(
    state: &AppState,
    access: &Access,
    level: Level,
    query: Option<String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if query.as_deref().is_some_and(|q| !q.is_empty()) {
        return Err(ApiError::bad_request("a POST kick-off takes its parameters in the body, not the URL"));
    }
    let value: serde_json::Value = if body.is_empty() {
        serde_json::json!({"resourceType": "Parameters"})
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?
    };
    let lvl = level.clone();
    let parse = move |h| ExportRequest::from_parameters(fhir::Registry::r4(), &lvl, &value, h);
    kick_off(state, access, level, parse, None, headers).await
}

pub async fn system_get(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    kick_off_get(&state, &access, Level::System, query, &headers).await
}

pub async fn system_post(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    kick_off_post(&state, &access, Level::System, query, &headers, body).await
}

pub async fn patient_get(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    kick_off_get(&state, &access, Level::Patient, query, &headers).await
}

pub async fn patient_post(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    kick_off_post(&state, &access, Level::Patient, query, &headers, body).await
}

pub async fn group_get(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    kick_off_get(&state, &access, Level::Group(id), query, &headers).await
}

pub async fn group_post(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    kick_off_post(&state, &access, Level::Group(id), query, &headers, body).await
}

fn job_id(text: &str) -> Result<JobId, ApiError> {
    text.parse::<JobId>().map_err(|_| ApiError::not_found("no such export"))
}

fn retry_after(response: &mut Response, seconds: i64) {
    if let Ok(v) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
}

/// `GET` on the status URL.
pub async fn status(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let exporter = exporter(&state)?;
    match exporter.status(&access, &job_id(&id)?).await? {
        Status::InProgress { progress, retry_after_s } => {
            let mut response = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = HeaderValue::from_str(&progress) {
                response.headers_mut().insert("x-progress", v);
            }
            retry_after(&mut response, retry_after_s);
            Ok(response)
        }
        Status::TooFast { retry_after_s } => {
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                format!("polled too often; wait {retry_after_s} s between status requests"),
            )
            .into_response();
            retry_after(&mut response, retry_after_s);
            Ok(response)
        }
        Status::Complete { manifest, expires_ms } => {
            let mut response = (StatusCode::OK, manifest.to_string()).into_response();
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            if let Some(expires) = expires_ms.and_then(|ms| HeaderValue::from_str(&store::clock::http_date(ms)).ok()) {
                h.insert(header::EXPIRES, expires);
            }
            Ok(response)
        }
        Status::Failed { message } => {
            Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", format!("the export failed: {message}")))
        }
    }
}

/// `DELETE` on the status URL.
pub async fn cancel(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    exporter(&state)?.cancel(&access, &job_id(&id)?).await?;
    let body = operation_outcome(&[Issue::information("the export was cancelled and its files removed")]);
    Ok(fhir_json(StatusCode::ACCEPTED, body.to_string()))
}

/// `GET` on a file URL of a completed export.
pub async fn file(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let download = exporter(&state)?.download(&access, &job_id(&id)?, &name).await?;
    let mut response = Response::new(Body::from_stream(download.stream));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+ndjson"));
    if let Ok(v) = HeaderValue::from_str(&download.size.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    Ok(response)
}
