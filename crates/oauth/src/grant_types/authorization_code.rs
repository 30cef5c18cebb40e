//! `grant_type=authorization_code`: a code works once, within its lifetime, for the client it was
//! issued to, with the same `redirect_uri`, and with the PKCE verifier of its challenge. A second
//! use revokes every token issued from it (the store does that inside the redemption).

use store::auth::token_hash;

use super::TokenRequest;
use crate::client_auth::AuthenticatedClient;
use crate::error::OAuthError;
use crate::tokens::{Extras, TokenResponse};
use crate::AuthServer;

/// `revoked_by` when a redemption fails its checks after the code was spent.
const REVOKED_BY_FAILED_REDEMPTION: &str = "code-check-failed";

impl AuthServer {
    pub(crate) async fn exchange_code(
        &self,
        client: &AuthenticatedClient,
        request: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let code = request.code.as_deref().ok_or_else(|| OAuthError::invalid_request("code is required"))?;
        let verifier = request
            .code_verifier
            .as_deref()
            .ok_or_else(|| OAuthError::invalid_request("code_verifier is required (PKCE)"))?;
        let redirect_uri =
            request.redirect_uri.as_deref().ok_or_else(|| OAuthError::invalid_request("redirect_uri is required"))?;
        let redemption = self.inner.store.redeem_code(&token_hash(code)).await.map_err(|e| {
            self.forget_grants(e.revoked_grants());
            OAuthError::from(e)
        })?;
        let refusal = if redemption.client_id != client.client.client_id {
            Some("the code was issued to another client")
        } else if redemption.redirect_uri != redirect_uri {
            Some("redirect_uri does not match the authorization request")
        } else if let Err(e) = redemption.challenge.verify(verifier) {
            tracing::info!(client = %client.client.client_id, error = %e, "PKCE verification failed");
            Some("code_verifier does not match the code_challenge")
        } else {
            None
        };
        if let Some(why) = refusal {
            // The code is spent; the grant it was for cannot be completed, so it goes too.
            self.revoke_grant(&redemption.grant.grant_id, REVOKED_BY_FAILED_REDEMPTION).await?;
            return Err(OAuthError::invalid_grant(why));
        }
        let grant = redemption.grant;
        let refresh_token =
            if Self::grant_refreshes(&grant) { Some(self.new_refresh_token(&grant).await?) } else { None };
        self.token_response(
            &grant,
            Extras {
                refresh_token,
                id_token: Some(redemption.nonce.as_deref()),
                scopes: None,
                backend: false,
                not_after: None,
            },
        )
        .await
    }
}
