//! The FHIR R4 REST API under `/fhir`.

pub mod access;
mod action_link;
mod audit_events;
mod bulk;
mod bundles;
mod guard;
mod instance;
mod member_match;
pub mod metadata;
mod search;
mod subscriptions;
mod sync;
mod system;

mod writes;

use axum::routing::{any, get, post};
use axum::Router;

use crate::error::ApiError;
use crate::AppState;

/// The FHIR API's routes, written out under `/fhir` rather than nested: a nested router
/// rewrites every request's URI to strip the prefix (a parse and allocations per request).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/fhir", post(system::bundle))
        .route("/fhir/", post(system::bundle))
        .route("/fhir/_history", get(system::history))
        .route("/fhir/$export", get(bulk::system_get).post(bulk::system_post))
        .route("/fhir/$sync", get(sync::pull))
        .route("/fhir/Patient/$export", get(bulk::patient_get).post(bulk::patient_post))
        .route("/fhir/Group/{id}/$export", get(bulk::group_get).post(bulk::group_post))
        .route("/bulk/jobs/{id}", get(bulk::status).delete(bulk::cancel))
        .route("/bulk/files/{id}/{name}", get(bulk::file))
        .route(
            "/fhir/{rtype}",
            get(search::search_get)
                .post(writes::create)
                .put(writes::conditional_update)
                .delete(writes::conditional_delete),
        )
        .route(
            "/fhir/{rtype}/{id}",
            get(instance::read_or_type_history).put(writes::update).delete(writes::delete).post(search::search_post),
        )
        .route("/fhir/{rtype}/{id}/{op}", get(instance::operation).post(instance::operation_post))
        .route("/fhir/{rtype}/{id}/_history/{vid}", get(instance::vread))
        // Deeper paths match no FHIR interaction (a catch-all cannot sit beside the parameters
        // above, so it sits below them).
        .route("/fhir/{rtype}/{id}/{op}/{*rest}", any(no_such_endpoint))
        .route("/fhir/{rtype}/{id}/_history/{vid}/{*rest}", any(no_such_endpoint))
        // After every route: it is set on the routes present.
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "not-supported",
                format!("{method} is not supported on this FHIR endpoint"),
            )
        })
}

async fn no_such_endpoint() -> ApiError {
    ApiError::not_found("no such FHIR endpoint")
}

/// 404 for ids that cannot exist (FHIR ids are 1-64 of `A-Za-z0-9-.`), before they reach SQL.
fn possible_id(resource_type: &str, id: &str) -> Result<(), ApiError> {
    if fhir::search::is_valid_id(id) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("{resource_type}/{} is not known (not a valid FHIR id)", id.escape_debug())))
    }
}

/// 404 for names that are not R4 resource types.
fn known_type(state: &AppState, resource_type: &str) -> Result<(), ApiError> {
    let _ = state;
    if fhir::Registry::r4().is_resource_type(resource_type) {
        Ok(())
    } else {
        Err(ApiError::unknown_type(resource_type))
    }
}
