use fhir::outcome::Issue;

/// Everything the store can fail with. Client mistakes carry what the client needs to fix them;
/// `Database` is an internal failure (logged, answered with 500 and no detail) and is never
/// confused with "not found".
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{resource_type}/{id} is not known")]
    NotFound { resource_type: String, id: String },
    #[error("{resource_type}/{id} was deleted")]
    Gone { resource_type: String, id: String, version: i64, last_updated_ms: i64 },
    #[error("version conflict on {resource_type}/{id}: If-Match asked for {expected}, current is {actual}")]
    VersionConflict { resource_type: String, id: String, expected: i64, actual: i64 },
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error("invalid resource")]
    Invalid(Vec<Issue>),
    #[error("{0}")]
    BadRequest(String),
    /// A URL names something that is not an R4 resource type.
    #[error("'{0}' is not a FHIR R4 resource type")]
    UnknownType(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("{0}")]
    Search(#[from] fhir::search::SearchError),
    /// A failed entry of a transaction Bundle: which entry, and why.
    #[error("transaction failed at entry {index}: {source}")]
    InBundle { index: usize, source: Box<StoreError> },
}
