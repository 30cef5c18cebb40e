//! Discovery documents: SMART's `/.well-known/smart-configuration` (with the capabilities Portico
//! really has) and OpenID Connect's `/.well-known/openid-configuration`.

use serde_json::{json, Value};

use crate::AuthServer;

/// The SMART capabilities Portico implements.
pub const CAPABILITIES: &[&str] = &[
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-passthrough-banner",
    "context-passthrough-style",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "sso-openid-connect",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
];

/// Scopes Portico understands (a representative list; any resource type may be named).
const SCOPES_SUPPORTED: &[&str] = &[
    "openid",
    "fhirUser",
    "profile",
    "launch",
    "launch/patient",
    "launch/encounter",
    "offline_access",
    "online_access",
    "patient/*.cruds",
    "patient/*.rs",
    "patient/*.read",
    "patient/*.write",
    "user/*.cruds",
    "user/*.rs",
    "user/*.read",
    "system/*.rs",
    "system/*.read",
];

impl AuthServer {
    pub fn smart_configuration(&self) -> Value {
        let c = self.config();
        json!({
            "issuer": c.issuer(),
            "jwks_uri": c.endpoint("jwks"),
            "authorization_endpoint": c.endpoint("authorize"),
            "token_endpoint": c.token_endpoint(),
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "RS256", "ES256"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", crate::grant_types::token_exchange::GRANT_TYPE],
            "registration_endpoint": c.endpoint("register"),
            "scopes_supported": SCOPES_SUPPORTED,
            "response_types_supported": ["code"],
            "management_endpoint": format!("{}/account/apps", c.origin()),
            "introspection_endpoint": c.endpoint("introspect"),
            "revocation_endpoint": c.endpoint("revoke"),
            "capabilities": CAPABILITIES,
            "code_challenge_methods_supported": ["S256"],
        })
    }

    pub fn openid_configuration(&self) -> Value {
        let c = self.config();
        json!({
            "issuer": c.issuer(),
            "authorization_endpoint": c.endpoint("authorize"),
            "token_endpoint": c.token_endpoint(),
            "jwks_uri": c.endpoint("jwks"),
            "registration_endpoint": c.endpoint("register"),
            "introspection_endpoint": c.endpoint("introspect"),
            "revocation_endpoint": c.endpoint("revoke"),
            "scopes_supported": ["openid", "fhirUser", "profile", "offline_access", "online_access"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", crate::grant_types::token_exchange::GRANT_TYPE],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384", "RS256", "ES256"],
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "fhirUser", "name", "preferred_username"],
            "code_challenge_methods_supported": ["S256"],
            "prompt_values_supported": ["login", "none"],
        })
    }

    /// The OAuth URIs for the CapabilityStatement's SMART security extension.
    pub fn oauth_uris(&self) -> Vec<(&'static str, String)> {
        let c = self.config();
        vec![
            ("authorize", c.endpoint("authorize")),
            ("token", c.token_endpoint()),
            ("register", c.endpoint("register")),
            ("manage", format!("{}/account/apps", c.origin())),
            ("introspect", c.endpoint("introspect")),
            ("revoke", c.endpoint("revoke")),
        ]
    }
}
