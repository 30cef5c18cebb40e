/// Everything this crate can refuse. Each variant says why in words a developer can act on; the
/// HTTP layer maps them to OAuth error codes with [`AuthError::oauth_error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("code_challenge_method=plain is refused: SMART App Launch 2 requires S256")]
    PkcePlainRefused,
    #[error("code_challenge_method {0:?} is not supported (use S256)")]
    PkceUnsupportedMethod(String),
    #[error("code_challenge must be 43 characters of base64url (the S256 hash of the verifier)")]
    PkceMalformedChallenge,
    #[error("code_verifier must be 43 to 128 characters long, got {0}")]
    PkceVerifierLength(usize),
    #[error("code_verifier may only contain A-Z a-z 0-9 - . _ ~")]
    PkceVerifierCharset,
    #[error("code_verifier does not match the code_challenge")]
    PkceMismatch,
    #[error("invalid {kind}: {reason}")]
    InvalidId { kind: &'static str, reason: &'static str },
    #[error("unknown sensitive category {0:?}")]
    UnknownSensitivity(String),
    #[error("token has expired")]
    TokenExpired,
    #[error("token was issued in the future")]
    TokenNotYetValid,
    #[error("token was issued by another server")]
    WrongIssuer,
    #[error("token is meant for another audience")]
    WrongAudience,
    #[error("token is not a well-formed signed JWT")]
    MalformedToken,
    #[error("token was signed by a key this server does not know")]
    UnknownSigningKey,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Assertion(String),
}

impl AuthError {
    /// The OAuth 2 / RFC 6750 error code for this failure. PKCE failures at the token endpoint are
    /// `invalid_grant` (RFC 7636 §4.6); a bad challenge at the authorize endpoint is a malformed
    /// request; token problems are `invalid_token` (RFC 6750 §3.1).
    pub fn oauth_error(&self) -> &'static str {
        match self {
            AuthError::PkceVerifierLength(_) | AuthError::PkceVerifierCharset | AuthError::PkceMismatch => {
                "invalid_grant"
            }
            AuthError::PkcePlainRefused
            | AuthError::PkceUnsupportedMethod(_)
            | AuthError::PkceMalformedChallenge
            | AuthError::InvalidId { .. }
            | AuthError::UnknownSensitivity(_) => "invalid_request",
            AuthError::TokenExpired
            | AuthError::TokenNotYetValid
            | AuthError::WrongIssuer
            | AuthError::WrongAudience
            | AuthError::MalformedToken
            | AuthError::UnknownSigningKey
            | AuthError::BadSignature => "invalid_token",
            AuthError::Assertion(_) => "invalid_client",
            AuthError::Key(_) => "server_error",
        }
    }
}
