//! Resource storage for Portico: one `Store` over SQLite (embedded, the default) or PostgreSQL.
//!
//! Resources are kept as the JSON text returned to clients (with `meta` set at write time);
//! search parameters and Patient-compartment membership are extracted at write time into typed
//! index tables, so searches are SQL over those tables. Every write transaction takes the next
//! value of a commit sequence, which orders history and will drive sync cursors.

pub mod access;
pub mod action_links;
mod audit;
pub mod auth;
mod bundle;
mod cache;
pub mod clock;
pub mod db;
mod error;
mod export;
mod indexes;
pub mod jobs;
mod read;
pub mod readers;
pub mod restrict;
mod search;
pub mod subscriptions;
mod sync;
mod write;

use std::sync::Arc;

pub use access::PractitionerLink;
pub use audit::{AuditQuery, AuditRecord};
pub use bundle::{parse_etag, BundleKind, BundleResult, EntryResult, RestWrite, RestWriteKind};
pub use clock::{Clock, ManualClock, SystemClock};
pub use db::Dialect;
pub use error::StoreError;
pub use export::{DeletedRow, ExportRow, ExportSlice};
pub use jobs::{JobRecord, JobStatus, NewJob};
pub use read::{HistoryEntry, HistoryPage, HistoryQuery, HistoryScope, ReadOutcome};
pub use restrict::{Restriction, TypeRule, TypeRules, SHARED_TYPES};
pub use search::{EverythingQuery, SearchPage};
pub use sync::{ChangePage, SyncCursor, SyncPosition, VersionRow};
pub use write::{ImportStats, PreparedImport, WriteOutcome, WriteRequest};

use db::Pool;

/// Options that do not come from the database URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// This server's FHIR base URL (no trailing slash): absolute references to it are treated
    /// as relative ones in searches.
    pub base_url: String,
    pub max_connections: u32,
    /// Bytes of reads and search pages kept in memory (0 turns the cache off).
    pub cache_bytes: u64,
    /// Adds sensitivity labels (`meta.security`) on every write and import; `None` turns
    /// labeling off.
    pub labeler: Option<Arc<fhir::labels::Labeler>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            base_url: "http://localhost:8080/fhir".into(),
            max_connections: 8,
            cache_bytes: 32 << 20,
            labeler: Some(Arc::new(fhir::labels::Labeler::defaults())),
        }
    }
}

/// One stored resource version as returned to clients.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResource {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    /// `meta.lastUpdated`, epoch milliseconds.
    pub last_updated_ms: i64,
    /// The exact JSON text stored for this version.
    pub body: JsonText,
}

/// Stored JSON text, shared rather than copied: the cache and every answer built from an entry
/// hold the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JsonText(Arc<str>);

impl JsonText {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for JsonText {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<[u8]> for JsonText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl From<String> for JsonText {
    fn from(text: String) -> JsonText {
        JsonText(text.into())
    }
}

impl From<&str> for JsonText {
    fn from(text: &str) -> JsonText {
        JsonText(text.into())
    }
}

#[derive(Clone)]
pub struct Store {
    pool: Pool,
    options: Arc<StoreOptions>,
    clock: Arc<dyn Clock>,
    registry: &'static fhir::Registry,
    cache: Option<Arc<cache::Cache>>,
    /// Signalled after every committed write in this process (wakes the subscription
    /// dispatcher without polling).
    commits: Arc<tokio::sync::Notify>,
}

impl Store {
    /// Connect (creating the SQLite file if needed) and run the backend's migrations.
    /// `postgres://` and `postgresql://` URLs select PostgreSQL; anything else is a SQLite path
    /// (`sqlite://path` or a plain path).
    pub async fn connect(url: &str, options: StoreOptions, clock: Arc<dyn Clock>) -> Result<Store, StoreError> {
        let pool = Pool::connect(url, options.max_connections).await?;
        {
            let mut tx = pool.begin_write().await?;
            indexes::ensure(&mut tx.conn()).await?;
            tx.commit().await?;
        }
        let cache = (options.cache_bytes > 0).then(|| Arc::new(cache::Cache::new(options.cache_bytes)));
        if let Some(cache) = &cache {
            spawn_commit_poller(pool.clone(), Arc::downgrade(cache));
        }
        Ok(Store {
            pool,
            options: Arc::new(options),
            clock,
            registry: fhir::Registry::r4(),
            cache,
            commits: Arc::new(tokio::sync::Notify::new()),
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.pool.dialect()
    }

    /// Woken (one permit) after each write this process commits.
    pub fn commit_signal(&self) -> Arc<tokio::sync::Notify> {
        self.commits.clone()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Readiness: can we run a query?
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut lease = self.pool.read_conn().await?;
        let sql = db::Sql::raw(self.dialect(), "SELECT CAST(1 AS BIGINT)");
        lease.conn().fetch(&sql, &[db::Col::Int]).await?;
        Ok(())
    }

    /// Prepare for loading many resources. When the database holds no resources yet, the
    /// search indexes are dropped (and `end_bulk_load` builds them in one pass); on SQLite the
    /// writer also gets a large page cache and, filling an empty database, no fsync until the end.
    /// Returns whether indexes were dropped.
    pub async fn begin_bulk_load(&self) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_write().await?;
        let run = |text: &str| db::Sql::raw(self.dialect(), text);
        let empty =
            tx.conn().fetch(&run("SELECT COUNT(*) FROM (SELECT 1 FROM resources LIMIT 1) t"), &[db::Col::Int]).await?;
        let empty = empty.first().is_none_or(|r| db::RowExt::int(r, 0) == 0);
        if empty {
            indexes::drop_all(&mut tx.conn()).await?;
        }
        tx.commit().await?;
        if self.dialect() == Dialect::Sqlite {
            // Connection settings of the single writer connection, outside any transaction.
            self.pool.configure_sqlite_writer("PRAGMA cache_size = -262144").await?;
            if empty {
                // Filling an empty database: no fsync until the load is done (`end_bulk_load`
                // syncs everything). A killed process still loses nothing committed (the OS
                // holds the writes); a power cut during the load may cost the database file,
                // which held no resources yet. About a tenth of the import's time.
                self.pool.configure_sqlite_writer("PRAGMA synchronous = OFF").await?;
            }
        }
        Ok(empty)
    }

    /// Rebuild what `begin_bulk_load` set aside, refresh statistics, restore settings.
    pub async fn end_bulk_load(&self) -> Result<(), StoreError> {
        let sqlite = self.dialect() == Dialect::Sqlite;
        if sqlite {
            // Index builds sort every row; SQLite may hand parts of that sort to helper threads.
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
            self.pool.configure_sqlite_writer(&format!("PRAGMA threads = {threads}")).await?;
        }
        if sqlite {
            let mut tx = self.pool.begin_write().await?;
            indexes::ensure(&mut tx.conn()).await?;
            tx.commit().await?;
        } else {
            // Two index builds at a time, each on its own connection, so both cores work.
            self.run_in_pairs(indexes::create_statements(Dialect::Postgres)).await?;
        }
        if sqlite {
            self.pool.configure_sqlite_writer("PRAGMA threads = 0").await?;
            self.pool.configure_sqlite_writer(&format!("PRAGMA cache_size = {}", db::WRITER_CACHE_SIZE)).await?;
            self.analyze().await?;
            // Back to syncing commits; the checkpoint syncs the log and the database file, so
            // the whole load is on disk when the import reports it done.
            self.pool.configure_sqlite_writer("PRAGMA synchronous = NORMAL").await?;
            self.pool.configure_sqlite_writer("PRAGMA wal_checkpoint(TRUNCATE)").await?;
            return Ok(());
        }
        // PostgreSQL: vacuum now, with fresh statistics, rather than let autovacuum do it under
        // the first queries: it marks the loaded pages all-visible, so searches can answer from
        // the index tables' indexes alone (index-only scans). VACUUM cannot run in a transaction.
        // The tables a load fills, in two lists of about equal size, vacuumed side by side.
        self.run_in_pairs(vec![
            "VACUUM (ANALYZE) resource_history, idx_reference, idx_string, idx_uri, commit_seq".to_owned(),
            "VACUUM (ANALYZE) idx_token, resources, compartment, idx_date, idx_quantity, idx_number".to_owned(),
        ])
        .await
    }

    /// Run statements (outside transactions) two at a time on PostgreSQL connections.
    async fn run_in_pairs(&self, statements: Vec<String>) -> Result<(), StoreError> {
        use futures::{StreamExt, TryStreamExt};
        futures::stream::iter(statements)
            .map(|text| async move {
                let mut lease = self.pool.read_conn().await?;
                let mut conn = lease.conn();
                // Index builds sort in memory up to this much (the default, 64 MB, is less than
                // the fixture set's token index needs); vacuum uses it for dead-row lists.
                // No parallel workers of their own: two builds already keep both cores busy.
                let settings = ["maintenance_work_mem = '256MB'", "max_parallel_maintenance_workers = 0"];
                for setting in settings {
                    conn.execute(&db::Sql::raw(Dialect::Postgres, format!("SET {setting}"))).await?;
                }
                let done = conn.execute(&db::Sql::raw(Dialect::Postgres, text)).await;
                for setting in settings {
                    let name = setting.split(' ').next().unwrap_or_default();
                    conn.execute(&db::Sql::raw(Dialect::Postgres, format!("RESET {name}"))).await?;
                }
                done
            })
            .buffer_unordered(2)
            .try_collect::<Vec<u64>>()
            .await?;
        Ok(())
    }

    /// Refresh planner statistics (after a bulk import).
    pub async fn analyze(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_write().await?;
        let run = |text: &str| db::Sql::raw(self.dialect(), text);
        tx.conn().execute(&run("ANALYZE")).await?;
        if self.dialect() == Dialect::Sqlite {
            // The bundled SQLite is built with STAT4: with its samples present, every statement
            // whose bound values change is re-prepared (a third of a read's cost). The per-index
            // row estimates of sqlite_stat1 are what our plans need.
            tx.conn().execute(&run("DELETE FROM sqlite_stat4")).await?;
        }
        tx.commit().await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Watch the commit sequence so writes by other processes invalidate this process's cache.
/// Stops when the store (and with it the cache) is dropped.
fn spawn_commit_poller(pool: Pool, cache: std::sync::Weak<cache::Cache>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(cache::POLL_INTERVAL);
        loop {
            tick.tick().await;
            let Some(cache) = cache.upgrade() else { return };
            let sql = db::Sql::raw(pool.dialect(), "SELECT value FROM commit_seq");
            let seq = match pool.read_conn().await {
                Ok(mut lease) => lease
                    .conn()
                    .fetch(&sql, &[db::Col::Int])
                    .await
                    .ok()
                    .and_then(|rows| rows.first().map(|r| db::RowExt::int(r, 0))),
                Err(_) => None,
            };
            match seq {
                Some(seq) => cache.observed(seq),
                // Cannot tell what changed: drop everything cached.
                None => cache.observed(i64::MAX),
            }
            if pool.is_closed() {
                return;
            }
        }
    });
}

/// Stable 64-bit key of a search parameter of a resource type, stored in the index tables
/// instead of repeating the type and code text in every row (FNV-1a of `Type.code`).
pub fn param_key(resource_type: &str, code: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in resource_type.bytes().chain(std::iter::once(b'.')).chain(code.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}
