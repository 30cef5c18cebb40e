//! Portico's SMART App Launch 2.x / OAuth 2 authorization server, without HTTP: the operations
//! the endpoints perform, over the store. The HTTP layer parses requests into the types here,
//! calls one method, and maps the result (token JSON, a redirect, a page, or an [`OAuthError`]).
//!
//! * [`authorize`]: an `/authorize` request through sign-in, patient choice and consent to a code;
//! * [`grant_types`]: one module per grant type at the token endpoint;
//! * [`introspect`], [`revoke`], [`register`], [`launch`], [`discovery`];
//! * [`bearer`]: the check every FHIR request makes on its access token.
//!
//! Grants are the root of every token (see `store::auth`): access tokens are JWTs carrying the
//! grant id, and a token is honoured only while its grant is live.

pub mod access;
pub mod authorize;
pub mod bearer;
pub mod client_auth;
pub mod config;
pub mod discovery;
pub mod error;
pub mod grant_types;
pub mod introspect;
mod keys;
pub mod launch;
pub mod patients;
pub mod register;
pub mod revoke;
mod throttle;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use auth::{AccessClaims, GrantId};
use store::auth::Grant;
use store::Store;

pub use access::{Access, Principal, Refusal};
pub use authorize::{AuthorizeParams, BrowserContext, Step};
pub use bearer::TokenAccess;
pub use client_auth::{AuthenticatedClient, ClientCredentials};
pub use config::{AuthConfig, RegistrationPolicy};
pub use error::{Challenge, ErrorCode, OAuthError, PageError};
pub use tokens::TokenResponse;

/// The authorization server. Cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct AuthServer {
    inner: Arc<Inner>,
}

/// How long the token endpoint may use a client registration it read (registrations change
/// rarely: a new redirect URI, which the token endpoint does not read).
pub const CLIENT_CACHE_SECONDS: u64 = 5;

struct Inner {
    store: Store,
    config: AuthConfig,
    keys: keys::Keys,
    /// Client secrets verified recently (key: hash of stored hash and secret).
    verified_secrets: moka::sync::Cache<String, ()>,
    /// JWK Sets fetched from clients' `jwks_uri`.
    jwks_uri_cache: moka::sync::Cache<String, Arc<serde_json::Value>>,
    /// Verified access tokens (key: SHA-256 of the token), so a token's signature is checked once.
    verified_tokens: moka::sync::Cache<String, Arc<AccessClaims>>,
    /// Live grants by id; `None` cached for dead ones. See [`AuthConfig::liveness_cache_millis`].
    liveness: moka::sync::Cache<GrantId, Option<Arc<Grant>>>,
    /// Grants whose `last_used_at` was written recently.
    touched: moka::sync::Cache<GrantId, ()>,
    /// Signed-in users by id, and the patients each may reach, kept briefly (see
    /// [`AuthConfig::patient_list_cache_seconds`]).
    users: moka::sync::Cache<auth::UserId, Arc<store::auth::User>>,
    /// Requests' access by token hash, for the liveness cache's lifetime.
    accesses: moka::sync::Cache<String, Arc<access::Access>>,
    patient_lists: moka::sync::Cache<auth::UserId, Arc<Vec<String>>>,
    /// Registered clients as the token endpoint reads them, for [`CLIENT_CACHE_SECONDS`].
    clients: moka::sync::Cache<auth::ClientId, Arc<store::auth::Client>>,
    throttle: throttle::Throttle,
    http: reqwest::Client,
}

impl AuthServer {
    /// Load (or create) the signing keys and build the server.
    pub async fn new(store: Store, config: AuthConfig) -> Result<AuthServer, OAuthError> {
        let keys = keys::Keys::new(&store, config.access_token_es256).await?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(OAuthError::internal)?;
        let throttle = throttle::Throttle::new(
            config.throttle_failures_per_address,
            Duration::from_secs(config.throttle_window_seconds.max(1)),
        );
        let inner = Inner {
            verified_secrets: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(client_auth::SECRET_CACHE_TTL)
                .build(),
            jwks_uri_cache: moka::sync::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            verified_tokens: moka::sync::Cache::builder()
                .max_capacity(50_000)
                .time_to_live(Duration::from_secs(config.access_token_seconds.max(60) as u64))
                .build(),
            liveness: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_millis(config.liveness_cache_millis))
                .build(),
            touched: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(store::auth::TOUCH_GRANULARITY_SECONDS as u64))
                .build(),
            accesses: moka::sync::Cache::builder()
                .max_capacity(50_000)
                .time_to_live(Duration::from_millis(config.liveness_cache_millis))
                .support_invalidation_closures()
                .build(),
            users: moka::sync::Cache::builder()
                .max_capacity(50_000)
                .time_to_live(Duration::from_secs(config.patient_list_cache_seconds))
                .build(),
            patient_lists: moka::sync::Cache::builder()
                .max_capacity(50_000)
                .time_to_live(Duration::from_secs(config.patient_list_cache_seconds))
                .build(),
            clients: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(CLIENT_CACHE_SECONDS))
                .build(),
            throttle,
            http,
            keys,
            store,
            config,
        };
        let server = AuthServer { inner: Arc::new(inner) };
        // Revocations by other processes (an administrator's CLI, another server) reach this
        // process's caches at once on PostgreSQL.
        let weak = Arc::downgrade(&server.inner);
        server.inner.store.watch_revocations(move |grant| match weak.upgrade() {
            Some(inner) => {
                inner.liveness.invalidate(&grant);
                let _ = inner
                    .accesses
                    .invalidate_entries_if(move |_, a| a.token.as_ref().is_some_and(|t| t.grant.grant_id == grant));
                true
            }
            None => false,
        });
        Ok(server)
    }

    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Now, in epoch seconds, from the store's (injectable) clock.
    pub fn now(&self) -> i64 {
        self.inner.store.clock().now().unix_timestamp()
    }

    /// The published JWK Set, read fresh (a retired key leaves it when its window closes).
    pub async fn jwks(&self) -> Result<serde_json::Value, OAuthError> {
        let keys = self.inner.store.signing_keys().await?;
        Ok(serde_json::json!({ "keys": keys.into_iter().map(|k| k.public_jwk).collect::<Vec<_>>() }))
    }

    /// Add a new signing key of `alg`, retire the previous one (still published until the tokens
    /// it signed have expired), and start signing with the new one. Returns its `kid`.
    pub async fn rotate_keys(&self, alg: auth::keys::SigningAlg) -> Result<String, OAuthError> {
        let kid = keys::rotate(&self.inner.store, alg, self.config().longest_token_seconds()).await?;
        self.inner.keys.force_reload(&self.inner.store).await?;
        Ok(kid)
    }

    /// Revoke a grant (and everything under it) and forget cached answers about it.
    pub async fn revoke_grant(&self, grant_id: &GrantId, by: &str) -> Result<Vec<GrantId>, OAuthError> {
        let revoked = self.inner.store.revoke_grant(grant_id, by).await?;
        self.forget_grants(&revoked);
        self.forget_grants(std::slice::from_ref(grant_id));
        Ok(revoked)
    }

    /// Drop cached liveness for these grants (after revoking them).
    pub fn forget_grants(&self, grants: &[GrantId]) {
        for g in grants {
            self.inner.liveness.invalidate(g);
        }
        if !grants.is_empty() {
            let dead: Vec<GrantId> = grants.to_vec();
            let _ = self
                .inner
                .accesses
                .invalidate_entries_if(move |_, a| a.token.as_ref().is_some_and(|t| dead.contains(&t.grant.grant_id)));
        }
    }
}

/// Add query parameters to a redirect URI that may already have a query.
pub(crate) fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut out = uri.to_owned();
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        serializer.append_pair(k, v);
    }
    let query = serializer.finish();
    if query.is_empty() {
        return out;
    }
    out.push(if uri.contains('?') { '&' } else { '?' });
    out.push_str(&query);
    out
}

#[cfg(test)]
mod tests {
    use super::with_query;

    #[test]
    fn query_parameters_are_appended_and_encoded() {
        assert_eq!(
            with_query("https://app/cb", &[("code", "a b"), ("state", "x&y")]),
            "https://app/cb?code=a+b&state=x%26y"
        );
        assert_eq!(with_query("https://app/cb?v=1", &[("code", "c")]), "https://app/cb?v=1&code=c");
    }
}
