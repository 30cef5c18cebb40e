//! Token introspection (RFC 7662). The caller authenticates as a client or presents a valid access
//! token of its own. Any token that is not active (unknown, expired, revoked, not ours) answers
//! exactly `{"active": false}`.

use serde_json::{json, Value};
use store::auth::token_hash;

use crate::client_auth::ClientCredentials;
use crate::error::{Challenge, ErrorCode, OAuthError};
use crate::AuthServer;

/// Who is asking.
pub enum Introspector<'a> {
    Client(&'a ClientCredentials),
    Bearer(&'a str),
}

impl AuthServer {
    pub async fn introspect(&self, caller: Introspector<'_>, token: Option<&str>) -> Result<Value, OAuthError> {
        let caller_client = match caller {
            Introspector::Client(creds) => {
                let client = self.authenticate_client(creds).await?;
                if !client.is_authenticated() {
                    return Err(OAuthError::invalid_client(
                        "introspection needs client authentication (or a bearer token)",
                        Challenge::None,
                    ));
                }
                client.client.client_id
            }
            Introspector::Bearer(t) => self.authenticate_bearer(t).await?.claims.client_id.clone(),
        };
        let token = token.ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        if let Some(mut answer) = self.introspect_access_token(token).await? {
            // A resource server may check another client's token, but the person's username is
            // only for the client the person signed in to.
            if answer.get("client_id").and_then(Value::as_str) != Some(caller_client.as_str()) {
                if let Some(map) = answer.as_object_mut() {
                    map.remove("username");
                }
            }
            return Ok(answer);
        }
        if let Some(answer) = self.introspect_refresh_token(token).await? {
            return Ok(answer);
        }
        Ok(inactive())
    }

    async fn introspect_access_token(&self, token: &str) -> Result<Option<Value>, OAuthError> {
        if token.matches('.').count() != 2 {
            return Ok(None);
        }
        match self.authenticate_bearer(token).await {
            Ok(access) => {
                let c = &access.claims;
                let mut answer = json!({
                    "active": true,
                    "scope": c.scope,
                    "client_id": c.client_id,
                    "sub": c.sub,
                    "exp": c.exp,
                    "iat": c.iat,
                    "iss": c.iss,
                    "aud": c.aud,
                    "jti": c.jti,
                    "token_type": "Bearer",
                });
                if let Some(p) = &c.patient {
                    answer["patient"] = json!(p);
                }
                if let Some(u) = &c.fhir_user {
                    answer["fhirUser"] = json!(format!("{}/{u}", self.config().fhir_base_url));
                }
                if let Some(user_id) = &access.grant.user_id {
                    if let Some(user) = self.inner.store.user(user_id).await? {
                        answer["username"] = json!(user.username);
                    }
                }
                Ok(Some(answer))
            }
            Err(e) if e.code == ErrorCode::InvalidToken => Ok(Some(inactive())),
            Err(e) => Err(e),
        }
    }

    async fn introspect_refresh_token(&self, token: &str) -> Result<Option<Value>, OAuthError> {
        let Some(info) = self.inner.store.refresh_token_info(&token_hash(token)).await? else { return Ok(None) };
        let now = self.now();
        if info.used_at.is_some() || info.expires_at <= now {
            return Ok(Some(inactive()));
        }
        let Some(grant) = self.live_grant_cached(&info.grant_id).await? else { return Ok(Some(inactive())) };
        let mut answer = json!({
            "active": true,
            "scope": grant.scopes.to_string(),
            "client_id": grant.client_id,
            "exp": info.expires_at,
            "iat": info.created_at,
            "iss": self.config().issuer(),
            "token_type": "refresh_token",
        });
        if let Some(u) = &grant.user_id {
            answer["sub"] = json!(u);
        }
        if let Some(p) = &grant.patient_id {
            answer["patient"] = json!(p);
        }
        Ok(Some(answer))
    }
}

fn inactive() -> Value {
    json!({ "active": false })
}
