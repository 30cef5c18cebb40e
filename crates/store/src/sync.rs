//! Offline sync pulls: every version committed after a position in commit order, within what a
//! caller may see, and the cursors that remember where a client got to and which patients its
//! answer covered.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::db::{Col, RowExt, Sql};
use crate::read::HistoryEntry;
use crate::restrict::Restriction;
use crate::{Store, StoreError};

/// Cursors older than this are pruned (a client offline longer starts over with a full pull).
const CURSOR_DAYS: i64 = 90;

/// A position in commit order: after this version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncPosition {
    pub seq: i64,
    pub rkey: i64,
    pub version: i64,
}

/// A stored cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncCursor {
    pub cursor_id: String,
    pub grant_id: String,
    pub position: SyncPosition,
    pub patients: Option<Vec<String>>,
}

/// One page of changes, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangePage {
    pub entries: Vec<HistoryEntry>,
    /// The position after the last entry (the input position when there were none).
    pub position: SyncPosition,
    /// More changes were committed than fit in the page.
    pub more: bool,
}

impl Store {
    /// Versions committed after `after`, in commit order, that `restriction` lets the caller
    /// see (decided by each resource's current version and index rows; a deleted resource keeps
    /// those of its last version, so its tombstone reaches exactly those who saw it).
    pub async fn changes_since(
        &self,
        after: SyncPosition,
        limit: usize,
        restriction: &Restriction,
    ) -> Result<ChangePage, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT h.rtype, h.id, h.version, h.lu_ms, h.method, h.body, h.seq, h.rkey FROM resource_history h WHERE (h.seq > ")
            .bind(after.seq)
            .push(" OR (h.seq = ")
            .bind(after.seq)
            .push(" AND (h.rkey > ")
            .bind(after.rkey)
            .push(" OR (h.rkey = ")
            .bind(after.rkey)
            .push(" AND h.version > ")
            .bind(after.version)
            .push("))))");
        if !restriction.is_unrestricted() {
            let now_ms = crate::clock::epoch_ms(self.clock.now());
            let types = self.registry.resource_types();
            sql.push(" AND EXISTS (SELECT 1 FROM resources r WHERE r.rkey = h.rkey");
            restriction.push_any_type(self, &mut sql, &types, now_ms);
            sql.push(")");
        }
        let limit = limit.max(1) as i64;
        sql.push(" ORDER BY h.seq, h.rkey, h.version LIMIT ").bind(limit + 1);
        let cols = [Col::Text, Col::Text, Col::Int, Col::Int, Col::Text, Col::Text, Col::Int, Col::Int];
        let mut lease = self.pool.read_conn().await?;
        let mut rows = lease.conn().fetch(&sql, &cols).await?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit as usize);
        let position = rows.last().map_or(after, |r| SyncPosition { seq: r.int(6), rkey: r.int(7), version: r.int(2) });
        let entries = rows
            .into_iter()
            .map(|mut row| HistoryEntry {
                resource_type: row.take_text(0).unwrap_or_default(),
                id: row.take_text(1).unwrap_or_default(),
                version: row.int(2),
                last_updated_ms: row.int(3),
                method: row.take_text(4).unwrap_or_default(),
                body: row.take_text(5),
            })
            .collect();
        Ok(ChangePage { entries, position, more })
    }

    /// Remember a position and patient list for `grant_id`; returns the opaque cursor.
    pub async fn save_sync_cursor(
        &self,
        grant_id: &str,
        position: SyncPosition,
        patients: Option<&[String]>,
    ) -> Result<String, StoreError> {
        let now = crate::clock::epoch_ms(self.clock.now());
        let cursor_id = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
        let patients = patients.map(|p| serde_json::to_string(p).unwrap_or_else(|_| "[]".into()));
        let mut tx = self.pool.begin_write().await?;
        let mut sql = Sql::new(self.dialect());
        sql.push("DELETE FROM sync_cursors WHERE created_ms < ").bind(now - CURSOR_DAYS * 86_400_000);
        tx.conn().execute(&sql).await?;
        let mut sql = Sql::new(self.dialect());
        sql.push("INSERT INTO sync_cursors (cursor_id, grant_id, seq, rkey, version, patients, created_ms) VALUES (")
            .bind(cursor_id.as_str())
            .push(", ")
            .bind(grant_id)
            .push(", ")
            .bind(position.seq)
            .push(", ")
            .bind(position.rkey)
            .push(", ")
            .bind(position.version)
            .push(", ")
            .bind(patients)
            .push(", ")
            .bind(now)
            .push(")");
        tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(cursor_id)
    }

    pub async fn sync_cursor(&self, cursor_id: &str) -> Result<Option<SyncCursor>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT cursor_id, grant_id, seq, rkey, version, patients FROM sync_cursors WHERE cursor_id = ")
            .bind(cursor_id);
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &[Col::Text, Col::Text, Col::Int, Col::Int, Col::Int, Col::Text]).await?;
        Ok(rows.into_iter().next().map(|mut row| SyncCursor {
            cursor_id: row.take_text(0).unwrap_or_default(),
            grant_id: row.take_text(1).unwrap_or_default(),
            position: SyncPosition { seq: row.int(2), rkey: row.int(3), version: row.int(4) },
            patients: row.take_text(5).and_then(|p| serde_json::from_str(&p).ok()),
        }))
    }
}

/// A stored resource's current version (for an offline client's bookkeeping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub deleted: bool,
}

impl Store {
    /// Every resource's current version, deleted ones included.
    pub async fn current_versions(&self) -> Result<Vec<VersionRow>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT rtype, id, version, deleted FROM resources ORDER BY rkey");
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &[Col::Text, Col::Text, Col::Int, Col::Int]).await?;
        Ok(rows
            .into_iter()
            .map(|mut r| VersionRow {
                resource_type: r.take_text(0).unwrap_or_default(),
                id: r.take_text(1).unwrap_or_default(),
                version: r.int(2),
                deleted: r.int(3) != 0,
            })
            .collect())
    }
}
