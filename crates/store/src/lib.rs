//! Resource storage for Portico: one `Store` over SQLite (embedded, the default) or PostgreSQL.
//!
//! Resources are kept as the JSON text returned to clients (with `meta` set at write time);
//! search parameters and Patient-compartment membership are extracted at write time into typed
//! index tables, so searches are SQL over those tables. Every write transaction takes the next
//! value of a commit sequence, which orders history and will drive sync cursors.

mod bundle;
pub mod clock;
mod db;
mod error;
mod read;
mod search;
mod write;

use std::sync::Arc;

pub use bundle::{parse_etag, BundleKind, BundleResult, EntryResult, RestWrite, RestWriteKind};
pub use clock::{Clock, SystemClock};
pub use db::Dialect;
pub use error::StoreError;
pub use read::{HistoryEntry, HistoryPage, HistoryQuery, HistoryScope, ReadOutcome};
pub use search::{EverythingQuery, SearchPage};
pub use write::{ImportStats, WriteOutcome, WriteRequest};

use db::Pool;

/// Options that do not come from the database URL.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// This server's FHIR base URL (no trailing slash): absolute references to it are treated
    /// as relative ones in searches.
    pub base_url: String,
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { base_url: "http://localhost:8080/fhir".into(), max_connections: 8 }
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
    pub body: String,
}

#[derive(Clone)]
pub struct Store {
    pool: Pool,
    options: Arc<StoreOptions>,
    clock: Arc<dyn Clock>,
    registry: &'static fhir::Registry,
}

impl Store {
    /// Connect (creating the SQLite file if needed) and run the backend's migrations.
    /// `postgres://` and `postgresql://` URLs select PostgreSQL; anything else is a SQLite path
    /// (`sqlite://path` or a plain path).
    pub async fn connect(url: &str, options: StoreOptions, clock: Arc<dyn Clock>) -> Result<Store, StoreError> {
        let pool = Pool::connect(url, options.max_connections).await?;
        Ok(Store { pool, options: Arc::new(options), clock, registry: fhir::Registry::r4() })
    }

    pub fn dialect(&self) -> Dialect {
        self.pool.dialect()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Readiness: can we run a query?
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut lease = self.pool.read_conn().await?;
        let sql = db::Sql { dialect: self.dialect(), text: "SELECT CAST(1 AS BIGINT)".into(), params: vec![] };
        lease.conn().fetch(&sql, &[db::Col::Int]).await?;
        Ok(())
    }

    /// Refresh planner statistics (after a bulk import).
    pub async fn analyze(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_write().await?;
        let sql = db::Sql { dialect: self.dialect(), text: "ANALYZE".into(), params: vec![] };
        tx.conn().execute(&sql).await?;
        tx.commit().await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
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
