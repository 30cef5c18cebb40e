//! Authorization codes (single use) and refresh tokens (rotated on every use). Both are stored as
//! [`super::token_hash`] of the token; presenting either a second time revokes the grant.

use ::auth::{ClientId, GrantId, PkceChallenge};

use super::grants::{grant_in, revoke_tree, Grant};
use super::{for_update, opt_int, parse_stored, required_text, take_text, AuthStoreError, Result};
use crate::db::{Col, Conn, RowExt, Sql, Tx};
use crate::Store;

/// `revoked_by` recorded when a replayed code revokes its grant.
pub const REVOKED_BY_CODE_REUSE: &str = "code-reuse";
/// `revoked_by` recorded when a replayed refresh token revokes its grant.
pub const REVOKED_BY_REFRESH_REUSE: &str = "refresh-reuse";

/// An authorization code to store.
#[derive(Debug, Clone, Copy)]
pub struct NewCode<'a> {
    /// [`super::token_hash`] of the code handed to the client.
    pub code_hash: &'a str,
    pub grant_id: &'a GrantId,
    pub client_id: &'a ClientId,
    pub redirect_uri: &'a str,
    pub challenge: &'a PkceChallenge,
    pub ttl_seconds: i64,
    /// OpenID Connect `nonce`, echoed in the ID token.
    pub nonce: Option<&'a str>,
}

/// A code redeemed: what the token endpoint checks against the request (client, redirect URI,
/// PKCE verifier) and the live grant to issue tokens for.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeRedemption {
    pub grant: Grant,
    pub client_id: ClientId,
    pub redirect_uri: String,
    pub challenge: PkceChallenge,
    pub nonce: Option<String>,
}

/// The live grant `grant_id`, or `Revoked`.
async fn live_in(conn: &mut Conn<'_>, grant_id: &GrantId, now: i64) -> Result<Grant> {
    match grant_in(conn, grant_id.as_str(), false).await? {
        Some(g) if g.is_live(now) => Ok(g),
        _ => Err(AuthStoreError::Revoked(grant_id.clone())),
    }
}

impl Store {
    /// Store an authorization code for a live grant of the same client (else `Revoked` /
    /// `Invalid`). A hash already stored is a `Conflict`.
    pub async fn create_code(&self, code: NewCode<'_>) -> Result<()> {
        if code.ttl_seconds <= 0 {
            return Err(AuthStoreError::Invalid("code lifetime must be positive".into()));
        }
        let now = self.now_secs();
        let mut tx = self.pool.begin_write().await?;
        {
            let mut conn = tx.conn();
            let grant = live_in(&mut conn, code.grant_id, now).await?;
            if &grant.client_id != code.client_id {
                return Err(AuthStoreError::Invalid(format!(
                    "grant {} belongs to client {}, not {}",
                    grant.grant_id, grant.client_id, code.client_id
                )));
            }
            let mut sql = Sql::new(conn.dialect());
            sql.push(
                "INSERT INTO auth_codes (code_hash, grant_id, client_id, redirect_uri, code_challenge, expires_at, \
                 used_at, nonce) VALUES (",
            )
            .bind(code.code_hash)
            .push(", ")
            .bind(code.grant_id.as_str())
            .push(", ")
            .bind(code.client_id.as_str())
            .push(", ")
            .bind(code.redirect_uri)
            .push(", ")
            .bind(code.challenge.challenge())
            .push(", ")
            .bind(now.saturating_add(code.ttl_seconds))
            .push(", NULL, ")
            .bind(code.nonce)
            .push(")");
            conn.execute(&sql)
                .await
                .map_err(|e| super::conflict_on_duplicate(e, || "authorization code already exists".into()))?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Redeem an authorization code, marking it used in the same transaction.
    ///
    /// * unknown: `NotFound`; past its expiry: `Expired`;
    /// * used before: its grant (and children) is revoked and committed, then `AlreadyUsed`
    ///   (RFC 6749 §4.1.2: tokens issued from a code used twice are revoked);
    /// * grant no longer live: `Revoked` (the code is spent all the same).
    ///
    /// The caller still checks client, redirect URI and PKCE verifier; a failed check leaves the
    /// code spent, as OAuth 2.1 wants.
    pub async fn redeem_code(&self, code_hash: &str) -> Result<CodeRedemption> {
        let now = self.now_secs();
        let mut tx = self.pool.begin_write().await?;
        let outcome = {
            let mut conn = tx.conn();
            let mut sql = Sql::new(conn.dialect());
            sql.push(
                "SELECT grant_id, client_id, redirect_uri, code_challenge, expires_at, used_at, nonce \
                 FROM auth_codes WHERE code_hash = ",
            )
            .bind(code_hash);
            for_update(&mut sql);
            let rows =
                conn.fetch(&sql, &[Col::Text, Col::Text, Col::Text, Col::Text, Col::Int, Col::Int, Col::Text]).await?;
            let Some(mut row) = rows.into_iter().next() else {
                return Err(AuthStoreError::NotFound { what: "authorization code" });
            };
            let grant_id: GrantId = parse_stored(&required_text(&mut row, 0, "code grant_id")?, "code grant_id")?;
            if opt_int(&row, 5).is_some() {
                let revoked =
                    revoke_tree(&mut conn, &[grant_id.as_str().to_string()], now, REVOKED_BY_CODE_REUSE).await?;
                Err(AuthStoreError::AlreadyUsed { grant_id, revoked })
            } else if row.int(4) <= now {
                Err(AuthStoreError::Expired { what: "authorization code" })
            } else {
                let mut sql = Sql::new(conn.dialect());
                sql.push("UPDATE auth_codes SET used_at = ")
                    .bind(now)
                    .push(" WHERE code_hash = ")
                    .bind(code_hash)
                    .push(" AND used_at IS NULL");
                // Always 1 under the row lock; 0 would mean a concurrent redemption won.
                if conn.execute(&sql).await? == 0 {
                    let revoked =
                        revoke_tree(&mut conn, &[grant_id.as_str().to_string()], now, REVOKED_BY_CODE_REUSE).await?;
                    return finish(tx, Err(AuthStoreError::AlreadyUsed { grant_id, revoked })).await;
                }
                let challenge = PkceChallenge::new(Some("S256"), &required_text(&mut row, 3, "code_challenge")?)
                    .map_err(|e| AuthStoreError::Corrupt(format!("code_challenge: {e}")))?;
                let client_id = parse_stored(&required_text(&mut row, 1, "code client_id")?, "code client_id")?;
                let redirect_uri = required_text(&mut row, 2, "redirect_uri")?;
                live_in(&mut conn, &grant_id, now).await.map(|grant| CodeRedemption {
                    grant,
                    client_id,
                    redirect_uri,
                    challenge,
                    nonce: take_text(&mut row, 6),
                })
            }
        };
        finish(tx, outcome).await
    }

    /// Store a refresh token for a live grant. It expires after `ttl_seconds`, or with the grant
    /// if that is sooner.
    pub async fn create_refresh_token(&self, token_hash: &str, grant_id: &GrantId, ttl_seconds: i64) -> Result<()> {
        let now = self.now_secs();
        let mut tx = self.pool.begin_write().await?;
        {
            let mut conn = tx.conn();
            let grant = live_in(&mut conn, grant_id, now).await?;
            insert_refresh(&mut conn, token_hash, &grant, now, ttl_seconds).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Use a refresh token: mark it used, store its replacement `new_hash`, and return the live
    /// grant to issue an access token for.
    ///
    /// * unknown (or deleted by a revocation): `NotFound`;
    /// * used before: the grant (and its children, and the replacement token) is revoked and
    ///   committed, then `Reused`;
    /// * expired: `Expired`; grant revoked or expired: `Revoked`.
    pub async fn rotate_refresh_token(&self, old_hash: &str, new_hash: &str, ttl_seconds: i64) -> Result<Grant> {
        let now = self.now_secs();
        let mut tx = self.pool.begin_write().await?;
        let outcome = {
            let mut conn = tx.conn();
            let mut sql = Sql::new(conn.dialect());
            sql.push("SELECT grant_id, expires_at, used_at FROM refresh_tokens WHERE token_hash = ").bind(old_hash);
            for_update(&mut sql);
            let rows = conn.fetch(&sql, &[Col::Text, Col::Int, Col::Int]).await?;
            let Some(mut row) = rows.into_iter().next() else {
                return Err(AuthStoreError::NotFound { what: "refresh token" });
            };
            let grant_id: GrantId = parse_stored(&required_text(&mut row, 0, "refresh grant_id")?, "grant_id")?;
            if opt_int(&row, 2).is_some() {
                let revoked =
                    revoke_tree(&mut conn, &[grant_id.as_str().to_string()], now, REVOKED_BY_REFRESH_REUSE).await?;
                Err(AuthStoreError::Reused { grant_id, revoked })
            } else if row.int(1) <= now {
                Err(AuthStoreError::Expired { what: "refresh token" })
            } else {
                let grant = live_in(&mut conn, &grant_id, now).await?;
                let mut sql = Sql::new(conn.dialect());
                sql.push("UPDATE refresh_tokens SET used_at = ")
                    .bind(now)
                    .push(", replaced_by = ")
                    .bind(new_hash)
                    .push(" WHERE token_hash = ")
                    .bind(old_hash)
                    .push(" AND used_at IS NULL");
                // Always 1 under the row lock; 0 would mean a concurrent rotation won.
                if conn.execute(&sql).await? == 0 {
                    let revoked =
                        revoke_tree(&mut conn, &[grant_id.as_str().to_string()], now, REVOKED_BY_REFRESH_REUSE).await?;
                    return finish(tx, Err(AuthStoreError::Reused { grant_id, revoked })).await;
                }
                insert_refresh(&mut conn, new_hash, &grant, now, ttl_seconds).await?;
                Ok(grant)
            }
        };
        finish(tx, outcome).await
    }
}

/// Commit what the transaction did (a spent code, a revocation after a replay) also when the
/// answer is a refusal; roll back on internal failures.
async fn finish<T>(tx: Tx, outcome: Result<T>) -> Result<T> {
    match &outcome {
        Err(e) if e.is_internal() => {}
        _ => tx.commit().await?,
    }
    outcome
}

async fn insert_refresh(conn: &mut Conn<'_>, token_hash: &str, grant: &Grant, now: i64, ttl: i64) -> Result<()> {
    if ttl <= 0 {
        return Err(AuthStoreError::Invalid("refresh token lifetime must be positive".into()));
    }
    let mut expires_at = now.saturating_add(ttl);
    if let Some(grant_expiry) = grant.expires_at {
        expires_at = expires_at.min(grant_expiry);
    }
    let mut sql = Sql::new(conn.dialect());
    sql.push(
        "INSERT INTO refresh_tokens (token_hash, grant_id, created_at, expires_at, used_at, replaced_by) VALUES (",
    )
    .bind(token_hash)
    .push(", ")
    .bind(grant.grant_id.as_str())
    .push(", ")
    .bind(now)
    .push(", ")
    .bind(expires_at)
    .push(", NULL, NULL)");
    conn.execute(&sql).await.map_err(|e| super::conflict_on_duplicate(e, || "refresh token already exists".into()))?;
    Ok(())
}
