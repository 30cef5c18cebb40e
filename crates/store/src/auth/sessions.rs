//! Sign-in sessions and authorization requests in progress.
//!
//! A session cookie and the browser-binding cookie are random values; only their SHA-256 hex
//! ([`super::token_hash`]) is stored, like codes and refresh tokens.

use ::auth::{ClientId, GrantId, PatientId, UserId};
use serde_json::Value;

use super::grants::revoke_sessions_in;
use super::{opt_int, parse_json, parse_opt, parse_stored, required_text, take_text, to_json, Result};
use crate::db::{Col, RowExt, Sql, SqlValue};
use crate::Store;

/// A browser's sign-in.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSession {
    pub session_hash: String,
    pub user_id: UserId,
    pub created_at: i64,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
}

impl WebSession {
    pub fn is_live(&self, now: i64) -> bool {
        self.ended_at.is_none() && now < self.expires_at
    }
}

/// An authorization request to remember while the person signs in, picks a patient and decides.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPendingAuthorization {
    pub request_id: String,
    /// SHA-256 hex of the browser-binding cookie.
    pub browser_hash: String,
    /// Carried by every form of this request.
    pub csrf: String,
    pub client_id: ClientId,
    /// The validated request (the caller's own JSON shape).
    pub params: Value,
    /// Known up front for an EHR launch.
    pub patient_id: Option<PatientId>,
    pub ttl_seconds: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PendingAuthorization {
    pub request_id: String,
    pub browser_hash: String,
    pub csrf: String,
    pub client_id: ClientId,
    pub params: Value,
    pub user_id: Option<UserId>,
    pub session_hash: Option<String>,
    pub patient_id: Option<PatientId>,
    pub created_at: i64,
    pub expires_at: i64,
    pub completed_at: Option<i64>,
}

impl PendingAuthorization {
    /// Still usable: neither completed nor expired.
    pub fn is_open(&self, now: i64) -> bool {
        self.completed_at.is_none() && now < self.expires_at
    }
}

/// What a stored refresh token says about itself (introspection and revocation).
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshTokenInfo {
    pub grant_id: GrantId,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
}

const PENDING_COLS: &str = "request_id, browser_hash, csrf, client_id, params, user_id, session_hash, patient_id, \
     created_at, expires_at, completed_at";
const PENDING_KINDS: [Col; 11] = [
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Int,
    Col::Int,
];

fn decode_pending(mut row: Vec<SqlValue>) -> Result<PendingAuthorization> {
    Ok(PendingAuthorization {
        request_id: required_text(&mut row, 0, "request_id")?,
        browser_hash: required_text(&mut row, 1, "browser_hash")?,
        csrf: required_text(&mut row, 2, "csrf")?,
        client_id: parse_stored(&required_text(&mut row, 3, "pending client_id")?, "client_id")?,
        params: parse_json(&required_text(&mut row, 4, "pending params")?, "pending params")?,
        user_id: parse_opt(take_text(&mut row, 5), "pending user_id")?,
        session_hash: take_text(&mut row, 6),
        patient_id: parse_opt(take_text(&mut row, 7), "pending patient_id")?,
        created_at: row.int(8),
        expires_at: row.int(9),
        completed_at: opt_int(&row, 10),
    })
}

impl Store {
    /// Start a session for `user_id` lasting `ttl_seconds`.
    pub async fn create_session(&self, session_hash: &str, user_id: &UserId, ttl_seconds: i64) -> Result<WebSession> {
        let now = self.now_secs();
        let session = WebSession {
            session_hash: session_hash.to_owned(),
            user_id: user_id.clone(),
            created_at: now,
            expires_at: now.saturating_add(ttl_seconds.max(1)),
            ended_at: None,
        };
        let mut sql = Sql::new(self.dialect());
        sql.push("INSERT INTO web_sessions (session_hash, user_id, created_at, expires_at, ended_at) VALUES (")
            .bind(session_hash)
            .push(", ")
            .bind(user_id.as_str())
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(session.expires_at)
            .push(", NULL)");
        let mut tx = self.pool.begin_write().await?;
        tx.conn().execute(&sql).await.map_err(|e| super::conflict_on_duplicate(e, || "session exists".into()))?;
        tx.commit().await?;
        Ok(session)
    }

    /// The session, if it is live (not signed out, not expired).
    pub async fn live_session(&self, session_hash: &str) -> Result<Option<WebSession>> {
        let now = self.now_secs();
        let mut sql = Sql::new(self.dialect());
        sql.push(
            "SELECT session_hash, user_id, created_at, expires_at, ended_at FROM web_sessions WHERE session_hash = ",
        )
        .bind(session_hash);
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &[Col::Text, Col::Text, Col::Int, Col::Int, Col::Int]).await?;
        let Some(mut row) = rows.into_iter().next() else { return Ok(None) };
        let session = WebSession {
            session_hash: required_text(&mut row, 0, "session_hash")?,
            user_id: parse_stored(&required_text(&mut row, 1, "session user_id")?, "user_id")?,
            created_at: row.int(2),
            expires_at: row.int(3),
            ended_at: opt_int(&row, 4),
        };
        Ok(session.is_live(now).then_some(session))
    }

    /// Sign out: end the session and revoke the `online_access` grants that live with it.
    /// Returns the revoked grants.
    pub async fn end_session(&self, session_hash: &str, by: &str) -> Result<Vec<GrantId>> {
        let now = self.now_secs();
        let mut tx = self.pool.begin_write().await?;
        let revoked = {
            let mut conn = tx.conn();
            let mut sql = Sql::new(conn.dialect());
            sql.push("UPDATE web_sessions SET ended_at = ")
                .bind(now)
                .push(" WHERE session_hash = ")
                .bind(session_hash)
                .push(" AND ended_at IS NULL");
            conn.execute(&sql).await?;
            revoke_sessions_in(&mut conn, session_hash, now, by).await?
        };
        tx.commit().await?;
        Ok(revoked)
    }

    pub async fn create_pending_authorization(&self, new: NewPendingAuthorization) -> Result<()> {
        let now = self.now_secs();
        let params = to_json(&new.params)?;
        let mut sql = Sql::new(self.dialect());
        sql.push("INSERT INTO authorize_requests (")
            .push(PENDING_COLS)
            .push(") VALUES (")
            .bind(new.request_id.as_str())
            .push(", ")
            .bind(new.browser_hash.as_str())
            .push(", ")
            .bind(new.csrf.as_str())
            .push(", ")
            .bind(new.client_id.as_str())
            .push(", ")
            .bind(params)
            .push(", NULL, NULL, ")
            .bind(new.patient_id.as_ref().map(PatientId::as_str))
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(now.saturating_add(new.ttl_seconds.max(1)))
            .push(", NULL)");
        let mut tx = self.pool.begin_write().await?;
        tx.conn().execute(&sql).await.map_err(|e| super::conflict_on_duplicate(e, || "request exists".into()))?;
        tx.commit().await?;
        Ok(())
    }

    /// The request as stored (the caller checks [`PendingAuthorization::is_open`] and the binding).
    pub async fn pending_authorization(&self, request_id: &str) -> Result<Option<PendingAuthorization>> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ").push(PENDING_COLS).push(" FROM authorize_requests WHERE request_id = ").bind(request_id);
        // Read on the writer: the page that follows a POST must see what the POST stored, and
        // SQLite readers may lag the writer by a snapshot.
        let mut tx = self.pool.begin_write().await?;
        let rows = tx.conn().fetch(&sql, &PENDING_KINDS).await?;
        tx.commit().await?;
        rows.into_iter().next().map(decode_pending).transpose()
    }

    /// Record who signed in for an open request.
    pub async fn set_pending_user(&self, request_id: &str, user_id: &UserId, session_hash: &str) -> Result<bool> {
        let now = self.now_secs();
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE authorize_requests SET user_id = ")
            .bind(user_id.as_str())
            .push(", session_hash = ")
            .bind(session_hash)
            .push(", patient_id = CASE WHEN user_id IS NULL OR user_id = ")
            .bind(user_id.as_str())
            .push(" THEN patient_id ELSE NULL END WHERE request_id = ")
            .bind(request_id);
        self.update_open_request(sql, now).await
    }

    /// Record the patient chosen for an open request.
    pub async fn set_pending_patient(&self, request_id: &str, patient_id: &PatientId) -> Result<bool> {
        let now = self.now_secs();
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE authorize_requests SET patient_id = ")
            .bind(patient_id.as_str())
            .push(" WHERE request_id = ")
            .bind(request_id);
        self.update_open_request(sql, now).await
    }

    /// Close a request (approved or denied). True only for the call that closed it, so a form
    /// submitted twice issues one code.
    pub async fn complete_pending_authorization(&self, request_id: &str) -> Result<bool> {
        let now = self.now_secs();
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE authorize_requests SET completed_at = ")
            .bind(now)
            .push(" WHERE request_id = ")
            .bind(request_id);
        self.update_open_request(sql, now).await
    }

    async fn update_open_request(&self, mut sql: Sql, now: i64) -> Result<bool> {
        sql.push(" AND completed_at IS NULL AND expires_at > ").bind(now);
        let mut tx = self.pool.begin_write().await?;
        let n = tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// What is stored about a refresh token (by [`super::token_hash`]), used or not.
    pub async fn refresh_token_info(&self, token_hash: &str) -> Result<Option<RefreshTokenInfo>> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT grant_id, created_at, expires_at, used_at FROM refresh_tokens WHERE token_hash = ")
            .bind(token_hash);
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &[Col::Text, Col::Int, Col::Int, Col::Int]).await?;
        let Some(mut row) = rows.into_iter().next() else { return Ok(None) };
        Ok(Some(RefreshTokenInfo {
            grant_id: parse_stored(&required_text(&mut row, 0, "refresh grant_id")?, "grant_id")?,
            created_at: row.int(1),
            expires_at: row.int(2),
            used_at: opt_int(&row, 3),
        }))
    }
}
