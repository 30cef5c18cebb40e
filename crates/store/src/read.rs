//! Reads by id, by version, and history.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::cache::Cached;
use crate::db::{Col, RowExt, Sql};
use crate::restrict::Restriction;
use crate::{Store, StoreError, StoredResource};

#[derive(Debug, Clone, PartialEq)]
pub enum ReadOutcome {
    Found(StoredResource),
    /// The resource existed and was deleted (410 Gone).
    Deleted {
        version: i64,
        last_updated_ms: i64,
    },
    NotFound,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HistoryScope {
    System,
    Type(String),
    Instance(String, String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistoryQuery {
    pub scope: HistoryScope,
    /// Only versions written at or after this time (epoch ms).
    pub since_ms: Option<i64>,
    pub count: usize,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub last_updated_ms: i64,
    /// POST, PUT or DELETE
    pub method: String,
    /// None for a deletion.
    pub body: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    pub next_cursor: Option<String>,
}

/// The cache key of a read by id. Built with pushes, not `format!`: it is made on every read,
/// and the formatting machinery cost more than the cache lookup itself.
fn read_key(resource_type: &str, id: &str) -> String {
    let mut key = String::with_capacity(3 + resource_type.len() + id.len());
    key.push_str("r|");
    key.push_str(resource_type);
    key.push('|');
    key.push_str(id);
    key
}

impl Store {
    pub async fn read(&self, resource_type: &str, id: &str) -> Result<ReadOutcome, StoreError> {
        let Some(cache) = &self.cache else { return self.read_db(resource_type, id).await };
        let key = read_key(resource_type, id);
        match cache.get(&key) {
            Some(Cached::Read(Some(r))) => return Ok(ReadOutcome::Found(r)),
            Some(Cached::Read(None)) => return Ok(ReadOutcome::NotFound),
            _ => {}
        }
        let epoch = cache.epoch();
        let outcome = self.read_db(resource_type, id).await?;
        match &outcome {
            ReadOutcome::Found(r) => cache.put(key, epoch, Cached::Read(Some(r.clone()))),
            ReadOutcome::NotFound => cache.put(key, epoch, Cached::Read(None)),
            ReadOutcome::Deleted { .. } => {}
        }
        Ok(outcome)
    }

    /// Read within what `restriction` lets the caller see, in one statement: a resource outside
    /// it is `NotFound` (the caller decides how to answer that).
    pub async fn read_as(
        &self,
        resource_type: &str,
        id: &str,
        restriction: &Restriction,
    ) -> Result<ReadOutcome, StoreError> {
        if restriction.is_unrestricted() {
            return self.read(resource_type, id).await;
        }
        if !restriction.type_visible(self.registry, resource_type) {
            return Ok(ReadOutcome::NotFound);
        }
        let Some(cache) = &self.cache else { return self.read_db_as(resource_type, id, Some(restriction)).await };
        let key = format!("ra|{resource_type}|{id}|{restriction:?}");
        match cache.get(&key) {
            Some(Cached::Read(Some(r))) => return Ok(ReadOutcome::Found(r)),
            Some(Cached::Read(None)) => return Ok(ReadOutcome::NotFound),
            _ => {}
        }
        let epoch = cache.epoch();
        let outcome = self.read_db_as(resource_type, id, Some(restriction)).await?;
        match &outcome {
            ReadOutcome::Found(r) => cache.put(key, epoch, Cached::Read(Some(r.clone()))),
            ReadOutcome::NotFound => cache.put(key, epoch, Cached::Read(None)),
            ReadOutcome::Deleted { .. } => {}
        }
        Ok(outcome)
    }

    async fn read_db(&self, resource_type: &str, id: &str) -> Result<ReadOutcome, StoreError> {
        self.read_db_as(resource_type, id, None).await
    }

    async fn read_db_as(
        &self,
        resource_type: &str,
        id: &str,
        restriction: Option<&Restriction>,
    ) -> Result<ReadOutcome, StoreError> {
        let mut lease = self.pool.read_conn().await?;
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT r.version, r.lu_ms, r.deleted, h.body FROM resources r JOIN resource_history h ON h.hid = r.hid WHERE r.rtype = ")
            .bind(resource_type)
            .push(" AND r.id = ")
            .bind(id);
        if let Some(restriction) = restriction {
            sql.push(" AND r.deleted = 0");
            restriction.push(self, &mut sql, resource_type, crate::clock::epoch_ms(self.clock.now()), false);
        }
        let mut rows = lease.conn().fetch(&sql, &[Col::Int, Col::Int, Col::Int, Col::Text]).await?;
        let Some(mut row) = rows.pop() else { return Ok(ReadOutcome::NotFound) };
        if row.int(2) != 0 {
            return Ok(ReadOutcome::Deleted { version: row.int(0), last_updated_ms: row.int(1) });
        }
        Ok(ReadOutcome::Found(StoredResource {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            version: row.int(0),
            last_updated_ms: row.int(1),
            body: row.take_text(3).unwrap_or_default().into(),
        }))
    }

    pub async fn vread(&self, resource_type: &str, id: &str, version: i64) -> Result<ReadOutcome, StoreError> {
        let mut lease = self.pool.read_conn().await?;
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT h.version, h.lu_ms, h.method, h.body FROM resource_history h WHERE h.rtype = ")
            .bind(resource_type)
            .push(" AND h.id = ")
            .bind(id)
            .push(" AND h.version = ")
            .bind(version);
        let mut rows = lease.conn().fetch(&sql, &[Col::Int, Col::Int, Col::Text, Col::Text]).await?;
        let Some(mut row) = rows.pop() else { return Ok(ReadOutcome::NotFound) };
        if row.text(2) == Some("DELETE") {
            return Ok(ReadOutcome::Deleted { version: row.int(0), last_updated_ms: row.int(1) });
        }
        Ok(ReadOutcome::Found(StoredResource {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            version: row.int(0),
            last_updated_ms: row.int(1),
            body: row.take_text(3).unwrap_or_default().into(),
        }))
    }

    /// History, newest first, paged by a keyset cursor over (commit sequence, rkey, version).
    /// History within what `restriction` lets the caller see. Visibility is decided by each
    /// resource's current version (its compartment and labels now), for all its versions.
    pub async fn history(&self, query: &HistoryQuery, restriction: &Restriction) -> Result<HistoryPage, StoreError> {
        if let HistoryScope::Type(t) | HistoryScope::Instance(t, _) = &query.scope {
            if !restriction.type_visible(self.registry, t) {
                return Ok(HistoryPage { entries: Vec::new(), next_cursor: None });
            }
        }
        let mut lease = self.pool.read_conn().await?;
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT h.rtype, h.id, h.version, h.lu_ms, h.method, h.body, h.seq, h.rkey FROM resource_history h WHERE 1 = 1");
        match &query.scope {
            HistoryScope::System => {}
            HistoryScope::Type(t) => {
                sql.push(" AND h.rtype = ").bind(t.as_str());
            }
            HistoryScope::Instance(t, id) => {
                sql.push(" AND h.rkey = (SELECT rkey FROM resources WHERE rtype = ")
                    .bind(t.as_str())
                    .push(" AND id = ")
                    .bind(id.as_str())
                    .push(")");
            }
        }
        if let Some(since) = query.since_ms {
            sql.push(" AND h.lu_ms >= ").bind(since);
        }
        if !restriction.is_unrestricted() {
            let now_ms = crate::clock::epoch_ms(self.clock.now());
            sql.push(" AND EXISTS (SELECT 1 FROM resources r WHERE r.rkey = h.rkey");
            match &query.scope {
                HistoryScope::Type(t) | HistoryScope::Instance(t, _) => {
                    restriction.push(self, &mut sql, t, now_ms, false)
                }
                HistoryScope::System => {
                    let types = self.registry.resource_types();
                    restriction.push_any_type(self, &mut sql, &types, now_ms);
                }
            }
            sql.push(")");
        }
        if let Some(cursor) = &query.cursor {
            let (seq, rkey, version) = decode_history_cursor(cursor)?;
            sql.push(" AND (h.seq < ")
                .bind(seq)
                .push(" OR (h.seq = ")
                .bind(seq)
                .push(" AND (h.rkey < ")
                .bind(rkey)
                .push(" OR (h.rkey = ")
                .bind(rkey)
                .push(" AND h.version < ")
                .bind(version)
                .push("))))");
        }
        let limit = query.count.max(1) as i64;
        sql.push(" ORDER BY h.seq DESC, h.rkey DESC, h.version DESC LIMIT ").bind(limit + 1);
        let cols = [Col::Text, Col::Text, Col::Int, Col::Int, Col::Text, Col::Text, Col::Int, Col::Int];
        let mut rows = lease.conn().fetch(&sql, &cols).await?;
        let mut next_cursor = None;
        if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            if let Some(last) = rows.last() {
                next_cursor = Some(encode_history_cursor(last.int(6), last.int(7), last.int(2)));
            }
        }
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
        Ok(HistoryPage { entries, next_cursor })
    }
}

impl Store {
    /// Is the live resource `resource_type/id` inside what `restriction` lets the caller see?
    /// False also when it does not exist (the caller reads it afterwards to tell which).
    pub async fn visible(&self, resource_type: &str, id: &str, restriction: &Restriction) -> Result<bool, StoreError> {
        if restriction.is_unrestricted() {
            return Ok(true);
        }
        if !restriction.type_visible(self.registry, resource_type) {
            return Ok(false);
        }
        let Some(cache) = &self.cache else { return self.visible_db(resource_type, id, restriction).await };
        let key = format!("v|{resource_type}|{id}|{restriction:?}");
        if let Some(Cached::Flag(answer)) = cache.get(&key) {
            return Ok(answer);
        }
        let epoch = cache.epoch();
        let answer = self.visible_db(resource_type, id, restriction).await?;
        cache.put(key, epoch, Cached::Flag(answer));
        Ok(answer)
    }

    async fn visible_db(&self, resource_type: &str, id: &str, restriction: &Restriction) -> Result<bool, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT r.rkey FROM resources r WHERE r.rtype = ")
            .bind(resource_type)
            .push(" AND r.id = ")
            .bind(id)
            .push(" AND r.deleted = 0");
        restriction.push(self, &mut sql, resource_type, crate::clock::epoch_ms(self.clock.now()), false);
        let mut lease = self.pool.read_conn().await?;
        Ok(!lease.conn().fetch(&sql, &[Col::Int]).await?.is_empty())
    }
}

fn encode_history_cursor(seq: i64, rkey: i64, version: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{seq}.{rkey}.{version}"))
}

fn decode_history_cursor(cursor: &str) -> Result<(i64, i64, i64), StoreError> {
    let bad = || StoreError::BadRequest("the paging cursor is not valid; start from the first page".into());
    let text = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let text = String::from_utf8(text).map_err(|_| bad())?;
    let parts: Vec<i64> = text.split('.').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad())?;
    match parts.as_slice() {
        [seq, rkey, version] => Ok((*seq, *rkey, *version)),
        _ => Err(bad()),
    }
}
