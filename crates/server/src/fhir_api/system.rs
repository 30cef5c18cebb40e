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
    check_entries(&state, &access, &body.value).await?;
    let response_type = match body.value.get("type").and_then(Value::as_str) {
        Some("transaction") => "transaction-response",
        Some("batch") => "batch-response",
        _ => return Err(ApiError::bad_request("Bundle.type must be transaction or batch")),
    };
    let result = state.store.process_bundle(&body.value).await?;
    let base = &state.config.base_url;
    let mut out = BundleWriter::new(response_type, None, &[]);
    for entry in result.entries {
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
        if let Some(error) = entry.error {
            let api: ApiError = error.into();
            response["status"] =
                json!(format!("{} {}", api.status.as_u16(), api.status.canonical_reason().unwrap_or("")));
            response["outcome"] = operation_outcome(&api.issues);
        }
        let full_url = entry.resource.as_ref().map(|r| format!("{base}/{}/{}", r.resource_type, r.id));
        out.entry(full_url.as_deref(), entry.resource.as_ref().map(|r| r.body.as_str()), &[("response", response)]);
    }
    Ok(fhir_json(StatusCode::OK, out.finish()))
}

pub async fn history(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let restriction = access.restriction_any(Interaction::Read).map_err(|r| super::access::refused(r, "_history"))?;
    bundles::history(&state, store::HistoryScope::System, query.as_deref(), &restriction).await
}

/// A transaction or batch may only do what its entries could do one by one. Entries that search
/// or read on the caller's behalf (GET, conditional writes) run inside the store without the
/// caller's restriction, so callers limited to patients, filters or withheld categories may only
/// send plain creates, updates and deletes, each checked like its REST counterpart.
async fn check_entries(state: &AppState, access: &Access, bundle: &Value) -> Result<(), ApiError> {
    if access.is_unrestricted() {
        return Ok(());
    }
    let entries = bundle.get("entry").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    for (i, entry) in entries.iter().enumerate() {
        let at = |e: ApiError| ApiError {
            issues: e
                .issues
                .into_iter()
                .map(|mut issue| {
                    issue.diagnostics = format!("Bundle.entry[{i}]: {}", issue.diagnostics);
                    issue
                })
                .collect(),
            ..e
        };
        let request = entry.get("request").unwrap_or(&Value::Null);
        let method = request.get("method").and_then(Value::as_str).unwrap_or_default();
        let url = request.get("url").and_then(Value::as_str).unwrap_or_default();
        let resource = entry.get("resource");
        let conditional = url.contains('?') || request.get("ifNoneExist").is_some();
        let (rtype, id) = match url.split_once('/') {
            Some((t, rest)) => (t, Some(rest)),
            None => (url.split('?').next().unwrap_or_default(), None),
        };
        let interaction = match method {
            "POST" => Interaction::Create,
            "PUT" => Interaction::Update,
            "DELETE" => Interaction::Delete,
            _ => Interaction::Read,
        };
        let restriction = guard::restriction(access, rtype, interaction).map_err(at)?;
        if method == "GET" || conditional {
            guard::unrestricted(&restriction, "a GET or conditional entry in a transaction or batch").map_err(at)?;
            continue;
        }
        if let (Some(id), "PUT" | "DELETE") = (id, method) {
            if !state.store.visible(rtype, id, &restriction).await?
                && state.store.read(rtype, id).await? != store::ReadOutcome::NotFound
            {
                return Err(at(ApiError::not_found(format!("{rtype}/{id} is not known"))));
            }
        }
        if let Some(resource) = resource {
            guard::content(&restriction, rtype, resource).map_err(at)?;
        }
    }
    Ok(())
}
