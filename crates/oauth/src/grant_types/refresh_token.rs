//! `grant_type=refresh_token`: rotation (the presented token dies and a new one is returned;
//! presenting a dead one again revokes the grant), and narrowing (`scope` may ask for less than
//! the grant, never more: `invalid_scope`). Online-access grants end with the sign-in session.

use auth::password::random_token;
use auth::ScopeSet;
use store::auth::token_hash;

use super::TokenRequest;
use crate::client_auth::AuthenticatedClient;
use crate::error::{ErrorCode, OAuthError};
use crate::tokens::{Extras, TokenResponse};
use crate::AuthServer;

impl AuthServer {
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
            Extras { refresh_token: Some(new_token), id_token: None, scopes: narrowed.as_ref(), backend: false },
        )
        .await
    }
}
