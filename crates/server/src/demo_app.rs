//! The sample SMART app `portico demo` serves under `/demo-app/`: a static page whose script runs
//! a standalone launch against this server (discovery, PKCE, code exchange) and shows the
//! patient's summary. The files are compiled in.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

const INDEX: &str = include_str!("../static/demo-app/index.html");
const SCRIPT: &str = include_str!("../static/demo-app/app.js");
const STYLE: &str = include_str!("../static/demo-app/app.css");

fn file(body: &'static str, content_type: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    response
}

pub fn routes(enabled: bool) -> Router<AppState> {
    if !enabled {
        return Router::new();
    }
    Router::new()
        .route("/demo-app/", get(|| async { file(INDEX, "text/html; charset=utf-8") }))
        .route("/demo-app", get(|| async { axum::response::Redirect::permanent("/demo-app/") }))
        .route("/demo-app/app.js", get(|| async { file(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/demo-app/app.css", get(|| async { file(STYLE, "text/css; charset=utf-8") }))
}
