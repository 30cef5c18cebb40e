//! The back-channel endpoints: token, introspection, revocation, registration, EHR launch.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use oauth::grant_types::TokenRequest;
use oauth::introspect::Introspector;
use oauth::launch::LaunchRequest;
use oauth::OAuthError;

use super::form::{bearer_token, client_credentials, form_params, take};
use super::{json_no_store, OAuthResponse};
use crate::AppState;

type Answer = Result<Response, OAuthResponse>;

/// `POST /auth/token`.
pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Answer {
    let mut pairs = form_params(&headers, &body)?;
    let credentials = client_credentials(&headers, &mut pairs)?;
    let request = TokenRequest {
        grant_type: take(&mut pairs, "grant_type"),
        code: take(&mut pairs, "code"),
        redirect_uri: take(&mut pairs, "redirect_uri"),
        code_verifier: take(&mut pairs, "code_verifier"),
        refresh_token: take(&mut pairs, "refresh_token"),
        scope: take(&mut pairs, "scope"),
        subject_token: take(&mut pairs, "subject_token"),
        subject_token_type: take(&mut pairs, "subject_token_type"),
        actor_token: take(&mut pairs, "actor_token"),
        actor_token_type: take(&mut pairs, "actor_token_type"),
        requested_token_type: take(&mut pairs, "requested_token_type"),
        audience: take(&mut pairs, "audience"),
        credentials,
    };
    let mut response = state.auth.token(request).await?;
    if let Some(exchanged) = response.exchanged.take() {
        state.audit.record(exchange_record(&exchanged, store::clock::epoch_ms(state.store.clock().now())));
    }
    Ok(json_no_store(StatusCode::OK, &response))
}

/// The audit entry of a token exchange: who shared what with which service.
fn exchange_record(e: &oauth::grant_types::token_exchange::Exchanged, now_ms: i64) -> store::AuditRecord {
    store::AuditRecord {
        recorded_ms: now_ms,
        interaction: "token-exchange".into(),
        action: "E".into(),
        outcome: 0,
        status: 200,
        user_id: e.child.user_id.as_ref().map(ToString::to_string),
        fhir_user: e.fhir_user.clone(),
        client_id: Some(e.child.client_id.to_string()),
        grant_id: Some(e.child.grant_id.to_string()),
        patient_id: e.child.patient_id.as_ref().map(ToString::to_string),
        detail: Some(format!(
            "{} shared access with {} (grant {} under {}): {}",
            e.app_name, e.service_name, e.child.grant_id, e.parent.grant_id, e.child.scopes
        )),
        ..Default::default()
    }
}

/// `POST /auth/introspect` (RFC 7662): client authentication, or a bearer token.
pub async fn introspect(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Answer {
    let mut pairs = form_params(&headers, &body)?;
    let token = take(&mut pairs, "token");
    let answer = match bearer_token(&headers) {
        Some(bearer) => state.auth.introspect(Introspector::Bearer(bearer), token.as_deref()).await?,
        None => {
            let credentials = client_credentials(&headers, &mut pairs)?;
            state.auth.introspect(Introspector::Client(&credentials), token.as_deref()).await?
        }
    };
    Ok(json_no_store(StatusCode::OK, &answer))
}

/// `POST /auth/revoke` (RFC 7009): 200 with an empty body, also for unknown tokens.
pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Answer {
    let mut pairs = form_params(&headers, &body)?;
    let credentials = client_credentials(&headers, &mut pairs)?;
    let token = take(&mut pairs, "token");
    state.auth.revoke_token(&credentials, token.as_deref()).await?;
    let mut response = StatusCode::OK.into_response();
    super::no_store(response.headers_mut());
    Ok(response)
}

/// `POST /auth/register` (RFC 7591): JSON in, 201 with the client's metadata out.
pub async fn register(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Answer {
    let metadata: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
        OAuthError::new(oauth::ErrorCode::InvalidClientMetadata, "the body must be a JSON object of client metadata")
    })?;
    let registered = state.auth.register_dynamic(&metadata, bearer_token(&headers)).await?;
    tracing::info!(client = %registered.client.client_id, "client registered dynamically");
    Ok(json_no_store(StatusCode::CREATED, &registered.to_json()))
}

/// `POST /auth/launch`: an EHR-launcher client stores a launch context (JSON body, client
/// authentication by HTTP Basic or `client_assertion` in the query).
pub async fn launch(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Answer {
    let mut none = Vec::new();
    let credentials = client_credentials(&headers, &mut none)?;
    let request: LaunchRequest = serde_json::from_slice(&body).map_err(|e| {
        OAuthError::invalid_request(format!(
            "the body must be a JSON launch context (patient, encounter, fhirContext, need_patient_banner, smart_style_url): {e}"
        ))
    })?;
    let created = state.auth.create_launch_for_client(&credentials, request).await?;
    Ok(json_no_store(StatusCode::CREATED, &created))
}
