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
        credentials,
    };
    let response = state.auth.token(request).await?;
    Ok(json_no_store(StatusCode::OK, &response))
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
