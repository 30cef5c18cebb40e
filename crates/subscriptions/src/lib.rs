//! Topic-based subscriptions for R4 (the FHIR Subscriptions R5 Backport IG), bounded by the grant
//! of the token that created each one.
//!
//! - [`topics`]: what Portico notifies about and how subscribers may filter.
//! - [`resource`]: accepting a `Subscription` from a token (its grant, scopes and patient) and
//!   serving it back.
//! - [`notify`]: the notification Bundles and the SubscriptionStatus `Parameters`.
//! - [`worker`]: the dispatcher that turns committed changes into events (through the same
//!   `Access` a request with the subscription's token would get) and the rest-hook deliverer.

pub mod notify;
pub mod resource;
pub mod topics;
pub mod worker;

pub use worker::{Notifier, NotifierConfig};

/// Why a subscription request is refused, or a subscription call failed.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// The Subscription is malformed or asks for what is not offered (400 / 422).
    #[error("{0}")]
    Invalid(String),
    /// The token may not subscribe to this (403).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("authorization failure: {0}")]
    Auth(String),
    #[error("{0}")]
    Internal(String),
}

impl From<oauth::OAuthError> for SubscriptionError {
    fn from(e: oauth::OAuthError) -> SubscriptionError {
        SubscriptionError::Auth(e.description)
    }
}

impl From<store::auth::AuthStoreError> for SubscriptionError {
    fn from(e: store::auth::AuthStoreError) -> SubscriptionError {
        SubscriptionError::Internal(e.to_string())
    }
}
