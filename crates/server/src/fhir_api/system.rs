//! System level: transaction/batch Bundles and system history.

use std::sync::Arc;

use auth::Interaction;
use axum::extract::{Extension, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use fhir::outcome::operation_outcome;
use oauth::access::Access;
use serde_json::{json, Value};
use store::clock::instant_text;

use super::{bundles, guard};
use crate::error::ApiError;
use crate::request::FhirBody;
use crate::response::{fhir_json, BundleWriter};
use crate::AppState;

pub async fn bundle(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    body: FhirBody,
) -> Result<Response, ApiError> {
    if body.value.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(ApiError::bad_request("POST to the base URL takes a transaction or batch Bundle"));
    }
    let response_type = match body.value.get("type").and_then(Value::as_str) {
        Some("transaction") => "transaction-response",
        Some("batch") => "batch-response",
        _ => return Err(ApiError::bad_request("Bundle.type must be transaction or batch")),
    };
    let mut refused = refused_entries(&state, &access, &body.value).await?;
    if response_type == "transaction-response" {
        // All or nothing: one refused entry refuses the Bundle, naming the entry.
        if let Some((index, error)) = refused.into_iter().next() {
            return Err(in_entry(index, error));
        }
        refused = Vec::new();
    }
    let skip: Vec<usize> = refused.iter().map(|(i, _)| *i).collect();
    let result = state.store.process_bundle(&body.value, &skip).await?;
    let base = &state.config.base_url;
    let mut out = BundleWriter::new(response_type, None, &[]);
    let mut refused = refused.into_iter().peekable();
    for (index, entry) in result.entries.into_iter().enumerate() {
        if let Some((_, error)) = refused.next_if(|(i, _)| *i == index) {
            out.entry(None, None, &[("response", failed(&error))]);
            continue;
        }
        let mut response = json!({ "status": entry.status });
        if let Some(location) = &entry.location {
            response["location"] = json!(format!("{base}/{location}"));
        }
        if let Some(version) = entry.version {
            response["etag"] = json!(format!("W/\"{version}\""));
        }
        if let Some(lu) = entry.last_updated_ms {
            response["lastModified"] = json!(instant_text(lu));
        }
        let mut entry = entry;
        if let Some(error) = entry.error.take() {
            let etag = response.get("etag").cloned();
            let last_modified = response.get("lastModified").cloned();
            response = failed(&error.into());
            // A stale If-Match: the current version, for a caller who may read it, so an offline
            // client can merge.
            let readable = match &entry.resource {
                Some(r) => match access.restriction(&r.resource_type, Interaction::Read) {
                    Ok(restriction) => state.store.visible(&r.resource_type, &r.id, &restriction).await?,
                    Err(_) => false,
                },
                None => false,
            };
            if readable {
                if let (Some(etag), Some(lm)) = (etag, last_modified) {
                    response["etag"] = etag;
                    response["lastModified"] = lm;
                }
            } else {
                entry.resource = None;
            }
        }
        let full_url = entry.resource.as_ref().map(|r| format!("{base}/{}/{}", r.resource_type, r.id));
        out.entry(full_url.as_deref(), entry.resource.as_ref().map(|r| r.body.as_str()), &[("response", response)]);
    }
    Ok(fhir_json(StatusCode::OK, out.finish()))
}

/// A failed batch entry's `response`: its status and OperationOutcome.
fn failed(error: &ApiError) -> Value {
    json!({
        "status": format!("{} {}", error.status.as_u16(), error.status.canonical_reason().unwrap_or("")),
        "outcome": operation_outcome(&error.issues),
    })
}

/// The error of entry `index`, saying which entry it is.
fn in_entry(index: usize, e: ApiError) -> ApiError {
    ApiError {
        issues: e
            .issues
            .into_iter()
            .map(|mut issue| {
                issue.diagnostics = format!("Bundle.entry[{index}]: {}", issue.diagnostics);
                issue
            })
            .collect(),
        ..e
    }
}

pub async fn history(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let restriction = access.restriction_any(Interaction::Read).map_err(|r| super::access::refused(r, "_history"))?;
    bundles::history(&state, store::HistoryScope::System, query.as_deref(), &restriction).await
}

/// A transaction or batch may only do what its entries could do one by one: the entries the
/// caller may not send, in order, with why (an `Err` only for a storage failure). AuditEvents are
/// written by the server alone, whoever asks. Entries that search or read on the caller's behalf
/// (GET, conditional writes) run inside the store without the caller's restriction, so callers
/// limited to patients, filters or withheld categories may only send plain creates, updates and
/// deletes, each checked like its REST counterpart.
async fn refused_entries(
    state: &AppState,
    access: &Access,
    bundle: &Value,
) -> Result<Vec<(usize, ApiError)>, ApiError> {
    let entries = bundle.get("entry").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let mut refused = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if let Err(e) = check_entry(state, access, entry).await? {
            refused.push((i, e));
        }
    }
    Ok(refused)
}

/// `Ok(Err(why))` when the caller may not send this entry.
async fn check_entry(state: &AppState, access: &Access, entry: &Value) -> Result<Result<(), ApiError>, ApiError> {
    let request = entry.get("request").unwrap_or(&Value::Null);
    let method = request.get("method").and_then(Value::as_str).unwrap_or_default();
    let url = request.get("url").and_then(Value::as_str).unwrap_or_default().trim_start_matches('/');
    let resource = entry.get("resource");
    let (rtype, id) = match url.split('?').next().unwrap_or_default().split_once('/') {
        Some((t, rest)) => (t, Some(rest)),
        None => (url.split('?').next().unwrap_or_default(), None),
    };
    let writes = matches!(method, "POST" | "PUT" | "DELETE");
    let body_type = resource.and_then(|r| r.get("resourceType")).and_then(Value::as_str);
    if writes && (rtype == "Subscription" || body_type == Some("Subscription")) {
        return Ok(Err(guard::forbidden(
            "a Subscription is created with POST [base]/Subscription, not inside a Bundle",
        )));
    }
    if writes && (rtype == "AuditEvent" || body_type == Some("AuditEvent")) {
        return Ok(Err(guard::forbidden(
            "AuditEvent resources are written by the server; they cannot be created or changed",
        )));
    }
    if access.is_unrestricted() {
        return Ok(Ok(()));
    }
    let conditional = url.contains('?') || request.get("ifNoneExist").is_some();
    let interaction = match method {
        "POST" => Interaction::Create,
        "PUT" => Interaction::Update,
        "DELETE" => Interaction::Delete,
        _ => Interaction::Read,
    };
    let restriction = match guard::restriction(access, rtype, interaction) {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    if method == "GET" || conditional {
        return Ok(guard::unrestricted(&restriction, "a GET or conditional entry in a transaction or batch"));
    }
    if let (Some(id), "PUT" | "DELETE") = (id, method) {
        if !state.store.visible(rtype, id, &restriction).await?
            && state.store.read(rtype, id).await? != store::ReadOutcome::NotFound
        {
            return Ok(Err(ApiError::not_found(format!("{rtype}/{id} is not known"))));
        }
    }
    if let Some(resource) = resource {
        return Ok(guard::content(&restriction, rtype, resource));
    }
    Ok(Ok(()))
}
