//! `serve` and `demo`.

use std::sync::Arc;

use server::{AppState, ServerConfig};
use store::{Store, StoreOptions, SystemClock};

use crate::ServeArgs;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("server stopped: {0}")]
    Serve(std::io::Error),
    #[error("import failed: {0}")]
    Import(String),
    #[error("authorization server: {0}")]
    Auth(String),
    #[error("configuration: {0}")]
    Config(String),
}

pub async fn open_store(db: &crate::DbArgs, base_url: &str, cache_mb: u64) -> Result<Store, RunError> {
    let file = read_config(db.config.as_deref())?;
    let labeler = match (&file.labels.file, file.labels.enabled) {
        (_, false) => None,
        (None, true) => Some(Arc::new(fhir::labels::Labeler::defaults())),
        (Some(path), true) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| RunError::Config(format!("cannot read the label lists {}: {e}", path.display())))?;
            Some(Arc::new(fhir::labels::Labeler::from_json(&text).map_err(RunError::Config)?))
        }
    };
    let database_url = db.database_url.as_str();
    let options = StoreOptions {
        base_url: base_url.to_string(),
        cache_bytes: cache_mb << 20,
        labeler,
        ..StoreOptions::default()
    };
    Ok(Store::connect(database_url, options, Arc::new(SystemClock)).await?)
}

pub async fn serve(args: ServeArgs) -> Result<(), RunError> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|source| RunError::Listen { addr: args.listen.clone(), source })?;
    let local = listener.local_addr().map_err(RunError::Serve)?;
    let base_url = args.base_url.clone().unwrap_or_else(|| format!("http://{local}/fhir"));
    let store = open_store(&args.db, &base_url, args.cache_mb).await?;
    tracing::info!(%base_url, database = %redact(&args.db.database_url), "Portico is serving");
    let state =
        AppState::new(store, server_config(&args, base_url)?).await.map_err(|e| RunError::Auth(e.to_string()))?;
    serve_on(listener, state).await
}

/// The settings a `--config` file may hold. Unknown keys are an error, so a typo is not silently
/// ignored.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub auth: oauth::AuthConfig,
    #[serde(default)]
    pub labels: LabelsConfig,
    #[serde(default)]
    pub subscriptions: server::SubscriptionsConfig,
    #[serde(default)]
    pub bulk: bulk::BulkConfig,
}

/// `[labels]`: the sensitivity labeler applied on every write and import.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabelsConfig {
    /// Label at all (default true).
    pub enabled: bool,
    /// A JSON file of code lists replacing Portico's defaults (same format as
    /// crates/fhir/labels/sensitivity-labels.json).
    pub file: Option<std::path::PathBuf>,
}

impl Default for LabelsConfig {
    fn default() -> Self {
        LabelsConfig { enabled: true, file: None }
    }
}

pub fn read_config(path: Option<&std::path::Path>) -> Result<FileConfig, RunError> {
    let Some(path) = path else { return Ok(FileConfig::default()) };
    let text =
        std::fs::read_to_string(path).map_err(|e| RunError::Config(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| RunError::Config(format!("{}: {e}", path.display())))
}

pub fn server_config(args: &ServeArgs, base_url: String) -> Result<ServerConfig, RunError> {
    let file = read_config(args.db.config.as_deref())?;
    if args.dev_open_access {
        tracing::warn!(
            "--dev-open-access: the FHIR API answers requests WITHOUT a token as an administrator's; development only"
        );
    }
    Ok(ServerConfig {
        base_url,
        max_body_bytes: args.max_body_bytes,
        auth: file.auth,
        dev_open_access: args.dev_open_access,
        subscriptions: file.subscriptions,
        bulk: bulk_config(file.bulk, &args.db.database_url),
        ..ServerConfig::default()
    })
}

/// Export files go beside a SQLite database (`portico.db` → `bulk/` in its folder), or to
/// `portico-data/bulk` for PostgreSQL, unless `[bulk] storage` says where.
fn bulk_config(mut bulk: bulk::BulkConfig, database_url: &str) -> bulk::BulkConfig {
    if bulk.storage.is_none() {
        let folder = if store::db::is_postgres_url(database_url) {
            std::path::PathBuf::from("portico-data")
        } else {
            let path = database_url.strip_prefix("sqlite://").unwrap_or(database_url);
            let path = path.split('?').next().unwrap_or(path);
            std::path::Path::new(path).parent().map(std::path::Path::to_path_buf).unwrap_or_default()
        };
        bulk.storage = Some(folder.join("bulk").to_string_lossy().into_owned());
    }
    bulk
}

async fn serve_on(listener: tokio::net::TcpListener, state: AppState) -> Result<(), RunError> {
    server::serve_until(listener, state, stop_requested()).await.map_err(RunError::Serve)
}

/// Ctrl-C or SIGTERM (what `systemctl stop`, `docker stop` and Kubernetes send).
pub async fn stop_requested() {
    let terminate = async {
        #[cfg(unix)]
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            term.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("stopping: finishing the requests in flight and storing the audit trail");
}

/// Never print a password from a database URL.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}
