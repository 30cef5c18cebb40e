//! Errors of the authorization server, in the shapes OAuth clients understand. The HTTP layer maps
//! [`OAuthError`] to a JSON body `{"error", "error_description"}` with [`OAuthError::status`], once.

use std::fmt;

use store::auth::AuthStoreError;
use store::StoreError;

/// The error codes of RFC 6749 §4.1.2.1 and §5.2, RFC 6750 §3.1, RFC 7591 §3.2.2 and OpenID
/// Connect, spelled as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    /// RFC 8693 §2.2.2: the audience is unknown or not acceptable.
    InvalidTarget,
    AccessDenied,
    ServerError,
    InvalidToken,
    InsufficientScope,
    InvalidRedirectUri,
    InvalidClientMetadata,
    LoginRequired,
    ConsentRequired,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ServerError => "server_error",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            ErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::ConsentRequired => "consent_required",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a client authenticated or tried to, so `invalid_client` can answer with the matching
/// `WWW-Authenticate` challenge (RFC 6749 §5.2: 401 with the scheme the client used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    None,
    Basic,
}

/// An answer to give an OAuth client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    pub challenge: Challenge,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> OAuthError {
        OAuthError { code, description: description.into(), challenge: Challenge::None }
    }

    pub fn invalid_request(description: impl Into<String>) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidRequest, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> OAuthError {
        OAuthError::new(ErrorCode::InvalidGrant, description)
    }

    pub fn invalid_client(description: impl Into<String>, challenge: Challenge) -> OAuthError {
        OAuthError { code: ErrorCode::InvalidClient, description: description.into(), challenge }
    }

    /// An internal failure: the cause is logged here and never sent to the client.
    pub fn internal(cause: impl fmt::Display) -> OAuthError {
        tracing::error!(error = %cause, "authorization server failure");
        OAuthError::new(ErrorCode::ServerError, "the server could not complete the request; try again later")
    }

    /// HTTP status: 401 for client authentication failures and bad bearer tokens, 403 for missing
    /// scope, 500 for internal failures, else 400 (RFC 6749 §5.2, RFC 6750 §3.1).
    pub fn status(&self) -> u16 {
        match self.code {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => 401,
            ErrorCode::InsufficientScope => 403,
            ErrorCode::ServerError => 500,
            _ => 400,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.code.as_str(), "error_description": self.description })
    }
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.description)
    }
}

impl std::error::Error for OAuthError {}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> OAuthError {
        OAuthError::internal(e)
    }
}

impl From<AuthStoreError> for OAuthError {
    /// Store refusals that reach a client: unknown, expired, replayed or revoked codes and refresh
    /// tokens are `invalid_grant` (and must not say more than that to a possible attacker).
    fn from(e: AuthStoreError) -> OAuthError {
        match e {
            AuthStoreError::Store(_) | AuthStoreError::Corrupt(_) => OAuthError::internal(e),
            AuthStoreError::NotFound { what } => OAuthError::invalid_grant(format!("the {what} is not valid")),
            AuthStoreError::Expired { what } => OAuthError::invalid_grant(format!("the {what} has expired")),
            AuthStoreError::AlreadyUsed { .. } => OAuthError::invalid_grant(
                "the authorization code was already used; every token issued from it has been revoked",
            ),
            AuthStoreError::Reused { .. } => {
                OAuthError::invalid_grant("the refresh token was already used; the authorization has been revoked")
            }
            AuthStoreError::Revoked(_) => {
                OAuthError::invalid_grant("the authorization has been revoked or has expired")
            }
            AuthStoreError::Invalid(m) | AuthStoreError::Conflict(m) => OAuthError::invalid_request(m),
        }
    }
}

/// A failure the person in the browser must see as a page (never a redirect): the client or its
/// redirect URI cannot be trusted, or the request cannot continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageError {
    pub status: u16,
    pub title: String,
    pub message: String,
}

impl PageError {
    pub fn new(status: u16, title: impl Into<String>, message: impl Into<String>) -> PageError {
        PageError { status, title: title.into(), message: message.into() }
    }

    pub fn internal(cause: impl fmt::Display) -> PageError {
        tracing::error!(error = %cause, "authorization page failure");
        PageError::new(
            500,
            "Something went wrong",
            "The server could not complete your request. Please try again later.",
        )
    }

    pub fn expired() -> PageError {
        PageError::new(400, "This sign-in link has expired", "Please go back to the app and start connecting again.")
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> PageError {
        PageError::internal(e)
    }
}

impl From<AuthStoreError> for PageError {
    fn from(e: AuthStoreError) -> PageError {
        PageError::internal(e)
    }
}
