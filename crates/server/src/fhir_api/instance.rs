//! Instance reads: read, vread, instance history, and `$everything`.

use std::sync::Arc;

use auth::Interaction;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use oauth::access::Access;
use store::{ReadOutcome, StoreError};

use super::access::AuditPatient;
use super::{bundles, guard, known_type, possible_id};
use crate::error::ApiError;
use crate::response;
use crate::AppState;

pub async fn read_or_type_history(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path((rtype, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    if id == "_history" {
        let restriction = guard::restriction(&access, &rtype, Interaction::Read)?;
        return bundles::history(&state, store::HistoryScope::Type(rtype), query.as_deref(), &restriction).await;
    }
    possible_id(&rtype, &id)?;
    if rtype == "AuditEvent" {
        return super::audit_events::read(&state, &access, &id).await;
    }
    if rtype == "Subscription" {
        return super::subscriptions::read(&state, &access, &id).await;
    }
    if rtype == "Basic" {
        if let Some(topic) = super::subscriptions::topic(&id) {
            return Ok(topic);
        }
    }
    // One statement reads the resource within the caller's view; only when that finds nothing
    // does the slower check decide between 403 (a granular scope excludes it) and 404.
    let restriction = guard::restriction(&access, &rtype, Interaction::Read)?;
    let outcome = state.store.read_as(&rtype, &id, &restriction).await?;
    if outcome == ReadOutcome::NotFound && !restriction.is_unrestricted() {
        guard::one(&state, &access, &rtype, &id, Interaction::Read).await?;
    }
    let audit_patient = match &outcome {
        ReadOutcome::Found(stored) if access.patient.is_none() => guard::patient_of(&rtype, &id, &stored.body),
        _ => None,
    };
    let mut response = found(outcome, &rtype, &id)?;
    if let Some(p) = audit_patient {
        response.extensions_mut().insert(AuditPatient(p));
    }
    Ok(response)
}

pub async fn vread(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path((rtype, id, vid)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    possible_id(&rtype, &id)?;
    let version: i64 =
        vid.parse().map_err(|_| ApiError::not_found(format!("'{vid}' is not a version of {rtype}/{id}")))?;
    guard::one(&state, &access, &rtype, &id, Interaction::Read).await?;
    let outcome = state.store.vread(&rtype, &id, version).await?;
    found(outcome, &rtype, &id)
}

pub async fn operation(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path((rtype, id, op)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    possible_id(&rtype, &id)?;
    match (rtype.as_str(), op.as_str()) {
        ("Subscription", "$status") => super::subscriptions::status(&state, &access, &id).await,
        ("Subscription", "$events") => {
            let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            super::subscriptions::events(&state, &access, &id, &pairs).await
        }
        (_, "_history") => {
            let restriction = guard::one(&state, &access, &rtype, &id, Interaction::Read).await?;
            bundles::history(&state, store::HistoryScope::Instance(rtype, id), query.as_deref(), &restriction).await
        }
        ("Patient", "$everything") => {
            let restriction =
                access.restriction_any(Interaction::Search).map_err(|r| super::access::refused(r, "$everything"))?;
            if restriction.patients.as_ref().is_some_and(|p| !p.contains(&id)) {
                return Err(ApiError::not_found(format!("Patient/{id} is not known")));
            }
            let mut response = bundles::everything(&state, &id, query.as_deref(), &restriction).await?;
            response.extensions_mut().insert(AuditPatient(id));
            Ok(response)
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            format!("operation '{op}' is not supported on {rtype}"),
        )),
    }
}

/// `POST [type]/[id]/$op`: instance operations that take a body.
pub async fn operation_post(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    Path((rtype, id, op)): Path<(String, String, String)>,
    body: crate::request::FhirBody,
) -> Result<Response, ApiError> {
    known_type(&state, &rtype)?;
    possible_id(&rtype, &id)?;
    match (rtype.as_str(), op.as_str()) {
        ("Task", "$action-link") => super::action_link::mint(&state, &access, &id, &body.value).await,
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            format!("operation '{op}' is not supported on {rtype} by POST"),
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
