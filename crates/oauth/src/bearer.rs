//! The check behind every FHIR request that carries `Authorization: Bearer`: a token Portico
//! signed, for this FHIR base, not expired, whose grant is live. Signature checks are cached per
//! token and grant liveness per grant for a short time (see
//! [`crate::AuthConfig::liveness_cache_millis`]); revocations through this process clear the
//! cache at once.

use std::sync::Arc;

use auth::{AccessClaims, AuthError};
use store::auth::{token_hash, Grant};

use crate::error::{ErrorCode, OAuthError};
use crate::AuthServer;

/// A valid access token and the live grant behind it.
#[derive(Debug, Clone)]
pub struct TokenAccess {
    pub claims: Arc<AccessClaims>,
    pub grant: Arc<Grant>,
}

fn invalid(description: &str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidToken, description)
}

impl AuthServer {
    /// Verify an access token presented to the FHIR API.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<TokenAccess, OAuthError> {
        let claims = self.verified_claims(token).await?;
        let now = self.now();
        let config = self.config();
        claims.check(now, config.issuer(), &config.fhir_base_url).map_err(|e| invalid(&e.to_string()))?;
        let grant =
            self.live_grant_cached(&claims.grant).await?.ok_or_else(|| invalid("the token has been revoked"))?;
        self.note_use(&grant);
        Ok(TokenAccess { claims, grant })
    }

    /// The claims of a token whose signature verifies (time and grant not checked).
    pub(crate) async fn verified_claims(&self, token: &str) -> Result<Arc<AccessClaims>, OAuthError> {
        if token.is_empty() || token.len() > 8192 {
            return Err(invalid("the token is malformed"));
        }
        let key = token_hash(token);
        if let Some(claims) = self.inner.verified_tokens.get(&key) {
            return Ok(claims);
        }
        let keys = self.inner.keys.current(&self.inner.store).await;
        let claims = match keys.verify.verify_access_token(token) {
            Err(AuthError::UnknownSigningKey) => {
                let keys = self.inner.keys.after_unknown_kid(&self.inner.store).await;
                keys.verify.verify_access_token(token)
            }
            other => other,
        }
        .map_err(|e| invalid(&e.to_string()))?;
        let claims = Arc::new(claims);
        self.inner.verified_tokens.insert(key, claims.clone());
        Ok(claims)
    }

    /// The grant when live, from the short-lived cache or the database.
    pub(crate) async fn live_grant_cached(&self, grant_id: &auth::GrantId) -> Result<Option<Arc<Grant>>, OAuthError> {
        if let Some(answer) = self.inner.liveness.get(grant_id) {
            // A cached live grant may have expired since.
            return Ok(answer.filter(|g| g.is_live(self.now())));
        }
        let answer = self.inner.store.live_grant(grant_id).await?.map(Arc::new);
        self.inner.liveness.insert(grant_id.clone(), answer.clone());
        Ok(answer)
    }

    /// Record `last_used_at` (Connected apps) without making the request wait.
    pub(crate) fn note_use(&self, grant: &Grant) {
        if self.inner.touched.get(&grant.grant_id).is_some() {
            return;
        }
        self.inner.touched.insert(grant.grant_id.clone(), ());
        let store = self.inner.store.clone();
        let grant_id = grant.grant_id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_grant(&grant_id).await {
                tracing::warn!(error = %e, "could not record grant use");
            }
        });
    }
}
