//! Authorization-server state: OAuth clients, users, grants, authorization codes, refresh tokens,
//! signing keys, EHR launch contexts and client-assertion replay protection.
//!
//! Grants are the root of every token. Codes, refresh tokens and child grants (token exchange)
//! point at a grant; access tokens are JWTs carrying the grant id, and [`Store::live_grant`] (a
//! primary-key lookup) is the liveness check every request makes. Revoking a grant revokes its
//! child grants recursively and deletes its refresh tokens and unused codes in the same
//! transaction; on PostgreSQL it also sends `NOTIFY` on [`GRANT_REVOKED_CHANNEL`] with each revoked
//! grant id, delivered at commit, so other processes can drop cached liveness answers.
//!
//! Secrets are never stored in clear: client secrets and passwords arrive as argon2id PHC strings
//! (hashing them is the caller's job; anything else is refused), codes and refresh tokens are
//! stored as [`token_hash`] (SHA-256 hex). Times are epoch seconds from the store's clock.
//!
//! Every method is one transaction. Refused or failed outcomes are [`AuthStoreError`] variants;
//! those that revoke a grant (a code or refresh token presented twice) commit the revocation before
//! returning the error.

mod clients;
mod codes;
mod grants;
mod jti;
mod keys;
mod launch;
mod sessions;
mod users;

use std::str::FromStr;

use ::auth::GrantId;
use sha2::{Digest, Sha256};

use crate::db::{Conn, Dialect, Sql, SqlValue};
use crate::{Store, StoreError};

pub use clients::{Client, ClientType, NewClient, OwnerType, RegistrationSource};
pub use codes::{CodeRedemption, NewCode, REVOKED_BY_CODE_REUSE, REVOKED_BY_REFRESH_REUSE};
pub use grants::{Grant, NewGrant};
pub use keys::{KeyAlg, NewSigningKey, SigningKey};
pub use launch::{LaunchContext, NewLaunch};
pub use sessions::{NewPendingAuthorization, PendingAuthorization, RefreshTokenInfo, WebSession};
pub use users::{LockoutPolicy, LoginFailure, NewUser, Role, User};

/// PostgreSQL channel that receives one notification per revoked grant (payload: the grant id).
pub const GRANT_REVOKED_CHANNEL: &str = "portico_grant_revoked";

/// `touch_grant` writes `last_used_at` at most this often per grant, so a busy app does not turn
/// every request into a write.
pub const TOUCH_GRANULARITY_SECONDS: i64 = 60;

/// The stored form of an authorization code or refresh token: lowercase hex SHA-256. The tokens
/// themselves are random and long, so a fast hash is enough; a database leak does not yield
/// usable tokens.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What the authorization-server store can fail with. The variants after `Store` are outcomes the
/// caller answers to the client (see [`AuthStoreError::oauth_error`]); `Store` and `Corrupt` are
/// internal failures.
#[derive(Debug, thiserror::Error)]
pub enum AuthStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A unique value is taken (username, client id, key id).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request breaks a rule of the store (e.g. a symmetric client without a secret hash).
    #[error("{0}")]
    Invalid(String),
    /// Unknown code, refresh token, user or grant.
    #[error("{what} is not known")]
    NotFound { what: &'static str },
    /// A code or refresh token past its expiry.
    #[error("{what} has expired")]
    Expired { what: &'static str },
    /// The authorization code was redeemed before. The grant it was issued for has been revoked
    /// (RFC 6749 §4.1.2); `revoked` lists every grant this revoked (the grant and its children).
    #[error("authorization code was already used; grant {grant_id} has been revoked")]
    AlreadyUsed { grant_id: GrantId, revoked: Vec<GrantId> },
    /// A rotated-out refresh token was presented again (a sign it was stolen). The grant has been
    /// revoked, so the token that replaced it is dead too.
    #[error("refresh token was already used; grant {grant_id} has been revoked")]
    Reused { grant_id: GrantId, revoked: Vec<GrantId> },
    /// The grant is revoked or expired.
    #[error("grant {0} is revoked or expired")]
    Revoked(GrantId),
    /// A stored value could not be decoded (an internal failure).
    #[error("stored authorization data is malformed: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for AuthStoreError {
    fn from(e: sqlx::Error) -> Self {
        AuthStoreError::Store(StoreError::Database(e))
    }
}

impl AuthStoreError {
    /// The OAuth 2 error code for a token-endpoint answer: dead, unknown or replayed codes and
    /// refresh tokens are `invalid_grant` (RFC 6749 §5.2); internal failures `server_error`.
    pub fn oauth_error(&self) -> &'static str {
        match self {
            AuthStoreError::NotFound { .. }
            | AuthStoreError::Expired { .. }
            | AuthStoreError::AlreadyUsed { .. }
            | AuthStoreError::Reused { .. }
            | AuthStoreError::Revoked(_) => "invalid_grant",
            AuthStoreError::Invalid(_) | AuthStoreError::Conflict(_) => "invalid_request",
            AuthStoreError::Store(_) | AuthStoreError::Corrupt(_) => "server_error",
        }
    }

    /// Is this an internal failure (log it, answer 500 without detail)?
    pub fn is_internal(&self) -> bool {
        matches!(self, AuthStoreError::Store(_) | AuthStoreError::Corrupt(_))
    }

    /// The grants this failure revoked (code or refresh-token replay), for cache invalidation.
    pub fn revoked_grants(&self) -> &[GrantId] {
        match self {
            AuthStoreError::AlreadyUsed { revoked, .. } | AuthStoreError::Reused { revoked, .. } => revoked,
            _ => &[],
        }
    }
}

type Result<T> = std::result::Result<T, AuthStoreError>;

impl Store {
    /// The store clock's current time in epoch seconds.
    pub(crate) fn now_secs(&self) -> i64 {
        self.clock.now().unix_timestamp()
    }
}

/// Bind an optional integer: PostgreSQL refuses a text-typed NULL for a BIGINT column, so an
/// absent value is written as the literal `NULL`.
fn bind_opt_int(sql: &mut Sql, value: Option<i64>) -> &mut Sql {
    match value {
        Some(v) => sql.bind(v),
        None => sql.push("NULL"),
    }
}

/// Row lock for read-then-write sequences on PostgreSQL (SQLite has one writer, so every write
/// transaction is serialised already).
fn for_update(sql: &mut Sql) -> &mut Sql {
    if sql.dialect == Dialect::Postgres {
        sql.push(" FOR UPDATE");
    }
    sql
}

fn opt_int(row: &[SqlValue], i: usize) -> Option<i64> {
    match row.get(i) {
        Some(SqlValue::Int(v)) => Some(*v),
        Some(SqlValue::Real(v)) => Some(*v as i64),
        _ => None,
    }
}

fn take_text(row: &mut [SqlValue], i: usize) -> Option<String> {
    match row.get_mut(i) {
        Some(SqlValue::Text(v)) => Some(std::mem::take(v)),
        _ => None,
    }
}

fn required_text(row: &mut [SqlValue], i: usize, what: &str) -> Result<String> {
    take_text(row, i).ok_or_else(|| AuthStoreError::Corrupt(format!("{what} is NULL")))
}

/// Parse a stored value into its typed form (ids, enums).
fn parse_stored<T: FromStr>(text: &str, what: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| AuthStoreError::Corrupt(format!("{what} {text:?}: {e}")))
}

fn parse_opt<T: FromStr>(text: Option<String>, what: &str) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    text.map(|t| parse_stored(&t, what)).transpose()
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| AuthStoreError::Corrupt(format!("{what}: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| AuthStoreError::Invalid(format!("cannot encode JSON: {e}")))
}

/// Did the statement fail on a unique constraint (a duplicate key)?
fn is_unique_violation(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(db)) => db.is_unique_violation(),
        _ => false,
    }
}

/// Map a duplicate-key failure of an insert to `Conflict`.
fn conflict_on_duplicate(e: StoreError, message: impl FnOnce() -> String) -> AuthStoreError {
    if is_unique_violation(&e) {
        AuthStoreError::Conflict(message())
    } else {
        AuthStoreError::Store(e)
    }
}

/// A secret hash must be an argon2id PHC string, so a clear-text secret can never be stored by
/// mistake.
fn check_argon2id(hash: &str, what: &str) -> Result<()> {
    if hash.starts_with("$argon2id$") && hash.len() > 20 && !hash.chars().any(char::is_whitespace) {
        Ok(())
    } else {
        Err(AuthStoreError::Invalid(format!("{what} must be an argon2id PHC string ($argon2id$...)")))
    }
}

/// Run a statement on a connection, for the few places that only need `execute`.
async fn execute(conn: &mut Conn<'_>, sql: &Sql) -> Result<u64> {
    Ok(conn.execute(sql).await?)
}

impl Store {
    /// Housekeeping: delete what can no longer matter: codes, refresh tokens and launch contexts
    /// past their expiry (used ones included; a replay after expiry is refused as unknown),
    /// and expired assertion ids. Returns the number of rows deleted.
    pub async fn prune_auth_state(&self) -> Result<u64> {
        let now = self.now_secs();
        let mut tx = self.pool.begin_write().await?;
        let mut deleted = 0;
        {
            let mut conn = tx.conn();
            for table in [
                "auth_codes",
                "refresh_tokens",
                "launch_contexts",
                "client_assertion_jtis",
                "web_sessions",
                "authorize_requests",
            ] {
                let mut sql = Sql::new(conn.dialect());
                sql.push("DELETE FROM ").push(table).push(" WHERE expires_at <= ").bind(now);
                deleted += execute(&mut conn, &sql).await?;
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }
}
