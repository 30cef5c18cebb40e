//! Instance reads: read, vread, instance history, and `$everything`.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use store::{ReadOutcome, StoreError};

use super::{bundles, known_type, possible_id};
use crate::error::ApiError;
use crate::response;
use crate::AppState;

pub async fn read_or_type_history(
    State(state): State<AppState>,
    Path((rtype, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    if id == "_history" {
        return bundles::history(&state, store::HistoryScope::Type(rtype), query.as_deref()).await;
    }
    possible_id(&rtype, &id)?;
    let outcome = state.store.read(&rtype, &id).await?;
    found(outcome, &rtype, &id)
}

pub async fn vread(
    State(state): State<AppState>,
    Path((rtype, id, vid)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    possible_id(&rtype, &id)?;
    let version: i64 =
        vid.parse().map_err(|_| ApiError::not_found(format!("'{vid}' is not a version of {rtype}/{id}")))?;
    let outcome = state.store.vread(&rtype, &id, version).await?;
    found(outcome, &rtype, &id)
}

pub async fn operation(
    State(state): State<AppState>,
    Path((rtype, id, op)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    possible_id(&rtype, &id)?;
    match (rtype.as_str(), op.as_str()) {
        (_, "_history") => bundles::history(&state, store::HistoryScope::Instance(rtype, id), query.as_deref()).await,
        ("Patient", "$everything") => bundles::everything(&state, &id, query.as_deref()).await,
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            format!("operation '{op}' is not supported on {rtype}"),
        )),
    }
}

fn found(outcome: ReadOutcome, rtype: &str, id: &str) -> Result<Response, ApiError> {
    match outcome {
        ReadOutcome::Found(stored) => Ok(response::resource(stored)),
        ReadOutcome::Deleted { version, last_updated_ms } => {
            Err(StoreError::Gone { resource_type: rtype.to_string(), id: id.to_string(), version, last_updated_ms }
                .into())
        }
        ReadOutcome::NotFound => {
            Err(StoreError::NotFound { resource_type: rtype.to_string(), id: id.to_string() }.into())
        }
    }
}
