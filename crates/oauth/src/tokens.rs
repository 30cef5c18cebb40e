//! Issuing tokens for a grant: the signed access token, the refresh token, the OpenID Connect ID
//! token, and the token response with SMART's launch context.

use auth::jwt::IdTokenClaims;
use auth::password::random_token;
use auth::{AccessClaims, Scope, ScopeSet, TokenKind};
use serde::Serialize;
use store::auth::{token_hash, Grant};

use crate::error::OAuthError;
use crate::AuthServer;

/// The token endpoint's JSON answer (RFC 6749 §5.1 plus SMART's context fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encounter: Option<String>,
    #[serde(rename = "fhirContext", skip_serializing_if = "Option::is_none")]
    pub fhir_context: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub need_patient_banner: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smart_style_url: Option<String>,
    /// Token exchange (RFC 8693 §2.2.1): the type of the token issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// Token exchange: the grants involved, for the audit trail (never sent).
    #[serde(skip)]
    pub exchanged: Option<Box<crate::grant_types::token_exchange::Exchanged>>,
}

/// What to add besides the access token.
pub(crate) struct Extras<'a> {
    /// A fresh refresh token to return (already stored).
    pub refresh_token: Option<String>,
    /// Issue an ID token (code exchange with `openid` granted), with this nonce.
    pub id_token: Option<Option<&'a str>>,
    /// Scopes of this access token when narrower than the grant's (refresh with `scope`).
    pub scopes: Option<&'a ScopeSet>,
    /// A backend-services token (shorter lifetime, no launch context).
    pub backend: bool,
    /// The token may live no later than this (epoch seconds): an exchanged token ends with its
    /// subject token.
    pub not_after: Option<i64>,
}

impl AuthServer {
    /// A new random refresh token for `grant`, stored as its hash.
    pub(crate) async fn new_refresh_token(&self, grant: &Grant) -> Result<String, OAuthError> {
        let token = random_token(32);
        self.inner
            .store
            .create_refresh_token(&token_hash(&token), &grant.grant_id, self.config().offline_access_seconds)
            .await?;
        Ok(token)
    }

    /// An access token for an existing grant, outside any OAuth flow: for administrative tooling
    /// (and tests) that create grants directly. The grant's rules apply as to any token.
    pub async fn access_token_for(&self, grant: &Grant) -> Result<TokenResponse, OAuthError> {
        let backend = grant.user_id.is_none();
        self.token_response(
            grant,
            Extras { refresh_token: None, id_token: None, scopes: None, backend, not_after: None },
        )
        .await
    }

    /// Like [`Self::access_token_for`], with a refresh token when the grant allows one
    /// (`offline_access`/`online_access` and a person).
    pub async fn tokens_for(&self, grant: &Grant) -> Result<TokenResponse, OAuthError> {
        let refresh_token =
            if Self::grant_refreshes(grant) { Some(self.new_refresh_token(grant).await?) } else { None };
        let backend = grant.user_id.is_none();
        self.token_response(grant, Extras { refresh_token, id_token: None, scopes: None, backend, not_after: None })
            .await
    }

    /// Does this grant get refresh tokens (`offline_access` or `online_access`, and a person)?
    pub(crate) fn grant_refreshes(grant: &Grant) -> bool {
        grant.user_id.is_some() && (grant.scopes.offline() || grant.scopes.online())
    }

    pub(crate) async fn token_response(&self, grant: &Grant, extras: Extras<'_>) -> Result<TokenResponse, OAuthError> {
        let now = self.now();
        let config = self.config();
        let ttl = if extras.backend { config.backend_token_seconds } else { config.access_token_seconds };
        let mut exp = now + ttl.max(1);
        if let Some(grant_end) = grant.expires_at {
            exp = exp.min(grant_end);
        }
        if let Some(limit) = extras.not_after {
            exp = exp.min(limit);
        }
        if exp <= now {
            return Err(OAuthError::invalid_grant("the authorization has expired"));
        }
        let scopes = extras.scopes.unwrap_or(&grant.scopes);
        let fhir_user = if scopes.contains(&Scope::FhirUser) { self.fhir_user_of(grant).await? } else { None };
        let claims = AccessClaims {
            iss: config.issuer().to_owned(),
            sub: grant.user_id.as_ref().map_or_else(|| grant.client_id.to_string(), |u| u.to_string()),
            aud: config.fhir_base_url.clone(),
            exp,
            iat: now,
            jti: uuid_like(),
            grant: grant.grant_id.clone(),
            client_id: grant.client_id.clone(),
            scope: scopes.to_string(),
            patient: grant.patient_id.clone(),
            fhir_user: fhir_user.clone(),
            kind: TokenKind::Access,
        };
        let keys = self.inner.keys.current(&self.inner.store).await;
        let access_token = keys.access_token.sign(&claims).map_err(OAuthError::internal)?;

        let id_token = match extras.id_token {
            Some(nonce) if scopes.contains(&Scope::OpenId) && grant.user_id.is_some() => {
                Some(self.id_token(grant, scopes, fhir_user.as_deref(), nonce, now).await?)
            }
            _ => None,
        };
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: exp - now,
            scope: scopes.to_string(),
            refresh_token: extras.refresh_token,
            id_token,
            patient: if extras.backend { None } else { grant.patient_id.as_ref().map(|p| p.to_string()) },
            encounter: grant.encounter_id.clone(),
            fhir_context: grant.fhir_context.clone(),
            need_patient_banner: if grant.patient_id.is_some() {
                Some(grant.need_patient_banner.unwrap_or(true))
            } else {
                grant.need_patient_banner
            },
            smart_style_url: grant.smart_style_url.clone(),
            issued_token_type: None,
            exchanged: None,
        })
    }

    /// The signed-in user's FHIR resource (`Patient/123`), if they have one.
    pub(crate) async fn fhir_user_of(&self, grant: &Grant) -> Result<Option<String>, OAuthError> {
        let Some(user_id) = &grant.user_id else { return Ok(None) };
        // The same short-lived cache the token checks use: a person's FHIR user does not change
        // between a grant and its tokens.
        Ok(self.cached_user(user_id).await?.fhir_user.clone())
    }

    async fn id_token(
        &self,
        grant: &Grant,
        scopes: &ScopeSet,
        fhir_user: Option<&str>,
        nonce: Option<&str>,
        now: i64,
    ) -> Result<String, OAuthError> {
        let config = self.config();
        let user = match &grant.user_id {
            Some(id) => self.inner.store.user(id).await?,
            None => None,
        };
        let Some(user) = user else { return Err(OAuthError::internal("grant user is missing")) };
        let profile = scopes.contains(&Scope::Profile);
        let name = if profile { self.display_name(user.fhir_user.as_deref()).await } else { None };
        let claims = IdTokenClaims {
            iss: config.issuer().to_owned(),
            sub: user.user_id.to_string(),
            aud: grant.client_id.to_string(),
            exp: now + config.id_token_seconds.max(60),
            iat: now,
            auth_time: grant.created_at,
            nonce: nonce.map(str::to_owned),
            fhir_user: fhir_user.map(|r| format!("{}/{r}", config.fhir_base_url)),
            name,
            preferred_username: profile.then(|| user.username.clone()),
        };
        let keys = self.inner.keys.current(&self.inner.store).await;
        keys.id_token.sign(&claims).map_err(OAuthError::internal)
    }

    /// A person's name from their FHIR resource (`Patient/…` or `Practitioner/…`), for the ID token
    /// and the pages.
    pub async fn display_name(&self, fhir_user: Option<&str>) -> Option<String> {
        let (rtype, id) = fhir_user?.split_once('/')?;
        let store::ReadOutcome::Found(resource) = self.inner.store.read(rtype, id).await.ok()? else { return None };
        let value: serde_json::Value = serde_json::from_str(&resource.body).ok()?;
        crate::patients::human_name(&value)
    }
}

/// A unique token id (`jti`): 128 random bits.
fn uuid_like() -> String {
    random_token(16)
}
