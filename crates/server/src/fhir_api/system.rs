//! System level: transaction/batch Bundles and system history.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use fhir::outcome::operation_outcome;
use serde_json::{json, Value};
use store::clock::instant_text;

use super::bundles;
use crate::error::ApiError;
use crate::request::FhirBody;
use crate::response::{fhir_json, BundleWriter};
use crate::AppState;

pub async fn bundle(State(state): State<AppState>, body: FhirBody) -> Result<Response, ApiError> {
    if body.value.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(ApiError::bad_request("POST to the base URL takes a transaction or batch Bundle"));
    }
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

pub async fn history(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    bundles::history(&state, store::HistoryScope::System, query.as_deref()).await
}
