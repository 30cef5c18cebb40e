//! Every request Link makes to a portal goes through [`PortalClient`]: a timeout, a response
//! size limit, no redirects (a portal that redirects an API call is answering wrongly), a cap on
//! requests in flight and a request rate per portal, retries with jittered backoff for
//! timeouts, connection failures, 5xx and 429 (honouring `Retry-After`), and a circuit breaker
//! that stops calling a portal that keeps failing. Each request's outcome feeds the portal's
//! health. Nothing here logs a header or a body: tokens travel in both.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::config::PortalLimits;
use crate::health::{EventKind, HealthRecorder};
use crate::ids::EndpointId;

/// Why a portal request failed. The texts are safe to show to the app developer and to log:
/// they never hold a token or a response body beyond the portal's own error message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PortalError {
    #[error("the portal could not be reached ({0})")]
    Unreachable(String),
    #[error("the portal did not answer within {0} ms")]
    Timeout(u64),
    #[error("the portal answered {status}{}", detail_suffix(.detail))]
    Status { status: u16, detail: String },
    #[error("the portal refused the token (401)")]
    Unauthorized,
    #[error("the portal is throttling requests (429/503){}", retry_suffix(.retry_after_seconds))]
    Throttled { retry_after_seconds: Option<u64> },
    #[error("the portal's answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the portal's answer is not valid JSON ({0})")]
    InvalidJson(String),
    #[error("the portal's answer is not what FHIR or OAuth promise ({0})")]
    Invalid(String),
    #[error("the portal redirected an API request ({0}); redirects are not followed")]
    Redirect(u16),
    #[error("the portal failed repeatedly; Link stopped calling it for a while (circuit breaker open)")]
    CircuitOpen,
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

fn retry_suffix(seconds: &Option<u64>) -> String {
    seconds.map(|s| format!(", Retry-After {s} s")).unwrap_or_default()
}

impl PortalError {
    /// Worth another attempt (the request may succeed if repeated)?
    fn transient(&self) -> bool {
        match self {
            PortalError::Unreachable(_) | PortalError::Timeout(_) | PortalError::Throttled { .. } => true,
            PortalError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Which failures a request may be repeated after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A read: any transient failure.
    Idempotent,
    /// A token request (a refresh token that rotates must never be presented twice): only when
    /// the connection failed before anything was sent.
    OnlyUnsent,
}

/// One request to a portal.
#[derive(Debug, Clone)]
pub struct PortalRequest {
    pub method: Method,
    pub url: String,
    pub bearer: Option<String>,
    /// `application/x-www-form-urlencoded` body.
    pub form: Option<Vec<(String, String)>>,
    /// HTTP Basic credentials (client_secret_basic).
    pub basic: Option<(String, String)>,
    pub accept: &'static str,
    pub retry: Retry,
    /// What this request is, for the portal's health record.
    pub kind: EventKind,
}

impl PortalRequest {
    pub fn get(url: impl Into<String>, kind: EventKind) -> PortalRequest {
        PortalRequest {
            method: Method::GET,
            url: url.into(),
            bearer: None,
            form: None,
            basic: None,
            accept: "application/fhir+json, application/json",
            retry: Retry::Idempotent,
            kind,
        }
    }

    pub fn form(url: impl Into<String>, form: Vec<(String, String)>, kind: EventKind) -> PortalRequest {
        PortalRequest {
            method: Method::POST,
            url: url.into(),
            bearer: None,
            form: Some(form),
            basic: None,
            accept: "application/json",
            retry: Retry::OnlyUnsent,
            kind,
        }
    }

    pub fn bearer(mut self, token: &str) -> PortalRequest {
        self.bearer = Some(token.to_owned());
        self
    }
}

impl std::fmt::Display for PortalRequest {
    /// Method and URL without the query string (it may name a patient); never headers or form.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.url.split('?').next().unwrap_or_default();
        write!(f, "{} {path}", self.method)
    }
}

/// A portal's answer, read in full within the size limit.
#[derive(Debug, Clone)]
pub struct PortalResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

impl PortalResponse {
    /// The body as a JSON value (an error when it is not JSON).
    pub fn json(&self) -> Result<Value, PortalError> {
        serde_json::from_slice(&self.body).map_err(|e| PortalError::InvalidJson(e.to_string()))
    }
}

/// Per-portal pacing and breaker state, shared by every request to that portal in this process.
struct Gate {
    in_flight: Semaphore,
    next_slot: tokio::sync::Mutex<Instant>,
    breaker: Mutex<Breaker>,
}

#[derive(Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    /// After the open period one request is let through; others wait for its outcome.
    probing: bool,
}

#[derive(Clone)]
pub struct PortalClient {
    http: reqwest::Client,
    limits: PortalLimits,
    gates: Arc<Mutex<HashMap<EndpointId, Arc<Gate>>>>,
    health: HealthRecorder,
}

impl PortalClient {
    pub fn new(limits: PortalLimits, health: HealthRecorder) -> Result<PortalClient, reqwest::Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(limits.connect_timeout_ms))
            .timeout(Duration::from_millis(limits.timeout_ms))
            .user_agent(concat!("Portico-Link/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(PortalClient { http, limits, gates: Arc::default(), health })
    }

    pub fn limits(&self) -> &PortalLimits {
        &self.limits
    }

    fn gate(&self, endpoint: &EndpointId) -> Arc<Gate> {
        let mut gates = self.gates.lock().unwrap_or_else(|p| p.into_inner());
        gates
            .entry(endpoint.clone())
            .or_insert_with(|| {
                Arc::new(Gate {
                    in_flight: Semaphore::new(self.limits.concurrency.max(1)),
                    next_slot: tokio::sync::Mutex::new(Instant::now()),
                    breaker: Mutex::new(Breaker::default()),
                })
            })
            .clone()
    }

    /// Send a request with the retry policy, pacing and breaker of `endpoint`.
    pub async fn send(&self, endpoint: &EndpointId, request: &PortalRequest) -> Result<PortalResponse, PortalError> {
        let gate = self.gate(endpoint);
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let outcome = self.attempt(&gate, request).await;
            let millis = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            let ok = match &outcome {
                Ok(_) => true,
                // The portal answered as designed: not a health problem.
                Err(PortalError::Unauthorized) => true,
                Err(PortalError::Status { status, .. }) => *status < 500 && *status != 429,
                Err(_) => false,
            };
            if !matches!(outcome, Err(PortalError::CircuitOpen)) {
                self.health.record(endpoint, request.kind, ok, Some(millis), None);
                record_breaker(&gate, ok, &self.limits);
            }
            let error = match outcome {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            let may_retry = match request.retry {
                Retry::Idempotent => error.transient(),
                Retry::OnlyUnsent => matches!(error, PortalError::Unreachable(_)),
            };
            if !may_retry || attempt >= self.limits.retries {
                tracing::warn!(portal = %endpoint, request = %request, attempt, error = %error, "portal request failed");
                return Err(error);
            }
            let wait = match &error {
                PortalError::Throttled { retry_after_seconds: Some(s) } => {
                    if *s > self.limits.max_retry_after_seconds {
                        return Err(error);
                    }
                    Duration::from_secs(*s)
                }
                _ => self.backoff(attempt),
            };
            tracing::debug!(portal = %endpoint, request = %request, attempt, error = %error, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// GET a JSON document (2xx only).
    pub async fn get_json(&self, endpoint: &EndpointId, request: &PortalRequest) -> Result<Value, PortalError> {
        let response = self.send(endpoint, request).await?;
        response.json()
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.limits.backoff_ms.saturating_mul(1u64 << attempt.min(10));
        let jitter: f64 = rand::random::<f64>() + 0.5;
        Duration::from_millis((base as f64 * jitter) as u64)
    }

    async fn attempt(&self, gate: &Gate, request: &PortalRequest) -> Result<PortalResponse, PortalError> {
        breaker_admits(gate)?;
        let _permit = gate.in_flight.acquire().await.map_err(|_| PortalError::CircuitOpen)?;
        self.pace(gate).await;
        let mut builder = self.http.request(request.method.clone(), &request.url);
        builder = builder.header(ACCEPT, HeaderValue::from_static(request.accept));
        if let Some(token) = &request.bearer {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some((user, password)) = &request.basic {
            // RFC 6749 §2.3.1: both parts form-encoded before Basic encoding.
            let user: String = form_urlencoded::byte_serialize(user.as_bytes()).collect();
            let password: String = form_urlencoded::byte_serialize(password.as_bytes()).collect();
            builder = builder.basic_auth(user, Some(password));
        }
        if let Some(form) = &request.form {
            let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(form.iter()).finish();
            builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
        }
        let mut response = builder.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(PortalError::Redirect(status.as_u16()));
        }
        let headers = response.headers().clone();
        if let Some(length) = response.content_length() {
            if length > self.limits.max_response_bytes as u64 {
                return Err(PortalError::TooLarge(self.limits.max_response_bytes));
            }
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport_error(&e))? {
            if body.len() + chunk.len() > self.limits.max_response_bytes {
                return Err(PortalError::TooLarge(self.limits.max_response_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        let body = body.freeze();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            return Err(PortalError::Throttled { retry_after_seconds: retry_after(&headers) });
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(PortalError::Unauthorized);
        }
        if !status.is_success() {
            return Err(PortalError::Status { status: status.as_u16(), detail: error_detail(&body) });
        }
        Ok(PortalResponse { status, headers, body })
    }

    fn transport_error(&self, e: &reqwest::Error) -> PortalError {
        if e.is_timeout() {
            PortalError::Timeout(self.limits.timeout_ms)
        } else if e.is_connect() {
            PortalError::Unreachable("connection failed".into())
        } else if e.is_body() || e.is_decode() {
            PortalError::Unreachable("the connection broke while reading the answer".into())
        } else {
            PortalError::Unreachable("request failed".into())
        }
    }

    async fn pace(&self, gate: &Gate) {
        let rate = self.limits.requests_per_second;
        if rate <= 0.0 {
            return;
        }
        let interval = Duration::from_secs_f64(1.0 / rate);
        let slot = {
            let mut next = gate.next_slot.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

fn breaker_admits(gate: &Gate) -> Result<(), PortalError> {
    let mut breaker = gate.breaker.lock().unwrap_or_else(|p| p.into_inner());
    match breaker.open_until {
        Some(until) if Instant::now() < until => Err(PortalError::CircuitOpen),
        Some(_) if breaker.probing => Err(PortalError::CircuitOpen),
        Some(_) => {
            breaker.probing = true;
            Ok(())
        }
        None => Ok(()),
    }
}

fn record_breaker(gate: &Gate, ok: bool, limits: &PortalLimits) {
    let mut breaker = gate.breaker.lock().unwrap_or_else(|p| p.into_inner());
    breaker.probing = false;
    if ok {
        breaker.consecutive_failures = 0;
        breaker.open_until = None;
    } else {
        breaker.consecutive_failures += 1;
        if breaker.consecutive_failures >= limits.breaker_failures.max(1) {
            breaker.open_until = Some(Instant::now() + Duration::from_secs(limits.breaker_open_seconds));
        }
    }
}

/// `Retry-After` as seconds (delta-seconds or an HTTP date).
fn retry_after(headers: &HeaderMap) -> Option<u64> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(seconds);
    }
    let when = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822).ok()?;
    let delta = when - time::OffsetDateTime::now_utc();
    Some(delta.whole_seconds().max(0) as u64)
}

/// A short, printable reason from an error body: an OperationOutcome's diagnostics, an OAuth
/// error, or nothing (bodies are not echoed).
fn error_detail(body: &[u8]) -> String {
    let Ok(value) = serde_json::from_slice::<Value>(body) else { return String::new() };
    let text = if let Some(error) = value.get("error").and_then(Value::as_str) {
        match value.get("error_description").and_then(Value::as_str) {
            Some(d) => format!("{error}: {d}"),
            None => error.to_owned(),
        }
    } else if value.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") {
        value
            .get("issue")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("diagnostics").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        String::new()
    };
    printable(&text, 300)
}

/// At most `max` characters, control characters removed.
pub fn printable(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(7));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), Some(0), "a date in the past");
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn error_details_come_from_structured_bodies_only() {
        assert_eq!(error_detail(br#"{"error":"invalid_grant","error_description":"used"}"#), "invalid_grant: used");
        assert_eq!(
            error_detail(br#"{"resourceType":"OperationOutcome","issue":[{"diagnostics":"a"},{"diagnostics":"b"}]}"#),
            "a; b"
        );
        assert_eq!(error_detail(b"<html>secret stack trace</html>"), "");
        assert_eq!(printable("a\u{7}b\nc", 10), "abc");
    }
}
