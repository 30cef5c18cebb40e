//! Dynamic client registration (RFC 7591) and the rules shared with `portico client add`.
//!
//! Policy ([`crate::RegistrationPolicy`]): public apps may register freely and confidential ones
//! need an initial access token, or every registration needs one, or none is accepted. Unknown
//! metadata is ignored (§2); invalid metadata is `invalid_client_metadata` or
//! `invalid_redirect_uri` (§3.2.2).

use auth::password::{hash_secret, random_token};
use auth::{ClientId, Context, Scope, ScopeSet};
use serde_json::{json, Value};
use store::auth::{Client, ClientType, NewClient, OwnerType, RegistrationSource};

use crate::config::RegistrationPolicy;
use crate::error::{ErrorCode, OAuthError};
use crate::AuthServer;

/// The most a person-facing app may be registered for.
pub const DEFAULT_APP_SCOPES: &str = "openid fhirUser profile launch launch/patient launch/encounter offline_access \
     online_access patient/*.cruds user/*.cruds";

/// A client as `portico client add` or the registration endpoint describes it.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub client_id: Option<String>,
    pub name: String,
    pub owner_type: OwnerType,
    pub client_type: ClientType,
    pub redirect_uris: Vec<String>,
    pub scopes: String,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub policy_uri: Option<String>,
    pub tos_uri: Option<String>,
    pub ehr_launcher: bool,
    pub source: RegistrationSource,
}

/// A registered client and, for confidential-symmetric ones, its secret (shown once).
#[derive(Debug, Clone)]
pub struct Registered {
    pub client: Client,
    pub client_secret: Option<String>,
}

impl Registered {
    /// The RFC 7591 §3.2.1 response (also what `portico client add` prints).
    pub fn to_json(&self) -> Value {
        let c = &self.client;
        let method = match c.client_type {
            ClientType::Public => "none",
            ClientType::ConfidentialSymmetric => "client_secret_basic",
            ClientType::ConfidentialAsymmetric => "private_key_jwt",
        };
        let mut grant_types = vec!["authorization_code", "refresh_token"];
        if c.client_type == ClientType::ConfidentialAsymmetric {
            grant_types.push("client_credentials");
        }
        let mut out = json!({
            "client_id": c.client_id,
            "client_id_issued_at": c.created_at,
            "client_name": c.name,
            "portico_owner_type": c.owner_type.as_str(),
            "token_endpoint_auth_method": method,
            "grant_types": grant_types,
            "response_types": ["code"],
            "redirect_uris": c.redirect_uris,
            "scope": c.allowed_scopes.to_string(),
        });
        if let Some(secret) = &self.client_secret {
            out["client_secret"] = json!(secret);
            out["client_secret_expires_at"] = json!(0);
        }
        for (key, value) in [
            ("jwks_uri", &c.jwks_uri),
            ("logo_uri", &c.logo_uri),
            ("policy_uri", &c.policy_uri),
            ("tos_uri", &c.tos_uri),
        ] {
            if let Some(v) = value {
                out[key] = json!(v);
            }
        }
        if let Some(jwks) = &c.jwks {
            out["jwks"] = jwks.clone();
        }
        if c.ehr_launcher {
            out["portico_ehr_launcher"] = json!(true);
        }
        out
    }
}

fn metadata_error(description: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, description)
}

/// Redirect URIs: absolute, no fragment; `https`, or `http` only to the loopback interface, or a
/// private-use scheme with a dot (native apps, RFC 8252 §7.1).
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(uri).map_err(|_| format!("{uri:?} is not an absolute URI"))?;
    if parsed.fragment().is_some() {
        return Err(format!("{uri:?} must not have a fragment"));
    }
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => match parsed.host_str() {
            Some("localhost" | "127.0.0.1" | "[::1]") => Ok(()),
            _ => Err(format!("{uri:?}: plain http is only allowed to localhost; use https")),
        },
        scheme if scheme.contains('.') => Ok(()),
        scheme => Err(format!(
            "{uri:?}: scheme {scheme:?} is not allowed (https, loopback http, or a reverse-DNS app scheme)"
        )),
    }
}

fn check_https_url(name: &str, value: &Option<String>) -> Result<(), OAuthError> {
    if let Some(v) = value {
        let ok = reqwest::Url::parse(v).is_ok_and(|u| matches!(u.scheme(), "https" | "http"));
        if !ok {
            return Err(metadata_error(format!("{name} must be an http(s) URL")));
        }
    }
    Ok(())
}

impl AuthServer {
    /// Register a client from a spec (CLI or endpoint). Generates the id and, for symmetric
    /// clients, the secret.
    pub async fn register_client(&self, spec: ClientSpec) -> Result<Registered, OAuthError> {
        if spec.name.trim().is_empty() || spec.name.len() > 200 {
            return Err(metadata_error("client_name must be 1-200 characters"));
        }
        for uri in &spec.redirect_uris {
            check_redirect_uri(uri).map_err(|e| OAuthError::new(ErrorCode::InvalidRedirectUri, e))?;
        }
        let (scopes, unknown) = ScopeSet::parse(&spec.scopes);
        if !unknown.is_empty() {
            return Err(metadata_error(format!("unknown scopes: {}", unknown.join(" "))));
        }
        if scopes.is_empty() {
            return Err(metadata_error("the client needs at least one scope"));
        }
        if scopes.has_system_scopes() && spec.client_type != ClientType::ConfidentialAsymmetric {
            return Err(metadata_error("system/ scopes are only for backend services using private_key_jwt"));
        }
        let person_facing = scopes.clinical().any(|c| c.context != Context::System) || scopes.contains(&Scope::OpenId);
        // A confidential client without redirect URIs is a helper service: it never runs a
        // sign-in (nothing can match an empty list) and receives tokens only by token exchange.
        if person_facing
            && spec.redirect_uris.is_empty()
            && !spec.ehr_launcher
            && spec.client_type == ClientType::Public
        {
            return Err(OAuthError::new(
                ErrorCode::InvalidRedirectUri,
                "redirect_uris are required for public apps (only a confidential helper service may have none)",
            ));
        }
        check_https_url("logo_uri", &spec.logo_uri)?;
        check_https_url("policy_uri", &spec.policy_uri)?;
        check_https_url("tos_uri", &spec.tos_uri)?;
        check_https_url("jwks_uri", &spec.jwks_uri)?;
        if let Some(jwks) = &spec.jwks {
            auth::jwt::check_client_jwks(jwks).map_err(|e| metadata_error(e.to_string()))?;
        }
        if spec.client_type == ClientType::ConfidentialAsymmetric && spec.jwks.is_none() && spec.jwks_uri.is_none() {
            return Err(metadata_error("private_key_jwt needs jwks or jwks_uri"));
        }
        let client_id: ClientId = match &spec.client_id {
            Some(id) => id.parse().map_err(|e: auth::AuthError| metadata_error(e.to_string()))?,
            None => random_token(16).parse().map_err(|e: auth::AuthError| OAuthError::internal(e))?,
        };
        let client_secret = (spec.client_type == ClientType::ConfidentialSymmetric).then(|| random_token(32));
        let secret_hash = match &client_secret {
            Some(s) => {
                let s = s.clone();
                Some(
                    tokio::task::spawn_blocking(move || hash_secret(&s))
                        .await
                        .map_err(OAuthError::internal)?
                        .map_err(OAuthError::internal)?,
                )
            }
            None => None,
        };
        let client = self
            .inner
            .store
            .create_client(NewClient {
                client_id,
                name: spec.name.trim().to_owned(),
                owner_type: spec.owner_type,
                client_type: spec.client_type,
                secret_hash,
                jwks: spec.jwks,
                jwks_uri: spec.jwks_uri,
                redirect_uris: spec.redirect_uris,
                allowed_scopes: scopes,
                logo_uri: spec.logo_uri,
                policy_uri: spec.policy_uri,
                tos_uri: spec.tos_uri,
                registration_source: spec.source,
                ehr_launcher: spec.ehr_launcher,
            })
            .await
            .map_err(|e| match e {
                store::auth::AuthStoreError::Conflict(m) => metadata_error(m),
                other => OAuthError::from(other),
            })?;
        Ok(Registered { client, client_secret })
    }

    /// `POST /auth/register`: `initial_token` is the bearer token the request carried, if any.
    pub async fn register_dynamic(
        &self,
        metadata: &Value,
        initial_token: Option<&str>,
    ) -> Result<Registered, OAuthError> {
        let Some(m) = metadata.as_object() else { return Err(metadata_error("the body must be a JSON object")) };
        let text = |key: &str| -> Result<Option<String>, OAuthError> {
            match m.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(metadata_error(format!("{key} must be a string"))),
            }
        };
        let list = |key: &str| -> Result<Option<Vec<String>>, OAuthError> {
            match m.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_owned).ok_or_else(|| metadata_error(format!("{key} must list strings")))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some),
                Some(_) => Err(metadata_error(format!("{key} must be an array of strings"))),
            }
        };
        let method = text("token_endpoint_auth_method")?.unwrap_or_else(|| "client_secret_basic".into());
        let client_type = match method.as_str() {
            "none" => ClientType::Public,
            "client_secret_basic" | "client_secret_post" => ClientType::ConfidentialSymmetric,
            "private_key_jwt" => ClientType::ConfidentialAsymmetric,
            other => return Err(metadata_error(format!("token_endpoint_auth_method {other:?} is not supported"))),
        };

        let trusted = match initial_token {
            Some(t) => {
                if !self.config().registration_tokens.iter().any(|known| known == t) {
                    return Err(OAuthError::new(ErrorCode::InvalidToken, "the initial access token is not valid"));
                }
                true
            }
            None => false,
        };
        match self.config().registration {
            RegistrationPolicy::Closed => {
                return Err(OAuthError::new(ErrorCode::AccessDenied, "dynamic registration is closed on this server"))
            }
            RegistrationPolicy::TokenRequired if !trusted => {
                return Err(OAuthError::new(ErrorCode::InvalidToken, "registration needs an initial access token"))
            }
            RegistrationPolicy::OpenForPublic if !trusted && client_type != ClientType::Public => {
                return Err(OAuthError::new(
                    ErrorCode::InvalidToken,
                    "confidential clients need an initial access token; public apps (token_endpoint_auth_method \"none\") may register freely",
                ))
            }
            _ => {}
        }

        if let Some(types) = list("response_types")? {
            if types.iter().any(|t| t != "code") {
                return Err(metadata_error("only the response type \"code\" is supported"));
            }
        }
        if let Some(types) = list("grant_types")? {
            for t in &types {
                match t.as_str() {
                    "authorization_code" | "refresh_token" => {}
                    "client_credentials" if client_type == ClientType::ConfidentialAsymmetric => {}
                    "client_credentials" => return Err(metadata_error("client_credentials needs private_key_jwt")),
                    other => return Err(metadata_error(format!("grant type {other:?} is not supported"))),
                }
            }
        }
        let owner_type = match text("portico_owner_type")? {
            None => OwnerType::IndependentDeveloper,
            Some(t) => t.parse::<OwnerType>().map_err(metadata_error)?,
        };
        if owner_type != OwnerType::IndependentDeveloper && !trusted {
            return Err(metadata_error("only registrations with an initial access token may claim another owner type"));
        }
        let default_scopes = if client_type == ClientType::ConfidentialAsymmetric && trusted {
            format!("{DEFAULT_APP_SCOPES} system/*.rs")
        } else {
            DEFAULT_APP_SCOPES.to_owned()
        };
        let scopes = match text("scope")? {
            Some(asked) => {
                let (asked, _) = ScopeSet::parse(&asked);
                let max = ScopeSet::parse(&default_scopes).0;
                let granted = max.narrow_to(&asked);
                if granted.is_empty() {
                    return Err(metadata_error("none of the requested scopes can be registered"));
                }
                granted.to_string()
            }
            None => default_scopes,
        };
        let jwks = match m.get("jwks") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.clone()),
        };
        self.register_client(ClientSpec {
            client_id: None,
            name: text("client_name")?.unwrap_or_default(),
            owner_type,
            client_type,
            redirect_uris: list("redirect_uris")?.unwrap_or_default(),
            scopes,
            jwks,
            jwks_uri: text("jwks_uri")?,
            logo_uri: text("logo_uri")?,
            policy_uri: text("policy_uri")?,
            tos_uri: text("tos_uri")?,
            ehr_launcher: false,
            source: RegistrationSource::Dynamic,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uri_rules() {
        for ok in
            ["https://app.example/cb", "http://localhost:3000/cb", "http://127.0.0.1:9/x?y=1", "com.example.app:/cb"]
        {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in
            ["http://app.example/cb", "https://app.example/cb#frag", "/relative", "javascript:alert(1)", "ftp://x/y"]
        {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }
}
