//! PKCE (RFC 7636) as SMART App Launch 2 requires it: `S256` only. `plain` would put the secret in
//! the front channel, so it is refused with an error that says so instead of "unsupported".

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::AuthError;

/// The `code_challenge_method` values we accept (only one, but typed so callers cannot store a
/// method we never verify).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeMethod {
    S256,
}

impl FromStr for ChallengeMethod {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        match s {
            "S256" => Ok(ChallengeMethod::S256),
            "plain" => Err(AuthError::PkcePlainRefused),
            other => Err(AuthError::PkceUnsupportedMethod(other.to_owned())),
        }
    }
}

impl fmt::Display for ChallengeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("S256")
    }
}

/// A validated `code_challenge` from the authorization request, kept with the code until the
/// token request brings the verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkceChallenge {
    method: ChallengeMethod,
    challenge: String,
}

impl PkceChallenge {
    /// Check the authorization request's `code_challenge_method` and `code_challenge`. A missing
    /// method defaults to `plain` in RFC 7636, so `None` is refused like `plain`.
    pub fn new(method: Option<&str>, challenge: &str) -> Result<PkceChallenge, AuthError> {
        let method: ChallengeMethod = method.unwrap_or("plain").parse()?;
        // An S256 challenge is always 32 bytes in unpadded base64url: 43 characters.
        let well_formed =
            challenge.len() == 43 && challenge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(AuthError::PkceMalformedChallenge);
        }
        Ok(PkceChallenge { method, challenge: challenge.to_owned() })
    }

    pub fn method(&self) -> ChallengeMethod {
        self.method
    }

    pub fn challenge(&self) -> &str {
        &self.challenge
    }

    /// Check the token request's `code_verifier` against this challenge.
    pub fn verify(&self, verifier: &str) -> Result<(), AuthError> {
        verify_s256(&self.challenge, verifier)
    }
}

/// Check a `code_verifier` against an S256 `code_challenge`: the verifier must be 43-128 characters
/// of `A-Z a-z 0-9 - . _ ~`, and BASE64URL-NOPAD(SHA256(verifier)) must equal the challenge. The
/// comparison is constant-time so response timing does not leak how much of a guess matched.
pub fn verify_s256(challenge: &str, verifier: &str) -> Result<(), AuthError> {
    check_verifier(verifier)?;
    let computed = s256_challenge(verifier);
    if bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
        Ok(())
    } else {
        Err(AuthError::PkceMismatch)
    }
}

/// BASE64URL-NOPAD(SHA256(verifier)): what a client sends as `code_challenge`.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn check_verifier(verifier: &str) -> Result<(), AuthError> {
    if !(43..=128).contains(&verifier.len()) {
        return Err(AuthError::PkceVerifierLength(verifier.chars().count()));
    }
    if !verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')) {
        return Err(AuthError::PkceVerifierCharset);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7636 Appendix B.
    const RFC_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b_vector() {
        assert_eq!(s256_challenge(RFC_VERIFIER), RFC_CHALLENGE);
        assert_eq!(verify_s256(RFC_CHALLENGE, RFC_VERIFIER), Ok(()));
        let pkce = PkceChallenge::new(Some("S256"), RFC_CHALLENGE).unwrap();
        assert_eq!(pkce.method(), ChallengeMethod::S256);
        assert_eq!(pkce.verify(RFC_VERIFIER), Ok(()));
    }

    #[test]
    fn bad_verifiers_are_refused_with_the_reason() {
        let long_ok = "a".repeat(128);
        let cases: Vec<(String, Result<(), AuthError>)> = vec![
            // One character changed.
            ("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj".into(), Err(AuthError::PkceMismatch)),
            // Too short / too long.
            ("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjX".into(), Err(AuthError::PkceVerifierLength(42))),
            ("a".repeat(129), Err(AuthError::PkceVerifierLength(129))),
            (String::new(), Err(AuthError::PkceVerifierLength(0))),
            // Outside the unreserved set.
            ("dBjftJeZ4CVP+mB92K27uhbUJU1p1r/wW1gFWFOEjXk".into(), Err(AuthError::PkceVerifierCharset)),
            ("dBjftJeZ4CVP mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(), Err(AuthError::PkceVerifierCharset)),
            ("dBjftJeZ4CVP=mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(), Err(AuthError::PkceVerifierCharset)),
            // Well formed but not the one behind the challenge.
            (long_ok.clone(), Err(AuthError::PkceMismatch)),
            // The challenge itself offered as verifier (what a `plain` client would send).
            (RFC_CHALLENGE.into(), Err(AuthError::PkceMismatch)),
        ];
        for (verifier, expected) in cases {
            assert_eq!(verify_s256(RFC_CHALLENGE, &verifier), expected, "{verifier:?}");
        }
        // All unreserved characters, at both length limits, verify against their own challenge.
        for verifier in ["A-Za.z0_9~".repeat(5)[..43].to_owned(), "~._-".repeat(32)] {
            assert_eq!(verify_s256(&s256_challenge(&verifier), &verifier), Ok(()), "{verifier}");
        }
        // Multi-byte characters count as characters in the error, not bytes.
        assert_eq!(check_verifier("é"), Err(AuthError::PkceVerifierLength(1)));
    }

    #[test]
    fn methods_other_than_s256_are_refused() {
        assert_eq!(PkceChallenge::new(Some("plain"), RFC_CHALLENGE), Err(AuthError::PkcePlainRefused));
        assert_eq!(PkceChallenge::new(None, RFC_CHALLENGE), Err(AuthError::PkcePlainRefused));
        assert_eq!(
            PkceChallenge::new(Some("s256"), RFC_CHALLENGE),
            Err(AuthError::PkceUnsupportedMethod("s256".into()))
        );
        assert!(AuthError::PkcePlainRefused.to_string().contains("S256"));
        assert_eq!(AuthError::PkcePlainRefused.oauth_error(), "invalid_request");
        assert_eq!(AuthError::PkceMismatch.oauth_error(), "invalid_grant");
    }

    #[test]
    fn malformed_challenges_are_refused() {
        for challenge in
            ["", "short", &RFC_CHALLENGE[..42], &format!("{RFC_CHALLENGE}A"), &RFC_CHALLENGE.replace('-', "+")]
        {
            assert_eq!(
                PkceChallenge::new(Some("S256"), challenge),
                Err(AuthError::PkceMalformedChallenge),
                "{challenge}"
            );
        }
    }
}
