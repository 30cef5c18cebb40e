//! The FHIR R4 REST API under `/fhir`.

pub mod access;
mod audit_events;
mod bundles;
mod guard;
mod instance;
pub mod metadata;
mod search;
mod system;

/// `POST {base}/` (with a trailing slash) is the same as `POST {base}`.
pub use system::bundle as post_bundle;
mod writes;

use axum::routing::{get, post};
use axum::Router;

use crate::error::ApiError;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", post(system::bundle))
        .route("/_history", get(system::history))
        .route(
            "/{rtype}",
            get(search::search_get)
                .post(writes::create)
                .put(writes::conditional_update)
                .delete(writes::conditional_delete),
        )
        .route(
            "/{rtype}/{id}",
            get(instance::read_or_type_history).put(writes::update).delete(writes::delete).post(search::search_post),
        )
        .route("/{rtype}/{id}/{op}", get(instance::operation))
        .route("/{rtype}/{id}/_history/{vid}", get(instance::vread))
        .fallback(|| async { ApiError::not_found("no such FHIR endpoint") })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "not-supported",
                format!("{method} is not supported on this FHIR endpoint"),
            )
        })
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
