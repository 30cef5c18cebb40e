//! Grants: one person's consent to one app, the root of every code and token.

use ::auth::{ClientId, GrantId, PatientId, ScopeSet, SensitiveCategory, UserId};
use serde_json::Value;

use super::users::{patients_of, user_in, Role};
use super::{
    bind_opt_int, execute, for_update, opt_int, parse_json, parse_opt, parse_stored, required_text, take_text, to_json,
    AuthStoreError, Result, GRANT_REVOKED_CHANNEL, TOUCH_GRANULARITY_SECONDS,
};
use crate::db::{Col, Conn, Dialect, RowExt, Sql, SqlValue};
use crate::Store;

/// A grant to record. Build with [`NewGrant::new`] and set what applies.
#[derive(Debug, Clone, PartialEq)]
pub struct NewGrant {
    /// The person who consented; `None` for backend services (client credentials).
    pub user_id: Option<UserId>,
    pub client_id: ClientId,
    /// The scopes granted (stored in canonical form).
    pub scopes: ScopeSet,
    pub patient_id: Option<PatientId>,
    pub encounter_id: Option<String>,
    /// SMART `fhirContext` (JSON array).
    pub fhir_context: Option<Value>,
    /// Sensitive categories the person withheld from this app.
    pub withheld: Vec<SensitiveCategory>,
    /// Seconds until the grant expires; `None`: until revoked.
    pub lifetime_seconds: Option<i64>,
    /// For token exchange: the grant this one derives from. The parent must be live; the child
    /// never outlives it, never holds more scopes, keeps its patient and its withheld categories,
    /// and is revoked with it.
    pub parent_grant_id: Option<GrantId>,
    /// `online_access`: the sign-in session the grant lives with (see
    /// [`Store::revoke_session_grants`]).
    pub session_id: Option<String>,
    /// SMART launch context: whether the app should show a patient banner.
    pub need_patient_banner: Option<bool>,
    /// SMART launch context: the EHR's style sheet for the app.
    pub smart_style_url: Option<String>,
}

impl NewGrant {
    pub fn new(client_id: ClientId, scopes: ScopeSet) -> NewGrant {
        NewGrant {
            user_id: None,
            client_id,
            scopes,
            patient_id: None,
            encounter_id: None,
            fhir_context: None,
            withheld: Vec::new(),
            lifetime_seconds: None,
            parent_grant_id: None,
            session_id: None,
            need_patient_banner: None,
            smart_style_url: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub grant_id: GrantId,
    pub user_id: Option<UserId>,
    pub client_id: ClientId,
    pub scopes: ScopeSet,
    pub patient_id: Option<PatientId>,
    pub encounter_id: Option<String>,
    pub fhir_context: Option<Value>,
    pub withheld: Vec<SensitiveCategory>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Who revoked it: a user id, `admin:<id>`, `code-reuse`, `refresh-reuse`, ...
    pub revoked_by: Option<String>,
    pub parent_grant_id: Option<GrantId>,
    pub last_used_at: Option<i64>,
    pub session_id: Option<String>,
    pub need_patient_banner: Option<bool>,
    pub smart_style_url: Option<String>,
}

impl Grant {
    /// Not revoked and not expired at `now` (epoch seconds); `expires_at` is the first second the
    /// grant is dead.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

const GRANT_COLS: &str = "grant_id, user_id, client_id, scopes, patient_id, encounter_id, fhir_context, withheld, \
     created_at, expires_at, revoked_at, revoked_by, parent_grant_id, last_used_at, session_id, need_patient_banner, \
     smart_style_url";
const GRANT_KINDS: [Col; 17] = [
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
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Text,
    Col::Int,
    Col::Text,
];

fn decode_grant(mut row: Vec<SqlValue>) -> Result<Grant> {
    Ok(Grant {
        grant_id: parse_stored(&required_text(&mut row, 0, "grant_id")?, "grant_id")?,
        user_id: parse_opt(take_text(&mut row, 1), "grant user_id")?,
        client_id: parse_stored(&required_text(&mut row, 2, "grant client_id")?, "grant client_id")?,
        scopes: ScopeSet::parse(&required_text(&mut row, 3, "grant scopes")?).0,
        patient_id: parse_opt(take_text(&mut row, 4), "grant patient_id")?,
        encounter_id: take_text(&mut row, 5),
        fhir_context: take_text(&mut row, 6).map(|t| parse_json(&t, "grant fhir_context")).transpose()?,
        withheld: parse_json(&required_text(&mut row, 7, "grant withheld")?, "grant withheld")?,
        created_at: row.int(8),
        expires_at: opt_int(&row, 9),
        revoked_at: opt_int(&row, 10),
        revoked_by: take_text(&mut row, 11),
        parent_grant_id: parse_opt(take_text(&mut row, 12), "parent_grant_id")?,
        last_used_at: opt_int(&row, 13),
        session_id: take_text(&mut row, 14),
        need_patient_banner: opt_int(&row, 15).map(|v| v != 0),
        smart_style_url: take_text(&mut row, 16),
    })
}

/// The grant with this id, live or not. `lock` takes a row lock on PostgreSQL.
pub(super) async fn grant_in(conn: &mut Conn<'_>, grant_id: &str, lock: bool) -> Result<Option<Grant>> {
    let mut sql = Sql::new(conn.dialect());
    sql.push("SELECT ").push(GRANT_COLS).push(" FROM grants WHERE grant_id = ").bind(grant_id);
    if lock {
        for_update(&mut sql);
    }
    let rows = conn.fetch(&sql, &GRANT_KINDS).await?;
    rows.into_iter().next().map(decode_grant).transpose()
}

/// Revoke `roots` and every grant derived from them (recursively) that is not revoked yet; delete
/// their refresh tokens and unused codes. Returns the grants this call revoked.
///
/// The cascade repeats until a pass revokes nothing: on PostgreSQL a child grant committed while
/// this transaction waited for a row lock is invisible to the statement that waited, but the next
/// pass sees it. Creating a child locks its parent row (`FOR UPDATE`), so once a parent is revoked
/// here no new child can appear under it.
pub(super) async fn revoke_tree(conn: &mut Conn<'_>, roots: &[String], now: i64, by: &str) -> Result<Vec<GrantId>> {
    let mut revoked: Vec<GrantId> = Vec::new();
    if roots.is_empty() {
        return Ok(revoked);
    }
    loop {
        let mut sql = Sql::new(conn.dialect());
        sql.push("WITH RECURSIVE tree(id) AS (SELECT grant_id FROM grants WHERE grant_id IN ")
            .bind_list(roots.iter().map(String::as_str))
            .push(
                " UNION SELECT g.grant_id FROM grants g JOIN tree t ON g.parent_grant_id = t.id) \
                 UPDATE grants SET revoked_at = ",
            )
            .bind(now)
            .push(", revoked_by = ")
            .bind(by)
            .push(" WHERE revoked_at IS NULL AND grant_id IN (SELECT id FROM tree) RETURNING grant_id");
        let rows = conn.fetch(&sql, &[Col::Text]).await?;
        if rows.is_empty() {
            break;
        }
        for mut row in rows {
            revoked.push(parse_stored(&required_text(&mut row, 0, "grant_id")?, "grant_id")?);
        }
    }
    if revoked.is_empty() {
        return Ok(revoked);
    }
    // Keep the root first, as callers expect.
    revoked.sort_by_key(|g| !roots.iter().any(|r| r == g.as_str()));
    for chunk in revoked.chunks(500) {
        let ids = || chunk.iter().map(GrantId::as_str);
        let mut sql = Sql::new(conn.dialect());
        sql.push("DELETE FROM refresh_tokens WHERE grant_id IN ").bind_list(ids());
        execute(conn, &sql).await?;
        let mut sql = Sql::new(conn.dialect());
        sql.push("DELETE FROM auth_codes WHERE used_at IS NULL AND grant_id IN ").bind_list(ids());
        execute(conn, &sql).await?;
        // Everything long-lived under the grant ends with it, in the same transaction.
        let mut sql = Sql::new(conn.dialect());
        sql.push("UPDATE subscriptions SET status = 'off', error = 'the authorization was revoked' WHERE status <> 'off' AND grant_id IN ")
            .bind_list(ids());
        execute(conn, &sql).await?;
        let mut sql = Sql::new(conn.dialect());
        sql.push("UPDATE action_links SET revoked_at = ")
            .bind(now)
            .push(" WHERE used_at IS NULL AND revoked_at IS NULL AND grant_id IN ")
            .bind_list(ids());
        execute(conn, &sql).await?;
        // A job's output goes too: the sweeper removes the files of jobs past `expires_ms`.
        let mut sql = Sql::new(conn.dialect());
        sql.push("UPDATE jobs SET status = 'cancelled', error = 'the authorization was revoked', finished_ms = ")
            .bind(now * 1000)
            .push(", expires_ms = ")
            .bind(now * 1000)
            .push(", lease_until = NULL WHERE status IN ('queued', 'running', 'completed') AND grant_id IN ")
            .bind_list(ids());
        execute(conn, &sql).await?;
        if conn.dialect() == Dialect::Postgres {
            for id in chunk {
                let mut sql = Sql::new(conn.dialect());
                sql.push("SELECT pg_notify(").bind(GRANT_REVOKED_CHANNEL).push(", ").bind(id.as_str()).push(")");
                execute(conn, &sql).await?;
            }
        }
    }
    Ok(revoked)
}

/// Revoke, inside a transaction, the live grants tied to a sign-in session.
pub(super) async fn revoke_sessions_in(
    conn: &mut Conn<'_>,
    session_id: &str,
    now: i64,
    by: &str,
) -> Result<Vec<GrantId>> {
    let mut sql = Sql::new(conn.dialect());
    sql.push("SELECT grant_id FROM grants WHERE session_id = ").bind(session_id).push(" AND revoked_at IS NULL");
    let roots: Vec<String> =
        conn.fetch(&sql, &[Col::Text]).await?.into_iter().filter_map(|mut r| take_text(&mut r, 0)).collect();
    revoke_tree(conn, &roots, now, by).await
}

impl Store {
    /// Record a grant. The client (and user, when given) must exist; a patient-role user can only
    /// grant access to a patient they may act for. See [`NewGrant::parent_grant_id`] for what a
    /// child grant inherits. Returns `Revoked(parent)` when the parent grant is not live.
    pub async fn create_grant(&self, new: NewGrant) -> Result<Grant> {
        let now = self.now_secs();
        let mut grant = Grant {
            grant_id: GrantId::generate(),
            user_id: new.user_id,
            client_id: new.client_id,
            scopes: new.scopes,
            patient_id: new.patient_id,
            encounter_id: new.encounter_id,
            fhir_context: new.fhir_context,
            withheld: new.withheld,
            created_at: now,
            expires_at: new.lifetime_seconds.map(|s| now.saturating_add(s)),
            revoked_at: None,
            revoked_by: None,
            parent_grant_id: new.parent_grant_id,
            last_used_at: None,
            session_id: new.session_id,
            need_patient_banner: new.need_patient_banner,
            smart_style_url: new.smart_style_url,
        };
        let mut tx = self.pool.begin_write().await?;
        {
            let mut conn = tx.conn();
            let mut sql = Sql::new(conn.dialect());
            sql.push("SELECT client_id FROM oauth_clients WHERE client_id = ").bind(grant.client_id.as_str());
            if conn.fetch(&sql, &[Col::Text]).await?.is_empty() {
                return Err(AuthStoreError::Invalid(format!("client {} is not registered", grant.client_id)));
            }
            // A child of a live grant for the same person and patient needs no check of the
            // person's rights: its parent was checked, and the child cannot hold more.
            let mut vetted = false;
            if let Some(parent_id) = grant.parent_grant_id.clone() {
                // The lock makes a concurrent revocation of the parent wait for this child, or
                // this child see the revocation.
                let parent = grant_in(&mut conn, parent_id.as_str(), true).await?;
                let Some(parent) = parent.filter(|p| p.is_live(now)) else {
                    return Err(AuthStoreError::Revoked(parent_id));
                };
                if !grant.scopes.is_subset_of(&parent.scopes) {
                    return Err(AuthStoreError::Invalid(format!(
                        "a derived grant cannot hold more than its parent's scopes ({})",
                        parent.scopes
                    )));
                }
                match (&grant.patient_id, &parent.patient_id) {
                    (None, Some(p)) => grant.patient_id = Some(p.clone()),
                    (Some(mine), Some(theirs)) if mine != theirs => {
                        return Err(AuthStoreError::Invalid(format!(
                            "a derived grant must keep its parent's patient {theirs}"
                        )));
                    }
                    _ => {}
                }
                vetted = grant.user_id == parent.user_id && grant.patient_id == parent.patient_id;
                grant.withheld.extend(parent.withheld.iter().copied());
                grant.expires_at = match (grant.expires_at, parent.expires_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            if let Some(user_id) = grant.user_id.as_ref().filter(|_| !vetted) {
                let Some(user) = user_in(&mut conn, user_id, false).await? else {
                    return Err(AuthStoreError::Invalid(format!("user {user_id} does not exist")));
                };
                if let (Role::Patient, Some(patient)) = (user.role, &grant.patient_id) {
                    if !patients_of(&mut conn, user_id).await?.contains(patient) {
                        return Err(AuthStoreError::Invalid(format!(
                            "user {user_id} may not act for patient {patient}"
                        )));
                    }
                }
            }
            grant.withheld.sort();
            grant.withheld.dedup();

            let fhir_context = grant.fhir_context.as_ref().map(to_json).transpose()?;
            let mut sql = Sql::new(conn.dialect());
            sql.push("INSERT INTO grants (")
                .push(GRANT_COLS)
                .push(") VALUES (")
                .bind(grant.grant_id.as_str())
                .push(", ")
                .bind(grant.user_id.as_ref().map(UserId::as_str))
                .push(", ")
                .bind(grant.client_id.as_str())
                .push(", ")
                .bind(grant.scopes.to_string())
                .push(", ")
                .bind(grant.patient_id.as_ref().map(PatientId::as_str))
                .push(", ")
                .bind(grant.encounter_id.clone())
                .push(", ")
                .bind(fhir_context)
                .push(", ")
                .bind(to_json(&grant.withheld)?)
                .push(", ")
                .bind(now)
                .push(", ");
            bind_opt_int(&mut sql, grant.expires_at)
                .push(", NULL, NULL, ")
                .bind(grant.parent_grant_id.as_ref().map(GrantId::as_str))
                .push(", NULL, ")
                .bind(grant.session_id.clone())
                .push(", ");
            bind_opt_int(&mut sql, grant.need_patient_banner.map(i64::from))
                .push(", ")
                .bind(grant.smart_style_url.clone())
                .push(")");
            conn.execute(&sql).await?;
        }
        tx.commit().await?;
        Ok(grant)
    }

    /// The grant with this id, whatever its state.
    pub async fn grant(&self, grant_id: &GrantId) -> Result<Option<Grant>> {
        let mut lease = self.pool.read_conn().await?;
        grant_in(&mut lease.conn(), grant_id.as_str(), false).await
    }

    /// THE liveness check behind every access token: the grant when it is neither revoked nor
    /// expired, else `None`. One primary-key lookup.
    pub async fn live_grant(&self, grant_id: &GrantId) -> Result<Option<Grant>> {
        let now = self.now_secs();
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ")
            .push(GRANT_COLS)
            .push(" FROM grants WHERE grant_id = ")
            .bind(grant_id.as_str())
            .push(" AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ")
            .bind(now)
            .push(")");
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &GRANT_KINDS).await?;
        rows.into_iter().next().map(decode_grant).transpose()
    }

    /// Note that the grant was used (`last_used_at`, for the "Connected apps" page). Writes at
    /// most once per [`TOUCH_GRANULARITY_SECONDS`] per grant.
    pub async fn touch_grant(&self, grant_id: &GrantId) -> Result<()> {
        let now = self.now_secs();
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE grants SET last_used_at = ")
            .bind(now)
            .push(" WHERE grant_id = ")
            .bind(grant_id.as_str())
            .push(" AND (last_used_at IS NULL OR last_used_at <= ")
            .bind(now - TOUCH_GRANULARITY_SECONDS)
            .push(")");
        let mut tx = self.pool.begin_write().await?;
        tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revoke a grant and everything under it: child grants (recursively), refresh tokens and
    /// unused codes. `by` records who did it. Returns the grants this call revoked, the given one
    /// first (empty when it was unknown or already revoked), so caches can drop them.
    pub async fn revoke_grant(&self, grant_id: &GrantId, by: &str) -> Result<Vec<GrantId>> {
        let now = self.now_secs();
        let mut tx = self.pool.begin_write().await?;
        let revoked = revoke_tree(&mut tx.conn(), &[grant_id.as_str().to_string()], now, by).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Revoke every live grant tied to a sign-in session (its `online_access` grants), e.g. at
    /// logout. Returns the grants revoked.
    pub async fn revoke_session_grants(&self, session_id: &str, by: &str) -> Result<Vec<GrantId>> {
        let now = self.now_secs();
        let mut tx = self.pool.begin_write().await?;
        let revoked = revoke_sessions_in(&mut tx.conn(), session_id, now, by).await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Every grant of a user (live, expired and revoked), newest first, for the "Connected apps"
    /// page; [`Grant::is_live`] tells them apart.
    pub async fn grants_for_user(&self, user_id: &UserId) -> Result<Vec<Grant>> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ")
            .push(GRANT_COLS)
            .push(" FROM grants WHERE user_id = ")
            .bind(user_id.as_str())
            .push(" ORDER BY created_at DESC, grant_id");
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &GRANT_KINDS).await?;
        rows.into_iter().map(decode_grant).collect()
    }

    /// Watch for grants revoked by other processes (PostgreSQL `LISTEN` on
    /// [`GRANT_REVOKED_CHANNEL`]) and call `on_revoked` with each id, so cached liveness answers
    /// are dropped at once. Reconnects after a lost connection. SQLite has no notifications;
    /// there the liveness cache's short lifetime bounds the delay. Stops when `on_revoked`
    /// returns false.
    pub fn watch_revocations(&self, on_revoked: impl Fn(GrantId) -> bool + Send + 'static) {
        let crate::db::Pool::Postgres { pool, .. } = &self.pool else { return };
        let pool = pool.clone();
        tokio::spawn(async move {
            loop {
                let mut listener = match sqlx::postgres::PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        if pool.is_closed() {
                            return;
                        }
                        tracing::warn!(error = %e, "cannot listen for grant revocations; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                        continue;
                    }
                };
                if let Err(e) = listener.listen(GRANT_REVOKED_CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                    continue;
                }
                loop {
                    match listener.recv().await {
                        Ok(n) => {
                            if let Ok(id) = n.payload().parse::<GrantId>() {
                                if !on_revoked(id) {
                                    return;
                                }
                            }
                        }
                        Err(e) => {
                            if pool.is_closed() {
                                return;
                            }
                            tracing::warn!(error = %e, "revocation listener lost its connection; reconnecting");
                            break;
                        }
                    }
                }
            }
        });
    }
}
