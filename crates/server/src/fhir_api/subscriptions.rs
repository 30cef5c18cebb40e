//! `Subscription` (backport profile): create, read, list, delete, `$status`, `$events`; and
//! the topics in their R4 form (`Basic/topic-…`). Subscriptions are not ordinary stored
//! resources: each belongs to the grant of the token that created it, and only that grant's
//! tokens (or an administrator) see it.

use auth::Interaction;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use oauth::access::Access;
use serde_json::{json, Value};
use store::subscriptions::{SubscriptionRecord, SubscriptionStatus};
use subscriptions::notify::{self, EventPayload, NotificationType};
use subscriptions::resource::{self, CreateContext};
use subscriptions::{topics, SubscriptionError};

use super::guard;
use crate::error::ApiError;
use crate::response::fhir_json;
use crate::AppState;

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> ApiError {
        match e {
            SubscriptionError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            SubscriptionError::Forbidden(m) => guard::forbidden(m),
            SubscriptionError::Store(e) => e.into(),
            SubscriptionError::Auth(m) | SubscriptionError::Internal(m) => {
                tracing::error!(error = %m, "subscription failure");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "exception",
                    "the server could not complete the request",
                )
            }
        }
    }
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    fhir_json(status, value.to_string())
}

/// `POST Subscription`.
pub async fn create(state: &AppState, access: &Access, body: &Value) -> Result<Response, ApiError> {
    let Some(token) = &access.token else {
        return Err(guard::forbidden(
            "a subscription belongs to the authorization of the token that creates it: send an access token",
        ));
    };
    let ctx = CreateContext {
        access,
        grant: &token.grant,
        token_scopes: token.claims.scope.clone(),
        now: state.auth.now(),
        allow_loopback_http: state.config.subscriptions.allow_loopback_http,
        max_timeout_s: 60,
    };
    let record = resource::accept(body, &ctx)?;
    let record = state.store.create_subscription(record).await.map_err(|e| match e {
        store::StoreError::Conflict(m) => guard::forbidden(m),
        other => other.into(),
    })?;
    // The handshake goes out at once.
    state.store.commit_signal().notify_one();
    let mut response = json_response(StatusCode::CREATED, &resource::render(&record));
    if let Ok(v) = HeaderValue::from_str(&format!("{}/Subscription/{}", state.config.base_url, record.sub_id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// The subscription when the caller may see it: created under the caller's grant, or by the
/// same app for the same person, or the caller is an administrator.
async fn owned(state: &AppState, access: &Access, id: &str) -> Result<SubscriptionRecord, ApiError> {
    let missing = || ApiError::not_found(format!("Subscription/{id} is not known"));
    let record = state.store.subscription(id).await?.ok_or_else(missing)?;
    if access.is_admin() {
        return Ok(record);
    }
    let Some(token) = &access.token else { return Err(missing()) };
    if record.grant_id == token.grant.grant_id {
        return Ok(record);
    }
    if record.client_id == token.grant.client_id {
        let creator = state.store.grant(&record.grant_id).await.map_err(|e| {
            tracing::error!(error = %e, "grant lookup failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", "the server could not complete the request")
        })?;
        if creator.is_some_and(|g| g.user_id.is_some() && g.user_id == token.grant.user_id) {
            return Ok(record);
        }
    }
    Err(missing())
}

pub async fn read(state: &AppState, access: &Access, id: &str) -> Result<Response, ApiError> {
    let record = owned(state, access, id).await?;
    Ok(json_response(StatusCode::OK, &resource::render(&record)))
}

/// `GET Subscription`: the caller's grant's subscriptions (an administrator: every one that is
/// not off).
pub async fn search(state: &AppState, access: &Access) -> Result<Response, ApiError> {
    let records = match &access.token {
        Some(token) if !access.is_admin() => {
            state.store.subscriptions_of_grants(&[token.grant.grant_id.as_str()]).await?
        }
        _ if access.is_admin() => state.store.live_subscriptions().await?,
        _ => Vec::new(),
    };
    let entry: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "fullUrl": format!("{}/Subscription/{}", state.config.base_url, r.sub_id),
                "resource": resource::render(r),
                "search": { "mode": "match" },
            })
        })
        .collect();
    let mut bundle = json!({ "resourceType": "Bundle", "type": "searchset", "total": entry.len() });
    if !entry.is_empty() {
        bundle["entry"] = Value::Array(entry);
    }
    Ok(json_response(StatusCode::OK, &bundle))
}

/// `DELETE Subscription/{id}`: it is turned off (and kept, so `$status` still answers).
pub async fn delete(state: &AppState, access: &Access, id: &str) -> Result<Response, ApiError> {
    let record = owned(state, access, id).await?;
    state.store.set_subscription_status(&record.sub_id, SubscriptionStatus::Off, Some("deleted by the client")).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub fn update_refused() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "a Subscription cannot be changed: delete it and create another",
    )
}

/// `GET Subscription/{id}/$status`.
pub async fn status(state: &AppState, access: &Access, id: &str) -> Result<Response, ApiError> {
    let record = owned(state, access, id).await?;
    let parameters = notify::status_parameters(&record, NotificationType::QueryStatus, &[], &state.config.base_url);
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": 1,
        "entry": [{ "resource": parameters, "search": { "mode": "match" } }],
    });
    Ok(json_response(StatusCode::OK, &bundle))
}

fn number_param(pairs: &[(String, String)], name: &str) -> Result<Option<i64>, ApiError> {
    match pairs.iter().find(|(k, _)| k == name) {
        None => Ok(None),
        Some((_, v)) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("{name} must be a non-negative integer"))),
    }
}

/// `GET Subscription/{id}/$events?eventsSinceNumber=&eventsUntilNumber=&content=`: replay.
/// Resources are included only when the caller may read them now.
pub async fn events(
    state: &AppState,
    access: &Access,
    id: &str,
    pairs: &[(String, String)],
) -> Result<Response, ApiError> {
    let mut record = owned(state, access, id).await?;
    let since = number_param(pairs, "eventsSinceNumber")?.unwrap_or(1).max(1);
    let until = number_param(pairs, "eventsUntilNumber")?.unwrap_or(record.events_count);
    if let Some((_, content)) = pairs.iter().find(|(k, _)| k == "content") {
        if !matches!(content.as_str(), "empty" | "id-only" | "full-resource") {
            return Err(ApiError::bad_request("content must be empty, id-only or full-resource"));
        }
        record.payload = content.clone();
    }
    let events = state.store.subscription_events(&record.sub_id, since, until, 500).await?;
    let mut payloads = Vec::with_capacity(events.len());
    for event in &events {
        let mut body = None;
        if record.payload == "full-resource" {
            if let Ok(restriction) = access.restriction(&event.resource_type, Interaction::Read) {
                if state.store.visible(&event.resource_type, &event.id, &restriction).await? {
                    if let store::ReadOutcome::Found(stored) =
                        state.store.vread(&event.resource_type, &event.id, event.version).await?
                    {
                        body = Some(stored.body.to_string());
                    }
                }
            }
        }
        payloads.push(EventPayload { event, body });
    }
    let bundle_id = auth::GrantId::generate().to_string();
    let now_ms = store::clock::epoch_ms(state.store.clock().now());
    let bundle =
        notify::bundle(&record, NotificationType::QueryEvent, &payloads, &state.config.base_url, now_ms, &bundle_id);
    Ok(json_response(StatusCode::OK, &bundle))
}

/// `GET Basic/topic-{name}`: a topic in the backport's R4 form.
pub fn topic(id: &str) -> Option<Response> {
    let topic = topics::by_name(id.strip_prefix("topic-")?)?;
    Some(json_response(StatusCode::OK, &topics::as_basic(topic)))
}
