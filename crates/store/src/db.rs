//! The two concrete sqlx backends behind one small interface.
//!
//! All store logic builds `Sql` values (text plus typed parameters) once, in the dialect of the
//! backend at hand, and runs them through `Conn`. Only binding, decoding and a few dialect
//! snippets differ between SQLite and PostgreSQL, so search and write logic exist only once.

use std::str::FromStr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgConnection, PgPool, Row, SqliteConnection, SqlitePool};

use crate::readers::{while_busy, BusyGuard, PgReader, PgReaders, SqliteReader, SqliteReaders};
use crate::StoreError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound parameter value. Nulls are typed because PostgreSQL insists.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Int(i64),
    Real(f64),
    Text(String),
    NullText,
    /// A NULL bound as an integer (PostgreSQL will not put a text NULL in a BIGINT column).
    NullInt,
    /// A NULL bound as a double.
    NullReal,
}

impl From<i64> for SqlValue {
    fn from(v: i64) -> Self {
        SqlValue::Int(v)
    }
}
impl From<f64> for SqlValue {
    fn from(v: f64) -> Self {
        SqlValue::Real(v)
    }
}
impl From<&str> for SqlValue {
    fn from(v: &str) -> Self {
        SqlValue::Text(v.to_string())
    }
}
impl From<String> for SqlValue {
    fn from(v: String) -> Self {
        SqlValue::Text(v)
    }
}
impl From<Option<String>> for SqlValue {
    fn from(v: Option<String>) -> Self {
        v.map_or(SqlValue::NullText, SqlValue::Text)
    }
}
impl From<Option<&str>> for SqlValue {
    fn from(v: Option<&str>) -> Self {
        v.map_or(SqlValue::NullText, |s| SqlValue::Text(s.to_string()))
    }
}

/// SQL text with its parameters, written for one dialect.
#[derive(Debug, Clone)]
pub struct Sql {
    pub dialect: Dialect,
    pub text: String,
    pub params: Vec<SqlValue>,
    /// Kept as a prepared statement on the connection (the default). See [`Sql::planned_each_time`].
    pub persistent: bool,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Sql {
        Sql { dialect, text: String::with_capacity(256), params: Vec::new(), persistent: true }
    }

    /// SQL text to run as it is, without parameters.
    pub fn raw(dialect: Dialect, text: impl Into<String>) -> Sql {
        Sql { dialect, text: text.into(), params: Vec::new(), persistent: true }
    }

    /// Plan this statement for its values every time it runs. A prepared statement that
    /// PostgreSQL has switched to a generic plan keeps the plan it chose when the table was
    /// small: during a bulk load the existence checks kept a sequential scan (each one reading
    /// the whole growing table) until the load slowed to a crawl.
    pub fn planned_each_time(&mut self) -> &mut Sql {
        self.persistent = false;
        self
    }

    pub fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Append a placeholder for `value`.
    pub fn bind(&mut self, value: impl Into<SqlValue>) -> &mut Sql {
        self.params.push(value.into());
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.params.len().to_string());
            }
        }
        self
    }

    /// Append `(?, ?, ...)` for a list of values.
    pub fn bind_list<V: Into<SqlValue>>(&mut self, values: impl IntoIterator<Item = V>) -> &mut Sql {
        self.text.push('(');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(v);
        }
        self.text.push(')');
        self
    }
}

/// Column kinds to decode a row into `SqlValue`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Int,
    Real,
    Text,
}

pub type Rows = Vec<Vec<SqlValue>>;

/// Pools: SQLite gets a single-connection writer (SQLite allows one writer; queueing in the pool
/// avoids SQLITE_BUSY) and [`SqliteReaders`] for reads; PostgreSQL sqlx's pool for transactions
/// and [`PgReaders`] for reads.
#[derive(Clone)]
pub enum Pool {
    Sqlite { read: Arc<SqliteReaders>, write: SqlitePool },
    Postgres { pool: PgPool, readers: Arc<PgReaders> },
}

/// A connection or transaction of either backend. A read connection comes with the flag its
/// operations mark it busy with (see [`crate::readers`]).
pub enum Conn<'a> {
    Sqlite(&'a mut SqliteConnection, Option<&'a AtomicBool>),
    Postgres(&'a mut PgConnection, Option<&'a AtomicBool>),
}

pub enum Tx {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl Tx {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite(tx) => Conn::Sqlite(tx, None),
            Tx::Postgres(tx) => Conn::Postgres(tx, None),
        }
    }
    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

pub enum Lease {
    Sqlite(SqliteReader),
    Postgres(PgReader),
}

impl Lease {
    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            Lease::Sqlite(reader) => {
                let (conn, busy) = reader.parts();
                Conn::Sqlite(conn, Some(busy))
            }
            Lease::Postgres(reader) => {
                let (conn, busy) = reader.parts();
                Conn::Postgres(conn, Some(busy))
            }
        }
    }
}

/// How long a caller waits for a connection before the store reports the database unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite's `cache_size` for the writer connection outside bulk loads (negative: KiB). Its
/// steady work is the audit trail's inserts, whose index pages the OS page cache also holds;
/// 8 MB rather than 16 keeps the server's resident memory within its budget.
pub(crate) const WRITER_CACHE_SIZE: &str = "-8000";

/// The schema migrations of one database, per backend (each backend has its own folder).
pub struct Migrations {
    pub sqlite: &'static sqlx::migrate::Migrator,
    pub postgres: &'static sqlx::migrate::Migrator,
}

static STORE_SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static STORE_POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The resource store's own migrations.
pub const STORE_MIGRATIONS: Migrations = Migrations { sqlite: &STORE_SQLITE, postgres: &STORE_POSTGRES };

/// Does this database URL select PostgreSQL (otherwise it is a SQLite file)?
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl Pool {
    pub async fn connect(url: &str, max_connections: u32) -> Result<Pool, StoreError> {
        Self::connect_with(url, max_connections, &STORE_MIGRATIONS).await
    }

    /// Open a database by URL and bring its schema up to date with `migrations`.
    pub async fn connect_with(url: &str, max_connections: u32, migrations: &Migrations) -> Result<Pool, StoreError> {
        if is_postgres_url(url) {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options.clone())
                .await?;
            migrations.postgres.run(&pool).await?;
            let readers = Arc::new(PgReaders::new(options, max_connections, ACQUIRE_TIMEOUT));
            return Ok(Pool::Postgres { pool, readers });
        }
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| StoreError::Config(format!("{}: {e}", parent.display())))?;
            }
        }
        // WAL + synchronous=NORMAL: a committed transaction is in the WAL file before commit
        // returns, so it survives the process being killed (only an OS crash could lose it).
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(false)
            .pragma("temp_store", "memory")
            .statement_cache_capacity(64);
        // Page cache per connection (KiB): the one writer gets more (bulk imports raise it
        // further while they run); readers share the OS page cache, so a small private cache
        // keeps resident memory low.
        let options_write = options.clone().pragma("cache_size", WRITER_CACHE_SIZE);
        let options = options.pragma("cache_size", "-2000");
        let write = SqlitePoolOptions::new().max_connections(1).min_connections(1).connect_with(options_write).await?;
        migrations.sqlite.run(&write).await?;
        let read = Arc::new(SqliteReaders::new(options.read_only(true), max_connections, ACQUIRE_TIMEOUT));
        Ok(Pool::Sqlite { read, write })
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Pool::Sqlite { .. } => Dialect::Sqlite,
            Pool::Postgres { .. } => Dialect::Postgres,
        }
    }

    pub async fn read_conn(&self) -> Result<Lease, StoreError> {
        Ok(match self {
            Pool::Sqlite { read, .. } => Lease::Sqlite(read.acquire().await?),
            Pool::Postgres { readers, .. } => Lease::Postgres(readers.acquire().await?),
        })
    }

    /// Begin a write transaction. SQLite's single writer connection serialises this process's
    /// writers; `BEGIN IMMEDIATE` takes the file's write lock up front (waiting out the busy
    /// timeout) because another process, such as `portico task-link create` beside a running
    /// server, may write too: a deferred transaction that read first and then writes after the
    /// other process committed fails at once with "database is locked" instead of waiting.
    pub async fn begin_write(&self) -> Result<Tx, StoreError> {
        Ok(match self {
            Pool::Sqlite { write, .. } => Tx::Sqlite(write.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres { pool, .. } => Tx::Postgres(pool.begin().await?),
        })
    }

    /// Run a setting (a PRAGMA) on SQLite's writer connection, outside any transaction; some
    /// settings may not change inside one. Nothing on PostgreSQL.
    pub async fn configure_sqlite_writer(&self, pragma: &str) -> Result<(), StoreError> {
        if let Pool::Sqlite { write, .. } = self {
            sqlx::query(pragma).execute(write).await?;
        }
        Ok(())
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Pool::Sqlite { read, .. } => read.is_closed(),
            Pool::Postgres { pool, .. } => pool.is_closed(),
        }
    }

    pub async fn close(&self) {
        match self {
            Pool::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Pool::Postgres { pool, readers } => {
                readers.close().await;
                pool.close().await
            }
        }
    }
}

macro_rules! bind_all {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                SqlValue::Int(v) => q.bind(*v),
                SqlValue::Real(v) => q.bind(*v),
                SqlValue::Text(v) => q.bind(v.as_str()),
                SqlValue::NullText => q.bind(None::<&str>),
                SqlValue::NullInt => q.bind(None::<i64>),
                SqlValue::NullReal => q.bind(None::<f64>),
            };
        }
        q
    }};
}

/// Like `bind_all!`, moving the text values into the query (SQLite's driver copies borrowed
/// text once more to hand it to its worker thread).
macro_rules! bind_all_owned {
    ($query:expr, $params:expr) => {{
        let mut q = $query;
        for p in $params {
            q = match p {
                SqlValue::Int(v) => q.bind(v),
                SqlValue::Real(v) => q.bind(v),
                SqlValue::Text(v) => q.bind(v),
                SqlValue::NullText => q.bind(None::<String>),
                SqlValue::NullInt => q.bind(None::<i64>),
                SqlValue::NullReal => q.bind(None::<f64>),
            };
        }
        q
    }};
}

impl Conn<'_> {
    /// [`Conn::execute`] for a statement used once: its values are moved, not copied.
    pub async fn execute_owned(&mut self, sql: Sql) -> Result<u64, StoreError> {
        let Sql { text, params, persistent, .. } = sql;
        Ok(match self {
            Conn::Sqlite(c, busy) => {
                while_busy(*busy, bind_all_owned!(sqlx::query(&text).persistent(persistent), params).execute(&mut **c))
                    .await?
                    .rows_affected()
            }
            Conn::Postgres(c, busy) => {
                while_busy(*busy, bind_all_owned!(sqlx::query(&text).persistent(persistent), params).execute(&mut **c))
                    .await?
                    .rows_affected()
            }
        })
    }

    pub async fn execute(&mut self, sql: &Sql) -> Result<u64, StoreError> {
        Ok(match self {
            Conn::Sqlite(c, busy) => while_busy(
                *busy,
                bind_all!(sqlx::query(&sql.text).persistent(sql.persistent), &sql.params).execute(&mut **c),
            )
            .await?
            .rows_affected(),
            Conn::Postgres(c, busy) => while_busy(
                *busy,
                bind_all!(sqlx::query(&sql.text).persistent(sql.persistent), &sql.params).execute(&mut **c),
            )
            .await?
            .rows_affected(),
        })
    }

    pub async fn fetch(&mut self, sql: &Sql, cols: &[Col]) -> Result<Rows, StoreError> {
        match self {
            Conn::Sqlite(c, busy) => {
                let rows = while_busy(
                    *busy,
                    bind_all!(sqlx::query(&sql.text).persistent(sql.persistent), &sql.params).fetch_all(&mut **c),
                )
                .await?;
                rows.iter().map(|row| decode_sqlite(row, cols)).collect()
            }
            Conn::Postgres(c, busy) => {
                let rows = while_busy(
                    *busy,
                    bind_all!(sqlx::query(&sql.text).persistent(sql.persistent), &sql.params).fetch_all(&mut **c),
                )
                .await?;
                rows.iter().map(|row| decode_pg(row, cols)).collect()
            }
        }
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(..) => Dialect::Sqlite,
            Conn::Postgres(..) => Dialect::Postgres,
        }
    }

    /// Load `items` into `table` with PostgreSQL's `COPY ... FROM STDIN` in its binary format:
    /// for many rows several times cheaper than multi-row `INSERT`s, on both sides of the
    /// connection (no statement to parse and plan, no parameters to bind). `encode` writes an
    /// item's columns into its [`CopyLine`] in the order `columns` names them, so no row of owned
    /// values is built (and no text copied into one) for each of a load's hundreds of thousands
    /// of index rows. `Ok(false)` on SQLite, which has no COPY: the caller inserts instead.
    pub async fn copy_encoded<T: Sync>(
        &mut self,
        table: &str,
        columns: &str,
        items: &[T],
        encode: impl Fn(&mut CopyLine<'_>, &T),
    ) -> Result<bool, StoreError> {
        let Conn::Postgres(c, busy) = self else { return Ok(false) };
        let guard = BusyGuard::start(*busy);
        let mut copy = c.copy_in_raw(&format!("COPY {table} ({columns}) FROM STDIN (FORMAT binary)")).await?;
        let mut buf = Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024);
        buf.extend_from_slice(COPY_BINARY_HEADER);
        for item in items {
            let mut line = CopyLine::start(&mut buf);
            encode(&mut line, item);
            if let Err(e) = line.finish() {
                // End the COPY on the server (it rolls back what this one sent), so the
                // connection is left ready for the transaction's rollback.
                copy.abort("a value too large for COPY").await?;
                return Err(e);
            }
            if buf.len() >= COPY_CHUNK_BYTES {
                copy.send(std::mem::replace(&mut buf, Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024))).await?;
            }
        }
        buf.extend_from_slice(&(-1i16).to_be_bytes());
        copy.send(buf).await?;
        copy.finish().await?;
        guard.done();
        Ok(true)
    }
}

/// The binary COPY format's signature, then its flags and header-extension length (none).
const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// One row being written in COPY's binary format: a 16-bit field count, then each field as a
/// 32-bit byte length (-1 for NULL) and its bytes in the column type's binary form (`int` for
/// `BIGINT`, `real` for `DOUBLE PRECISION`, `text` for `TEXT`). Binary rows need no escaping on
/// either side: with the text format PostgreSQL scanned every byte of every body for tabs,
/// newlines and backslashes and then copied it once more to undo the escapes.
pub struct CopyLine<'a> {
    buf: &'a mut Vec<u8>,
    /// Where the row's field count goes, filled in by `finish`.
    count_at: usize,
    fields: usize,
    /// A text too long for a field's 32-bit length (PostgreSQL takes at most 1 GB anyway).
    too_long: bool,
}

impl<'a> CopyLine<'a> {
    fn start(buf: &'a mut Vec<u8>) -> CopyLine<'a> {
        let count_at = buf.len();
        buf.extend_from_slice(&[0, 0]);
        CopyLine { buf, count_at, fields: 0, too_long: false }
    }

    fn finish(self) -> Result<(), StoreError> {
        let count = i16::try_from(self.fields).ok().filter(|_| !self.too_long);
        let Some(count) = count else {
            return Err(StoreError::BadRequest("a value is too large for the database".into()));
        };
        self.buf[self.count_at..self.count_at + 2].copy_from_slice(&count.to_be_bytes());
        Ok(())
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.fields += 1;
        match i32::try_from(bytes.len()) {
            Ok(len) => {
                self.buf.extend_from_slice(&len.to_be_bytes());
                self.buf.extend_from_slice(bytes);
            }
            Err(_) => self.too_long = true,
        }
        self
    }

    pub fn int(&mut self, v: i64) -> &mut Self {
        self.field(&v.to_be_bytes())
    }

    pub fn real(&mut self, v: f64) -> &mut Self {
        self.field(&v.to_bits().to_be_bytes())
    }

    pub fn text(&mut self, text: &str) -> &mut Self {
        self.field(text.as_bytes())
    }

    /// Text, or NULL for `None`.
    pub fn opt_text(&mut self, text: Option<&str>) -> &mut Self {
        match text {
            Some(text) => self.text(text),
            None => self.null(),
        }
    }

    pub fn null(&mut self) -> &mut Self {
        self.fields += 1;
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }
}

/// How much COPY data is sent per message.
const COPY_CHUNK_BYTES: usize = 1 << 20;

fn decode_sqlite(row: &sqlx::sqlite::SqliteRow, cols: &[Col]) -> Result<Vec<SqlValue>, StoreError> {
    let mut out = Vec::with_capacity(cols.len());
    for (i, col) in cols.iter().enumerate() {
        out.push(match col {
            Col::Int => row.try_get::<Option<i64>, _>(i)?.map_or(SqlValue::NullText, SqlValue::Int),
            Col::Real => row.try_get::<Option<f64>, _>(i)?.map_or(SqlValue::NullText, SqlValue::Real),
            Col::Text => row.try_get::<Option<String>, _>(i)?.map_or(SqlValue::NullText, SqlValue::Text),
        });
    }
    Ok(out)
}

fn decode_pg(row: &sqlx::postgres::PgRow, cols: &[Col]) -> Result<Vec<SqlValue>, StoreError> {
    let mut out = Vec::with_capacity(cols.len());
    for (i, col) in cols.iter().enumerate() {
        out.push(match col {
            Col::Int => row.try_get::<Option<i64>, _>(i)?.map_or(SqlValue::NullText, SqlValue::Int),
            Col::Real => row.try_get::<Option<f64>, _>(i)?.map_or(SqlValue::NullText, SqlValue::Real),
            Col::Text => row.try_get::<Option<String>, _>(i)?.map_or(SqlValue::NullText, SqlValue::Text),
        });
    }
    Ok(out)
}

/// Typed accessors for decoded rows.
pub trait RowExt {
    fn int(&self, i: usize) -> i64;
    fn text(&self, i: usize) -> Option<&str>;
    fn take_text(&mut self, i: usize) -> Option<String>;
}

impl RowExt for Vec<SqlValue> {
    fn int(&self, i: usize) -> i64 {
        match self.get(i) {
            Some(SqlValue::Int(v)) => *v,
            Some(SqlValue::Real(v)) => *v as i64,
            _ => 0,
        }
    }
    fn text(&self, i: usize) -> Option<&str> {
        match self.get(i) {
            Some(SqlValue::Text(v)) => Some(v),
            _ => None,
        }
    }
    fn take_text(&mut self, i: usize) -> Option<String> {
        match self.get_mut(i) {
            Some(SqlValue::Text(v)) => Some(std::mem::take(v)),
            _ => None,
        }
    }
}

/// The local PostgreSQL server's `postgres` database for the store's own tests, or `None` (the
/// test skips) when none answers and `PORTICO_REQUIRE_POSTGRES` is not set.
#[cfg(test)]
pub(crate) async fn local_postgres() -> Option<PgConnectOptions> {
    use sqlx::Connection;
    let options = PgConnectOptions::from_str("postgres://postgres@127.0.0.1:5432/postgres").ok()?;
    if let Err(e) = PgConnection::connect_with(&options).await {
        let required = std::env::var("PORTICO_REQUIRE_POSTGRES").is_ok_and(|v| v == "1" || v == "true");
        assert!(!required, "PostgreSQL required but unreachable: {e}");
        eprintln!(
            "SKIP: PostgreSQL not reachable on 127.0.0.1:5432 ({e}); set PORTICO_REQUIRE_POSTGRES=1 to fail instead"
        );
        return None;
    }
    Some(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    /// A write transaction holds the SQLite file's write lock from its first moment, so a second
    /// process's writer waits for it rather than slipping in between its reads and writes.
    #[tokio::test]
    async fn a_sqlite_write_transaction_takes_the_write_lock_when_it_begins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock.db");
        let pool = Pool::connect(path.to_str().unwrap(), 2).await.unwrap();
        let other_options = SqliteConnectOptions::new().filename(&path).busy_timeout(Duration::ZERO);
        let mut other = sqlx::SqliteConnection::connect_with(&other_options).await.unwrap();

        let tx = pool.begin_write().await.unwrap();
        let err = sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap_err();
        assert!(err.to_string().contains("database is locked"), "{err}");
        tx.commit().await.unwrap();

        sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
        pool.close().await;
    }

    /// The row the COPY tests write: every kind of field, with texts the text format had to
    /// escape (tab, newline, carriage return, backslash) and non-ASCII ones.
    fn encode_sample(line: &mut CopyLine<'_>) {
        line.int(-42)
            .real(0.1)
            .real(f64::NEG_INFINITY)
            .text("a\tb\\n\"q\" \\ é\r\n")
            .opt_text(None)
            .text("")
            .opt_text(Some("Ω"));
    }

    #[test]
    fn a_copy_line_is_a_field_count_then_each_field_by_length() {
        let mut buf = Vec::new();
        let mut line = CopyLine::start(&mut buf);
        line.int(-2).text("é").null().real(1.5);
        line.finish().unwrap();
        let mut expected = vec![0, 4];
        expected.extend_from_slice(&[0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0xc3, 0xa9]);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        assert_eq!(buf, expected);
        assert_eq!(COPY_BINARY_HEADER.len(), 19, "signature, flags, extension length");
    }

    /// PostgreSQL reads back exactly what was written, on the local server (skipped, like the
    /// other PostgreSQL tests, when none answers and `PORTICO_REQUIRE_POSTGRES` is not set).
    #[tokio::test]
    async fn postgres_reads_back_every_field_of_a_binary_copy() {
        let Some(options) = local_postgres().await else { return };
        let mut pg = sqlx::PgConnection::connect_with(&options).await.unwrap();
        sqlx::query(
            "CREATE TEMP TABLE copied (i BIGINT, r DOUBLE PRECISION, inf DOUBLE PRECISION, t TEXT, \
             n TEXT, e TEXT, o TEXT)",
        )
        .execute(&mut pg)
        .await
        .unwrap();
        let rows: Vec<u8> = (0..3).collect();
        let copied = Conn::Postgres(&mut pg, None)
            .copy_encoded("copied", "i, r, inf, t, n, e, o", &rows, |line, _| encode_sample(line))
            .await
            .unwrap();
        assert!(copied);
        type Row = (i64, f64, f64, String, Option<String>, String, Option<String>);
        let back: Vec<Row> =
            sqlx::query_as("SELECT i, r, inf, t, n, e, o FROM copied").fetch_all(&mut pg).await.unwrap();
        assert_eq!(back.len(), 3);
        for row in back {
            assert_eq!(
                row,
                (
                    -42,
                    0.1,
                    f64::NEG_INFINITY,
                    "a\tb\\n\"q\" \\ é\r\n".to_owned(),
                    None,
                    String::new(),
                    Some("Ω".to_owned())
                )
            );
        }
        // A load that sends nothing is still a well-formed COPY.
        let none: [u8; 0] = [];
        assert!(Conn::Postgres(&mut pg, None)
            .copy_encoded("copied", "i", &none, |line, _| {
                line.int(1);
            })
            .await
            .unwrap());
    }
}
