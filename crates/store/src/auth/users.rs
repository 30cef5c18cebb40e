//! People who sign in, the patients each may act for, and login lockout.

use std::fmt;

use ::auth::{PatientId, UserId};

use super::clients::text_enum;
use super::{
    bind_opt_int, check_argon2id, conflict_on_duplicate, for_update, opt_int, parse_opt, parse_stored, required_text,
    take_text, AuthStoreError, Result,
};
use crate::db::{Col, Conn, RowExt, Sql, SqlValue};
use crate::Store;

text_enum!(
    Role {
        Patient => "patient",
        Practitioner => "practitioner",
        Admin => "admin",
    }
);

/// An account to create. A `fhir_user` of `Patient/{id}` makes that patient one the user may act
/// for even when `patients` leaves it out.
#[derive(Clone, PartialEq)]
pub struct NewUser {
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub role: Role,
    /// The user's FHIR resource, e.g. `Patient/123` or `Practitioner/9`; `None` for admins.
    pub fhir_user: Option<String>,
    /// The patients this user may act for (self and, for a proxy or parent, others).
    pub patients: Vec<PatientId>,
}

#[derive(Clone, PartialEq)]
pub struct User {
    pub user_id: UserId,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub fhir_user: Option<String>,
    pub created_at: i64,
    /// Failed logins since the last success or lock.
    pub failed_logins: i64,
    /// While `now < locked_until`, logins are refused without checking the password.
    pub locked_until: Option<i64>,
}

impl User {
    pub fn is_locked(&self, now: i64) -> bool {
        self.locked_until.is_some_and(|until| now < until)
    }
}

impl fmt::Debug for NewUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("role", &self.role)
            .field("fhir_user", &self.fhir_user)
            .field("patients", &self.patients)
            .finish()
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("user_id", &self.user_id)
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("role", &self.role)
            .field("fhir_user", &self.fhir_user)
            .field("created_at", &self.created_at)
            .field("failed_logins", &self.failed_logins)
            .field("locked_until", &self.locked_until)
            .finish()
    }
}

/// After `max_failures` failed logins in a row the account is locked for `lock_seconds`; the
/// count starts again after the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: i64,
    pub lock_seconds: i64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy { max_failures: 5, lock_seconds: 15 * 60 }
    }
}

/// The account state after a failed login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailure {
    /// Failures counted so far (0 right after a lock started).
    pub failed_logins: i64,
    /// Set when this failure (or an earlier one) locked the account.
    pub locked_until: Option<i64>,
}

const USER_COLS: &str = "user_id, username, password_hash, role, fhir_user, created_at, failed_logins, locked_until";
const USER_KINDS: [Col; 8] = [Col::Text, Col::Text, Col::Text, Col::Text, Col::Text, Col::Int, Col::Int, Col::Int];

fn decode_user(mut row: Vec<SqlValue>) -> Result<User> {
    Ok(User {
        user_id: parse_stored(&required_text(&mut row, 0, "user_id")?, "user_id")?,
        username: required_text(&mut row, 1, "username")?,
        password_hash: required_text(&mut row, 2, "password_hash")?,
        role: parse_stored(&required_text(&mut row, 3, "role")?, "role")?,
        fhir_user: take_text(&mut row, 4),
        created_at: row.int(5),
        failed_logins: row.int(6),
        locked_until: opt_int(&row, 7),
    })
}

fn check_new_user(u: &NewUser) -> Result<()> {
    let name = &u.username;
    if name.is_empty() || name.len() > 255 || name.trim() != name || name.chars().any(char::is_control) {
        return Err(AuthStoreError::Invalid(
            "username must be 1-255 characters without leading or trailing spaces".into(),
        ));
    }
    check_argon2id(&u.password_hash, "password_hash")?;
    if let Some(fhir_user) = &u.fhir_user {
        let well_formed = fhir_user
            .split_once('/')
            .is_some_and(|(t, id)| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphabetic()) && !id.is_empty());
        if !well_formed {
            return Err(AuthStoreError::Invalid(format!("fhir_user must be a relative reference, got {fhir_user:?}")));
        }
    }
    Ok(())
}

/// The patient ids a user may act for, read inside a transaction or on a read connection.
pub(super) async fn patients_of(conn: &mut Conn<'_>, user_id: &UserId) -> Result<Vec<PatientId>> {
    let mut sql = Sql::new(conn.dialect());
    sql.push("SELECT patient_id FROM user_patients WHERE user_id = ")
        .bind(user_id.as_str())
        .push(" ORDER BY patient_id");
    let rows = conn.fetch(&sql, &[Col::Text]).await?;
    rows.into_iter().map(|mut r| parse_stored(&required_text(&mut r, 0, "patient_id")?, "patient_id")).collect()
}

pub(super) async fn user_in(conn: &mut Conn<'_>, user_id: &UserId, lock: bool) -> Result<Option<User>> {
    let mut sql = Sql::new(conn.dialect());
    sql.push("SELECT ").push(USER_COLS).push(" FROM users WHERE user_id = ").bind(user_id.as_str());
    if lock {
        for_update(&mut sql);
    }
    let rows = conn.fetch(&sql, &USER_KINDS).await?;
    rows.into_iter().next().map(decode_user).transpose()
}

impl Store {
    /// Create an account. A username already taken (compared ignoring ASCII case) is a `Conflict`.
    pub async fn create_user(&self, new: NewUser) -> Result<User> {
        check_new_user(&new)?;
        let user_id: UserId = parse_stored(&uuid::Uuid::new_v4().to_string(), "user_id")?;
        let created_at = self.now_secs();
        let mut patients = new.patients.clone();
        if let Some(own) = new.fhir_user.as_deref().and_then(|r| r.strip_prefix("Patient/")) {
            if let Some(own) = parse_opt::<PatientId>(Some(own.to_string()), "fhir_user patient id")? {
                patients.push(own);
            }
        }
        patients.sort();
        patients.dedup();

        let conflict = || format!("username {:?} is already taken", new.username);
        let mut tx = self.pool.begin_write().await?;
        {
            let mut conn = tx.conn();
            let mut taken = Sql::new(conn.dialect());
            taken
                .push("SELECT user_id FROM users WHERE lower(username) = lower(")
                .bind(new.username.as_str())
                .push(")");
            if !conn.fetch(&taken, &[Col::Text]).await?.is_empty() {
                return Err(AuthStoreError::Conflict(conflict()));
            }
            let mut sql = Sql::new(conn.dialect());
            sql.push("INSERT INTO users (")
                .push(USER_COLS)
                .push(") VALUES (")
                .bind(user_id.as_str())
                .push(", ")
                .bind(new.username.as_str())
                .push(", ")
                .bind(new.password_hash.as_str())
                .push(", ")
                .bind(new.role.as_str())
                .push(", ")
                .bind(new.fhir_user.clone())
                .push(", ")
                .bind(created_at)
                .push(", 0, NULL)");
            // A concurrent insert of the same name (PostgreSQL) trips the unique index instead.
            conn.execute(&sql).await.map_err(|e| conflict_on_duplicate(e, conflict))?;
            if !patients.is_empty() {
                let mut sql = Sql::new(conn.dialect());
                sql.push("INSERT INTO user_patients (user_id, patient_id) VALUES ");
                for (i, p) in patients.iter().enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.push("(").bind(user_id.as_str()).push(", ").bind(p.as_str()).push(")");
                }
                conn.execute(&sql).await?;
            }
        }
        tx.commit().await?;
        Ok(User {
            user_id,
            username: new.username,
            password_hash: new.password_hash,
            role: new.role,
            fhir_user: new.fhir_user,
            created_at,
            failed_logins: 0,
            locked_until: None,
        })
    }

    /// The account with this username (ignoring ASCII case).
    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ").push(USER_COLS).push(" FROM users WHERE lower(username) = lower(").bind(username).push(")");
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &USER_KINDS).await?;
        rows.into_iter().next().map(decode_user).transpose()
    }

    pub async fn user(&self, user_id: &UserId) -> Result<Option<User>> {
        let mut lease = self.pool.read_conn().await?;
        user_in(&mut lease.conn(), user_id, false).await
    }

    /// The patients this user may act for, sorted by id.
    pub async fn user_patients(&self, user_id: &UserId) -> Result<Vec<PatientId>> {
        let mut lease = self.pool.read_conn().await?;
        patients_of(&mut lease.conn(), user_id).await
    }

    /// Let a user act for one more patient (e.g. a parent for a new child). Returns false when
    /// the user could already.
    pub async fn add_user_patient(&self, user_id: &UserId, patient_id: &PatientId) -> Result<bool> {
        let mut tx = self.pool.begin_write().await?;
        let added = {
            let mut conn = tx.conn();
            if user_in(&mut conn, user_id, false).await?.is_none() {
                return Err(AuthStoreError::NotFound { what: "user" });
            }
            let mut sql = Sql::new(conn.dialect());
            sql.push("INSERT INTO user_patients (user_id, patient_id) VALUES (")
                .bind(user_id.as_str())
                .push(", ")
                .bind(patient_id.as_str())
                .push(") ON CONFLICT (user_id, patient_id) DO NOTHING");
            conn.execute(&sql).await? > 0
        };
        tx.commit().await?;
        Ok(added)
    }

    /// Count a failed login; at `policy.max_failures` the account is locked for
    /// `policy.lock_seconds` and the count starts again.
    pub async fn record_failed_login(&self, user_id: &UserId, policy: &LockoutPolicy) -> Result<LoginFailure> {
        let now = self.now_secs();
        let mut tx = self.pool.begin_write().await?;
        let outcome = {
            let mut conn = tx.conn();
            let Some(user) = user_in(&mut conn, user_id, true).await? else {
                return Err(AuthStoreError::NotFound { what: "user" });
            };
            let failures = user.failed_logins + 1;
            let (failed_logins, locked_until) = if failures >= policy.max_failures.max(1) {
                (0, Some(now + policy.lock_seconds))
            } else {
                (failures, user.locked_until)
            };
            let mut sql = Sql::new(conn.dialect());
            sql.push("UPDATE users SET failed_logins = ").bind(failed_logins).push(", locked_until = ");
            bind_opt_int(&mut sql, locked_until).push(" WHERE user_id = ").bind(user_id.as_str());
            conn.execute(&sql).await?;
            LoginFailure { failed_logins, locked_until }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// After a successful login: clear the failure count and any lock.
    pub async fn reset_failed_logins(&self, user_id: &UserId) -> Result<()> {
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE user_id = ")
            .bind(user_id.as_str())
            .push(" AND (failed_logins <> 0 OR locked_until IS NOT NULL)");
        let mut tx = self.pool.begin_write().await?;
        tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(())
    }
}
