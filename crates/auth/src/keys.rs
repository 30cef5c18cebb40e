//! Signing keys: generation (RSA 2048 for RS256, P-256 for ES256), their PEM and public JWK forms,
//! and the `kid`, which is the key's RFC 7638 thumbprint so it never collides and can be recomputed
//! from the published key.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// The JWS algorithms Portico signs with. RS256 is what every OpenID Connect client can verify;
/// ES256 gives shorter tokens for deployments that want them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlg {
    #[serde(rename = "RS256")]
    Rs256,
    #[serde(rename = "ES256")]
    Es256,
}

impl SigningAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlg::Rs256 => "RS256",
            SigningAlg::Es256 => "ES256",
        }
    }

    pub fn jwt_algorithm(self) -> Algorithm {
        match self {
            SigningAlg::Rs256 => Algorithm::RS256,
            SigningAlg::Es256 => Algorithm::ES256,
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlg {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        match s {
            "RS256" => Ok(SigningAlg::Rs256),
            "ES256" => Ok(SigningAlg::Es256),
            other => Err(AuthError::Key(format!("unsupported signing algorithm {other:?} (RS256 or ES256)"))),
        }
    }
}

/// A freshly generated key pair.
#[derive(Clone)]
pub struct GeneratedKey {
    pub kid: String,
    pub alg: SigningAlg,
    /// PKCS#8 PEM of the private key.
    pub private_pem: String,
    /// The public JWK as published in the JWKS (`kid`, `alg`, `use: sig`).
    pub public_jwk: serde_json::Value,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_pem", &"<redacted>")
            .finish()
    }
}

/// Generate a new key pair for `alg`.
pub fn generate(alg: SigningAlg) -> Result<GeneratedKey, AuthError> {
    let failed = |what: &str| AuthError::Key(format!("cannot generate {alg} key: {what}"));
    let pkcs8: Vec<u8> = match alg {
        SigningAlg::Rs256 => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| failed("RSA generation"))?;
            let der = pair.as_der().map_err(|_| failed("PKCS#8 encoding"))?;
            der.as_ref().to_vec()
        }
        SigningAlg::Es256 => {
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| failed("EC generation"))?;
            let doc = pair.to_pkcs8v1().map_err(|_| failed("PKCS#8 encoding"))?;
            doc.as_ref().to_vec()
        }
    };
    let private_pem = pem("PRIVATE KEY", &pkcs8);
    let public_jwk = public_jwk(alg, &private_pem, None)?;
    let kid = public_jwk.get("kid").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
    Ok(GeneratedKey { kid, alg, private_pem, public_jwk })
}

/// The signing key for a stored PEM.
pub fn encoding_key(alg: SigningAlg, private_pem: &str) -> Result<EncodingKey, AuthError> {
    let key = match alg {
        SigningAlg::Rs256 => EncodingKey::from_rsa_pem(private_pem.as_bytes()),
        SigningAlg::Es256 => EncodingKey::from_ec_pem(private_pem.as_bytes()),
    };
    key.map_err(|e| AuthError::Key(format!("stored {alg} private key is unusable: {e}")))
}

/// The public JWK of a private key, with `use: sig`, `alg`, and `kid` (the RFC 7638 SHA-256
/// thumbprint unless one is given).
pub fn public_jwk(alg: SigningAlg, private_pem: &str, kid: Option<&str>) -> Result<serde_json::Value, AuthError> {
    let encoding = encoding_key(alg, private_pem)?;
    let mut jwk = Jwk::from_encoding_key(&encoding, alg.jwt_algorithm())
        .map_err(|e| AuthError::Key(format!("cannot derive the public {alg} key: {e}")))?;
    let kid = match kid {
        Some(k) => k.to_owned(),
        None => jwk.thumbprint(ThumbprintHash::SHA256).map_err(|e| AuthError::Key(format!("thumbprint: {e}")))?,
    };
    jwk.common.key_id = Some(kid);
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(match alg {
        SigningAlg::Rs256 => KeyAlgorithm::RS256,
        SigningAlg::Es256 => KeyAlgorithm::ES256,
    });
    serde_json::to_value(&jwk).map_err(|e| AuthError::Key(format!("cannot encode the JWK: {e}")))
}

/// PEM armour: base64 in 64-character lines between BEGIN/END lines.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_thumbprint_kids_and_public_jwks() {
        for alg in [SigningAlg::Rs256, SigningAlg::Es256] {
            let key = generate(alg).unwrap();
            assert!(key.private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{alg}");
            assert_eq!(key.kid.len(), 43, "SHA-256 thumbprint in base64url: {}", key.kid);
            let jwk = &key.public_jwk;
            assert_eq!(jwk["kid"], key.kid.as_str());
            assert_eq!(jwk["alg"], alg.as_str());
            assert_eq!(jwk["use"], "sig");
            // Only public parts are published.
            for private in ["d", "p", "q", "dp", "dq", "qi"] {
                assert!(jwk.get(private).is_none(), "{alg} JWK leaks {private}");
            }
            match alg {
                SigningAlg::Rs256 => {
                    assert_eq!(jwk["kty"], "RSA");
                    assert_eq!(jwk["e"], "AQAB");
                    // 2048-bit modulus: 256 bytes, 342 base64url characters.
                    assert_eq!(jwk["n"].as_str().unwrap().len(), 342);
                }
                SigningAlg::Es256 => {
                    assert_eq!(jwk["kty"], "EC");
                    assert_eq!(jwk["crv"], "P-256");
                }
            }
            // Re-deriving from the stored PEM gives the same public key and kid.
            assert_eq!(public_jwk(alg, &key.private_pem, None).unwrap(), key.public_jwk);
            assert_ne!(generate(alg).unwrap().kid, key.kid);
        }
    }

    #[test]
    fn algorithm_names() {
        assert_eq!("RS256".parse::<SigningAlg>().unwrap(), SigningAlg::Rs256);
        assert_eq!("ES256".parse::<SigningAlg>().unwrap(), SigningAlg::Es256);
        assert!("HS256".parse::<SigningAlg>().is_err());
        assert!(encoding_key(SigningAlg::Rs256, "not a pem").is_err());
    }
}
