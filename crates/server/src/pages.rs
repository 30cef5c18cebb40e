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
