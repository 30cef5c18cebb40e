//! Boots Portico in-process on 127.0.0.1:0 over a temporary SQLite file or a throw-away
//! PostgreSQL database, and gives tests an HTTP client for it.
//!
//! PostgreSQL tests skip (with a message) when no server answers on 127.0.0.1:5432, unless
//! `PORTICO_REQUIRE_POSTGRES=1` (set by CI), which turns the skip into a failure. Likewise
//! fixture-based tests need `../shared/fixtures` unless `PORTICO_REQUIRE_SHARED=1`.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;
use server::{AppState, ServerConfig};
use store::{ManualClock, Store, StoreOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct TestServer {
    pub base: String,
    pub origin: String,
    pub client: reqwest::Client,
    pub database_url: String,
    pub store: Store,
    /// The server's clock: `clock.advance(secs)` moves time for codes, tokens and sessions.
    pub clock: Arc<ManualClock>,
    /// The authorization server behind the HTTP endpoints.
    pub auth: oauth::AuthServer,
    /// The audit trail writer (`flush` before reading the trail).
    pub audit: server::AuditLog,
    _dir: tempfile::TempDir,
    pg_database: Option<String>,
    task: tokio::task::JoinHandle<()>,
}

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1" || v == "true")
}

/// A fresh database URL for the backend, or None when the backend is unavailable and not required.
pub async fn fresh_database(backend: Backend, dir: &tempfile::TempDir) -> Option<(String, Option<String>)> {
    match backend {
        Backend::Sqlite => Some((dir.path().join("portico.db").display().to_string(), None)),
        Backend::Postgres => {
            let admin = match sqlx::PgPool::connect(PG_ADMIN_URL).await {
                Ok(pool) => pool,
                Err(e) => {
                    assert!(!required("PORTICO_REQUIRE_POSTGRES"), "PostgreSQL required but unreachable: {e}");
                    eprintln!("SKIP: PostgreSQL not reachable on 127.0.0.1:5432 ({e}); set PORTICO_REQUIRE_POSTGRES=1 to fail instead");
                    return None;
                }
            };
            let name = format!("portico_test_{}", uuid_simple());
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create test database");
            admin.close().await;
            Some((format!("postgres://postgres@127.0.0.1:5432/{name}"), Some(name)))
        }
    }
}

fn uuid_simple() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

impl TestServer {
    /// Start a server with an empty database of the given backend (None: skipped).
    /// The FHIR-core tests use the development open mode (no token needed); enforcement tests
    /// use [`TestServer::start_enforcing`].
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, |c| c.dev_open_access = true).await
    }

    /// A server that enforces tokens on the FHIR API, as in production.
    pub async fn start_enforcing(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut ServerConfig)) -> Option<TestServer> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (database_url, pg_database) = fresh_database(backend, &dir).await?;
        Some(Self::serve(database_url, pg_database, dir, tweak).await)
    }

    /// Load resources straight into the store (no token needed), e.g. to seed an enforcing
    /// server.
    pub async fn seed(&self, resources: Vec<Value>) {
        self.store.import(resources).await.expect("seed resources");
    }

    /// Serve an existing database (e.g. one filled by `portico import`).
    pub async fn serve(
        database_url: String,
        pg_database: Option<String>,
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let origin = format!("http://{addr}");
        let base = format!("{origin}/fhir");
        let options = StoreOptions { base_url: base.clone(), ..StoreOptions::default() };
        let clock = Arc::new(ManualClock::new());
        let store = Store::connect(&database_url, options, clock.clone()).await.expect("connect store");
        let mut config = ServerConfig { base_url: base.clone(), ..ServerConfig::default() };
        // Test receivers listen on loopback; the worker looks for work often.
        config.subscriptions.allow_loopback_http = true;
        config.subscriptions.poll_ms = 50;
        tweak(&mut config);
        let state = AppState::new(store.clone(), config).await.expect("server state");
        let auth = state.auth.clone();
        let audit = state.audit.clone();
        let task = tokio::spawn(async move {
            let _ = server::serve(listener, state).await;
        });
        let client =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("http client");
        TestServer { base, origin, client, database_url, store, clock, auth, audit, _dir: dir, pg_database, task }
    }

    pub fn url(&self, path: &str) -> String {
        match path.trim_start_matches('/') {
            "" => self.base.clone(),
            p => format!("{}/{p}", self.base),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(b) = body {
            req = req.header("content-type", "application/fhir+json").body(b.to_string());
        }
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Ids of all matches of a search, following `next` links.
    pub async fn search_ids(&self, path_and_query: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut url = self.url(path_and_query);
        loop {
            let r = self.client.get(&url).send().await.expect("search");
            assert_eq!(r.status().as_u16(), 200, "search {url}");
            let bundle: Value = r.json().await.expect("bundle");
            for e in bundle["entry"].as_array().into_iter().flatten() {
                if e["search"]["mode"] == "match" {
                    ids.push(e["resource"]["id"].as_str().unwrap_or_default().to_string());
                }
            }
            let next = bundle["link"].as_array().into_iter().flatten().find(|l| l["relation"] == "next");
            match next {
                Some(l) => url = l["url"].as_str().expect("next url").to_string(),
                None => break,
            }
        }
        ids
    }
}

/// Drop a throw-away PostgreSQL test database.
pub async fn drop_database(name: &str) -> Result<(), sqlx::Error> {
    let admin = sqlx::PgPool::connect(PG_ADMIN_URL).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await?;
    Ok(())
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(name) = self.pg_database.take() {
            let store = self.store.clone();
            // Drop the throw-away database from a helper thread (Drop cannot await).
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(async move {
                    store.close().await;
                    let _ = drop_database(&name).await;
                });
            })
            .join();
        }
    }
}

/// `../shared/fixtures/synthea-r4`, or None (skip) when absent and not required.
pub fn synthea_dir() -> Option<PathBuf> {
    shared_fixtures("synthea-r4")
}

/// A folder of `../shared/fixtures`, or None (skip) when absent and not required.
pub fn shared_fixtures(name: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures").join(name);
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(!required("PORTICO_REQUIRE_SHARED"), "fixtures required but {} is missing", dir.display());
    eprintln!(
        "SKIP: {} not found (a fresh clone has no ../shared); set PORTICO_REQUIRE_SHARED=1 to fail instead",
        dir.display()
    );
    None
}

/// Sorted fixture bundle paths; `PORTICO_FULL_FIXTURES=1` takes all, otherwise the first `n`.
pub fn synthea_files(dir: &std::path::Path, n: usize) -> Vec<PathBuf> {
    synthea_files_unless(dir, n, "PORTICO_FULL_FIXTURES")
}

/// Sorted fixture bundle paths: all of them when `full_var` is set to 1, otherwise the first `n`.
pub fn synthea_files_unless(dir: &std::path::Path, n: usize, full_var: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .collect();
    files.sort();
    if !required(full_var) {
        files.truncate(n);
    }
    files
}

/// Run `portico import` (the real CLI) into a database.
pub fn cli_import(database_url: &str, files: &[PathBuf]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("import")
        .arg("--quiet")
        .arg("--database-url")
        .arg(database_url)
        .args(files)
        .output()
        .expect("run portico import")
}

/// Define a `sqlite` and a `postgres` test for an `async fn(Backend)`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::harness::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::harness::Backend::Postgres).await
                }
            }
        )*
    };
}

/// A `portico serve` process, killed when dropped.
pub struct ServeProcess(pub std::process::Child);

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ServeProcess {
    /// `portico serve ARGS --listen 127.0.0.1:PORT`, once `/readyz` answers.
    pub async fn start(args: &[&str], port: u16) -> ServeProcess {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .arg("serve")
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("PORTICO_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn portico serve");
        let running = ServeProcess(child);
        let client = reqwest::Client::new();
        for _ in 0..200 {
            let ready = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return running;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("portico serve did not become ready");
    }

    /// `kill -9`: no shutdown hooks, no checkpoint.
    pub fn kill_9(mut self) {
        self.0.kill().expect("kill");
        self.0.wait().expect("wait");
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}
