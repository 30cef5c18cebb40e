//! The token endpoint, one module per grant type (RFC 6749 §4.1.3, §6, §4.4).

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;
pub mod token_exchange;

use crate::client_auth::{AuthenticatedClient, ClientCredentials};
use crate::error::{ErrorCode, OAuthError};
use crate::tokens::TokenResponse;
use crate::AuthServer;

/// A token request's form, as parsed by the HTTP layer (each parameter at most once).
#[derive(Debug, Default, Clone)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    /// Token exchange (RFC 8693).
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    pub audience: Option<String>,
    pub credentials: ClientCredentials,
}

impl AuthServer {
    /// Handle a token request: authenticate the client, then the grant type's own rules.
    pub async fn token(&self, request: TokenRequest) -> Result<TokenResponse, OAuthError> {
        let grant_type =
            request.grant_type.as_deref().ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
        if !matches!(
            grant_type,
            "authorization_code" | "refresh_token" | "client_credentials" | token_exchange::GRANT_TYPE
        ) {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!(
                    "grant_type {grant_type:?} is not supported (authorization_code, refresh_token, client_credentials, {})",
                    token_exchange::GRANT_TYPE
                ),
            ));
        }
        // RFC 6749 §6: only confidential clients authenticate to refresh; a public client's
        // refresh token already names its client, so it may come alone (SMART's fhirclient
        // sends nothing else by default).
        let client: AuthenticatedClient = if grant_type == "refresh_token" && request.credentials.is_empty() {
            self.refresh_token_client(&request).await?
        } else {
            self.authenticate_client(&request.credentials).await?
        };
        match grant_type {
            "authorization_code" => self.exchange_code(&client, &request).await,
            "refresh_token" => self.refresh(&client, &request).await,
            token_exchange::GRANT_TYPE => self.token_exchange(&client, &request).await,
            _ => self.client_credentials(&client, &request).await,
        }
    }
}
