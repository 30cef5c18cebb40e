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

    /// Load `items` into `table` with PostgreSQL's `COPY ... FROM STDIN` (text format): for many
    /// rows several times cheaper than multi-row `INSERT`s, on both sides of the connection (no
    /// statement to parse and plan, no parameters to bind). `encode` writes an item's columns
    /// into its [`CopyLine`] in the order `columns` names them, so no row of owned values is
    /// built (and no text copied into one) for each of a load's hundreds of thousands of index
    /// rows. `Ok(false)` on SQLite, which has no COPY: the caller inserts instead.
    pub async fn copy_encoded<T: Sync>(
        &mut self,
        table: &str,
        columns: &str,
        items: &[T],
        encode: impl Fn(&mut CopyLine<'_>, &T),
    ) -> Result<bool, StoreError> {
        let Conn::Postgres(c, busy) = self else { return Ok(false) };
        let guard = BusyGuard::start(*busy);
        let mut copy = c.copy_in_raw(&format!("COPY {table} ({columns}) FROM STDIN")).await?;
        let mut buf = Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024);
        for item in items {
            let mut line = CopyLine { buf: &mut buf, first: true };
            encode(&mut line, item);
            buf.push(b'\n');
            if buf.len() >= COPY_CHUNK_BYTES {
                copy.send(std::mem::replace(&mut buf, Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024))).await?;
            }
        }
        if !buf.is_empty() {
            copy.send(buf).await?;
        }
        copy.finish().await?;
        guard.done();
        Ok(true)
    }
}

/// One row being written in COPY's text format: columns separated by tabs, `\N` for NULL, and
/// backslash, tab, newline and carriage return escaped in text.
pub struct CopyLine<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
}

impl CopyLine<'_> {
    fn separate(&mut self) {
        if !std::mem::take(&mut self.first) {
            self.buf.push(b'\t');
        }
    }

    pub fn int(&mut self, v: i64) -> &mut Self {
        self.separate();
        let mut digits = itoa::Buffer::new();
        self.buf.extend_from_slice(digits.format(v).as_bytes());
        self
    }

    pub fn real(&mut self, v: f64) -> &mut Self {
        use std::io::Write;
        self.separate();
        if v.is_nan() {
            self.buf.extend_from_slice(b"NaN");
        } else if v.is_infinite() {
            self.buf.extend_from_slice(if v > 0.0 { &b"Infinity"[..] } else { &b"-Infinity"[..] });
        } else {
            // Debug prints the shortest text that reads back as the same double.
            let _ = write!(self.buf, "{v:?}");
        }
        self
    }

    pub fn text(&mut self, text: &str) -> &mut Self {
        self.separate();
        copy_escape(self.buf, text);
        self
    }

    /// Text, or NULL for `None`.
    pub fn opt_text(&mut self, text: Option<&str>) -> &mut Self {
        match text {
            Some(text) => self.text(text),
            None => self.null(),
        }
    }

    pub fn null(&mut self) -> &mut Self {
        self.separate();
        self.buf.extend_from_slice(b"\\N");
        self
    }

    pub fn value(&mut self, value: &SqlValue) -> &mut Self {
        match value {
            SqlValue::Int(v) => self.int(*v),
            SqlValue::Real(v) => self.real(*v),
            SqlValue::Text(text) => self.text(text),
            SqlValue::NullText | SqlValue::NullInt | SqlValue::NullReal => self.null(),
        }
    }
}

/// How much COPY data is sent per message.
const COPY_CHUNK_BYTES: usize = 1 << 20;

fn copy_escape(buf: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    // Bodies are compact JSON (no raw tab, newline or carriage return; a backslash in every
    // escape), so in long texts the reserved bytes are found by memchr's vectorised scans;
    // short ones (codes, ids) are cheaper to walk than to set those scans up for.
    let walk = bytes.len() < 64 || memchr::memchr(b'\r', bytes).is_some();
    let mut start = 0;
    loop {
        let next = if walk {
            bytes[start..].iter().position(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
        } else {
            memchr::memchr3(b'\\', b'\t', b'\n', &bytes[start..])
        };
        let Some(offset) = next else { break };
        let i = start + offset;
        buf.extend_from_slice(&bytes[start..i]);
        buf.extend_from_slice(match bytes[i] {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            _ => b"\\r",
        });
        start = i + 1;
    }
    buf.extend_from_slice(&bytes[start..]);
}

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

    #[test]
    fn copy_escape_finds_every_reserved_byte_with_or_without_carriage_returns() {
        for (text, escaped) in [
            ("plain", "plain"),
            ("a\tb\\c\nd\\", "a\\tb\\\\c\\nd\\\\"),
            ("\r\\x\ty\r", "\\r\\\\x\\ty\\r"),
            ("{\"div\":\"<p class=\\\"a\\\">\"}", "{\"div\":\"<p class=\\\\\"a\\\\\">\"}"),
        ] {
            let mut buf = Vec::new();
            copy_escape(&mut buf, text);
            assert_eq!(String::from_utf8(buf).unwrap(), escaped, "{text:?}");
        }
    }

    #[test]
    fn copy_lines_escape_what_the_text_format_reserves() {
        let mut buf = Vec::new();
        let row = [
            SqlValue::Int(-42),
            SqlValue::Real(0.1),
            SqlValue::Real(1e300),
            SqlValue::Text("a\tb\\n\"q\" \\ é\r\n".into()),
            SqlValue::NullText,
            SqlValue::Real(f64::NEG_INFINITY),
            SqlValue::Text(String::new()),
        ];
        let mut line = CopyLine { buf: &mut buf, first: true };
        for value in &row {
            line.value(value);
        }
        buf.push(b'\n');
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "-42\t0.1\t1e300\ta\\tb\\\\n\"q\" \\\\ é\\r\\n\t\\N\t-Infinity\t\n"
        );
    }
}
