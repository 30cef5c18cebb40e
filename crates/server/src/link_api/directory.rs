//! The directory endpoints.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use link::directory::search::{Lookup, Near};
use link::directory::Category;
use link::LinkError;

use super::{ApiError, CallingApp, LinkState};

pub async fn ready(State(state): State<LinkState>) -> (StatusCode, &'static str) {
    match state.link.endpoints(None).await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "Link readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}

fn parse_category(text: &str) -> Result<Category, ApiError> {
    match text {
        "clinical" => Ok(Category::Clinical),
        "payer" => Ok(Category::Payer),
        other => Err(LinkError::not_found(format!("'{other}' is not a directory category (clinical or payer)")).into()),
    }
}

fn near(query: &HashMap<String, String>) -> Result<Option<Near>, ApiError> {
    match query.get("near") {
        Some(n) => Ok(Some(Near::parse(n, query.get("radius_km").map(String::as_str))?)),
        None if query.contains_key("radius_km") => Err(LinkError::bad_request("radius_km needs near=LAT,LON").into()),
        None => Ok(None),
    }
}

/// `GET /link/v1/directory/{clinical|payer}[?near=LAT,LON&radius_km=R]`
async fn category_list(
    state: &LinkState,
    name: &str,
    lookup: Lookup,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let c = parse_category(name)?;
    let items = state.link.directory(Some(c), &lookup, near(query)?).await?;
    Ok(axum::Json(items).into_response())
}

pub async fn category(
    State(state): State<LinkState>,
    _app: CallingApp,
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    category_list(&state, &name, Lookup::All, &query).await
}

/// `GET /link/v1/directory/{clinical|payer}/search/{name-or-zip}`
pub async fn search(
    State(state): State<LinkState>,
    _app: CallingApp,
    Path((name, term)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    category_list(&state, &name, Lookup::Term(term), &query).await
}

/// `GET /link/v1/directory/brands`: the directory as a User-access Brands bundle (public, as
/// brand bundles are meant to be).
pub async fn brands(State(state): State<LinkState>) -> Result<Response, ApiError> {
    let endpoints = state.link.endpoints(None).await?;
    let bundle = link::directory::brands::brands_bundle(&endpoints, &state.link.config().base_url, state.link.now_ms());
    let mut response = axum::Json(bundle).into_response();
    response
        .headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/fhir+json"));
    Ok(response)
}
