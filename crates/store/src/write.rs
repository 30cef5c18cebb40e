//! Writes: every create, update, delete, transaction entry and imported resource goes through
//! `Store::apply`, which handles a whole batch with a fixed number of statements (multi-row
//! inserts), so a 300-entry transaction costs about as many round trips as a single update.

use std::collections::HashMap;

use fhir::outcome::Issue;
use fhir::{Extracted, IndexValue};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::clock::{epoch_ms, instant_text};
use crate::db::{Col, Conn, CopyLine, Dialect, RowExt, Sql, SqlValue, Tx};
use crate::{param_key, Store, StoreError, StoredResource};

/// One write, as the REST layer or the importer asks for it.
#[derive(Debug, Clone)]
pub enum WriteRequest {
    /// POST: the server assigns a new id (an id in the body is ignored).
    Create { resource: Value },
    /// POST whose new id was already chosen (transactions assign ids before writing).
    CreateWithId { id: String, resource: Value },
    /// PUT Type/id: update, or create with that id when it does not exist.
    Update { resource_type: String, id: String, resource: Value, if_match: Option<i64> },
    Delete {
        resource_type: String,
        id: String,
        /// `If-Match`: delete only if this is the current version.
        if_match: Option<i64>,
    },
    /// Import: keep the resource's own id; no new version when the content is unchanged.
    Upsert { resource: Value },
}

#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub last_updated_ms: i64,
    /// True when the resource did not exist (or was deleted) before.
    pub created: bool,
    /// Import only: the content was identical, nothing was written.
    pub unchanged: bool,
    /// The stored body (None for deletes).
    pub body: Option<String>,
}

impl WriteOutcome {
    pub fn stored(&self) -> Option<StoredResource> {
        self.body.as_ref().map(|body| StoredResource {
            resource_type: self.resource_type.clone(),
            id: self.id.clone(),
            version: self.version,
            last_updated_ms: self.last_updated_ms,
            body: body.as_str().into(),
        })
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ImportStats {
    pub written: usize,
    pub unchanged: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Create,
    Update,
    Delete,
    Upsert,
}

/// A write with its resource checked, normalized, hashed and indexed: everything that needs no
/// database. (For imports this runs on the file-reading thread, overlapping the writes.)
pub(crate) struct Prepared {
    mode: Mode,
    resource_type: String,
    id: String,
    doc: Option<Normalized>,
    if_match: Option<i64>,
}

pub(crate) struct Normalized {
    /// `resourceType`, `id`, `meta` (without versionId/lastUpdated) first, then the rest.
    body: Unstamped,
    /// Hash of `body`'s text: an import whose hash equals the stored one changes nothing.
    hash: String,
    extracted: Extracted,
}

/// Resources checked and indexed for `Store::import_prepared`, deduplicated by type and id
/// (the last occurrence wins, as when the same Practitioner appears in several Bundles).
#[derive(Default)]
pub struct PreparedImport {
    items: Vec<Prepared>,
    positions: HashMap<(String, String), usize>,
}

impl PreparedImport {
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// Add another batch's resources (later ones replace earlier ones with the same key).
    pub fn merge(&mut self, other: PreparedImport) {
        for item in other.items {
            self.push(item);
        }
    }
    fn push(&mut self, item: Prepared) {
        let key = (item.resource_type.clone(), item.id.clone());
        match self.positions.get(&key) {
            Some(&i) => self.items[i] = item,
            None => {
                self.positions.insert(key, self.items.len());
                self.items.push(item);
            }
        }
    }
}

struct Existing {
    rkey: i64,
    version: i64,
    deleted: bool,
    hash: Option<String>,
}

/// A row about to be written, with its final body and index entries.
struct Ready {
    outcome: WriteOutcome,
    method: &'static str,
    hash: Option<String>,
    extracted: Extracted,
    existing_rkey: Option<i64>,
    /// A row for it exists already (live or deleted), as the existence check found under the
    /// commit lock: a row that did not cannot appear before this transaction commits.
    existed: bool,
}

const CHUNK_ROWS: usize = 400;
/// From this many rows on, PostgreSQL gets history and index rows by COPY (see `Conn::copy_encoded`).
const COPY_MIN_ROWS: usize = 64;

/// How many (type, id) pairs one existence check on PostgreSQL looks up (a whole import batch).
const EXISTENCE_CHUNK: usize = 5000;

impl Store {
    /// Run writes atomically in one transaction.
    pub async fn write(&self, requests: Vec<WriteRequest>) -> Result<Vec<WriteOutcome>, StoreError> {
        let mut tx = self.pool.begin_write().await?;
        let (outcomes, seq) = self.apply(&mut tx, requests).await?;
        tx.commit().await?;
        self.committed(seq);
        Ok(outcomes)
    }

    /// Import resources keeping their ids, in one transaction; duplicates within the batch keep
    /// the last occurrence; unchanged resources are skipped.
    pub async fn import(&self, resources: Vec<Value>) -> Result<ImportStats, StoreError> {
        let prepared = self.prepare_import(resources)?;
        self.import_prepared(prepared).await
    }

    /// The CPU part of an import (validation, normalization, hashing, index extraction); no
    /// database access, so it can run on another thread while an earlier batch is written.
    pub fn prepare_import(&self, resources: Vec<Value>) -> Result<PreparedImport, StoreError> {
        let mut batch = PreparedImport::default();
        for (i, resource) in resources.into_iter().enumerate() {
            batch.push(self.prepare(WriteRequest::Upsert { resource }).map_err(|e| in_entry(i, e))?);
        }
        Ok(batch)
    }

    /// Write a prepared import in one transaction.
    pub async fn import_prepared(&self, batch: PreparedImport) -> Result<ImportStats, StoreError> {
        let mut tx = self.pool.begin_write().await?;
        let (outcomes, seq) = self.apply_prepared(&mut tx, batch.items).await?;
        tx.commit().await?;
        self.committed(seq);
        let unchanged = outcomes.iter().filter(|o| o.unchanged).count();
        Ok(ImportStats { written: outcomes.len() - unchanged, unchanged })
    }

    /// Apply writes inside an open transaction (used by `write` and by transaction Bundles).
    /// Returns the outcomes and the commit sequence taken (None when nothing was written).
    pub(crate) async fn apply(
        &self,
        tx: &mut Tx,
        requests: Vec<WriteRequest>,
    ) -> Result<(Vec<WriteOutcome>, Option<i64>), StoreError> {
        if requests.is_empty() {
            return Ok((Vec::new(), None));
        }
        let prepared = requests
            .into_iter()
            .enumerate()
            .map(|(i, r)| self.prepare(r).map_err(|e| in_entry(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        self.apply_prepared(tx, prepared).await
    }

    async fn apply_prepared(
        &self,
        tx: &mut Tx,
        prepared: Vec<Prepared>,
    ) -> Result<(Vec<WriteOutcome>, Option<i64>), StoreError> {
        if prepared.is_empty() {
            return Ok((Vec::new(), None));
        }
        let mut keys = HashMap::new();
        for (i, p) in prepared.iter().enumerate() {
            if keys.insert((p.resource_type.as_str(), p.id.as_str()), i).is_some() {
                return Err(in_entry(
                    i,
                    StoreError::BadRequest(format!("{}/{} appears twice in one transaction", p.resource_type, p.id)),
                ));
            }
        }
        let mut conn = tx.conn();
        let (seq, now_ms) = next_commit(&mut conn, epoch_ms(self.clock.now())).await?;
        let existing = load_existing(&mut conn, &prepared).await?;

        let mut ready = Vec::with_capacity(prepared.len());
        for (i, p) in prepared.into_iter().enumerate() {
            let current = existing.get(&(p.resource_type.clone(), p.id.clone()));
            ready.push(self.finish(p, current, now_ms).map_err(|e| in_entry(i, e))?);
        }
        self.persist(&mut conn, &ready, seq).await?;
        Ok((ready.into_iter().map(|r| r.outcome).collect(), Some(seq)))
    }

    /// Tell the cache that this process committed a write.
    pub(crate) fn committed(&self, seq: Option<i64>) {
        if let (Some(cache), Some(seq)) = (&self.cache, seq) {
            cache.committed(seq);
        }
        if seq.is_some() {
            self.commits.notify_one();
        }
    }

    /// Check a request and fix its type and id.
    fn prepare(&self, request: WriteRequest) -> Result<Prepared, StoreError> {
        match request {
            WriteRequest::Create { resource } => {
                self.prepare(WriteRequest::CreateWithId { id: uuid::Uuid::new_v4().to_string(), resource })
            }
            WriteRequest::CreateWithId { id, resource } => {
                let doc = self.checked(resource)?;
                let resource_type = type_of(&doc);
                let doc = Some(self.normalize(doc, &id)?);
                Ok(Prepared { mode: Mode::Create, resource_type, id, doc, if_match: None })
            }
            WriteRequest::Update { resource_type, id, resource, if_match } => {
                let doc = self.checked(resource)?;
                if type_of(&doc) != resource_type {
                    return Err(StoreError::BadRequest(format!(
                        "resourceType '{}' does not match the URL's {resource_type}",
                        type_of(&doc)
                    )));
                }
                match doc.get("id").and_then(Value::as_str) {
                    Some(body_id) if body_id == id => {}
                    Some(body_id) => {
                        return Err(StoreError::BadRequest(format!(
                            "the resource id '{body_id}' does not match the URL's id '{id}'"
                        )))
                    }
                    None => {
                        return Err(StoreError::BadRequest("an update must carry the resource id in the body".into()))
                    }
                }
                valid_id(&id)?;
                let doc = Some(self.normalize(doc, &id)?);
                Ok(Prepared { mode: Mode::Update, resource_type, id, doc, if_match })
            }
            WriteRequest::Delete { resource_type, id, if_match } => {
                Ok(Prepared { mode: Mode::Delete, resource_type, id, doc: None, if_match })
            }
            WriteRequest::Upsert { resource } => {
                let doc = self.checked(resource)?;
                let id = match doc.get("id").and_then(Value::as_str) {
                    Some(id) => id.to_string(),
                    None => return Err(StoreError::BadRequest("imported resources need an id".into())),
                };
                valid_id(&id)?;
                let resource_type = type_of(&doc);
                let doc = Some(self.normalize(doc, &id)?);
                Ok(Prepared { mode: Mode::Upsert, resource_type, id, doc, if_match: None })
            }
        }
    }

    fn normalize(&self, mut doc: Map<String, Value>, id: &str) -> Result<Normalized, StoreError> {
        // Labels first, so the content hash (what a re-import is compared by) includes them.
        if let Some(labeler) = &self.options.labeler {
            labeler.apply(&mut doc);
        }
        let (value, body, hash) = normalized_doc(doc, id)?;
        let extracted = fhir::extract(self.registry, &value);
        Ok(Normalized { body, hash, extracted })
    }

    /// Structural validation against the R4 schema, then unwrap the object.
    fn checked(&self, resource: Value) -> Result<Map<String, Value>, StoreError> {
        let Value::Object(doc) = resource else {
            return Err(StoreError::Invalid(vec![Issue::error("structure", "a resource must be a JSON object")]));
        };
        let resource_type = doc.get("resourceType").and_then(Value::as_str).unwrap_or_default();
        if !self.registry.is_resource_type(resource_type) {
            return Err(StoreError::Invalid(vec![Issue::error(
                "not-supported",
                format!("'{resource_type}' is not an R4 resource type"),
            )]));
        }
        let doc = Value::Object(doc);
        if let Err(issues) = fhir::validate::Validator::r4().validate(&doc) {
            return Err(StoreError::Invalid(
                issues.into_iter().map(|i| Issue::error("structure", i.message).at(i.path)).collect(),
            ));
        }
        match doc {
            Value::Object(map) => Ok(map),
            _ => Err(StoreError::BadRequest("a resource must be a JSON object".into())),
        }
    }

    /// Decide the new version and produce the final body.
    fn finish(&self, p: Prepared, existing: Option<&Existing>, now_ms: i64) -> Result<Ready, StoreError> {
        let live = existing.filter(|e| !e.deleted);
        let next_version = existing.map_or(1, |e| e.version + 1);
        let mut outcome = WriteOutcome {
            resource_type: p.resource_type.clone(),
            id: p.id.clone(),
            version: next_version,
            last_updated_ms: now_ms,
            created: live.is_none(),
            unchanged: false,
            body: None,
        };
        match p.mode {
            Mode::Create if existing.is_some() => {
                return Err(StoreError::Conflict(format!("{}/{} already exists", p.resource_type, p.id)))
            }
            Mode::Update | Mode::Delete => {
                if let Some(expected) = p.if_match {
                    let actual = live.map_or(0, |e| e.version);
                    if actual != expected {
                        return Err(StoreError::VersionConflict {
                            resource_type: p.resource_type,
                            id: p.id,
                            expected,
                            actual,
                        });
                    }
                }
            }
            _ => {}
        }
        if p.mode == Mode::Delete {
            // Deleting what is absent or already deleted changes nothing.
            if live.is_none() {
                outcome.unchanged = true;
                outcome.version = existing.map_or(0, |e| e.version);
            }
            // The index rows of the last version stay: a deleted resource keeps its compartment
            // and labels, so history and sync pulls decide who may see its tombstone as they did
            // for the resource. Searches and reads only ever match live rows.
            return Ok(Ready {
                outcome,
                method: "DELETE",
                hash: None,
                extracted: Extracted::default(),
                existing_rkey: None,
                existed: existing.is_some(),
            });
        }
        let Some(Normalized { body, hash, extracted }) = p.doc else {
            return Err(StoreError::BadRequest("a write without a resource".into()));
        };
        if p.mode == Mode::Upsert {
            if let Some(current) = live {
                if current.hash.as_deref() == Some(hash.as_str()) {
                    outcome.unchanged = true;
                    outcome.version = current.version;
                    outcome.created = false;
                    return Ok(Ready {
                        outcome,
                        method: "PUT",
                        hash: None,
                        extracted: Extracted::default(),
                        existing_rkey: None,
                        existed: true,
                    });
                }
            }
        }
        outcome.body = Some(stamp(&body, next_version, now_ms));
        let method = if p.mode == Mode::Create { "POST" } else { "PUT" };
        Ok(Ready {
            outcome,
            method,
            hash: Some(hash),
            extracted,
            existing_rkey: existing.map(|e| e.rkey),
            existed: existing.is_some(),
        })
    }

    /// Write current rows, history and index rows for a batch.
    async fn persist(&self, conn: &mut Conn<'_>, ready: &[Ready], seq: i64) -> Result<(), StoreError> {
        let dialect = conn.dialect();
        let rows: Vec<&Ready> = ready.iter().filter(|r| !r.outcome.unchanged).collect();
        if rows.is_empty() {
            return Ok(());
        }
        // On PostgreSQL the history rows' keys are taken first, so the current rows point at
        // their history row as they are written (SQLite sets them afterwards, in step 3).
        let hids = match dialect {
            Dialect::Postgres => Some(take_history_keys(conn, rows.len()).await?),
            Dialect::Sqlite => None,
        };
        // 1. current rows (insert or update), learning every rkey
        // Each row's rkey, by its position in `rows`.
        let mut rkeys = vec![0i64; rows.len()];
        let mut upserted: Vec<usize> = (0..rows.len()).collect();
        // PostgreSQL, many rows: resources that had no row get theirs by COPY, with keys from the
        // rkey sequence; only the others need `INSERT … ON CONFLICT … RETURNING`.
        if let Some(hids) = hids.as_ref() {
            let new: Vec<usize> = upserted.iter().copied().filter(|&i| !rows[i].existed).collect();
            if new.len() >= COPY_MIN_ROWS {
                let keys = take_keys(conn, "resources_rkey_seq", new.len()).await?;
                let items: Vec<(&Ready, i64, i64)> =
                    new.iter().zip(&keys).map(|(&i, &k)| (rows[i], k, hids[i])).collect();
                let columns = "rkey, rtype, id, version, lu_ms, seq, deleted, content_hash, patient_id, hid";
                conn.copy_encoded("resources", columns, &items, |line, (r, rkey, hid)| {
                    line.int(*rkey)
                        .text(&r.outcome.resource_type)
                        .text(&r.outcome.id)
                        .int(r.outcome.version)
                        .int(r.outcome.last_updated_ms)
                        .int(seq)
                        .int(i64::from(r.method == "DELETE"))
                        .opt_text(r.hash.as_deref())
                        .opt_text(r.extracted.compartments.first().map(String::as_str))
                        .int(*hid);
                })
                .await?;
                for (&i, &k) in new.iter().zip(&keys) {
                    rkeys[i] = k;
                }
                upserted.retain(|&i| rows[i].existed);
            }
        }
        // RETURNING names each row by type and id.
        let position: HashMap<(&str, &str), usize> = upserted
            .iter()
            .map(|&i| ((rows[i].outcome.resource_type.as_str(), rows[i].outcome.id.as_str()), i))
            .collect();
        for chunk in upserted.chunks(CHUNK_ROWS) {
            let mut sql = Sql::new(dialect);
            sql.push("INSERT INTO resources (rtype, id, version, lu_ms, seq, deleted, content_hash");
            if dialect == Dialect::Postgres {
                sql.push(", patient_id, hid");
            }
            sql.push(") VALUES ");
            for (n, &i) in chunk.iter().enumerate() {
                let r = rows[i];
                if n > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .bind(r.outcome.resource_type.as_str())
                    .push(", ")
                    .bind(r.outcome.id.as_str())
                    .push(", ")
                    .bind(r.outcome.version)
                    .push(", ")
                    .bind(r.outcome.last_updated_ms)
                    .push(", ")
                    .bind(seq)
                    .push(", ")
                    .bind(i64::from(r.method == "DELETE"))
                    .push(", ")
                    .bind(r.hash.clone());
                if let Some(hids) = &hids {
                    sql.push(", ").bind(r.extracted.compartments.first().cloned());
                    sql.push(", ").bind(hids[i]);
                }
                sql.push(")");
            }
            sql.push(
                " ON CONFLICT (rtype, id) DO UPDATE SET version = excluded.version, lu_ms = excluded.lu_ms, \
                 seq = excluded.seq, deleted = excluded.deleted, content_hash = excluded.content_hash",
            );
            if dialect == Dialect::Postgres {
                sql.push(", patient_id = excluded.patient_id, hid = excluded.hid");
            }
            sql.push(" RETURNING rkey, rtype, id");
            for mut row in conn.fetch(&sql, &[Col::Int, Col::Text, Col::Text]).await? {
                let (rtype, id) = (row.take_text(1).unwrap_or_default(), row.take_text(2).unwrap_or_default());
                if let Some(&i) = position.get(&(rtype.as_str(), id.as_str())) {
                    rkeys[i] = row.int(0);
                }
            }
        }

        // 2. old index rows of replaced or deleted resources
        let replaced: Vec<i64> = rows.iter().filter_map(|r| r.existing_rkey).collect();
        for chunk in replaced.chunks(CHUNK_ROWS) {
            for table in INDEX_TABLES {
                let mut sql = Sql::new(dialect);
                sql.push("DELETE FROM ").push(table).push(" WHERE rkey IN ").bind_list(chunk.iter().copied());
                conn.execute(&sql).await?;
            }
        }

        // 3. history (every version, the current one included), then (SQLite) point each
        //    current row at its history row so reads need no second index lookup
        let mut written: Vec<(i64, i64)> = Vec::with_capacity(rows.len());
        let by_copy = hids.is_some() && rows.len() >= COPY_MIN_ROWS;
        if let Some(hids) = hids.as_ref().filter(|_| by_copy) {
            let history: Vec<(&Ready, i64, i64)> =
                rows.iter().zip(hids).zip(&rkeys).map(|((r, hid), rkey)| (*r, *hid, *rkey)).collect();
            let columns = "rkey, version, rtype, id, seq, lu_ms, method, body, patient_id, hid";
            conn.copy_encoded("resource_history", columns, &history, |line, (r, hid, rkey)| {
                line.int(*rkey)
                    .int(r.outcome.version)
                    .text(&r.outcome.resource_type)
                    .text(&r.outcome.id)
                    .int(seq)
                    .int(r.outcome.last_updated_ms)
                    .text(r.method)
                    .opt_text(r.outcome.body.as_deref())
                    .opt_text(r.extracted.compartments.first().map(String::as_str))
                    .int(*hid);
            })
            .await?;
        }
        for (c, chunk) in rows.chunks(CHUNK_ROWS).enumerate().filter(|_| !by_copy) {
            let mut sql = Sql::new(dialect);
            sql.push("INSERT INTO resource_history (rkey, version, rtype, id, seq, lu_ms, method, body");
            if dialect == Dialect::Postgres {
                sql.push(", patient_id, hid");
            }
            sql.push(") VALUES ");
            for (i, r) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .bind(rkeys[c * CHUNK_ROWS + i])
                    .push(", ")
                    .bind(r.outcome.version)
                    .push(", ")
                    .bind(r.outcome.resource_type.as_str())
                    .push(", ")
                    .bind(r.outcome.id.as_str())
                    .push(", ")
                    .bind(seq)
                    .push(", ")
                    .bind(r.outcome.last_updated_ms)
                    .push(", ")
                    .bind(r.method)
                    .push(", ");
                match &r.outcome.body {
                    Some(body) => sql.bind(body.clone()),
                    None => sql.push("NULL"),
                };
                if let Some(hids) = &hids {
                    sql.push(", ").bind(r.extracted.compartments.first().cloned());
                    sql.push(", ").bind(hids[c * CHUNK_ROWS + i]);
                }
                sql.push(")");
            }
            if hids.is_some() {
                conn.execute_owned(sql).await?;
            } else {
                sql.push(" RETURNING rkey, hid");
                let returned = conn.fetch(&sql, &[Col::Int, Col::Int]).await?;
                written.extend(returned.iter().map(|row| (row.int(0), row.int(1))));
            }
        }
        for chunk in written.chunks(CHUNK_ROWS) {
            let mut sql = Sql::new(dialect);
            sql.push("UPDATE resources SET hid = CASE rkey");
            for (rkey, hid) in chunk {
                sql.push(" WHEN ").bind(*rkey).push(" THEN ").bind(*hid);
            }
            sql.push(" END WHERE rkey IN ").bind_list(chunk.iter().map(|(rkey, _)| *rkey));
            conn.execute(&sql).await?;
        }

        // 4. index rows
        let mut index = IndexRows::new(dialect);
        for (r, &rkey) in rows.iter().zip(&rkeys) {
            let patient = r.extracted.compartments.first().map(String::as_str);
            for entry in &r.extracted.entries {
                index.add(rkey, param_key(&r.outcome.resource_type, &entry.param), &entry.value, patient);
            }
            for patient_id in &r.extracted.compartments {
                index.compartment.push((rkey, patient_id.as_str()));
            }
        }
        index.flush(conn).await
    }
}

fn in_entry(index: usize, e: StoreError) -> StoreError {
    match e {
        StoreError::InBundle { .. } | StoreError::Database(_) => e,
        other => StoreError::InBundle { index, source: Box::new(other) },
    }
}

fn type_of(doc: &Map<String, Value>) -> String {
    doc.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn valid_id(id: &str) -> Result<(), StoreError> {
    if fhir::search::is_valid_id(id) {
        Ok(())
    } else {
        Err(StoreError::BadRequest(format!("'{id}' is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .)")))
    }
}

/// Take the next commit sequence value and this commit's `lastUpdated` time: `now_ms`, or 1 ms
/// after the previous commit's when the clock has not moved past it. On PostgreSQL the row lock
/// is held until commit, so both follow commit order (a reader that saw seq N has seen
/// everything below N, and every later commit carries a later `lastUpdated`).
async fn next_commit(conn: &mut Conn<'_>, now_ms: i64) -> Result<(i64, i64), StoreError> {
    let mut sql = Sql::new(conn.dialect());
    let greatest = if conn.dialect() == Dialect::Postgres { "GREATEST" } else { "MAX" };
    sql.push("UPDATE commit_seq SET value = value + 1, last_ms = ")
        .push(greatest)
        .push("(last_ms + 1, ")
        .bind(now_ms)
        .push(") WHERE one = 1 RETURNING value, last_ms");
    let rows = conn.fetch(&sql, &[Col::Int, Col::Int]).await?;
    rows.first().map(|r| (r.int(0), r.int(1))).ok_or_else(|| StoreError::Config("commit_seq row missing".into()))
}

/// `n` fresh `resource_history` keys, in increasing order (taken under the commit lock, so
/// history keys follow commit order as they do when the rows take them themselves).
async fn take_history_keys(conn: &mut Conn<'_>, n: usize) -> Result<Vec<i64>, StoreError> {
    take_keys(conn, "resource_history_hid_seq", n).await
}

/// `n` fresh keys from a PostgreSQL sequence, in increasing order.
async fn take_keys(conn: &mut Conn<'_>, sequence: &'static str, n: usize) -> Result<Vec<i64>, StoreError> {
    let mut sql = Sql::new(conn.dialect());
    // The sequence named as a regclass literal (BIGSERIAL's own name for it, migration 0001):
    // `pg_get_serial_sequence(…)` is not constant-folded and looked the name up in the catalog
    // once per row, six times the cost of the keys themselves (0.5 s of the fixture set's load).
    sql.push("SELECT nextval('").push(sequence).push("'::regclass) FROM generate_series(1, ").bind(n as i64).push(")");
    let mut keys: Vec<i64> = conn.fetch(&sql, &[Col::Int]).await?.iter().map(|row| row.int(0)).collect();
    keys.sort_unstable();
    if keys.len() != n {
        return Err(StoreError::Config(format!("asked for {n} keys of {sequence}, got {}", keys.len())));
    }
    Ok(keys)
}

async fn load_existing(
    conn: &mut Conn<'_>,
    prepared: &[Prepared],
) -> Result<HashMap<(String, String), Existing>, StoreError> {
    let mut found = HashMap::new();
    let cols = [Col::Int, Col::Text, Col::Text, Col::Int, Col::Int, Col::Text];
    let mut keep = |rows: Vec<Vec<SqlValue>>| {
        for mut row in rows {
            let existing =
                Existing { rkey: row.int(0), version: row.int(3), deleted: row.int(4) != 0, hash: row.take_text(5) };
            found.insert((row.take_text(1).unwrap_or_default(), row.take_text(2).unwrap_or_default()), existing);
        }
    };
    let wanted: Vec<&Prepared> = prepared.iter().filter(|p| p.mode != Mode::Create).collect();
    if conn.dialect() == Dialect::Postgres {
        // The (type, id) pairs of a whole batch as one JSON array, each looked up through the
        // (rtype, id) key: one statement per batch, not one per type (a batch of bundles holds
        // a dozen types or more), where a list of 400 parameters had made PostgreSQL scan and
        // hash-match the list.
        for chunk in wanted.chunks(EXISTENCE_CHUNK) {
            let pairs: Vec<[&str; 2]> = chunk.iter().map(|p| [p.resource_type.as_str(), p.id.as_str()]).collect();
            let pairs = serde_json::to_string(&pairs).map_err(|e| StoreError::Config(e.to_string()))?;
            let mut sql = Sql::new(Dialect::Postgres);
            sql.push(
                "SELECT r.rkey, r.rtype, r.id, r.version, r.deleted, r.content_hash FROM jsonb_array_elements(",
            )
            .bind(pairs)
            .push("::jsonb) AS k(pair) JOIN resources r ON r.rtype = k.pair->>0 AND r.id = (k.pair->>1) COLLATE \"C\"")
            .planned_each_time();
            keep(conn.fetch(&sql, &cols).await?);
        }
        return Ok(found);
    }
    // Grouped by type so each lookup uses the (rtype, id) unique index.
    let mut by_type: HashMap<&str, Vec<&str>> = HashMap::new();
    for p in wanted {
        by_type.entry(p.resource_type.as_str()).or_default().push(p.id.as_str());
    }
    for (resource_type, ids) in by_type {
        for chunk in ids.chunks(CHUNK_ROWS) {
            let mut sql = Sql::new(conn.dialect());
            sql.push("SELECT rkey, rtype, id, version, deleted, content_hash FROM resources WHERE rtype = ")
                .bind(resource_type)
                .push(" AND id IN ")
                .bind_list(chunk.iter().copied());
            keep(conn.fetch(&sql, &cols).await?);
        }
    }
    Ok(found)
}

/// Set id, drop `meta.versionId`/`meta.lastUpdated`, and put `resourceType`, `id`, `meta` first.
/// Returns that document, its serialized text and its hash (what a re-import is compared by).
fn normalized_doc(mut doc: Map<String, Value>, id: &str) -> Result<(Value, Unstamped, String), StoreError> {
    // shift_remove keeps the order of the remaining members (remove() would swap them).
    let resource_type = doc.shift_remove("resourceType").unwrap_or(Value::Null);
    doc.shift_remove("id");
    let mut meta = match doc.shift_remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.shift_remove("versionId");
    meta.shift_remove("lastUpdated");

    let mut ordered = Map::with_capacity(doc.len() + 3);
    ordered.insert("resourceType".into(), resource_type);
    ordered.insert("id".into(), Value::String(id.to_string()));
    ordered.insert("meta".into(), Value::Object(meta));
    ordered.extend(doc);

    let body = Unstamped::serialize(&ordered)?;
    let mut hasher = Sha256::new();
    hasher.update(body.text.as_bytes());
    let hash = hex::encode(&hasher.finalize()[..16]);
    Ok((Value::Object(ordered), body, hash))
}

/// A normalized document serialized once (when it is checked, off the writer's path), with the
/// place where `meta.versionId` and `meta.lastUpdated` go: those are known only when the write
/// is applied, and splicing them in is a copy where serializing again was a walk of the tree.
pub(crate) struct Unstamped {
    /// Compact JSON, byte for byte what `serde_json::to_string` gives (content hashes use it).
    text: String,
    /// Just after the `{` that opens `meta`.
    meta_at: usize,
    meta_empty: bool,
}

impl Unstamped {
    /// `ordered` has `resourceType`, `id` and `meta` (an object) as its first three members.
    fn serialize(ordered: &Map<String, Value>) -> Result<Unstamped, StoreError> {
        let failed = |e: serde_json::Error| StoreError::BadRequest(e.to_string());
        let mut text: Vec<u8> = Vec::with_capacity(1024);
        let mut meta = None;
        text.push(b'{');
        for (i, (key, value)) in ordered.iter().enumerate() {
            if i > 0 {
                text.push(b',');
            }
            serde_json::to_writer(&mut text, key).map_err(failed)?;
            text.push(b':');
            if let (2, Value::Object(m)) = (i, value) {
                meta = Some((text.len() + 1, m.is_empty()));
            }
            serde_json::to_writer(&mut text, value).map_err(failed)?;
        }
        text.push(b'}');
        let (meta_at, meta_empty) =
            meta.ok_or_else(|| StoreError::BadRequest("a normalized resource lacks meta".into()))?;
        let text = String::from_utf8(text).map_err(|e| StoreError::BadRequest(e.to_string()))?;
        Ok(Unstamped { text, meta_at, meta_empty })
    }
}

/// The stored body: the normalized document with `meta.versionId` and `meta.lastUpdated` first.
fn stamp(body: &Unstamped, version: i64, lu_ms: i64) -> String {
    let (head, tail) = body.text.split_at(body.meta_at);
    let mut out = String::with_capacity(body.text.len() + 64);
    out.push_str(head);
    out.push_str("\"versionId\":\"");
    out.push_str(&version.to_string());
    out.push_str("\",\"lastUpdated\":\"");
    out.push_str(&instant_text(lu_ms));
    out.push('"');
    if !body.meta_empty {
        out.push(',');
    }
    out.push_str(tail);
    out
}

/// Index text columns hold '' for "absent" (they are primary-key columns on SQLite).
pub(crate) const INDEX_TABLES: [&str; 8] =
    ["idx_string", "idx_token", "idx_reference", "idx_date", "idx_number", "idx_quantity", "idx_uri", "compartment"];

/// One index row, borrowing its value from the extracted entries it comes from.
struct IndexRow<'a> {
    rkey: i64,
    p: i64,
    value: &'a IndexValue,
    patient: Option<&'a str>,
}

/// The index table of a value (a position in [`INDEX_TABLES`]) and its columns after `rkey, p`.
fn index_table(value: &IndexValue) -> (usize, &'static str) {
    match value {
        IndexValue::String { .. } => (0, "norm, exact"),
        IndexValue::Token { .. } => (1, "code, system, text"),
        IndexValue::Reference { .. } => (2, "tid, ttype, url"),
        IndexValue::Date { .. } => (3, "lo, hi"),
        IndexValue::Number { .. } => (4, "val"),
        IndexValue::Quantity { .. } => (5, "val, code, system, unit"),
        IndexValue::Uri { .. } => (6, "uri"),
    }
}

/// Where a value's columns go: a COPY line, or the bound values of an insert's row.
trait Columns {
    fn int(&mut self, v: i64) -> &mut Self;
    fn real(&mut self, v: f64) -> &mut Self;
    fn text(&mut self, v: &str) -> &mut Self;
}

impl Columns for CopyLine<'_> {
    fn int(&mut self, v: i64) -> &mut Self {
        CopyLine::int(self, v)
    }
    fn real(&mut self, v: f64) -> &mut Self {
        CopyLine::real(self, v)
    }
    fn text(&mut self, v: &str) -> &mut Self {
        CopyLine::text(self, v)
    }
}

impl Columns for Vec<SqlValue> {
    fn int(&mut self, v: i64) -> &mut Self {
        self.push(v.into());
        self
    }
    fn real(&mut self, v: f64) -> &mut Self {
        self.push(v.into());
        self
    }
    fn text(&mut self, v: &str) -> &mut Self {
        self.push(v.into());
        self
    }
}

/// A value's columns, those [`index_table`] names (an absent text is the empty string).
fn push_value_columns(columns: &mut impl Columns, value: &IndexValue) {
    fn or_empty(v: &Option<String>) -> &str {
        v.as_deref().unwrap_or_default()
    }
    match value {
        IndexValue::String { normalized, exact } => columns.text(normalized).text(exact),
        IndexValue::Token { system, code, text } => {
            columns.text(or_empty(code)).text(or_empty(system)).text(or_empty(text))
        }
        IndexValue::Reference { target_type, target_id, url } => {
            columns.text(or_empty(target_id)).text(or_empty(target_type)).text(or_empty(url))
        }
        IndexValue::Date { start, end } => columns.int(*start).int(*end),
        IndexValue::Number { value } => columns.real(*value),
        IndexValue::Quantity { value, system, code, unit } => {
            columns.real(*value).text(or_empty(code)).text(or_empty(system)).text(or_empty(unit))
        }
        IndexValue::Uri { value } => columns.text(value),
    };
}

/// Index rows collected per table, then written by COPY (PostgreSQL, many rows) or as
/// multi-row inserts.
struct IndexRows<'a> {
    dialect: Dialect,
    /// By position in [`INDEX_TABLES`] (the compartment apart).
    tables: [Vec<IndexRow<'a>>; 7],
    compartment: Vec<(i64, &'a str)>,
}

impl<'a> IndexRows<'a> {
    fn new(dialect: Dialect) -> IndexRows<'a> {
        IndexRows { dialect, tables: Default::default(), compartment: Vec::new() }
    }

    fn add(&mut self, rkey: i64, p: i64, value: &'a IndexValue, patient: Option<&'a str>) {
        self.tables[index_table(value).0].push(IndexRow { rkey, p, value, patient });
    }

    async fn flush(self, conn: &mut Conn<'_>) -> Result<(), StoreError> {
        let pg = self.dialect == Dialect::Postgres;
        let dialect = self.dialect;
        let mut inserted: Vec<(&str, String, Vec<Vec<SqlValue>>)> = Vec::new();
        for (position, rows) in self.tables.iter().enumerate() {
            let Some(first) = rows.first() else { continue };
            let table = INDEX_TABLES[position];
            let mut columns = format!("rkey, p, {}", index_table(first.value).1);
            if pg {
                columns.push_str(", patient_id");
            }
            // COPY's two round trips pay off from a few dozen rows on.
            if rows.len() >= COPY_MIN_ROWS {
                let copied = conn
                    .copy_encoded(table, &columns, rows, |line, row| {
                        line.int(row.rkey).int(row.p);
                        push_value_columns(line, row.value);
                        line.opt_text(row.patient);
                    })
                    .await?;
                if copied {
                    continue;
                }
            }
            let values = rows
                .iter()
                .map(|row| {
                    let mut values = vec![row.rkey.into(), row.p.into()];
                    push_value_columns(&mut values, row.value);
                    if pg {
                        values.push(row.patient.into());
                    }
                    values
                })
                .collect();
            inserted.push((table, columns, values));
        }
        if !self.compartment.is_empty() {
            // (COPY cannot skip conflicting rows as the inserts' `ON CONFLICT DO NOTHING` does
            // for compartment rows, and needs not: a resource's patients are deduplicated at
            // extraction, a resource appears once per transaction, and a replaced one's old rows
            // are gone.)
            let columns = "rkey, patient_id";
            let copied = self.compartment.len() >= COPY_MIN_ROWS
                && conn
                    .copy_encoded("compartment", columns, &self.compartment, |line, (rkey, patient)| {
                        line.int(*rkey).text(patient);
                    })
                    .await?;
            if !copied {
                let rows = self.compartment.iter().map(|(rkey, patient)| vec![(*rkey).into(), (*patient).into()]);
                inserted.push(("compartment", columns.to_owned(), rows.collect()));
            }
        }
        let mut statements = inserted.into_iter().flat_map(|(table, columns, rows)| {
            let mut rows = rows.into_iter().peekable();
            std::iter::from_fn(move || {
                rows.peek()?;
                let mut sql = Sql::new(dialect);
                sql.push("INSERT INTO ").push(table).push(" (").push(&columns).push(") VALUES ");
                for (i, row) in rows.by_ref().take(CHUNK_ROWS * 2).enumerate() {
                    if i > 0 {
                        sql.push(", ");
                    }
                    sql.bind_list(row);
                }
                if table == "compartment" {
                    sql.push(" ON CONFLICT DO NOTHING");
                }
                Some(sql)
            })
        });
        // Build each statement while the database runs the one before: `join!` polls the
        // execution first (handing it to the database), then builds the next one.
        let mut next = statements.next();
        while let Some(sql) = next {
            let (done, following) = tokio::join!(conn.execute_owned(sql), async { statements.next() });
            done?;
            next = following;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_puts_type_id_meta_first_and_hash_ignores_version() {
        let doc: Map<String, Value> = serde_json::from_str(
            r#"{"gender":"male","meta":{"tag":[{"code":"x"}],"versionId":"9"},"resourceType":"Patient","id":"old","active":true,"birthDate":"1970"}"#,
        )
        .unwrap();
        let (_, unstamped, hash) = normalized_doc(doc.clone(), "p1").unwrap();
        let body = stamp(&unstamped, 3, 0);
        assert_eq!(
            body,
            r#"{"resourceType":"Patient","id":"p1","meta":{"versionId":"3","lastUpdated":"1970-01-01T00:00:00.000Z","tag":[{"code":"x"}]},"gender":"male","active":true,"birthDate":"1970"}"#
        );
        let (_, _, hash2) = normalized_doc(doc, "p1").unwrap();
        assert_eq!(hash, hash2);
    }

    /// What the stored body was before stamping became a splice: meta rebuilt with the version
    /// and time first, then the whole tree serialized again.
    fn stamp_by_reserializing(mut value: Value, version: i64, lu_ms: i64) -> String {
        if let Some(Value::Object(meta)) = value.get_mut("meta") {
            let mut with_version = Map::new();
            with_version.insert("versionId".into(), Value::String(version.to_string()));
            with_version.insert("lastUpdated".into(), Value::String(instant_text(lu_ms)));
            with_version.extend(std::mem::take(meta));
            *meta = with_version;
        }
        serde_json::to_string(&value).unwrap()
    }

    #[test]
    fn stamping_by_splice_equals_serializing_again_and_hashes_are_unchanged() {
        let docs = [
            r#"{"resourceType":"Patient","id":"x"}"#,
            r#"{"resourceType":"Patient","meta":{}}"#,
            r#"{"resourceType":"Patient","meta":{"lastUpdated":"2020-01-01T00:00:00Z"}}"#,
            r#"{"resourceType":"Observation","status":"final","meta":{"profile":["p"],"versionId":"4"},"valueString":"\"meta\":{ é ✓"}"#,
            r#"{"contained":[{"resourceType":"Medication","id":"m","meta":{"tag":[{"code":"c"}]}}],"resourceType":"MedicationRequest"}"#,
        ];
        for (i, text) in docs.iter().enumerate() {
            let doc: Map<String, Value> = serde_json::from_str(text).unwrap();
            let (value, unstamped, hash) = normalized_doc(doc, "id-1").unwrap();
            let expected = stamp_by_reserializing(value.clone(), 7, 1_600_000_000_123);
            assert_eq!(stamp(&unstamped, 7, 1_600_000_000_123), expected, "doc {i}");
            // Stored hashes decide whether a re-import changes anything: same bytes, same hash.
            let mut hasher = Sha256::new();
            hasher.update(serde_json::to_vec(&value).unwrap());
            assert_eq!(hash, hex::encode(&hasher.finalize()[..16]), "doc {i}");
        }
    }

    #[test]
    fn decimals_keep_their_precision() {
        let doc: Map<String, Value> =
            serde_json::from_str(r#"{"resourceType":"Observation","valueQuantity":{"value":1.50}}"#).unwrap();
        let (_, unstamped, _) = normalized_doc(doc, "o").unwrap();
        let body = stamp(&unstamped, 1, 0);
        assert!(body.contains(r#""value":1.50"#), "{body}");
    }
}
