//! The authorization server's settings: one struct, passed in (no globals). Every lifetime is in
//! seconds.

use serde::{Deserialize, Serialize};
use store::PractitionerLink;

/// Who may register apps through RFC 7591 dynamic registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegistrationPolicy {
    /// Public apps (PKCE, no secret) register freely; confidential ones need an initial access
    /// token.
    OpenForPublic,
    /// Every registration needs an initial access token.
    TokenRequired,
    /// Only `portico client add` registers apps.
    Closed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The FHIR base URL (no trailing slash). It is the `aud` apps must ask for, the `aud` of
    /// access tokens, and the issuer of Portico's tokens.
    pub fhir_base_url: String,
    /// Access tokens from an authorization code or refresh token (at most one hour).
    pub access_token_seconds: i64,
    /// Backend-services access tokens (`client_credentials`).
    pub backend_token_seconds: i64,
    /// Authorization codes (at most 60 seconds).
    pub code_seconds: i64,
    /// How long an `offline_access` grant and its refresh tokens live.
    pub offline_access_seconds: i64,
    /// A browser sign-in session; `online_access` grants end with it.
    pub session_seconds: i64,
    /// How long a person has to get through sign-in, patient choice and consent.
    pub authorize_request_seconds: i64,
    /// EHR launch contexts.
    pub launch_seconds: i64,
    /// ID tokens.
    pub id_token_seconds: i64,
    pub registration: RegistrationPolicy,
    /// Initial access tokens accepted by dynamic registration (`Authorization: Bearer …`).
    pub registration_tokens: Vec<String>,
    /// Failed sign-ins in a row before an account is paused, and for how long.
    pub lockout_failures: i64,
    pub lockout_seconds: i64,
    /// Failed sign-ins per client address within `throttle_window_seconds` before that address
    /// must wait.
    pub throttle_failures_per_address: u32,
    pub throttle_window_seconds: u64,
    /// How long a grant's liveness answer is reused inside one process. Revocations made through
    /// this process take effect at once regardless; other processes see them within this time.
    pub liveness_cache_millis: u64,
    /// Sign access tokens with ES256 (the default: a signature costs a few dozen microseconds,
    /// against about a millisecond for RS256); false signs them with RS256 like ID tokens.
    pub access_token_es256: bool,
    /// How a practitioner comes to see a patient (any of `care-team`, `general-practitioner`,
    /// `assigned`, `organization`).
    pub practitioner_patients: Vec<PractitionerLink>,
    /// How long a person's patient list and account are reused inside one process.
    pub patient_list_cache_seconds: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            fhir_base_url: "http://localhost:8080/fhir".into(),
            access_token_seconds: 3600,
            backend_token_seconds: 300,
            code_seconds: 60,
            offline_access_seconds: 90 * 24 * 3600,
            session_seconds: 12 * 3600,
            authorize_request_seconds: 30 * 60,
            launch_seconds: 10 * 60,
            id_token_seconds: 3600,
            registration: RegistrationPolicy::OpenForPublic,
            registration_tokens: Vec::new(),
            lockout_failures: 5,
            lockout_seconds: 15 * 60,
            throttle_failures_per_address: 20,
            throttle_window_seconds: 10 * 60,
            liveness_cache_millis: 2000,
            access_token_es256: true,
            practitioner_patients: PractitionerLink::ALL.to_vec(),
            patient_list_cache_seconds: 30,
        }
    }
}

impl AuthConfig {
    /// `scheme://host[:port]` of the FHIR base URL: the authorization endpoints live under
    /// `{origin}/auth/`.
    pub fn origin(&self) -> &str {
        let base = self.fhir_base_url.as_str();
        let after_scheme = base.find("://").map_or(0, |i| i + 3);
        match base[after_scheme..].find('/') {
            Some(i) => &base[..after_scheme + i],
            None => base,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.fhir_base_url
    }

    pub fn endpoint(&self, name: &str) -> String {
        format!("{}/auth/{name}", self.origin())
    }

    pub fn token_endpoint(&self) -> String {
        self.endpoint("token")
    }

    /// Cookies get `Secure` when the server is reached over HTTPS.
    pub fn secure_cookies(&self) -> bool {
        self.fhir_base_url.starts_with("https://")
    }

    /// The longest any token signed by a key may live: how long a retired key stays published.
    pub fn longest_token_seconds(&self) -> i64 {
        self.access_token_seconds.max(self.backend_token_seconds).max(self.id_token_seconds) + 60
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_hang_off_the_origin() {
        let c = AuthConfig { fhir_base_url: "https://h.example:8443/r4/fhir".into(), ..AuthConfig::default() };
        assert_eq!(c.origin(), "https://h.example:8443");
        assert_eq!(c.token_endpoint(), "https://h.example:8443/auth/token");
        assert!(c.secure_cookies());
        let c = AuthConfig { fhir_base_url: "http://127.0.0.1:8080".into(), ..AuthConfig::default() };
        assert_eq!(c.origin(), "http://127.0.0.1:8080");
        assert!(!c.secure_cookies());
    }

    #[test]
    fn unknown_settings_are_refused() {
        let err = serde_json::from_str::<AuthConfig>(r#"{"acess_token_seconds": 5}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let c: AuthConfig = serde_json::from_str(r#"{"registration": "token-required"}"#).unwrap();
        assert_eq!(c.registration, RegistrationPolicy::TokenRequired);
    }
}
