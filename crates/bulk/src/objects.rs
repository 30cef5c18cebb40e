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

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStore;

    #[tokio::test]
    async fn a_folder_and_file_urls_are_local_stores() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("exports");
        let store = open(&folder.to_string_lossy()).unwrap();
        store.put(&path("job", "Patient-0.ndjson"), b"{}\n".to_vec().into()).await.unwrap();
        assert!(folder.join("job").join("Patient-0.ndjson").is_file());
        let again = open(&format!("file://{}", folder.to_string_lossy())).unwrap();
        let got = again.get(&path("job", "Patient-0.ndjson")).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"{}\n");
        assert!(open("ftp://example.org/x").is_err());
    }

    #[test]
    fn s3_urls_name_a_bucket_and_a_prefix() {
        // Built from the URL and the environment without contacting the service.
        let store = open("s3://exports/portico/bulk").unwrap();
        assert_eq!(store.to_string(), "PrefixObjectStore(portico/bulk)");
        let bare = open("s3://exports").unwrap();
        assert_eq!(bare.to_string(), "AmazonS3(exports)");
    }
}
