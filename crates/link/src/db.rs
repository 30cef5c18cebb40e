//! Link's database: the store crate's two-backend layer (SQLite file or PostgreSQL by URL) with
//! Link's own migrations, and the few helpers every module uses.

pub use store::db::{Col, Lease, Rows, Sql, Tx};
pub use store::db::{Dialect, RowExt, SqlValue};
use store::db::{Migrations, Pool};

use crate::error::Result;

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const LINK_MIGRATIONS: Migrations = Migrations { sqlite: &SQLITE, postgres: &POSTGRES };

#[derive(Clone)]
pub struct Db {
    pool: Pool,
}

impl Db {
    /// Open (creating a SQLite file's folder as needed) and migrate.
    pub async fn open(url: &str, max_connections: u32) -> Result<Db> {
        Ok(Db { pool: Pool::connect_with(url, max_connections, &LINK_MIGRATIONS).await? })
    }

    pub fn dialect(&self) -> Dialect {
        self.pool.dialect()
    }

    pub fn sql(&self) -> Sql {
        Sql::new(self.dialect())
    }

    pub async fn read(&self) -> Result<Lease> {
        Ok(self.pool.read_conn().await?)
    }

    pub async fn begin(&self) -> Result<Tx> {
        Ok(self.pool.begin_write().await?)
    }

    /// Rows of a read-only query.
    pub async fn rows(&self, sql: &Sql, cols: &[Col]) -> Result<Rows> {
        let mut lease = self.read().await?;
        Ok(lease.conn().fetch(sql, cols).await?)
    }

    /// One statement in its own write transaction; the rows it changed.
    pub async fn execute(&self, sql: &Sql) -> Result<u64> {
        let mut tx = self.begin().await?;
        let n = tx.conn().execute(sql).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// A writing statement that returns rows (`UPDATE … RETURNING`), in its own transaction.
    pub async fn write_rows(&self, sql: &Sql, cols: &[Col]) -> Result<Rows> {
        let mut tx = self.begin().await?;
        let rows = tx.conn().fetch(sql, cols).await?;
        tx.commit().await?;
        Ok(rows)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// An optional integer column.
pub fn opt_int(row: &[SqlValue], i: usize) -> Option<i64> {
    match row.get(i) {
        Some(SqlValue::Int(v)) => Some(*v),
        _ => None,
    }
}

/// An optional real column.
pub fn opt_real(row: &[SqlValue], i: usize) -> Option<f64> {
    match row.get(i) {
        Some(SqlValue::Real(v)) => Some(*v),
        Some(SqlValue::Int(v)) => Some(*v as f64),
        _ => None,
    }
}

/// An optional real as a bindable value.
pub fn real_value(v: Option<f64>) -> SqlValue {
    v.map_or(SqlValue::NullReal, SqlValue::Real)
}

/// An optional integer as a bindable value.
pub fn int_value(v: Option<i64>) -> SqlValue {
    v.map_or(SqlValue::NullInt, SqlValue::Int)
}
