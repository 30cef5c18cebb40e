//! The claims inside Portico's access tokens. Signing and encoding belong to the HTTP layer; this
//! is the typed payload and the time/issuer/audience checks every request needs. Times are epoch
//! seconds passed in by the caller, so tests control the clock.

use serde::{Deserialize, Serialize};

use crate::error::AuthError;
use crate::ids::{ClientId, GrantId, PatientId};
use crate::scope::ScopeSet;

/// How far in the future `iat` may be before a token is refused: servers behind one issuer can
/// disagree about the time by a little, never by much.
pub const CLOCK_SKEW_SECONDS: i64 = 60;

/// What a token is for. Only access tokens exist as JWTs today; the claim is still checked so an
/// ID token (same issuer and signing key) can never be presented as an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Access,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The issuer, i.e. this server's base URL.
    pub iss: String,
    /// The signed-in user, or the client id for backend services.
    pub sub: String,
    /// The FHIR base URL the token is for (SMART's `aud` parameter).
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    /// Unique per token, so one token can be found in logs or revoked alone.
    pub jti: String,
    /// The consent this token came from; revoking it revokes the token.
    pub grant: GrantId,
    pub client_id: ClientId,
    /// The granted scopes, space-separated, as returned in the token response.
    pub scope: String,
    /// The patient in context, when the grant has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<PatientId>,
    /// The user's FHIR resource, e.g. `Practitioner/123`, when `fhirUser` was granted.
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    pub kind: TokenKind,
}

impl AccessClaims {
    /// Has the token expired at `now`? `exp` is the first second it is no longer valid (RFC 7519
    /// §4.1.4 says "on or after").
    pub fn is_expired(&self, now: i64) -> bool {
        now >= self.exp
    }

    /// Seconds left at `now`, never negative (the token response's `expires_in`).
    pub fn expires_in(&self, now: i64) -> i64 {
        (self.exp - now).max(0)
    }

    /// The checks every request makes after the signature: ours, for this FHIR base, and current.
    pub fn check(&self, now: i64, issuer: &str, audience: &str) -> Result<(), AuthError> {
        if self.iss != issuer {
            return Err(AuthError::WrongIssuer);
        }
        if self.aud != audience {
            return Err(AuthError::WrongAudience);
        }
        if self.is_expired(now) {
            return Err(AuthError::TokenExpired);
        }
        if self.iat > now + CLOCK_SKEW_SECONDS {
            return Err(AuthError::TokenNotYetValid);
        }
        Ok(())
    }

    /// The granted scopes, typed. We wrote the string ourselves, so nothing is dropped in practice;
    /// if something were, not granting it is the safe reading.
    pub fn scopes(&self) -> ScopeSet {
        ScopeSet::parse(&self.scope).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::{Context, Interaction};

    const ISS: &str = "https://portico.example/auth";
    const AUD: &str = "https://portico.example/fhir";

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: ISS.into(),
            sub: "alice".into(),
            aud: AUD.into(),
            exp: 1_700_000_300,
            iat: 1_700_000_000,
            jti: "5f0c3c6e-0b5c-4a57-9d6c-0a3f6f0d2b11".into(),
            grant: "grant-1".parse().unwrap(),
            client_id: "growth-chart".parse().unwrap(),
            scope: "openid fhirUser patient/Observation.rs".into(),
            patient: Some("123".parse().unwrap()),
            fhir_user: Some("Patient/123".into()),
            kind: TokenKind::Access,
        }
    }

    #[test]
    fn serializes_with_smart_claim_names() {
        let json = serde_json::to_value(claims()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "iss": ISS, "sub": "alice", "aud": AUD, "exp": 1_700_000_300, "iat": 1_700_000_000,
                "jti": "5f0c3c6e-0b5c-4a57-9d6c-0a3f6f0d2b11", "grant": "grant-1", "client_id": "growth-chart",
                "scope": "openid fhirUser patient/Observation.rs", "patient": "123", "fhirUser": "Patient/123",
                "kind": "access"
            })
        );
        let back: AccessClaims = serde_json::from_value(json).unwrap();
        assert_eq!(back, claims());
    }

    #[test]
    fn optional_claims_are_omitted_and_kind_is_enforced() {
        let mut c = claims();
        c.patient = None;
        c.fhir_user = None;
        let json = serde_json::to_value(&c).unwrap();
        assert!(json.get("patient").is_none() && json.get("fhirUser").is_none());
        assert_eq!(serde_json::from_value::<AccessClaims>(json.clone()).unwrap(), c);

        let mut id_token = json.clone();
        id_token["kind"] = "id".into();
        assert!(serde_json::from_value::<AccessClaims>(id_token).is_err());
        let mut bad_patient = json;
        bad_patient["patient"] = "not an id".into();
        assert!(serde_json::from_value::<AccessClaims>(bad_patient).is_err());
    }

    #[test]
    fn time_issuer_and_audience_checks() {
        let c = claims();
        let cases = [
            (1_700_000_000, ISS, AUD, Ok(())),
            (1_700_000_299, ISS, AUD, Ok(())),
            (1_700_000_300, ISS, AUD, Err(AuthError::TokenExpired)),
            (1_700_009_999, ISS, AUD, Err(AuthError::TokenExpired)),
            // Issued up to a minute "in the future" is clock skew; more is refused.
            (1_699_999_940, ISS, AUD, Ok(())),
            (1_699_999_939, ISS, AUD, Err(AuthError::TokenNotYetValid)),
            (1_700_000_000, "https://other.example/auth", AUD, Err(AuthError::WrongIssuer)),
            (1_700_000_000, ISS, "https://other.example/fhir", Err(AuthError::WrongAudience)),
        ];
        for (now, iss, aud, expected) in cases {
            assert_eq!(c.check(now, iss, aud), expected, "now={now} iss={iss} aud={aud}");
        }
        assert_eq!(c.expires_in(1_700_000_000), 300);
        assert_eq!(c.expires_in(1_800_000_000), 0);
        assert_eq!(AuthError::TokenExpired.oauth_error(), "invalid_token");
    }

    #[test]
    fn scope_claim_is_typed() {
        let scopes = claims().scopes();
        assert!(scopes.has_patient_scopes());
        assert_eq!(scopes.allows(Context::Patient, "Observation", Interaction::Search), Some(vec![]));
        assert_eq!(scopes.allows(Context::Patient, "Observation", Interaction::Create), None);
    }
}
