//! The one place where errors become HTTP responses: FHIR `OperationOutcome`s with a status.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fhir::outcome::{operation_outcome, Issue};
use store::StoreError;

use crate::response::FHIR_JSON;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub issues: Vec<Issue>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, diagnostics: impl Into<String>) -> ApiError {
        ApiError { status, issues: vec![Issue::error(code, diagnostics)] }
    }
    pub fn bad_request(diagnostics: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid", diagnostics)
    }
    pub fn not_found(diagnostics: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not-found", diagnostics)
    }
    pub fn unknown_type(resource_type: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not-supported",
            format!("'{resource_type}' is not a FHIR R4 resource type"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        store_error(e, None)
    }
}

impl From<fhir::search::SearchError> for ApiError {
    fn from(e: fhir::search::SearchError) -> ApiError {
        ApiError::bad_request(e.message)
    }
}

fn store_error(e: StoreError, entry: Option<usize>) -> ApiError {
    let at = |text: String| match entry {
        Some(i) => format!("Bundle.entry[{i}]: {text}"),
        None => text,
    };
    match e {
        StoreError::Database(_) | StoreError::Migrate(_) | StoreError::Config(_) => {
            // The cause goes to the log, never to the client.
            tracing::error!(error = %e, "storage failure");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                "internal storage error; the request was not applied",
            )
        }
        StoreError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "not-found", at(e.to_string())),
        StoreError::Gone { .. } => ApiError::new(StatusCode::GONE, "deleted", at(e.to_string())),
        StoreError::VersionConflict { .. } | StoreError::PreconditionFailed(_) => {
            ApiError::new(StatusCode::PRECONDITION_FAILED, "conflict", at(e.to_string()))
        }
        StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", at(m)),
        StoreError::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid", at(m)),
        StoreError::UnknownType(_) => ApiError::new(StatusCode::NOT_FOUND, "not-supported", at(e.to_string())),
        StoreError::Search(s) => ApiError::new(StatusCode::BAD_REQUEST, "invalid", at(s.message)),
        StoreError::Invalid(issues) => ApiError {
            status: StatusCode::BAD_REQUEST,
            issues: issues
                .into_iter()
                .map(|mut i| {
                    i.diagnostics = at(i.diagnostics);
                    i
                })
                .collect(),
        },
        StoreError::InBundle { index, source } => store_error(*source, Some(index)),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = operation_outcome(&self.issues).to_string();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(axum::http::header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        response
    }
}

impl From<bulk::BulkError> for ApiError {
    fn from(e: bulk::BulkError) -> ApiError {
        use bulk::BulkError as B;
        match e {
            B::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid", m),
            B::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
            B::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not-found", m),
            B::TooManyJobs(m) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "throttled", m),
            B::Store(s) => s.into(),
            other => {
                // The cause goes to the log, never to the client.
                tracing::error!(error = %other, "bulk export failure");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "exception", "internal error in the export service")
            }
        }
    }
}
