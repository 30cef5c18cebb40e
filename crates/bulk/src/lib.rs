//! FHIR Bulk Data Access 2.0 `$export` for Portico.
//!
//! A kick-off is checked at once (parameters, scopes, the group) and becomes a row of the jobs
//! table; workers in any server process claim it under a lease, read each type a page at a
//! time in rkey order through the same `Access` a search gets (scopes, compartments, the
//! person's patient list, withheld categories — in SQL), and stream the stored JSON to NDJSON
//! files in an object store (a local folder by default, S3-compatible storage by URL). After
//! every file the job records how far it got, so a restarted or taken-over job resumes with the
//! next file and writes no line twice. Memory stays flat: one page and one upload buffer.

mod access;
mod associated;
mod manifest;
mod objects;
pub mod request;
mod run;

use std::sync::Arc;

use serde::Deserialize;

pub use request::{Associated, ExportRequest, Level};
pub use run::{Download, Exporter, JobId, Status};

/// The jobs table's `kind` for exports.
pub const JOB_KIND: &str = "bulk-export";

/// `[bulk]` settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BulkConfig {
    pub enabled: bool,
    /// Where files go: a folder path, `file:///path`, or `s3://bucket/prefix` (credentials and
    /// endpoint from the usual `AWS_*` variables, e.g. `AWS_ENDPOINT` for MinIO). `None`: the
    /// server chooses a folder beside its database.
    pub storage: Option<String>,
    /// How long a finished export's files stay downloadable.
    pub file_expiry_seconds: i64,
    /// Status requests closer together than this get 429 (and `Retry-After`).
    pub min_poll_interval_ms: i64,
    /// A worker's claim on a job; renewed as it works, so a dead process's jobs resume after it.
    pub lease_ms: i64,
    /// Resources per NDJSON file (a type with more is split into several files).
    pub resources_per_file: i64,
    /// Resources read per query.
    pub page_size: i64,
    /// An upper bound on the export rate, resources per second per worker (0: none), so a big
    /// export does not crowd out the API on the same database.
    pub max_resources_per_second: u64,
    /// Exports a client may have queued or running at once.
    pub max_active_jobs_per_client: i64,
    /// Export workers in this process.
    pub workers: usize,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            enabled: true,
            storage: None,
            file_expiry_seconds: 3600,
            min_poll_interval_ms: 1000,
            lease_ms: 15_000,
            resources_per_file: 100_000,
            page_size: 1000,
            max_resources_per_second: 0,
            max_active_jobs_per_client: 4,
            workers: 1,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    TooManyJobs(String),
    #[error("storage: {0}")]
    Store(#[from] store::StoreError),
    #[error("authorization: {0}")]
    Auth(#[from] oauth::OAuthError),
    #[error("authorization storage: {0}")]
    AuthStore(#[from] store::auth::AuthStoreError),
    #[error("object store: {0}")]
    Objects(#[from] object_store::Error),
    #[error("object store path: {0}")]
    ObjectPath(#[from] object_store::path::Error),
    #[error("writing an export file: {0}")]
    Io(#[from] std::io::Error),
    #[error("stored job is unreadable: {0}")]
    Json(#[from] serde_json::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("an export page reader stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// A search the job builds itself did not parse: a bug, which fails the job rather than
    /// leaving out what the search would have found.
    #[error("an export's own search did not parse: {0}")]
    OwnSearch(String),
}

pub type Result<T, E = BulkError> = std::result::Result<T, E>;

/// The parts an exporter runs on.
#[derive(Clone)]
pub struct Deps {
    pub store: store::Store,
    pub auth: oauth::AuthServer,
    /// Where status and file URLs point: the server's origin (`https://host`, no path).
    pub origin: String,
    /// The FHIR base URL (for the manifest's `request` and references).
    pub fhir_base: String,
}

pub(crate) type Objects = Arc<dyn object_store::ObjectStore>;
