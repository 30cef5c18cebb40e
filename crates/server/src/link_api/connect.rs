//! The browser's side of a login: `/link/v1/connect/{endpoint}` sends the person to the portal,
//! `/link/v1/callback` brings them back and on to the app.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use link::broker::{cookie_name, CallbackParams, ConnectParams, Next};

use super::LinkState;
use crate::pages::{html, ErrorPage};

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => {
            let mut r = StatusCode::SEE_OTHER.into_response();
            r.headers_mut().insert(header::LOCATION, v);
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            r
        }
        Err(_) => page(400, "Bad address", "The address to continue to cannot be used."),
    }
}

fn page(status: u16, title: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    html(status, &ErrorPage { title, message })
}

fn answer(state: &LinkState, next: Next) -> Response {
    match next {
        Next::Portal { location, cookie_name, cookie_value, max_age_seconds } => {
            let mut r = redirect(&location);
            let secure = if state.link.config().base_url.starts_with("https://") { "; Secure" } else { "" };
            let cookie = format!(
                "{cookie_name}={cookie_value}; Path=/link/v1/callback; Max-Age={max_age_seconds}; HttpOnly; SameSite=Lax{secure}"
            );
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Next::App { location } => redirect(&location),
        Next::Page { status, title, message } => page(status, &title, &message),
    }
}

fn failed(e: link::LinkError) -> Response {
    tracing::error!(error = %e, "login broker");
    page(500, "Something went wrong", "Link could not continue this login. Please start again from the app.")
}

/// `GET /link/v1/connect/{endpointId}?app=ID&clientURL=URL&state=S[&person=P]`
pub async fn connect(
    State(state): State<LinkState>,
    Path(endpoint): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let params = ConnectParams {
        endpoint,
        app: query.get("app").cloned(),
        client_url: query.get("clientURL").cloned(),
        state: query.get("state").cloned(),
        person: query.get("person").cloned(),
    };
    match state.link.start_connect(&params).await {
        Ok(next) => answer(&state, next),
        Err(e) => failed(e),
    }
}

/// `GET /link/v1/callback?code=…&state=…` (or `error=…`), from the portal.
pub async fn callback(
    State(state): State<LinkState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let params = CallbackParams {
        code: query.get("code").cloned(),
        state: query.get("state").cloned(),
        error: query.get("error").cloned(),
        error_description: query.get("error_description").cloned(),
    };
    let browser = params.state.as_deref().and_then(|s| cookie(&headers, &cookie_name(s)));
    let next = state.link.finish_connect(&params, browser).await;
    let mut response = match next {
        Ok(next) => answer(&state, next),
        Err(e) => failed(e),
    };
    // The login's cookie has done its work.
    if let Some(s) = &params.state {
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{}=; Path=/link/v1/callback; Max-Age=0; HttpOnly; SameSite=Lax",
            cookie_name(s)
        )) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}
