//! JSON Web Tokens: signing Portico's access and ID tokens with the keys in the database, verifying
//! access tokens presented to the FHIR API, and verifying the signed client assertions of
//! `private_key_jwt` clients (SMART Backend Services, RFC 7523).
//!
//! Time checks use the caller's clock (epoch seconds), never the library's, so tests can move time.

use std::collections::HashMap;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::claims::AccessClaims;
use crate::error::AuthError;
use crate::keys::{encoding_key, SigningAlg};

/// How far in the future a client assertion's `exp` may be (SMART Backend Services: "no more than
/// five minutes in the future").
pub const MAX_ASSERTION_LIFETIME_SECONDS: i64 = 300;

/// Algorithms accepted on client assertions. SMART requires servers to support RS384 and ES384;
/// the 256-bit variants are as strong for this purpose and common in client libraries.
pub const ASSERTION_ALGORITHMS: [Algorithm; 4] =
    [Algorithm::RS384, Algorithm::ES384, Algorithm::RS256, Algorithm::ES256];

/// A private key Portico signs with.
#[derive(Clone)]
pub struct SigningKeyPair {
    pub kid: String,
    pub alg: SigningAlg,
    key: EncodingKey,
}

impl std::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyPair").field("kid", &self.kid).field("alg", &self.alg).finish()
    }
}

impl SigningKeyPair {
    pub fn from_pem(kid: &str, alg: SigningAlg, private_pem: &str) -> Result<SigningKeyPair, AuthError> {
        Ok(SigningKeyPair { kid: kid.to_owned(), alg, key: encoding_key(alg, private_pem)? })
    }

    /// A compact JWS of `claims` with `typ: JWT` and this key's `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, AuthError> {
        let mut header = Header::new(self.alg.jwt_algorithm());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| AuthError::Key(format!("cannot sign: {e}")))
    }
}

/// The public keys tokens are verified with, by `kid` (the published JWKS).
#[derive(Clone, Default)]
pub struct VerifyingKeys {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
}

impl VerifyingKeys {
    /// Build from published JWKs (`kid` and `alg` required); others are skipped.
    pub fn from_jwks<'a>(jwks: impl IntoIterator<Item = &'a serde_json::Value>) -> VerifyingKeys {
        let mut keys = HashMap::new();
        for value in jwks {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else { continue };
            let (Some(kid), Some(alg)) = (jwk.common.key_id.clone(), jwk_algorithm(&jwk)) else { continue };
            if let Ok(key) = DecodingKey::from_jwk(&jwk) {
                keys.insert(kid, (alg, key));
            }
        }
        VerifyingKeys { keys }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verify an access token's signature and decode its claims. The caller checks time, issuer,
    /// audience and the grant ([`AccessClaims::check`]).
    pub fn verify_access_token(&self, token: &str) -> Result<AccessClaims, AuthError> {
        self.verify(token)
    }

    /// Verify a token signed by one of these keys: the header's `kid` must name one of them and
    /// its `alg` must be that key's algorithm (no algorithm confusion, no `none`).
    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> Result<T, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::MalformedToken)?;
        let kid = header.kid.as_deref().ok_or(AuthError::MalformedToken)?;
        let (alg, key) = self.keys.get(kid).ok_or(AuthError::UnknownSigningKey)?;
        if header.alg != *alg {
            return Err(AuthError::BadSignature);
        }
        decode_unchecked_time(token, key, &[*alg])
    }
}

fn jwk_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::KeyAlgorithm as K;
    match jwk.common.key_algorithm? {
        K::RS256 => Some(Algorithm::RS256),
        K::RS384 => Some(Algorithm::RS384),
        K::RS512 => Some(Algorithm::RS512),
        K::ES256 => Some(Algorithm::ES256),
        K::ES384 => Some(Algorithm::ES384),
        K::PS256 => Some(Algorithm::PS256),
        K::PS384 => Some(Algorithm::PS384),
        K::PS512 => Some(Algorithm::PS512),
        K::EdDSA => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// Signature and shape only; every time claim is checked by the caller against its own clock.
fn decode_unchecked_time<T: DeserializeOwned>(
    token: &str,
    key: &DecodingKey,
    algorithms: &[Algorithm],
) -> Result<T, AuthError> {
    let mut validation = Validation::new(algorithms[0]);
    validation.algorithms = algorithms.to_vec();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    match jsonwebtoken::decode::<T>(token, key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => Err(AuthError::BadSignature),
            jsonwebtoken::errors::ErrorKind::Json(_) | jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(_) => {
                Err(AuthError::MalformedToken)
            }
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => Err(AuthError::BadSignature),
            _ => Err(AuthError::MalformedToken),
        },
    }
}

/// The claims of an OpenID Connect ID token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    /// The client the token is for.
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    /// When the user signed in.
    pub auth_time: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// SMART: the FHIR resource of the signed-in user, as an absolute URL.
    #[serde(rename = "fhirUser", default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    /// `profile` scope: a display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
}

/// The claims a client assertion must carry (RFC 7523 §3, SMART Backend Services).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AssertionClaims {
    pub iss: String,
    pub sub: String,
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub jti: String,
    #[serde(default)]
    pub iat: Option<i64>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// Verify a `client_assertion` against the client's registered JWK Set: signed with one of its keys
/// (by `kid` when the header names one), `iss` and `sub` equal to the client id, `aud` naming the
/// token endpoint, current, expiring at most five minutes from now, and carrying a `jti` (the
/// caller records it to refuse replays).
pub fn verify_client_assertion(
    assertion: &str,
    jwks: &serde_json::Value,
    client_id: &str,
    token_endpoint: &str,
    now: i64,
) -> Result<AssertionClaims, AuthError> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| AuthError::MalformedToken)?;
    if !ASSERTION_ALGORITHMS.contains(&header.alg) {
        return Err(AuthError::Assertion(format!(
            "client assertion algorithm {:?} is not accepted (use RS384 or ES384)",
            header.alg
        )));
    }
    let set: JwkSet = serde_json::from_value(jwks.clone())
        .map_err(|_| AuthError::Assertion("the client's registered JWK Set cannot be read".into()))?;
    let candidates: Vec<&Jwk> = set
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
        .filter(|k| jwk_algorithm(k).is_none_or(|a| a == header.alg))
        .collect();
    if candidates.is_empty() {
        return Err(AuthError::Assertion(match &header.kid {
            Some(kid) => format!("no registered key has kid {kid:?}"),
            None => "no registered key matches the assertion".into(),
        }));
    }
    let mut last = AuthError::BadSignature;
    let mut verified = None;
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
        match decode_unchecked_time::<AssertionClaims>(assertion, &key, &[header.alg]) {
            Ok(claims) => {
                verified = Some(claims);
                break;
            }
            Err(e) => last = e,
        }
    }
    let claims = verified.ok_or(match last {
        AuthError::MalformedToken => {
            AuthError::Assertion("the client assertion lacks iss, sub, aud, exp or jti".into())
        }
        _ => AuthError::Assertion("the client assertion's signature does not verify with the registered keys".into()),
    })?;
    if claims.iss != client_id || claims.sub != client_id {
        return Err(AuthError::Assertion("the client assertion's iss and sub must both be the client_id".into()));
    }
    if !claims.aud.iter().any(|a| a == token_endpoint) {
        return Err(AuthError::Assertion(format!(
            "the client assertion's aud must be the token endpoint {token_endpoint}"
        )));
    }
    if claims.exp <= now {
        return Err(AuthError::Assertion("the client assertion has expired".into()));
    }
    if claims.exp > now + MAX_ASSERTION_LIFETIME_SECONDS + crate::claims::CLOCK_SKEW_SECONDS {
        return Err(AuthError::Assertion("the client assertion's exp is more than five minutes away".into()));
    }
    if claims.jti.is_empty() || claims.jti.len() > 255 {
        return Err(AuthError::Assertion("the client assertion needs a jti of 1-255 characters".into()));
    }
    Ok(claims)
}

/// The `sub` (or else `iss`) of a client assertion, read *without* verifying it: only to find
/// which client's keys to verify it with.
pub fn assertion_subject(assertion: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Who {
        sub: Option<String>,
        iss: Option<String>,
    }
    let who: Who = jsonwebtoken::dangerous::insecure_decode_claims(assertion).ok()?;
    who.sub.or(who.iss)
}

/// Does this JWK Set contain at least one usable public key (and no private parts)?
pub fn check_client_jwks(jwks: &serde_json::Value) -> Result<(), AuthError> {
    let set: JwkSet = serde_json::from_value(jwks.clone())
        .map_err(|e| AuthError::Assertion(format!("jwks is not a JWK Set: {e}")))?;
    if set.keys.is_empty() {
        return Err(AuthError::Assertion("jwks has no keys".into()));
    }
    if let Some(keys) = jwks.get("keys").and_then(|k| k.as_array()) {
        if keys.iter().any(|k| k.get("d").is_some()) {
            return Err(AuthError::Assertion("jwks must hold public keys only (a key has a private \"d\")".into()));
        }
    }
    if !set.keys.iter().any(|k| DecodingKey::from_jwk(k).is_ok()) {
        return Err(AuthError::Assertion("jwks has no usable RSA or EC public key".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::TokenKind;
    use crate::keys::generate;

    fn access_claims() -> AccessClaims {
        AccessClaims {
            iss: "https://p.example/fhir".into(),
            sub: "alice".into(),
            aud: "https://p.example/fhir".into(),
            exp: 2_000_000_000,
            iat: 1_999_999_000,
            jti: "j1".into(),
            grant: "g1".parse().unwrap(),
            client_id: "app".parse().unwrap(),
            scope: "patient/*.rs".into(),
            patient: Some("p1".parse().unwrap()),
            fhir_user: None,
            kind: TokenKind::Access,
        }
    }

    #[test]
    fn sign_and_verify_round_trip_for_both_algorithms() {
        for alg in [SigningAlg::Rs256, SigningAlg::Es256] {
            let key = generate(alg).unwrap();
            let signer = SigningKeyPair::from_pem(&key.kid, alg, &key.private_pem).unwrap();
            let token = signer.sign(&access_claims()).unwrap();
            let keys = VerifyingKeys::from_jwks([&key.public_jwk]);
            assert_eq!(keys.verify_access_token(&token).unwrap(), access_claims());

            // Tampered payload, unknown kid, garbage.
            let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
            let other = signer.sign(&AccessClaims { sub: "mallory".into(), ..access_claims() }).unwrap();
            parts[1] = other.split('.').nth(1).unwrap().to_owned();
            assert_eq!(keys.verify_access_token(&parts.join(".")), Err(AuthError::BadSignature));
            let stranger = generate(alg).unwrap();
            let foreign = SigningKeyPair::from_pem(&stranger.kid, alg, &stranger.private_pem).unwrap();
            assert_eq!(
                keys.verify_access_token(&foreign.sign(&access_claims()).unwrap()),
                Err(AuthError::UnknownSigningKey)
            );
            assert_eq!(keys.verify_access_token("not.a.jwt"), Err(AuthError::MalformedToken));
            assert_eq!(keys.verify_access_token(""), Err(AuthError::MalformedToken));
        }
    }

    #[test]
    fn a_key_cannot_be_used_with_another_algorithm() {
        let rsa = generate(SigningAlg::Rs256).unwrap();
        let ec = generate(SigningAlg::Es256).unwrap();
        // An EC-signed token whose header claims the RSA key's kid.
        let liar = SigningKeyPair::from_pem(&rsa.kid, SigningAlg::Es256, &ec.private_pem).unwrap();
        let keys = VerifyingKeys::from_jwks([&rsa.public_jwk, &ec.public_jwk]);
        assert_eq!(keys.verify_access_token(&liar.sign(&access_claims()).unwrap()), Err(AuthError::BadSignature));
        // alg "none" never verifies.
        let none = format!(
            "{}.{}.",
            base64_url(r#"{"alg":"none","typ":"JWT","kid":"x"}"#),
            base64_url(&serde_json::to_string(&access_claims()).unwrap())
        );
        assert!(keys.verify_access_token(&none).is_err());
    }

    fn base64_url(s: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[derive(Serialize)]
    struct Assertion<'a> {
        iss: &'a str,
        sub: &'a str,
        aud: &'a str,
        exp: i64,
        jti: &'a str,
    }

    /// A client key pair signing with RS384/ES384 (the algorithms SMART clients use).
    fn client_key(alg: SigningAlg) -> (serde_json::Value, EncodingKey, Algorithm) {
        let key = generate(alg).unwrap();
        let (jwt_alg, published_alg) = match alg {
            SigningAlg::Rs256 => (Algorithm::RS384, "RS384"),
            SigningAlg::Es256 => (Algorithm::ES256, "ES256"),
        };
        let mut jwk = key.public_jwk.clone();
        jwk["alg"] = published_alg.into();
        (serde_json::json!({ "keys": [jwk] }), encoding_key(alg, &key.private_pem).unwrap(), jwt_alg)
    }

    fn sign_assertion(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: &Assertion<'_>) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    #[test]
    fn client_assertions() {
        const TOKEN: &str = "https://p.example/auth/token";
        let now = 1_800_000_000;
        for alg in [SigningAlg::Rs256, SigningAlg::Es256] {
            let (jwks, key, jwt_alg) = client_key(alg);
            let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
            let good = Assertion { iss: "bulk", sub: "bulk", aud: TOKEN, exp: now + 240, jti: "a-1" };
            let token = sign_assertion(&key, jwt_alg, Some(&kid), &good);
            let claims = verify_client_assertion(&token, &jwks, "bulk", TOKEN, now).unwrap();
            assert_eq!(claims.jti, "a-1");
            // Without a kid the registered keys are tried.
            let token = sign_assertion(&key, jwt_alg, None, &good);
            assert!(verify_client_assertion(&token, &jwks, "bulk", TOKEN, now).is_ok());

            let refusals: Vec<(Assertion<'_>, &str)> = vec![
                (Assertion { iss: "other", ..good }, "iss and sub"),
                (Assertion { sub: "other", ..good }, "iss and sub"),
                (Assertion { aud: "https://elsewhere/token", ..good }, "aud"),
                (Assertion { exp: now, ..good }, "expired"),
                (Assertion { exp: now + 3600, ..good }, "five minutes"),
                (Assertion { jti: "", ..good }, "jti"),
            ];
            for (claims, expected) in refusals {
                let token = sign_assertion(&key, jwt_alg, Some(&kid), &claims);
                let err = verify_client_assertion(&token, &jwks, "bulk", TOKEN, now).unwrap_err();
                assert!(err.to_string().contains(expected), "{alg}: {err} should mention {expected}");
            }
            // Signed by a key that is not registered.
            let (_, stranger, _) = client_key(alg);
            let token = sign_assertion(&stranger, jwt_alg, Some(&kid), &good);
            assert!(verify_client_assertion(&token, &jwks, "bulk", TOKEN, now)
                .unwrap_err()
                .to_string()
                .contains("signature"));
            // An unknown kid.
            let token = sign_assertion(&key, jwt_alg, Some("nope"), &good);
            assert!(verify_client_assertion(&token, &jwks, "bulk", TOKEN, now)
                .unwrap_err()
                .to_string()
                .contains("kid"));
        }
        // HMAC "assertions" are refused outright.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Assertion { iss: "bulk", sub: "bulk", aud: TOKEN, exp: now + 60, jti: "x" },
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        let (jwks, _, _) = client_key(SigningAlg::Rs256);
        assert!(verify_client_assertion(&hs, &jwks, "bulk", TOKEN, now).unwrap_err().to_string().contains("algorithm"));
    }

    #[test]
    fn client_jwks_checks() {
        let (jwks, _, _) = client_key(SigningAlg::Es256);
        assert!(check_client_jwks(&jwks).is_ok());
        assert!(check_client_jwks(&serde_json::json!({"keys": []})).is_err());
        assert!(check_client_jwks(&serde_json::json!({"nope": 1})).is_err());
        let mut private = jwks.clone();
        private["keys"][0]["d"] = "secret".into();
        assert!(check_client_jwks(&private).unwrap_err().to_string().contains("private"));
    }
}
