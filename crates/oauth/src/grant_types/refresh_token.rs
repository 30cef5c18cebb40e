//! `grant_type=refresh_token`: rotation (the presented token dies and a new one is returned;
//! presenting a dead one again revokes the grant), and narrowing (`scope` may ask for less than
//! the grant, never more: `invalid_scope`). Online-access grants end with the sign-in session.
//! A public client may present its refresh token alone: the token names its client (RFC 6749
//! §6 asks only confidential clients to authenticate); a confidential client always
//! authenticates.

use auth::password::random_token;
use auth::ScopeSet;
use store::auth::{token_hash, ClientType};

use super::TokenRequest;
use crate::client_auth::{AuthMethod, AuthenticatedClient};
use crate::error::Challenge;
use crate::error::{ErrorCode, OAuthError};
use crate::tokens::{Extras, TokenResponse};
use crate::AuthServer;

impl AuthServer {
    /// The client of a refresh request that carried no client identification: the client the
    /// refresh token was issued to, when that client is public. Nothing is rotated or burnt
    /// here; `refresh` then applies every rule as for an identified client.
    pub(crate) async fn refresh_token_client(&self, request: &TokenRequest) -> Result<AuthenticatedClient, OAuthError> {
        let token =
            request.refresh_token.as_deref().ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
        let not_valid = || OAuthError::invalid_grant("the refresh token is not valid");
        let info = self.inner.store.refresh_token_info(&token_hash(token)).await?.ok_or_else(not_valid)?;
        let grant = self.inner.store.grant(&info.grant_id).await?.ok_or_else(not_valid)?;
        let client = self.inner.store.client(&grant.client_id).await?.ok_or_else(not_valid)?;
        if client.client_type != ClientType::Public {
            return Err(OAuthError::invalid_client(
                "this client is confidential and must authenticate to refresh",
                Challenge::None,
            ));
        }
        Ok(AuthenticatedClient { client, method: AuthMethod::None })
    }

    pub(crate) async fn refresh(
        &self,
        client: &AuthenticatedClient,
        request: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let token =
            request.refresh_token.as_deref().ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
        let old_hash = token_hash(token);
        let info = self
            .inner
            .store
            .refresh_token_info(&old_hash)
            .await?
            .ok_or_else(|| OAuthError::invalid_grant("the refresh token is not valid"))?;
        let grant = self
            .inner
            .store
            .grant(&info.grant_id)
            .await?
            .ok_or_else(|| OAuthError::invalid_grant("the refresh token is not valid"))?;
        // Checked before rotating, so another client cannot burn (or learn about) the token.
        if grant.client_id != client.client.client_id {
            return Err(OAuthError::invalid_grant("the refresh token was issued to another client"));
        }
        let narrowed = match request.scope.as_deref() {
            None => None,
            Some(text) => {
                let (asked, unknown) = ScopeSet::parse(text);
                if !unknown.is_empty() || !asked.is_subset_of(&grant.scopes) {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidScope,
                        format!("a refresh can only narrow the granted scopes ({})", grant.scopes),
                    ));
                }
                Some(asked)
            }
        };
        let new_token = random_token(32);
        let grant = self
            .inner
            .store
            .rotate_refresh_token(&old_hash, &token_hash(&new_token), self.config().offline_access_seconds)
            .await
            .map_err(|e| {
                self.forget_grants(e.revoked_grants());
                OAuthError::from(e)
            })?;
        self.token_response(
            &grant,
            Extras {
                refresh_token: Some(new_token),
                id_token: None,
                scopes: narrowed.as_ref(),
                backend: false,
                not_after: None,
            },
        )
        .await
    }
}
