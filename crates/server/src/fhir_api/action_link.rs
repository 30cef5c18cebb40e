//! `POST Task/{id}/$action-link`: mint a single-task action link (see the `tasks` crate). For
//! the data holder's systems and staff: the caller must be allowed to update the Task and its
//! focus; a patient-launched app may not mint links.

use auth::Interaction;
use axum::http::StatusCode;
use axum::response::Response;
use oauth::access::Access;
use serde_json::{json, Value};
use tasks::{MintRequest, Minter, TaskError};

use super::access::AuditPatient;
use super::guard;
use crate::error::ApiError;
use crate::response::fhir_json;
use crate::AppState;

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> ApiError {
        match e {
            TaskError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            TaskError::Changed(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            TaskError::NotFound(m) => ApiError::not_found(m),
            TaskError::Closed(..) => ApiError::new(StatusCode::GONE, "expired", "this link can no longer be used"),
            TaskError::Store(e) => e.into(),
            TaskError::Internal(m) => {
                tracing::error!(error = %m, "action link failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "exception",
                    "the server could not complete the request",
                )
            }
        }
    }
}

pub async fn mint(state: &AppState, access: &Access, task_id: &str, body: &Value) -> Result<Response, ApiError> {
    if access.patient.is_some() {
        return Err(guard::forbidden(
            "action links are minted by the data holder's systems and staff, not by an app launched for a patient",
        ));
    }
    let request = MintRequest::from_parameters(body)?;
    guard::one(state, access, "Task", task_id, Interaction::Update).await?;
    let task = match state.store.read("Task", task_id).await? {
        store::ReadOutcome::Found(stored) => serde_json::from_str::<Value>(&stored.body)
            .map_err(|e| TaskError::Internal(format!("stored Task/{task_id} is not JSON: {e}")))?,
        _ => return Err(ApiError::not_found(format!("Task/{task_id} is not known"))),
    };
    let target = tasks::target(&task).map_err(|e| match e {
        TaskError::Changed(m) => TaskError::Invalid(m),
        other => other,
    })?;
    // The link will change the focus too: the caller must be allowed to.
    guard::one(state, access, target.focus_type, &target.focus_id, Interaction::Update).await?;
    let minter = match &access.token {
        Some(token) => Minter {
            grant_id: Some(token.grant.grant_id.to_string()),
            client_id: Some(token.grant.client_id.to_string()),
            // A person's authorization bounds the link; a backend client's tokens are short by
            // design and its registration is what stands behind the link.
            not_after: token.grant.user_id.as_ref().and(token.grant.expires_at),
        },
        None => Minter::default(),
    };
    let minted = tasks::mint(&state.store, task_id, &request, &minter, state.auth.config().origin()).await?;
    let mut parameter = vec![
        json!({ "name": "url", "valueUrl": minted.url }),
        json!({ "name": "policy", "valueCode": minted.policy.as_str() }),
        json!({ "name": "expires", "valueInstant": tasks::fhir_instant(minted.expires_at) }),
        json!({ "name": "task", "valueReference": {
            "reference": format!("Task/{task_id}/_history/{}", minted.task.version) } }),
    ];
    if let Some(pin) = &minted.pin {
        parameter.push(json!({ "name": "pin", "valueString": pin }));
    }
    let mut response =
        fhir_json(StatusCode::OK, json!({ "resourceType": "Parameters", "parameter": parameter }).to_string());
    response.extensions_mut().insert(AuditPatient(minted.patient_id));
    Ok(response)
}
