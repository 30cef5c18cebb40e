//! Client authentication at the token, introspection, revocation and launch endpoints (RFC 6749
//! §2.3, RFC 7523): none for public clients (they identify with `client_id`), a shared secret by
//! HTTP Basic or in the form for confidential-symmetric clients, and a signed JWT assertion for
//! confidential-asymmetric clients (SMART Backend Services).

use std::time::Duration;

use auth::jwt::{assertion_subject, verify_client_assertion};
use auth::password::verify_secret;
use auth::ClientId;
use store::auth::{Client, ClientType};

use crate::error::{Challenge, OAuthError};
use crate::AuthServer;

/// `client_assertion_type` of a JWT assertion.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What the request carried to identify its client; parsed by the HTTP layer.
#[derive(Default, Clone)]
pub struct ClientCredentials {
    /// From `Authorization: Basic`, already form-decoded (RFC 6749 §2.3.1).
    pub basic: Option<(String, String)>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub assertion_type: Option<String>,
    pub assertion: Option<String>,
}

impl ClientCredentials {
    /// Nothing at all identifies the client (no Basic header, `client_id`, secret or assertion).
    pub fn is_empty(&self) -> bool {
        self.basic.is_none()
            && self.client_id.is_none()
            && self.client_secret.is_none()
            && self.assertion_type.is_none()
            && self.assertion.is_none()
    }
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("basic", &self.basic.as_ref().map(|(id, _)| (id, "<redacted>")))
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .field("assertion_type", &self.assertion_type)
            .finish_non_exhaustive()
    }
}

/// How the client proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A public client: identified, not authenticated.
    None,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

#[derive(Debug, Clone)]
pub struct AuthenticatedClient {
    pub client: Client,
    pub method: AuthMethod,
}

impl AuthenticatedClient {
    /// Did the client prove its identity (anything but a public client's bare `client_id`)?
    pub fn is_authenticated(&self) -> bool {
        self.method != AuthMethod::None
    }
}

/// Successful secret checks are remembered this long, so a confidential client does not pay an
/// argon2 verification on every refresh.
pub(crate) const SECRET_CACHE_TTL: Duration = Duration::from_secs(300);

impl AuthServer {
    /// Identify and authenticate the client of a request.
    pub async fn authenticate_client(&self, creds: &ClientCredentials) -> Result<AuthenticatedClient, OAuthError> {
        let methods = usize::from(creds.basic.is_some())
            + usize::from(creds.client_secret.is_some())
            + usize::from(creds.assertion.is_some() || creds.assertion_type.is_some());
        if methods > 1 {
            return Err(OAuthError::invalid_request("use exactly one client authentication method"));
        }
        if let Some((id, secret)) = &creds.basic {
            if creds.client_id.as_ref().is_some_and(|c| c != id) {
                return Err(OAuthError::invalid_request("client_id differs from the HTTP Basic user name"));
            }
            let client = self.secret_client(id, secret, Challenge::Basic).await?;
            return Ok(AuthenticatedClient { client, method: AuthMethod::ClientSecretBasic });
        }
        if let Some(secret) = &creds.client_secret {
            let id = creds
                .client_id
                .as_deref()
                .ok_or_else(|| OAuthError::invalid_request("client_secret needs client_id"))?;
            let client = self.secret_client(id, secret, Challenge::None).await?;
            return Ok(AuthenticatedClient { client, method: AuthMethod::ClientSecretPost });
        }
        if creds.assertion.is_some() || creds.assertion_type.is_some() {
            let client = self.assertion_client(creds).await?;
            return Ok(AuthenticatedClient { client, method: AuthMethod::PrivateKeyJwt });
        }
        let id = creds.client_id.as_deref().ok_or_else(|| {
            OAuthError::invalid_client(
                "client authentication is required (or client_id for a public app)",
                Challenge::None,
            )
        })?;
        let client = self.known_client(id, Challenge::None).await?;
        if client.client_type != ClientType::Public {
            return Err(OAuthError::invalid_client(
                "this client is confidential and must authenticate",
                Challenge::None,
            ));
        }
        Ok(AuthenticatedClient { client, method: AuthMethod::None })
    }

    async fn known_client(&self, id: &str, challenge: Challenge) -> Result<Client, OAuthError> {
        let unknown = || OAuthError::invalid_client("unknown client", challenge);
        let client_id: ClientId = id.parse().map_err(|_| unknown())?;
        self.registered_client(&client_id).await?.ok_or_else(unknown)
    }

    /// A registered client, from the short-lived cache (see [`crate::CLIENT_CACHE_SECONDS`]).
    pub(crate) async fn registered_client(&self, client_id: &ClientId) -> Result<Option<Client>, OAuthError> {
        if let Some(client) = self.inner.clients.get(client_id) {
            return Ok(Some((*client).clone()));
        }
        let client = self.inner.store.client(client_id).await?;
        if let Some(c) = &client {
            self.inner.clients.insert(client_id.clone(), std::sync::Arc::new(c.clone()));
        }
        Ok(client)
    }

    async fn secret_client(&self, id: &str, secret: &str, challenge: Challenge) -> Result<Client, OAuthError> {
        let client = self.known_client(id, challenge).await?;
        let refused = || OAuthError::invalid_client("client authentication failed", challenge);
        if client.client_type != ClientType::ConfidentialSymmetric {
            return Err(refused());
        }
        let Some(hash) = client.secret_hash.as_deref() else { return Err(refused()) };
        // Key: the stored hash and the presented secret, so a changed secret never hits.
        let key = store::auth::token_hash(&format!("{hash}\0{secret}"));
        if self.inner.verified_secrets.get(&key).is_some() {
            return Ok(client);
        }
        let (secret_owned, hash_owned) = (secret.to_owned(), hash.to_owned());
        let ok = tokio::task::spawn_blocking(move || verify_secret(&secret_owned, &hash_owned))
            .await
            .map_err(OAuthError::internal)?;
        if !ok {
            return Err(refused());
        }
        self.inner.verified_secrets.insert(key, ());
        Ok(client)
    }

    async fn assertion_client(&self, creds: &ClientCredentials) -> Result<Client, OAuthError> {
        if creds.assertion_type.as_deref() != Some(JWT_BEARER_ASSERTION) {
            return Err(OAuthError::invalid_request(format!("client_assertion_type must be {JWT_BEARER_ASSERTION}")));
        }
        let assertion =
            creds.assertion.as_deref().ok_or_else(|| OAuthError::invalid_request("client_assertion is missing"))?;
        let id = match (&creds.client_id, assertion_subject(assertion)) {
            (Some(param), Some(sub)) if *param != sub => {
                return Err(OAuthError::invalid_client("client_id differs from the assertion's sub", Challenge::None));
            }
            (Some(param), _) => param.clone(),
            (None, Some(sub)) => sub,
            (None, None) => {
                return Err(OAuthError::invalid_client("the client assertion is not a readable JWT", Challenge::None))
            }
        };
        let client = self.known_client(&id, Challenge::None).await?;
        if client.client_type != ClientType::ConfidentialAsymmetric {
            return Err(OAuthError::invalid_client(
                "this client is not registered for private_key_jwt authentication",
                Challenge::None,
            ));
        }
        let jwks = self.client_jwks(&client).await?;
        let now = self.now();
        let claims =
            verify_client_assertion(assertion, &jwks, client.client_id.as_str(), &self.config().token_endpoint(), now)
                .map_err(|e| OAuthError::invalid_client(e.to_string(), Challenge::None))?;
        if !self.inner.store.remember_jti(&client.client_id, &claims.jti, claims.exp).await? {
            return Err(OAuthError::invalid_client(
                "this client assertion (jti) was already used; sign a new one for every request",
                Challenge::None,
            ));
        }
        Ok(client)
    }

    /// The client's keys: registered inline, or fetched from its `jwks_uri` (cached for a few
    /// minutes).
    async fn client_jwks(&self, client: &Client) -> Result<serde_json::Value, OAuthError> {
        if let Some(jwks) = &client.jwks {
            return Ok(jwks.clone());
        }
        let Some(uri) = client.jwks_uri.as_deref() else {
            return Err(OAuthError::invalid_client("the client has no registered keys", Challenge::None));
        };
        if let Some(cached) = self.inner.jwks_uri_cache.get(uri) {
            return Ok((*cached).clone());
        }
        let fetched = self.fetch_jwks(uri).await.map_err(|why| {
            tracing::warn!(client = %client.client_id, %uri, %why, "cannot fetch client JWKS");
            OAuthError::invalid_client(format!("the client's jwks_uri could not be read: {why}"), Challenge::None)
        })?;
        self.inner.jwks_uri_cache.insert(uri.to_owned(), std::sync::Arc::new(fetched.clone()));
        Ok(fetched)
    }

    async fn fetch_jwks(&self, uri: &str) -> Result<serde_json::Value, String> {
        let response = self
            .inner
            .http
            .get(uri)
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| format!("request failed ({e})"))?;
        if !response.status().is_success() {
            return Err(format!("answered HTTP {}", response.status().as_u16()));
        }
        let bytes = response.bytes().await.map_err(|e| format!("body could not be read ({e})"))?;
        if bytes.len() > 256 * 1024 {
            return Err("the JWK Set is larger than 256 KiB".into());
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| "not JSON".to_string())?;
        auth::jwt::check_client_jwks(&value).map_err(|e| e.to_string())?;
        Ok(value)
    }
}
