//! What the FHIR handlers read from a request besides the path: query pairs, `Prefer`,
//! conditional headers, and a JSON body checked for type and size.

use axum::body::Body;
use axum::extract::FromRequest;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use serde_json::Value;

use crate::error::ApiError;
use crate::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnPref {
    Minimal,
    Representation,
    OperationOutcome,
}

#[derive(Debug, Clone, Copy)]
pub struct Prefer {
    pub return_pref: ReturnPref,
    pub lenient: bool,
}

impl Prefer {
    pub fn from_headers(headers: &HeaderMap) -> Prefer {
        let mut prefer = Prefer { return_pref: ReturnPref::Representation, lenient: false };
        for value in headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()) {
            for token in value.split([',', ';']).map(str::trim) {
                match token.replace(' ', "").as_str() {
                    "return=minimal" => prefer.return_pref = ReturnPref::Minimal,
                    "return=representation" => prefer.return_pref = ReturnPref::Representation,
                    "return=OperationOutcome" => prefer.return_pref = ReturnPref::OperationOutcome,
                    "handling=lenient" => prefer.lenient = true,
                    "handling=strict" => prefer.lenient = false,
                    _ => {}
                }
            }
        }
        prefer
    }
}

/// Query pairs, percent-decoded, in order.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}

/// `If-Match: W/"3"` → 3
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => {
            let text = v.to_str().unwrap_or_default();
            text.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("If-Match '{text}' is not a version ETag like W/\"3\"")))
        }
    }
}

/// A request body that must be a FHIR JSON resource.
pub struct FhirBody {
    pub value: Value,
    pub headers: HeaderMap,
}

impl FromRequest<AppState> for FhirBody {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        check_content_type(&headers, req.method())?;
        let limit = state.config.max_body_bytes;
        if let Some(len) =
            headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
        {
            if len > limit {
                return Err(too_large(limit));
            }
        }
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| too_large(limit))?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request("the request needs a JSON body"));
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object (a FHIR resource)"));
        }
        if value.get("resourceType").and_then(Value::as_str).is_none() {
            return Err(ApiError::bad_request("the body has no resourceType"));
        }
        Ok(FhirBody { value, headers })
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too-costly", format!("the request body is larger than {limit} bytes"))
}

fn check_content_type(headers: &HeaderMap, method: &Method) -> Result<(), ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        // Lenient with clients that send JSON without a type.
        return Ok(());
    };
    let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if matches!(mime.as_str(), "application/fhir+json" | "application/json" | "application/json+fhir") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "not-supported",
        format!("{method} with Content-Type '{ct}' is not supported; send application/fhir+json"),
    ))
}
