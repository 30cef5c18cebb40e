//! The object store export files go to: a local folder, or any store `object_store` reaches by
//! URL (S3-compatible services with the `AWS_*` variables).

use std::sync::Arc;

use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;

use crate::{BulkError, Objects, Result};

/// Open `storage`: a folder path or `file://` URL (created if missing), or an `s3://` URL.
pub fn open(storage: &str) -> Result<Objects> {
    if let Some(rest) = storage.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let s3 = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| BulkError::Config(format!("bulk storage {storage}: {e}")))?;
        let prefix = prefix.trim_matches('/');
        return Ok(if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix)) });
    }
    let dir = storage.strip_prefix("file://").unwrap_or(storage);
    if dir.contains("://") {
        return Err(BulkError::Config(format!("bulk storage '{storage}': use a folder, file:// or s3://")));
    }
    std::fs::create_dir_all(dir).map_err(|e| BulkError::Config(format!("bulk storage folder {dir}: {e}")))?;
    let local = LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| BulkError::Config(format!("bulk storage folder {dir}: {e}")))?;
    Ok(Arc::new(local))
}

/// `{job}/{name}`: every file of a job under one prefix, so removing a job removes a folder.
pub fn path(job: &str, name: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("{job}/{name}"))
}

pub fn job_prefix(job: &str) -> object_store::path::Path {
    object_store::path::Path::from(job)
}
