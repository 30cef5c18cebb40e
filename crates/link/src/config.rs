//! Link's settings: one struct, from the `[link]` table of the config file (unknown keys are an
//! error) and the command line, passed to every part as state.

use serde::Deserialize;

/// The scopes asked of a portal whose entry names none.
pub const DEFAULT_SCOPES: &str = "launch/patient openid fhirUser offline_access patient/*.rs";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkConfig {
    /// Link's public base URL (no trailing slash): the portal callback is `{base_url}/link/v1/callback`.
    pub base_url: String,
    /// How long a login at a portal may take, from the connect redirect to the callback.
    pub flow_seconds: i64,
    /// Life of the one-time code handed to the app after a login.
    pub code_seconds: i64,
    /// How long a finished fetch's result is kept (then 410).
    pub result_seconds: i64,
    /// Refresh an access token this long before it expires.
    pub refresh_ahead_seconds: i64,
    /// A refresh lease (the single-flight lock across processes) lasts this long, longer than a
    /// refresh request can take, so a crashed holder frees it.
    pub refresh_lease_seconds: i64,
    /// A running job's lease; the worker renews it every third of this. A job whose lease ran
    /// out (its process died) is taken up again by any Link process.
    pub job_lease_seconds: i64,
    /// Jobs one process runs at once.
    pub job_workers: usize,
    /// Fetch requests an app may start per minute (sync or async), per process.
    pub app_fetches_per_minute: u32,
    /// Re-run discovery for every endpoint this often (0: only on add and `check`).
    pub discovery_interval_seconds: u64,
    pub portal: PortalLimits,
    pub webhooks: WebhookLimits,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            base_url: "http://127.0.0.1:8090".into(),
            flow_seconds: 600,
            code_seconds: 60,
            result_seconds: 7200,
            refresh_ahead_seconds: 60,
            refresh_lease_seconds: 30,
            job_lease_seconds: 30,
            job_workers: 4,
            app_fetches_per_minute: 60,
            discovery_interval_seconds: 6 * 3600,
            portal: PortalLimits::default(),
            webhooks: WebhookLimits::default(),
        }
    }
}

/// How Link treats every portal: timeouts, sizes, pacing, retries, the circuit breaker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalLimits {
    pub connect_timeout_ms: u64,
    /// Whole request, headers and body.
    pub timeout_ms: u64,
    /// Largest response body read from a portal.
    pub max_response_bytes: usize,
    /// Requests in flight to one portal at once.
    pub concurrency: usize,
    /// Requests started per second to one portal.
    pub requests_per_second: f64,
    /// Attempts after the first for a timeout, a connection failure, a 5xx or a 429.
    pub retries: u32,
    /// First backoff; doubled per attempt, with jitter.
    pub backoff_ms: u64,
    /// A `Retry-After` longer than this ends the attempt instead of waiting.
    pub max_retry_after_seconds: u64,
    /// Consecutive failed requests that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses requests before letting one through.
    pub breaker_open_seconds: u64,
    /// Pages followed per search.
    pub max_pages: usize,
}

impl Default for PortalLimits {
    fn default() -> Self {
        PortalLimits {
            connect_timeout_ms: 5_000,
            timeout_ms: 20_000,
            max_response_bytes: 32 << 20,
            concurrency: 4,
            requests_per_second: 20.0,
            retries: 2,
            backoff_ms: 250,
            max_retry_after_seconds: 30,
            breaker_failures: 5,
            breaker_open_seconds: 30,
            max_pages: 200,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookLimits {
    pub timeout_ms: u64,
    /// Keep retrying an undelivered event this long after it was created.
    pub give_up_after_seconds: i64,
    /// First retry delay; doubled per attempt up to `max_backoff_seconds`.
    pub first_backoff_seconds: i64,
    pub max_backoff_seconds: i64,
    /// How often the outbox is looked at when nothing woke the sender.
    pub poll_ms: u64,
}

impl Default for WebhookLimits {
    fn default() -> Self {
        WebhookLimits {
            timeout_ms: 10_000,
            give_up_after_seconds: 86_400,
            first_backoff_seconds: 5,
            max_backoff_seconds: 3_600,
            poll_ms: 1_000,
        }
    }
}
