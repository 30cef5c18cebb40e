//! `grant_type=client_credentials` for SMART Backend Services: only clients that authenticate
//! with a signed JWT (`private_key_jwt`), only `system/` scopes the client was registered for,
//! short-lived tokens, no refresh token. Each token request records a grant without a person, so
//! backend access is revocable and audited like any other.

use auth::{Context, Scope, ScopeSet};
use store::auth::NewGrant;

use super::TokenRequest;
use crate::client_auth::{AuthMethod, AuthenticatedClient};
use crate::error::{ErrorCode, OAuthError};
use crate::tokens::{Extras, TokenResponse};
use crate::AuthServer;

impl AuthServer {
    pub(crate) async fn client_credentials(
        &self,
        client: &AuthenticatedClient,
        request: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        if client.method != AuthMethod::PrivateKeyJwt {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "client_credentials is for backend services authenticating with private_key_jwt",
            ));
        }
        let text = request.scope.as_deref().unwrap_or_default();
        let (asked, _unknown) = ScopeSet::parse(text);
        let granted: ScopeSet = client
            .client
            .allowed_scopes
            .narrow_to(&asked)
            .iter()
            .filter(|s| matches!(s, Scope::Clinical(c) if c.context == Context::System))
            .cloned()
            .collect();
        if granted.is_empty() {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!("request system/ scopes this client is registered for ({})", client.client.allowed_scopes),
            ));
        }
        let lifetime = self.config().backend_token_seconds.max(1);
        let grant = self
            .inner
            .store
            .create_grant(NewGrant {
                lifetime_seconds: Some(lifetime),
                ..NewGrant::new(client.client.client_id.clone(), granted)
            })
            .await?;
        self.token_response(
            &grant,
            Extras { refresh_token: None, id_token: None, scopes: None, backend: true, not_after: None },
        )
        .await
    }
}
