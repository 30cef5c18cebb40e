//! Server configuration: one struct, passed as state (no globals).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The public FHIR base URL, e.g. `http://localhost:8080/fhir` (no trailing slash).
    pub base_url: String,
    /// Largest accepted request body in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// The authorization server's settings (its `fhir_base_url` is always `base_url`).
    pub auth: oauth::AuthConfig,
    /// Serve the sample SMART app under `/demo-app/` (`portico demo`).
    pub demo_app: bool,
    /// DEVELOPMENT ONLY: answer FHIR requests that carry no token as if an administrator made
    /// them. Requests with a token are still checked and enforced.
    pub dev_open_access: bool,
    /// Topic-based subscriptions (`[subscriptions]` in the config file).
    pub subscriptions: SubscriptionsConfig,
    /// Bulk Data `$export` (`[bulk]` in the config file).
    pub bulk: bulk::BulkConfig,
}

/// `[subscriptions]`: the notification worker.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionsConfig {
    /// Run the dispatcher and deliverer in this process (default true; with several processes
    /// on one database a lease keeps it to one at a time).
    pub enabled: bool,
    /// Accept `http://` endpoints on loopback addresses (development; default false).
    pub allow_loopback_http: bool,
    /// How long another process waits before taking over from one that stopped (ms).
    pub lease_ms: i64,
    /// How often the worker looks for work when nothing wakes it (ms).
    pub poll_ms: u64,
    /// Consecutive failed deliveries before a subscription says `error`.
    pub failures_before_error: i64,
    /// The longest wait between delivery retries (ms).
    pub max_backoff_ms: i64,
}

impl Default for SubscriptionsConfig {
    fn default() -> Self {
        SubscriptionsConfig {
            enabled: true,
            allow_loopback_http: false,
            lease_ms: 5_000,
            poll_ms: 250,
            failures_before_error: 3,
            max_backoff_ms: 60_000,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            base_url: "http://localhost:8080/fhir".into(),
            max_body_bytes: 16 * 1024 * 1024,
            auth: oauth::AuthConfig::default(),
            demo_app: false,
            dev_open_access: false,
            subscriptions: SubscriptionsConfig::default(),
            bulk: bulk::BulkConfig::default(),
        }
    }
}
