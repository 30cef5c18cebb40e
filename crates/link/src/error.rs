//! Everything Link fails with. The HTTP edge maps each variant once (JSON `{error,
//! error_description}`); `Storage` and `Vault` are internal (logged, never detailed to clients).

use crate::ids::JobId;
use crate::portal::PortalError;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("storage: {0}")]
    Storage(#[from] store::StoreError),
    #[error("vault: {0}")]
    Vault(String),
    #[error("configuration: {0}")]
    Config(String),
    /// A missing or wrong app key.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// A Link code that is unknown, used, expired or another app's.
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    Conflict(String),
    /// The connection's authorization is gone (refresh refused, revoked at the portal).
    #[error("the connection needs the person to sign in at the portal again")]
    ReauthorizationRequired,
    /// The same fetch is already running: its job.
    #[error("the same fetch is already running as {0}")]
    Transient(JobId),
    /// The app is over its rate limit.
    #[error("rate limit reached; retry in {retry_after_seconds} s")]
    Throttled { retry_after_seconds: u64 },
    #[error("{0}")]
    Gone(String),
    #[error("portal: {0}")]
    Portal(#[from] PortalError),
}

impl LinkError {
    pub fn bad_request(text: impl Into<String>) -> LinkError {
        LinkError::BadRequest(text.into())
    }
    pub fn not_found(text: impl Into<String>) -> LinkError {
        LinkError::NotFound(text.into())
    }
    /// The machine-readable code of the JSON error answer.
    pub fn code(&self) -> &'static str {
        match self {
            LinkError::Storage(_) | LinkError::Vault(_) | LinkError::Config(_) => "server_error",
            LinkError::Unauthorized(_) => "unauthorized",
            LinkError::NotFound(_) => "not_found",
            LinkError::BadRequest(_) => "invalid_request",
            LinkError::InvalidGrant(_) => "invalid_grant",
            LinkError::Conflict(_) => "conflict",
            LinkError::ReauthorizationRequired => "reauthorization_required",
            LinkError::Transient(_) => "transient",
            LinkError::Throttled { .. } => "throttled",
            LinkError::Gone(_) => "gone",
            LinkError::Portal(_) => "portal_error",
        }
    }
    /// True for failures that are Link's own (the cause is logged, not sent).
    pub fn is_internal(&self) -> bool {
        matches!(self, LinkError::Storage(_) | LinkError::Vault(_) | LinkError::Config(_))
    }
}

pub type Result<T, E = LinkError> = std::result::Result<T, E>;
