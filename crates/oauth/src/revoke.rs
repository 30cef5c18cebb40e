//! Token revocation (RFC 7009). Revoking either token of a grant (the access token or the refresh
//! token) revokes the grant, so both die. Unknown or already dead tokens are not an error (§2.2);
//! a token issued to another client is refused and left alone.

use store::auth::token_hash;

use crate::client_auth::ClientCredentials;
use crate::error::{ErrorCode, OAuthError};
use crate::AuthServer;

/// `revoked_by` recorded for revocations through the endpoint.
pub const REVOKED_BY_CLIENT: &str = "client-revocation";

impl AuthServer {
    pub async fn revoke_token(&self, creds: &ClientCredentials, token: Option<&str>) -> Result<(), OAuthError> {
        let client = self.authenticate_client(creds).await?;
        let token = token.ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        let grant_id = if token.matches('.').count() == 2 {
            match self.verified_claims(token).await {
                Ok(claims) => Some((claims.grant.clone(), claims.client_id.clone())),
                Err(_) => None,
            }
        } else {
            None
        };
        let grant_id = match grant_id {
            Some(found) => Some(found),
            None => match self.inner.store.refresh_token_info(&token_hash(token)).await? {
                Some(info) => self.inner.store.grant(&info.grant_id).await?.map(|g| (g.grant_id, g.client_id)),
                None => None,
            },
        };
        let Some((grant_id, owner)) = grant_id else { return Ok(()) };
        if owner != client.client.client_id {
            return Err(OAuthError::new(ErrorCode::UnauthorizedClient, "the token was issued to another client"));
        }
        self.revoke_grant(&grant_id, REVOKED_BY_CLIENT).await?;
        Ok(())
    }
}
