//! FHIR responses: stored JSON is sent as-is; Bundles are assembled around the stored bodies
//! without parsing them again.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use store::clock::{http_date, instant_text};
use store::{JsonText, StoredResource};

use crate::request::{Prefer, ReturnPref};

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

pub fn fhir_json(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    // Room for the headers every FHIR answer gets (type, version, caching, CORS): a map grown
    // one insert at a time reallocates and rehashes twice per answer.
    *response.headers_mut() = HeaderMap::with_capacity(12);
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

/// The stored text as a response body without copying it (the cache may hold the same text).
fn shared_body(text: JsonText) -> Body {
    Body::from(Bytes::from_owner(text))
}

fn etag(version: i64) -> HeaderValue {
    // Written on every read: pushes rather than `format!`.
    let mut text = String::with_capacity(24);
    text.push_str("W/\"");
    text.push_str(itoa::Buffer::new().format(version));
    text.push('"');
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("W/\"0\""))
}

pub fn version_headers(headers: &mut HeaderMap, version: i64, last_updated_ms: i64) {
    headers.insert(header::ETAG, etag(version));
    if let Ok(v) = HeaderValue::from_str(&http_date(last_updated_ms)) {
        headers.insert(header::LAST_MODIFIED, v);
    }
}

/// A read: the stored body with ETag and Last-Modified.
pub fn resource(stored: StoredResource) -> Response {
    let (version, lu) = (stored.version, stored.last_updated_ms);
    let mut response = fhir_json(StatusCode::OK, shared_body(stored.body));
    version_headers(response.headers_mut(), version, lu);
    response
}

/// The answer to a create or update, shaped by `Prefer: return=`.
pub fn written(
    status: StatusCode,
    stored: StoredResource,
    base_url: &str,
    prefer: &Prefer,
    with_location: bool,
) -> Response {
    let location = format!("{base_url}/{}/{}/_history/{}", stored.resource_type, stored.id, stored.version);
    let (version, lu) = (stored.version, stored.last_updated_ms);
    let mut response = match prefer.return_pref {
        ReturnPref::Representation => fhir_json(status, shared_body(stored.body)),
        ReturnPref::Minimal => status.into_response(),
        ReturnPref::OperationOutcome => {
            let text = format!(
                "{} {}/{} version {}",
                status.canonical_reason().unwrap_or(""),
                stored.resource_type,
                stored.id,
                version
            );
            fhir_json(status, fhir::outcome::operation_outcome(&[fhir::outcome::Issue::information(text)]).to_string())
        }
    };
    version_headers(response.headers_mut(), version, lu);
    if with_location {
        if let Ok(v) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, v.clone());
            response.headers_mut().insert(header::CONTENT_LOCATION, v);
        }
    }
    response
}

/// Builds a Bundle's JSON text around raw stored bodies.
pub struct BundleWriter {
    text: String,
    entries: usize,
}

impl BundleWriter {
    pub fn new(bundle_type: &str, total: Option<i64>, links: &[(&str, String)]) -> BundleWriter {
        BundleWriter::with_capacity(4096, bundle_type, total, links)
    }

    /// As [`BundleWriter::new`], with room for about `bytes` of text: a page of large entries
    /// then grows without reallocating (each doubling copies all that was written).
    pub fn with_capacity(
        bytes: usize,
        bundle_type: &str,
        total: Option<i64>,
        links: &[(&str, String)],
    ) -> BundleWriter {
        let mut text = String::with_capacity(bytes);
        text.push_str(r#"{"resourceType":"Bundle","id":""#);
        text.push_str(&uuid_like());
        text.push_str(r#"","meta":{"lastUpdated":""#);
        text.push_str(&instant_text(now_ms()));
        text.push_str(r#""},"type":"#);
        text.push_str(&Value::from(bundle_type).to_string());
        if let Some(total) = total {
            text.push_str(&format!(r#","total":{total}"#));
        }
        if !links.is_empty() {
            text.push_str(r#","link":["#);
            for (i, (relation, url)) in links.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&serde_json::json!({"relation": relation, "url": url}).to_string());
            }
            text.push(']');
        }
        BundleWriter { text, entries: 0 }
    }

    /// Add an entry; `resource` is raw JSON text (already a valid resource) or absent.
    pub fn entry(&mut self, full_url: Option<&str>, resource: Option<&str>, extra: &[(&str, Value)]) {
        // FHIR JSON has no empty arrays, so `entry` opens with the first entry.
        self.text.push_str(if self.entries == 0 { r#","entry":["# } else { "," });
        self.entries += 1;
        self.text.push('{');
        let mut first = true;
        let mut sep = |text: &mut String| {
            if !first {
                text.push(',');
            }
            first = false;
        };
        if let Some(url) = full_url {
            sep(&mut self.text);
            self.text.push_str(r#""fullUrl":"#);
            self.text.push_str(&Value::from(url).to_string());
        }
        if let Some(body) = resource {
            sep(&mut self.text);
            self.text.push_str(r#""resource":"#);
            self.text.push_str(body);
        }
        for (key, value) in extra {
            sep(&mut self.text);
            self.text.push_str(&Value::from(*key).to_string());
            self.text.push(':');
            self.text.push_str(&value.to_string());
        }
        self.text.push('}');
    }

    pub fn finish(mut self) -> String {
        self.text.push_str(if self.entries == 0 { "}" } else { "]}" });
        self.text
    }
}

fn now_ms() -> i64 {
    store::clock::epoch_ms(time::OffsetDateTime::now_utc())
}

/// A unique-enough Bundle id without pulling an RNG into the edge.
fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("{:x}-{:x}", now_ms(), COUNTER.fetch_add(1, Ordering::Relaxed))
}
