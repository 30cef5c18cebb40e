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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            base_url: "http://localhost:8080/fhir".into(),
            max_body_bytes: 16 * 1024 * 1024,
            auth: oauth::AuthConfig::default(),
            demo_app: false,
            dev_open_access: false,
        }
    }
}
