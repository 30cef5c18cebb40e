//! Server configuration: one struct, passed as state (no globals).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The public FHIR base URL, e.g. `http://localhost:8080/fhir` (no trailing slash).
    pub base_url: String,
    /// Largest accepted request body in bytes (413 beyond).
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { base_url: "http://localhost:8080/fhir".into(), max_body_bytes: 16 * 1024 * 1024 }
    }
}
