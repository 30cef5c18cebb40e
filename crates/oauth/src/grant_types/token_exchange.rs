//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693): an app hands a
//! narrower token to a helper service it works with, e.g. a CDS Hooks service that must read the
//! patient's record while answering a hook.
//!
//! The app authenticates as itself and presents one of its own live access tokens
//! (`subject_token`); `audience` names the registered service. The answer is an access token for
//! the service, recorded as a **child grant** of the subject token's grant: the same person,
//! patient and withheld categories, scopes no broader than the subject token's (nor than the
//! service is registered for), and a life no longer than the subject token's remaining one. Only
//! when the subject grant has `offline_access`, the service is registered for it and can keep a
//! secret does the child live on with a refresh token, and then only as long as its parent.
//! Revoking the parent revokes the child (the grant tree), and the person sees it on Connected apps
//! under the app that shared it.

use auth::{Scope, ScopeSet, TokenKind};
use store::auth::{Grant, NewGrant};

use super::TokenRequest;
use crate::client_auth::AuthenticatedClient;
use crate::error::{ErrorCode, OAuthError};
use crate::tokens::{Extras, TokenResponse};
use crate::AuthServer;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// What a successful exchange created, for the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchanged {
    pub parent: Grant,
    pub child: Grant,
    pub app_name: String,
    pub service_name: String,
    /// The person's FHIR resource (`Patient/…`), when there is a person.
    pub fhir_user: Option<String>,
}

impl AuthServer {
    pub(crate) async fn token_exchange(
        &self,
        client: &AuthenticatedClient,
        request: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        if request.actor_token.is_some() || request.actor_token_type.is_some() {
            return Err(OAuthError::invalid_request(
                "actor_token is not supported: the requesting client is the actor",
            ));
        }
        let subject =
            request.subject_token.as_deref().ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?;
        match request.subject_token_type.as_deref() {
            Some(ACCESS_TOKEN_TYPE) => {}
            Some(other) => {
                return Err(OAuthError::invalid_request(format!(
                    "subject_token_type {other:?} is not supported (use {ACCESS_TOKEN_TYPE})"
                )))
            }
            None => return Err(OAuthError::invalid_request("subject_token_type is required")),
        }
        if let Some(kind) = request.requested_token_type.as_deref().filter(|k| *k != ACCESS_TOKEN_TYPE) {
            return Err(OAuthError::invalid_request(format!(
                "requested_token_type {kind:?} is not supported (only {ACCESS_TOKEN_TYPE})"
            )));
        }

        // The subject token: Portico's own, live, and the requesting client's.
        let not_active = |why: &str| OAuthError::invalid_request(format!("the subject_token is not active: {why}"));
        let claims = self.verified_claims(subject).await.map_err(|e| not_active(&e.description))?;
        let now = self.now();
        let config = self.config();
        claims.check(now, config.issuer(), &config.fhir_base_url).map_err(|e| not_active(&e.to_string()))?;
        if claims.kind != TokenKind::Access {
            return Err(not_active("it is not an access token"));
        }
        if claims.client_id != client.client.client_id {
            return Err(OAuthError::invalid_request("the subject_token was issued to another client"));
        }
        // The cached answer serves the checks below; the child grant is written only if the
        // parent is live at that moment (create_grant locks and re-reads it), so an exchange
        // still sees a revocation at once.
        let parent = self.live_grant_cached(&claims.grant).await?.ok_or_else(|| not_active("revoked"))?;

        // The audience: a registered service other than nothing.
        let audience = request.audience.as_deref().ok_or_else(|| {
            OAuthError::new(ErrorCode::InvalidTarget, "audience is required: the client id of the service")
        })?;
        let unknown =
            || OAuthError::new(ErrorCode::InvalidTarget, format!("audience {audience:?} is not a registered service"));
        let service_id = audience.parse().map_err(|_| unknown())?;
        let service = self.registered_client(&service_id).await?.ok_or_else(unknown)?;

        // Scopes: within the subject token's, and within what the service is registered for.
        let (subject_scopes, _) = ScopeSet::parse(&claims.scope);
        let long_lived_allowed =
            parent.scopes.offline() && service.allowed_scopes.offline() && service.is_confidential();
        let scopes = match request.scope.as_deref() {
            Some(text) => {
                let (asked, unknown) = ScopeSet::parse(text);
                if !unknown.is_empty() {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidScope,
                        format!("unknown scopes: {}", unknown.join(" ")),
                    ));
                }
                if asked.is_empty() || !asked.is_subset_of(&subject_scopes) {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidScope,
                        format!("an exchanged token can only narrow the subject token's scopes ({subject_scopes})"),
                    ));
                }
                if !asked.is_subset_of(&service.allowed_scopes) {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidScope,
                        format!("{} is registered for {} only", service.name, service.allowed_scopes),
                    ));
                }
                if asked.offline() && !long_lived_allowed {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidScope,
                        "offline_access needs a subject grant with offline_access and a confidential service registered for it",
                    ));
                }
                asked
            }
            None => {
                let mut both = service.allowed_scopes.narrow_to(&subject_scopes);
                if both.offline() && !long_lived_allowed {
                    both = both.iter().filter(|s| **s != Scope::OfflineAccess).cloned().collect();
                }
                both
            }
        };
        if !scopes.clinical().any(|_| true) {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!(
                    "no data scope is both in the subject token ({subject_scopes}) and registered for {}",
                    service.name
                ),
            ));
        }

        let long_lived = scopes.offline();
        let child = self
            .inner
            .store
            .create_grant(NewGrant {
                user_id: parent.user_id.clone(),
                patient_id: parent.patient_id.clone(),
                encounter_id: parent.encounter_id.clone(),
                fhir_context: parent.fhir_context.clone(),
                withheld: parent.withheld.clone(),
                // A long-lived child lives as long as its parent (create_grant clamps it); any
                // other ends with the subject token.
                lifetime_seconds: if long_lived { None } else { Some(claims.exp - now) },
                parent_grant_id: Some(parent.grant_id.clone()),
                session_id: parent.session_id.clone(),
                ..NewGrant::new(service.client_id.clone(), scopes)
            })
            .await
            .map_err(|e| match e {
                store::auth::AuthStoreError::Revoked(_) => not_active("revoked"),
                other => other.into(),
            })?;
        let refresh_token = if long_lived { Some(self.new_refresh_token(&child).await?) } else { None };
        let backend = child.user_id.is_none();
        let mut response = self
            .token_response(
                &child,
                Extras { refresh_token, id_token: None, scopes: None, backend, not_after: Some(claims.exp) },
            )
            .await?;
        response.issued_token_type = Some(ACCESS_TOKEN_TYPE);
        let app_name = client.client.name.clone();
        let fhir_user = self.fhir_user_of(&child).await?;
        response.exchanged = Some(Box::new(Exchanged {
            parent: (*parent).clone(),
            child,
            app_name,
            service_name: service.name.clone(),
            fhir_user,
        }));
        Ok(response)
    }
}
