//! Server-rendered pages (askama templates in `templates/`): small, accessible, usable on a
//! phone, and never cached or framed.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use oauth::PageError;

/// Render a template as an HTML response with the pages' security headers.
pub fn html(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(body) => with_page_headers((status, body).into_response()),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            with_page_headers(
                (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be shown. Please try again later.")
                    .into_response(),
            )
        }
    }
}

/// 303 to `location` with the pages' headers, setting one cookie when given.
pub fn see_other(location: &str, set: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = set.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    with_page_headers(response)
}

/// A form body as name → value (a repeated name keeps its last value).
pub fn form_map(body: &[u8]) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// An epoch-seconds moment as the pages show it: `2026-12-02 17:28 UTC`.
pub fn when(epoch: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| t.format(&time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC")).ok())
        .unwrap_or_default()
}

pub fn with_page_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' https: data:; style-src 'unsafe-inline'; script-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
}

/// A readable error page.
pub fn error_page(e: &PageError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    html(status, &ErrorPage { title: &e.title, message: &e.message })
}

pub struct PageResponse(pub PageError);

impl From<PageError> for PageResponse {
    fn from(e: PageError) -> Self {
        PageResponse(e)
    }
}

impl IntoResponse for PageResponse {
    fn into_response(self) -> Response {
        error_page(&self.0)
    }
}
