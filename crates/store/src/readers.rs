//! Connections for reads, handed out and taken back without a round trip.
//!
//! sqlx's pool pings a connection each time it takes one back, and by default each time it
//! hands one out: two extra round trips for a search that is itself one. On PostgreSQL each is
//! a `Sync` message and its `ReadyForQuery` answer, with a wake-up of the backend; on SQLite,
//! whose driver runs each connection on a thread of its own, each is a command sent to that
//! thread and its answer, two thread wake-ups. Reads (every [`crate::db::Pool::read_conn`]
//! user; SQLite opens those connections read-only) come from this pool instead, which knows
//! when a connection is clean: each operation marks its connection busy while it runs
//! ([`BusyGuard`]), so a connection whose operation failed or was abandoned mid-way (the
//! request was cancelled) is closed, never handed out again with an unread answer pending. A
//! connection idle for longer than [`VALIDATE_AFTER_IDLE`] is pinged before use, as HikariCP
//! does, so one that PostgreSQL closed meanwhile (a restart, an idle timeout) is replaced rather
//! than failing a request. Write transactions stay on sqlx's pool: they are fewer, and
//! `sqlx::Transaction` needs its connections.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{ConnectOptions, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::StoreError;

/// A connection idle longer than this is pinged before it is handed out.
pub(crate) const VALIDATE_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The read pool (see the module's documentation), of PostgreSQL or SQLite connections.
pub struct Readers<C: Connection> {
    options: C::Options,
    idle: Mutex<Vec<Idle<C>>>,
    permits: Arc<Semaphore>,
    acquire_timeout: Duration,
    /// [`VALIDATE_AFTER_IDLE`], or another threshold in tests.
    validate_after_idle: Duration,
}

pub type PgReaders = Readers<sqlx::PgConnection>;
pub type SqliteReaders = Readers<sqlx::SqliteConnection>;

struct Idle<C> {
    conn: C,
    since: Instant,
}

impl<C: Connection> Readers<C> {
    pub(crate) fn new(options: C::Options, max_connections: u32, acquire_timeout: Duration) -> Readers<C> {
        Readers {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max_connections.max(1) as usize)),
            acquire_timeout,
            validate_after_idle: VALIDATE_AFTER_IDLE,
        }
    }

    /// A connection: an idle one (the most recently used, whose backend or SQLite page cache is
    /// likeliest still warm), validated if it sat idle a while, or a new one. Waiting for a
    /// permit, checks and connecting together take at most the acquire timeout.
    pub(crate) async fn acquire(self: &Arc<Self>) -> Result<Reader<C>, StoreError> {
        tokio::time::timeout(self.acquire_timeout, self.acquire_within())
            .await
            .map_err(|_| StoreError::Database(sqlx::Error::PoolTimedOut))?
    }

    async fn acquire_within(self: &Arc<Self>) -> Result<Reader<C>, StoreError> {
        let permit =
            self.permits.clone().acquire_owned().await.map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
        while let Some(Idle { mut conn, since }) = self.pop_idle() {
            if since.elapsed() < self.validate_after_idle || conn.ping().await.is_ok() {
                return Ok(self.lease(conn, permit));
            }
            tracing::debug!("a pooled read connection failed its check; opening another");
        }
        let conn = self.options.connect().await?;
        Ok(self.lease(conn, permit))
    }

    fn pop_idle(&self) -> Option<Idle<C>> {
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop()
    }

    fn lease(self: &Arc<Self>, conn: C, permit: OwnedSemaphorePermit) -> Reader<C> {
        Reader { conn: Some(conn), busy: AtomicBool::new(false), home: Arc::clone(self), permit: Some(permit) }
    }

    /// Has [`Self::close`] run?
    pub(crate) fn is_closed(&self) -> bool {
        self.permits.is_closed()
    }

    /// Close the pool: later acquires fail (as sqlx's pool does once closed), idle connections
    /// are closed politely, and leased ones when they come back.
    pub(crate) async fn close(&self) {
        self.permits.close();
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        for Idle { conn, .. } in idle {
            let _ = conn.close().await;
        }
    }
}

/// One leased read connection; back to its pool when dropped, unless an operation on it did not
/// finish.
pub struct Reader<C: Connection> {
    conn: Option<C>,
    busy: AtomicBool,
    home: Arc<Readers<C>>,
    /// Held until the connection is back in the pool or closed (see `drop`).
    permit: Option<OwnedSemaphorePermit>,
}

pub type PgReader = Reader<sqlx::PgConnection>;
pub type SqliteReader = Reader<sqlx::SqliteConnection>;

impl<C: Connection> Reader<C> {
    /// The connection, and the flag its operations mark it busy with.
    pub(crate) fn parts(&mut self) -> (&mut C, &AtomicBool) {
        match self.conn.as_mut() {
            Some(conn) => (conn, &self.busy),
            // Only `drop` takes the connection out.
            None => unreachable!("a Reader's connection is taken only when it is dropped"),
        }
    }
}

impl<C: Connection> Drop for Reader<C> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        // Released at the end of this function, once the connection is back among the idle
        // ones, so a caller waiting for a permit finds it there.
        let permit = self.permit.take();
        if self.busy.load(Ordering::Relaxed) {
            tracing::debug!("a read was abandoned or failed mid-way; its connection is closed");
            // The permit goes back only once the connection is closed. SQLite's worker thread
            // takes the close after the statement it is running, so a client that gives up on
            // a costly search does not leave that statement running beside a full pool of new
            // ones (sqlx's pool held its slot the same way, waiting for its ping's answer).
            // PostgreSQL's close sends `Terminate` and shuts the socket without waiting.
            let closing = conn.close();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = closing.await;
                    drop(permit);
                });
            }
            return;
        }
        if self.home.permits.is_closed() {
            return;
        }
        self.home
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Idle { conn, since: Instant::now() });
    }
}

/// Run `op`, one operation on a read connection, with the connection marked busy until the
/// operation has its whole answer (see [`BusyGuard`]). `op` is a future, so it does nothing
/// before it is awaited here.
pub(crate) async fn while_busy<T, E>(
    flag: Option<&AtomicBool>,
    op: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let guard = BusyGuard::start(flag);
    let answer = op.await?;
    guard.done();
    Ok(answer)
}

/// Marks a reader busy for the life of one operation; [`BusyGuard::done`] clears the mark once
/// the operation has read its whole answer.
pub struct BusyGuard<'a>(Option<&'a AtomicBool>);

impl<'a> BusyGuard<'a> {
    pub(crate) fn start(flag: Option<&'a AtomicBool>) -> BusyGuard<'a> {
        if let Some(flag) = flag {
            flag.store(true, Ordering::Relaxed);
        }
        BusyGuard(flag)
    }

    pub(crate) fn done(self) {
        if let Some(flag) = self.0 {
            flag.store(false, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::PgConnection;

    use super::*;
    use crate::db::{Col, Lease, RowExt, Sql};

    const URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// A reader pool on the local server's `postgres` database, or `None` (the test skips) when
    /// none answers and `PORTICO_REQUIRE_POSTGRES` is not set.
    async fn readers(max: u32, validate_after_idle: Duration) -> Option<Arc<PgReaders>> {
        let options = crate::db::local_postgres().await?;
        let mut pool = PgReaders::new(options, max, Duration::from_secs(5));
        pool.validate_after_idle = validate_after_idle;
        Some(Arc::new(pool))
    }

    /// One statement on a leased connection, returned with it when done (or abandoned).
    async fn fetch(pool: &Arc<PgReaders>, text: &str) -> Result<crate::db::Rows, StoreError> {
        let mut lease = Lease::Postgres(pool.acquire().await.expect("acquire"));
        let mut sql = Sql::new(crate::db::Dialect::Postgres);
        sql.push(text);
        lease.conn().fetch(&sql, &[Col::Int]).await
    }

    async fn query_int(pool: &Arc<PgReaders>, text: &str) -> i64 {
        fetch(pool, text).await.expect("query")[0].int(0)
    }

    #[tokio::test]
    async fn a_clean_connection_is_handed_out_again() {
        let Some(pool) = readers(1, VALIDATE_AFTER_IDLE).await else { return };
        let first = query_int(&pool, "SELECT pg_backend_pid()::bigint").await;
        let second = query_int(&pool, "SELECT pg_backend_pid()::bigint").await;
        assert_eq!(first, second, "one connection, reused");
    }

    #[tokio::test]
    async fn a_read_abandoned_mid_way_closes_its_connection() {
        let Some(pool) = readers(1, VALIDATE_AFTER_IDLE).await else { return };
        let before = query_int(&pool, "SELECT pg_backend_pid()::bigint").await;
        // The answer to this one arrives after its future is gone: a connection handed out
        // again with it unread would answer the next query with it.
        let abandoned = fetch(&pool, "SELECT 7::bigint FROM pg_sleep(0.3)");
        assert!(tokio::time::timeout(Duration::from_millis(50), abandoned).await.is_err());
        assert_eq!(query_int(&pool, "SELECT 42::bigint").await, 42);
        let after = query_int(&pool, "SELECT pg_backend_pid()::bigint").await;
        assert_ne!(before, after, "the abandoned connection was not reused");
    }

    #[tokio::test]
    async fn a_failed_read_closes_its_connection() {
        let Some(pool) = readers(1, VALIDATE_AFTER_IDLE).await else { return };
        let before = query_int(&pool, "SELECT pg_backend_pid()::bigint").await;
        assert!(fetch(&pool, "SELECT no_such_column FROM pg_class").await.is_err());
        assert_eq!(query_int(&pool, "SELECT 5::bigint").await, 5);
        assert_ne!(before, query_int(&pool, "SELECT pg_backend_pid()::bigint").await);
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_closed_is_replaced() {
        // Every idle connection is checked before use here (the threshold is zero).
        let Some(pool) = readers(1, Duration::ZERO).await else { return };
        let victim = query_int(&pool, "SELECT pg_backend_pid()::bigint").await;
        let mut admin = PgConnection::connect(URL).await.expect("admin connection");
        let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1::int)")
            .bind(victim)
            .fetch_one(&mut admin)
            .await
            .expect("terminate");
        assert!(killed);
        // The check fails on the dead connection and a new one answers.
        assert_eq!(query_int(&pool, "SELECT 9::bigint").await, 9);
        assert_ne!(victim, query_int(&pool, "SELECT pg_backend_pid()::bigint").await);
    }

    #[tokio::test]
    async fn a_closed_pool_hands_out_nothing() {
        let Some(pool) = readers(2, VALIDATE_AFTER_IDLE).await else { return };
        let leased = pool.acquire().await.expect("acquire");
        assert_eq!(query_int(&pool, "SELECT 1::bigint").await, 1);
        pool.close().await;
        assert!(matches!(pool.acquire().await, Err(StoreError::Database(sqlx::Error::PoolClosed))));
        drop(leased);
        assert!(pool.pop_idle().is_none(), "a connection leased before the close is not kept");
    }

    #[tokio::test]
    async fn callers_beyond_the_limit_wait_for_a_connection() {
        let Some(pool) = readers(1, VALIDATE_AFTER_IDLE).await else { return };
        let held = pool.acquire().await.expect("acquire");
        let waiting = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { query_int(&pool, "SELECT 3::bigint").await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        assert_eq!(waiting.await.expect("join"), 3);
    }

    /// A SQLite read pool over an in-memory database. (sqlx shares that database between the
    /// pool's connections, so a connection is told apart by a TEMP table, which is its own.)
    fn sqlite_readers() -> Arc<SqliteReaders> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").expect("options");
        Arc::new(SqliteReaders::new(options, 1, Duration::from_secs(5)))
    }

    async fn sqlite_fetch(pool: &Arc<SqliteReaders>, text: &str) -> Result<crate::db::Rows, StoreError> {
        let mut lease = Lease::Sqlite(pool.acquire().await.expect("acquire"));
        let mut sql = Sql::new(crate::db::Dialect::Sqlite);
        sql.push(text);
        lease.conn().fetch(&sql, &[Col::Int]).await
    }

    /// Is the connection the one that ran [`sqlite_mark`]?
    async fn sqlite_marked(pool: &Arc<SqliteReaders>) -> bool {
        let rows =
            sqlite_fetch(pool, "SELECT COUNT(*) FROM sqlite_temp_master WHERE name = 'mark'").await.expect("query");
        rows[0].int(0) == 1
    }

    async fn sqlite_mark(pool: &Arc<SqliteReaders>) {
        sqlite_fetch(pool, "CREATE TEMP TABLE mark (x INTEGER)").await.expect("create");
        assert!(sqlite_marked(pool).await);
    }

    #[tokio::test]
    async fn sqlite_a_clean_connection_is_handed_out_again() {
        let pool = sqlite_readers();
        sqlite_mark(&pool).await;
        assert!(sqlite_marked(&pool).await, "one connection, reused");
    }

    #[tokio::test]
    async fn sqlite_a_failed_read_closes_its_connection() {
        let pool = sqlite_readers();
        sqlite_mark(&pool).await;
        assert!(sqlite_fetch(&pool, "SELECT no_such_column FROM sqlite_master").await.is_err());
        assert!(!sqlite_marked(&pool).await, "a new connection after the failure");
    }

    #[tokio::test]
    async fn sqlite_a_read_abandoned_mid_way_closes_its_connection() {
        let pool = sqlite_readers();
        sqlite_mark(&pool).await;
        // Counting to 3M keeps the worker thread busy for a good part of a second; the future
        // is dropped long before.
        let slow = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) \
                    SELECT MAX(i) FROM n";
        assert!(tokio::time::timeout(Duration::from_millis(50), sqlite_fetch(&pool, slow)).await.is_err());
        // The abandoned statement still runs, and holds the pool's only permit until it ends.
        assert_eq!(pool.permits.available_permits(), 0);
        let rows = sqlite_fetch(&pool, "SELECT 42").await.expect("query");
        assert_eq!(rows[0].int(0), 42);
        assert!(!sqlite_marked(&pool).await, "the abandoned connection was not reused");
    }
}
