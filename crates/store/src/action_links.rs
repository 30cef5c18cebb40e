//! Single-task action links' durable state (see the migration's notes). Minting writes the
//! link and the Task that advertises it in one transaction; using a link claims it and writes
//! the decision in one transaction, so a link is used at most once and never half-way.

use crate::db::{Col, Dialect, RowExt, Sql, SqlValue};
use crate::write::{WriteOutcome, WriteRequest};
use crate::{Store, StoreError};

/// One link as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionLinkRecord {
    pub link_id: String,
    /// SHA-256 (hex) of the secret in the link's URL.
    pub secret_hash: String,
    pub task_id: String,
    pub patient_id: String,
    /// `prior-authorization` or `consent`.
    pub action: String,
    /// `click-through`, `pin` or `sign-in`.
    pub policy: String,
    pub pin_hash: Option<String>,
    pub pin_failures: i64,
    pub grant_id: Option<String>,
    pub client_id: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub outcome: Option<String>,
    pub used_by: Option<String>,
    pub revoked_at: Option<i64>,
    pub locked_at: Option<i64>,
}

/// Where a link stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Open,
    Used,
    Expired,
    /// Replaced by a newer link for the same Task, or its grant was revoked.
    Revoked,
    /// Too many wrong PINs.
    Locked,
}

impl ActionLinkRecord {
    pub fn state(&self, now: i64) -> LinkState {
        if self.used_at.is_some() {
            LinkState::Used
        } else if self.revoked_at.is_some() {
            LinkState::Revoked
        } else if self.locked_at.is_some() {
            LinkState::Locked
        } else if now >= self.expires_at {
            LinkState::Expired
        } else {
            LinkState::Open
        }
    }
}

const COLS: &str = "link_id, secret_hash, task_id, patient_id, action, policy, pin_hash, pin_failures, grant_id, \
    client_id, created_at, expires_at, used_at, outcome, used_by, revoked_at, locked_at";
const KINDS: [Col; 17] = [
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Int,
    Col::Int,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Int,
];

fn opt_int(row: &[SqlValue], i: usize) -> Option<i64> {
    match row.get(i) {
        Some(SqlValue::Int(v)) => Some(*v),
        _ => None,
    }
}

fn decode(mut row: Vec<SqlValue>) -> Result<ActionLinkRecord, StoreError> {
    let mut text = |i: usize, what: &str| {
        row.take_text(i).ok_or_else(|| StoreError::Config(format!("stored action link has no {what}")))
    };
    let link_id = text(0, "id")?;
    let secret_hash = text(1, "secret hash")?;
    let task_id = text(2, "task")?;
    let patient_id = text(3, "patient")?;
    let action = text(4, "action")?;
    let policy = text(5, "policy")?;
    Ok(ActionLinkRecord {
        link_id,
        secret_hash,
        task_id,
        patient_id,
        action,
        policy,
        pin_hash: row.take_text(6),
        pin_failures: row.int(7),
        grant_id: row.take_text(8),
        client_id: row.take_text(9),
        created_at: row.int(10),
        expires_at: row.int(11),
        used_at: opt_int(&row, 12),
        outcome: row.take_text(13),
        used_by: row.take_text(14),
        revoked_at: opt_int(&row, 15),
        locked_at: opt_int(&row, 16),
    })
}

fn opt_text(value: &Option<String>) -> SqlValue {
    value.clone().map_or(SqlValue::NullText, SqlValue::Text)
}

/// The SQL condition for a link that can still be used at `now`.
fn open_at(sql: &mut Sql, now: i64) -> &mut Sql {
    sql.push(" AND used_at IS NULL AND revoked_at IS NULL AND locked_at IS NULL AND expires_at > ").bind(now)
}

impl Store {
    /// Record a new link and write the Task that advertises it (`task_write`, normally an
    /// update with `If-Match`), in one transaction. Earlier open links for the same Task are
    /// revoked: a Task has one live link. Refused (`Conflict`) when the minting grant has ended.
    pub async fn create_action_link(
        &self,
        record: &ActionLinkRecord,
        task_write: WriteRequest,
    ) -> Result<WriteOutcome, StoreError> {
        let now = self.now_secs();
        let mut tx = self.pool.begin_write().await?;
        {
            let mut conn = tx.conn();
            if let Some(grant) = &record.grant_id {
                let mut sql = Sql::new(conn.dialect());
                sql.push("SELECT grant_id FROM grants WHERE grant_id = ")
                    .bind(grant.as_str())
                    .push(" AND revoked_at IS NULL");
                if conn.dialect() == Dialect::Postgres {
                    // Serialises with a revocation of the grant (which revokes its links).
                    sql.push(" FOR UPDATE");
                }
                if conn.fetch(&sql, &[Col::Text]).await?.is_empty() {
                    return Err(StoreError::Conflict("the authorization behind this token has ended".into()));
                }
            }
            let mut sql = Sql::new(conn.dialect());
            sql.push("UPDATE action_links SET revoked_at = ")
                .bind(now)
                .push(" WHERE task_id = ")
                .bind(record.task_id.as_str());
            open_at(&mut sql, i64::MIN);
            conn.execute(&sql).await?;
            let mut sql = Sql::new(conn.dialect());
            sql.push("INSERT INTO action_links (")
                .push(COLS)
                .push(") VALUES (")
                .bind(record.link_id.as_str())
                .push(", ")
                .bind(record.secret_hash.as_str())
                .push(", ")
                .bind(record.task_id.as_str())
                .push(", ")
                .bind(record.patient_id.as_str())
                .push(", ")
                .bind(record.action.as_str())
                .push(", ")
                .bind(record.policy.as_str())
                .push(", ")
                .bind(opt_text(&record.pin_hash))
                .push(", 0, ")
                .bind(opt_text(&record.grant_id))
                .push(", ")
                .bind(opt_text(&record.client_id))
                .push(", ")
                .bind(record.created_at)
                .push(", ")
                .bind(record.expires_at)
                .push(", NULL, NULL, NULL, NULL, NULL)");
            conn.execute(&sql).await?;
        }
        let (mut outcomes, seq) = self.apply(&mut tx, vec![task_write]).await?;
        tx.commit().await?;
        self.committed(seq);
        outcomes.pop().ok_or_else(|| StoreError::Config("the Task write produced no outcome".into()))
    }

    /// The link whose secret hashes to `secret_hash`.
    pub async fn action_link_by_secret(&self, secret_hash: &str) -> Result<Option<ActionLinkRecord>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ").push(COLS).push(" FROM action_links WHERE secret_hash = ").bind(secret_hash);
        let mut lease = self.pool.read_conn().await?;
        lease.conn().fetch(&sql, &KINDS).await?.into_iter().next().map(decode).transpose()
    }

    /// Count a wrong PIN; the link locks at `max_failures`. Returns the link as it now stands.
    pub async fn action_link_pin_failed(
        &self,
        link_id: &str,
        max_failures: i64,
    ) -> Result<Option<ActionLinkRecord>, StoreError> {
        let now = self.now_secs();
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE action_links SET pin_failures = pin_failures + 1, locked_at = CASE WHEN pin_failures + 1 >= ")
            .bind(max_failures)
            .push(" THEN ")
            .bind(now)
            .push(" ELSE NULL END WHERE link_id = ")
            .bind(link_id);
        open_at(&mut sql, now);
        sql.push(" RETURNING ").push(COLS);
        let mut tx = self.pool.begin_write().await?;
        let row = tx.conn().fetch(&sql, &KINDS).await?.into_iter().next();
        tx.commit().await?;
        match row {
            Some(row) => decode(row).map(Some),
            // Already closed (used, expired, locked by a concurrent attempt): read it as it is.
            None => {
                let mut sql = Sql::new(self.dialect());
                sql.push("SELECT ").push(COLS).push(" FROM action_links WHERE link_id = ").bind(link_id);
                let mut lease = self.pool.read_conn().await?;
                lease.conn().fetch(&sql, &KINDS).await?.into_iter().next().map(decode).transpose()
            }
        }
    }

    /// Use a link: claim it (only if it is still open at this moment) and apply the decision's
    /// writes, in one transaction. `Conflict` when the link was used, revoked, locked or expired
    /// meanwhile; a version conflict on the writes (the Task changed since the page was shown)
    /// leaves the link open.
    pub async fn use_action_link(
        &self,
        link_id: &str,
        outcome: &str,
        used_by: &str,
        writes: Vec<WriteRequest>,
    ) -> Result<Vec<WriteOutcome>, StoreError> {
        let now = self.now_secs();
        let mut tx = self.pool.begin_write().await?;
        {
            let mut conn = tx.conn();
            let mut sql = Sql::new(conn.dialect());
            sql.push("UPDATE action_links SET used_at = ")
                .bind(now)
                .push(", outcome = ")
                .bind(outcome)
                .push(", used_by = ")
                .bind(used_by)
                .push(" WHERE link_id = ")
                .bind(link_id);
            open_at(&mut sql, now);
            if conn.execute(&sql).await? == 0 {
                return Err(StoreError::Conflict("this link can no longer be used".into()));
            }
        }
        let (outcomes, seq) = self.apply(&mut tx, writes).await?;
        tx.commit().await?;
        self.committed(seq);
        Ok(outcomes)
    }

    /// The links minted for a Task, newest first.
    pub async fn action_links_for_task(&self, task_id: &str) -> Result<Vec<ActionLinkRecord>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ")
            .push(COLS)
            .push(" FROM action_links WHERE task_id = ")
            .bind(task_id)
            .push(" ORDER BY created_at DESC, link_id");
        let mut lease = self.pool.read_conn().await?;
        lease.conn().fetch(&sql, &KINDS).await?.into_iter().map(decode).collect()
    }
}
