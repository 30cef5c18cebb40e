//! The audit trail: records stored in blocks, and postings that find a patient's or a user's
//! records.
//!
//! Every FHIR request writes a record, so a record must cost little to store. Two choices make
//! it cheap:
//! - **Blocks.** The writer stores up to [`BLOCK`] consecutive records as one row (a JSON array),
//!   not a row of fourteen bound columns each: binding and stepping a row per record was most of
//!   what a cached read cost the server (`bench/alternate`, callgrind).
//! - **Postings** rather than an index on the patient: an index keyed by patient takes each
//!   record as a random insert (a B-tree descent and, per commit, a rewritten page per patient),
//!   which cost SQLite twice what the row itself did (`bench/audit_insert.py`). The writer stores
//!   records in batches anyway, so it writes one posting per patient (and per user) per batch,
//!   listing that batch's record ids: a batch of 30,000 reads of 500 patients adds 500 postings.
//!
//! A reader walks the postings newest first and reads the blocks holding the ids they list.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::db::{Col, Conn, Dialect, RowExt, Sql, SqlValue};
use crate::{Store, StoreError};

/// One audited FHIR interaction. Stored as a JSON object with these field names (the migration
/// that moved older rows into blocks writes the same).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Assigned when stored (0 before).
    pub id: i64,
    pub recorded_ms: i64,
    /// read, vread, search-type, search-system, history-instance, history-type, history-system,
    /// create, update, delete, operation, transaction, batch.
    pub interaction: String,
    /// C R U D E.
    pub action: String,
    /// 0 success, 4 refused or not found, 8 server failure.
    pub outcome: i64,
    pub status: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir_user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Which audit records to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only these patients' records (`None`: all).
    pub patients: Option<Vec<String>>,
    pub user_id: Option<String>,
    pub since_ms: Option<i64>,
    /// Only records older than this id (paging).
    pub before_id: Option<i64>,
    pub limit: i64,
}

/// Records per block: a block is read whole to find one record in it (about 20 KB of JSON).
const BLOCK: usize = 128;

/// What a posting lists records by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PostingKind {
    Patient,
    User,
}

impl PostingKind {
    fn as_str(self) -> &'static str {
        match self {
            PostingKind::Patient => "patient",
            PostingKind::User => "user",
        }
    }
}

/// One batch's records about one patient or user (ids ascending).
struct Posting<'a> {
    kind: PostingKind,
    subject_id: &'a str,
    ids: Vec<i64>,
    last_ms: i64,
}

/// Postings a reader fetches per statement.
const POSTINGS_PAGE: usize = 128;

impl Store {
    /// Append audit records in one transaction, numbering them (their `id`s are set; a batch
    /// that fails is numbered again when retried): their blocks, then their postings. Postings go
    /// in as multi-row inserts of fixed sizes (100, 10 and 1 rows) so each size is prepared once
    /// per connection and then only bound.
    pub async fn record_audit(&self, records: &mut [AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin_write().await?;
        let last = last_stored_id(&mut tx.conn()).await?;
        for (record, id) in records.iter_mut().zip(last + 1..) {
            record.id = id;
        }
        for block in records.chunks(BLOCK) {
            tx.conn().execute_owned(self.block_insert(block)?).await?;
        }
        let postings = postings_of(records);
        let mut rest = &postings[..];
        for size in [100, 10, 1] {
            while rest.len() >= size {
                let (chunk, tail) = rest.split_at(size);
                tx.conn().execute_owned(self.posting_insert(chunk)).await?;
                rest = tail;
            }
        }
        tx.commit().await
    }

    /// The insert's verb: SQLite keeps a statement journal for a multi-row insert that may abort
    /// halfway (a NOT NULL column), copying every page it touches; OR FAIL needs none, and a
    /// failure still rolls the whole transaction back.
    fn insert_verb(&self) -> &'static str {
        match self.dialect() {
            Dialect::Sqlite => "INSERT OR FAIL",
            Dialect::Postgres => "INSERT",
        }
    }

    fn block_insert(&self, records: &[AuditRecord]) -> Result<Sql, StoreError> {
        let text =
            serde_json::to_string(records).map_err(|e| StoreError::Database(sqlx::Error::Encode(Box::new(e))))?;
        let first = records.first().map_or(0, |r| r.id);
        let last = records.last().map_or(0, |r| r.id);
        let last_ms = records.iter().map(|r| r.recorded_ms).max().unwrap_or(0);
        let mut sql = Sql::new(self.dialect());
        sql.push(self.insert_verb())
            .push(" INTO audit_blocks (first_id, last_id, last_ms, records) VALUES ")
            .bind_list::<SqlValue>([first.into(), last.into(), last_ms.into(), text.into()]);
        Ok(sql)
    }

    fn posting_insert(&self, postings: &[Posting<'_>]) -> Sql {
        let mut sql = Sql::new(self.dialect());
        sql.push(self.insert_verb())
            .push(" INTO audit_postings (kind, subject_id, last_id, first_id, last_ms, ids) VALUES ");
        for (i, p) in postings.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            let (first, last) = (p.ids.first().copied().unwrap_or(0), p.ids.last().copied().unwrap_or(0));
            sql.bind_list::<SqlValue>([
                p.kind.as_str().into(),
                p.subject_id.into(),
                last.into(),
                first.into(),
                p.last_ms.into(),
                encode_ids(&p.ids).into(),
            ]);
        }
        sql
    }

    /// Audit records, newest first.
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = query.limit.clamp(1, 1000) as usize;
        let (kind, subjects): (PostingKind, Vec<&str>) = match (&query.patients, &query.user_id) {
            (Some(patients), _) if patients.is_empty() => return Ok(Vec::new()),
            (Some(patients), _) => (PostingKind::Patient, patients.iter().map(String::as_str).collect()),
            (None, Some(user)) => (PostingKind::User, vec![user.as_str()]),
            (None, None) => return self.latest_audit_events(query, limit).await,
        };
        let mut lease = self.pool.read_conn().await?;
        let mut conn = lease.conn();
        let mut found = Vec::with_capacity(limit);
        let mut candidates = BTreeSet::new();
        let mut below: Option<i64> = None;
        let mut blocks = BlockReader::default();
        loop {
            let mut sql = Sql::new(conn.dialect());
            sql.push("SELECT last_id, ids FROM audit_postings WHERE kind = ")
                .bind(kind.as_str())
                .push(" AND subject_id IN ")
                .bind_list(subjects.iter().copied());
            if let Some(before) = query.before_id {
                sql.push(" AND first_id < ").bind(before);
            }
            if let Some(since) = query.since_ms {
                sql.push(" AND last_ms >= ").bind(since);
            }
            if let Some(below) = below {
                sql.push(" AND last_id < ").bind(below);
            }
            sql.push(" ORDER BY last_id DESC LIMIT ").bind(POSTINGS_PAGE as i64);
            let page = conn.fetch(&sql, &[Col::Int, Col::Text]).await?;
            let exhausted = page.len() < POSTINGS_PAGE;
            for row in &page {
                below = Some(row.int(0));
                for id in decode_ids(row.text(1).unwrap_or_default())? {
                    if query.before_id.is_none_or(|before| id < before) {
                        candidates.insert(id);
                    }
                }
            }
            // Every posting not read yet lists only ids below the last one read, so the candidates
            // at or above it are the newest there are.
            let floor = if exhausted { i64::MIN } else { below.unwrap_or(i64::MIN) };
            let ready = candidates.split_off(&floor);
            for id in ready.into_iter().rev() {
                let Some(record) = blocks.record(&mut conn, id).await? else { continue };
                let wanted = query.since_ms.is_none_or(|since| record.recorded_ms >= since)
                    && (kind == PostingKind::User
                        || query.user_id.as_ref().is_none_or(|u| record.user_id.as_ref() == Some(u)));
                if wanted {
                    found.push(record);
                    if found.len() == limit {
                        return Ok(found);
                    }
                }
            }
            if exhausted {
                return Ok(found);
            }
        }
    }

    /// The newest records of anyone (no patient or user asked for).
    async fn latest_audit_events(&self, query: &AuditQuery, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let mut lease = self.pool.read_conn().await?;
        let mut conn = lease.conn();
        let mut found = Vec::with_capacity(limit);
        let mut below: Option<i64> = query.before_id;
        loop {
            let mut sql = Sql::new(conn.dialect());
            sql.push("SELECT first_id, records FROM audit_blocks WHERE 1 = 1");
            if let Some(since) = query.since_ms {
                sql.push(" AND last_ms >= ").bind(since);
            }
            if let Some(below) = below {
                sql.push(" AND first_id < ").bind(below);
            }
            sql.push(" ORDER BY first_id DESC LIMIT 8");
            let rows = conn.fetch(&sql, &[Col::Int, Col::Text]).await?;
            for row in &rows {
                below = Some(row.int(0));
                let mut records = decode_block(row.text(1).unwrap_or_default())?;
                records.sort_unstable_by_key(|r| std::cmp::Reverse(r.id));
                for record in records {
                    let wanted = query.since_ms.is_none_or(|since| record.recorded_ms >= since)
                        && query.before_id.is_none_or(|before| record.id < before);
                    if wanted {
                        found.push(record);
                        if found.len() == limit {
                            return Ok(found);
                        }
                    }
                }
            }
            if rows.len() < 8 {
                return Ok(found);
            }
        }
    }

    pub async fn audit_event(&self, id: i64) -> Result<Option<AuditRecord>, StoreError> {
        let mut lease = self.pool.read_conn().await?;
        BlockReader::default().record(&mut lease.conn(), id).await
    }
}

/// Reads records by id, keeping the last block read: the ids a reader asks for in turn are often
/// neighbours.
#[derive(Default)]
struct BlockReader {
    first_id: i64,
    last_id: i64,
    records: Vec<AuditRecord>,
}

impl BlockReader {
    async fn record(&mut self, conn: &mut Conn<'_>, id: i64) -> Result<Option<AuditRecord>, StoreError> {
        if self.records.is_empty() || id < self.first_id || id > self.last_id {
            let mut sql = Sql::new(conn.dialect());
            sql.push("SELECT first_id, last_id, records FROM audit_blocks WHERE first_id <= ")
                .bind(id)
                .push(" ORDER BY first_id DESC LIMIT 1");
            let Some(row) = conn.fetch(&sql, &[Col::Int, Col::Int, Col::Text]).await?.into_iter().next() else {
                return Ok(None);
            };
            self.first_id = row.int(0);
            self.last_id = row.int(1);
            self.records = decode_block(row.text(2).unwrap_or_default())?;
        }
        Ok(self.records.iter().find(|r| r.id == id).cloned())
    }
}

fn decode_block(text: &str) -> Result<Vec<AuditRecord>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))
}

/// Serialises audit writers of one PostgreSQL database (several servers) until their commit.
const AUDIT_WRITER_LOCK: i64 = 0x706f_7274_6175_6474; // "portaudt"

/// The id new records are numbered after, read inside the writing transaction: records get the
/// ids that follow it, so a block's ids are contiguous and the block holding an id is the last
/// one starting at or below it.
async fn last_stored_id(conn: &mut Conn<'_>) -> Result<i64, StoreError> {
    match conn.dialect() {
        // This process's one writer connection serialises its batches; another process writing
        // audit records meanwhile makes this transaction's insert fail (its read snapshot is
        // stale), and the writer retries the batch.
        Dialect::Sqlite => {}
        // Other servers may write at the same time: a transaction-scoped lock orders them (one
        // batch a second each), and the last stored id is read once the previous holder committed.
        Dialect::Postgres => {
            let mut lock = Sql::new(Dialect::Postgres);
            lock.push("SELECT pg_advisory_xact_lock(").bind(AUDIT_WRITER_LOCK).push(")");
            conn.execute(&lock).await?;
        }
    }
    let mut sql = Sql::new(conn.dialect());
    sql.push("SELECT last_id FROM audit_blocks ORDER BY first_id DESC LIMIT 1");
    Ok(conn.fetch(&sql, &[Col::Int]).await?.first().map_or(0, |row| row.int(0)))
}

/// A batch's postings: per patient and per user, the ids of their records.
fn postings_of(records: &[AuditRecord]) -> Vec<Posting<'_>> {
    let mut at: HashMap<(PostingKind, &str), usize> = HashMap::new();
    let mut postings: Vec<Posting<'_>> = Vec::new();
    for record in records {
        let subjects = [(PostingKind::Patient, &record.patient_id), (PostingKind::User, &record.user_id)];
        for (kind, subject) in subjects {
            let Some(subject_id) = subject.as_deref() else { continue };
            let i = *at.entry((kind, subject_id)).or_insert_with(|| {
                postings.push(Posting { kind, subject_id, ids: Vec::new(), last_ms: i64::MIN });
                postings.len() - 1
            });
            let posting = &mut postings[i];
            posting.ids.push(record.id);
            posting.last_ms = posting.last_ms.max(record.recorded_ms);
        }
    }
    postings
}

/// Ids as stored in a posting: decimal, comma-separated (the migration that indexed older rows
/// writes the same with SQL's string aggregation).
fn encode_ids(ids: &[i64]) -> String {
    let mut text = String::with_capacity(ids.len() * 9);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let _ = write!(text, "{id}");
    }
    text
}

fn decode_ids(text: &str) -> Result<Vec<i64>, StoreError> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim().parse::<i64>().map_err(|e| {
                StoreError::Database(sqlx::Error::Decode(format!("audit posting holds '{s}': {e}").into()))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_their_text() {
        for ids in [vec![], vec![7], vec![1, 2, 1_000_000_007, i64::MAX]] {
            assert_eq!(decode_ids(&encode_ids(&ids)).unwrap(), ids);
        }
        assert!(decode_ids("1,x").is_err());
    }

    #[test]
    fn a_batch_has_one_posting_per_patient_and_per_user() {
        let record = |id: i64, patient: Option<&str>, user: Option<&str>, ms: i64| AuditRecord {
            id,
            recorded_ms: ms,
            patient_id: patient.map(str::to_owned),
            user_id: user.map(str::to_owned),
            ..AuditRecord::default()
        };
        let records = [
            record(10, Some("a"), Some("u1"), 5),
            record(11, Some("b"), None, 9),
            record(12, Some("a"), None, 7),
            record(13, None, Some("u1"), 3),
            record(14, None, None, 1),
        ];
        let postings = postings_of(&records);
        let seen: Vec<(PostingKind, &str, Vec<i64>, i64)> =
            postings.iter().map(|p| (p.kind, p.subject_id, p.ids.clone(), p.last_ms)).collect();
        assert_eq!(
            seen,
            vec![
                (PostingKind::Patient, "a", vec![10, 12], 7),
                (PostingKind::User, "u1", vec![10, 13], 5),
                (PostingKind::Patient, "b", vec![11], 9),
            ]
        );
    }
}
