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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            base_url: "http://localhost:8080/fhir".into(),
            max_body_bytes: 16 * 1024 * 1024,
            auth: oauth::AuthConfig::default(),
            demo_app: false,
        }
    }
}
