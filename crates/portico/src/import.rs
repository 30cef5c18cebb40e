//! `portico import`: load Bundles and NDJSON into the store, keeping resource ids so a second
//! run writes nothing new (unchanged resources are detected by content hash).
//!
//! Files are read and parsed on a blocking thread while the previous batch is written, and each
//! batch is one database transaction. If a batch fails, its files are retried one by one so the
//! bad file is named and the others still load.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use store::{PreparedImport, Store, StoreError};

use crate::run::{open_store, RunError};
use crate::ImportArgs;

#[derive(Debug, Default)]
pub struct ImportSummary {
    pub files: usize,
    pub failed: Vec<(PathBuf, String)>,
    pub written: usize,
    pub unchanged: usize,
    pub seconds: f64,
}

pub async fn run(args: ImportArgs) -> Result<ImportSummary, RunError> {
    let store = open_store(&args.db, "http://localhost/fhir", 0).await?;
    let files = collect_files(&args.paths);
    if files.is_empty() {
        return Err(RunError::Import("no .json, .ndjson, .json.gz or .ndjson.gz files found".into()));
    }
    let started = std::time::Instant::now();
    let dropped_indexes = store.begin_bulk_load().await?;
    if dropped_indexes {
        tracing::info!("empty database: search indexes are built after loading");
    }
    let summary = import_files(&store, files, args.batch.max(1), !args.quiet, args.from).await;
    // Rebuild indexes and statistics even when the import stopped early.
    store.end_bulk_load().await?;
    let mut summary = summary?;
    // The rate includes building the indexes and statistics.
    summary.seconds = started.elapsed().as_secs_f64();
    store.close().await;
    println!(
        "imported {} files: {} resources written, {} unchanged, {} files failed, {:.1} s ({:.0} resources/s)",
        summary.files - summary.failed.len(),
        summary.written,
        summary.unchanged,
        summary.failed.len(),
        summary.seconds,
        (summary.written + summary.unchanged) as f64 / summary.seconds.max(1e-9)
    );
    for (path, error) in &summary.failed {
        println!("  failed: {}: {error}", path.display());
    }
    if summary.failed.is_empty() {
        Ok(summary)
    } else {
        Err(RunError::Import(format!("{} file(s) could not be imported", summary.failed.len())))
    }
}

/// A file read, parsed, validated and indexed (or why not).
struct Parsed {
    path: PathBuf,
    resources: Result<PreparedImport, String>,
}

pub async fn import_files(
    store: &Store,
    files: Vec<PathBuf>,
    batch: usize,
    progress: bool,
    from: Option<fhir::convert::Version>,
) -> Result<ImportSummary, RunError> {
    let started = Instant::now();
    let mut summary = ImportSummary { files: files.len(), ..ImportSummary::default() };
    let bar = if progress {
        let bar = ProgressBar::new(files.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} files  {msg}  [{elapsed_precise}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    // Read, parse, validate and index on a blocking thread, a few files ahead of the writer,
    // so the CPU work of the next batch overlaps the database writes of the current one.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Parsed>(16);
    let preparer = store.clone();
    let reader = tokio::task::spawn_blocking(move || {
        for path in files {
            let resources = read_file(&path, from).and_then(|r| preparer.prepare_import(r).map_err(|e| describe(&e)));
            if tx.blocking_send(Parsed { path, resources }).is_err() {
                break;
            }
        }
    });

    let mut pending: Vec<Parsed> = Vec::new();
    let mut pending_len = 0;
    while let Some(parsed) = rx.recv().await {
        match &parsed.resources {
            Err(e) => summary.failed.push((parsed.path.clone(), e.clone())),
            Ok(r) => {
                pending_len += r.len();
                pending.push(parsed);
            }
        }
        if pending_len >= batch {
            write_batch(store, std::mem::take(&mut pending), &mut summary, &bar, started, from).await?;
            pending_len = 0;
        }
    }
    write_batch(store, pending, &mut summary, &bar, started, from).await?;
    reader.await.map_err(|e| RunError::Import(format!("file reader stopped: {e}")))?;
    bar.finish_and_clear();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

async fn write_batch(
    store: &Store,
    batch: Vec<Parsed>,
    summary: &mut ImportSummary,
    bar: &ProgressBar,
    started: Instant,
    from: Option<fhir::convert::Version>,
) -> Result<(), RunError> {
    if batch.is_empty() {
        return Ok(());
    }
    let files = batch.len() as u64;
    let mut paths = Vec::with_capacity(batch.len());
    let mut all = PreparedImport::default();
    for parsed in batch {
        paths.push(parsed.path);
        if let Ok(prepared) = parsed.resources {
            all.merge(prepared);
        }
    }
    match store.import_prepared(all).await {
        Ok(stats) => {
            summary.written += stats.written;
            summary.unchanged += stats.unchanged;
        }
        Err(StoreError::Database(e)) => return Err(RunError::Store(StoreError::Database(e))),
        Err(_) => {
            // Find the bad file(s): read them again and retry one file per transaction (rare,
            // so the common path moves resources instead of keeping copies).
            for path in paths {
                let outcome = match read_file(&path, from) {
                    Ok(resources) => store.import(resources).await,
                    Err(e) => Err(StoreError::BadRequest(e)),
                };
                match outcome {
                    Ok(stats) => {
                        summary.written += stats.written;
                        summary.unchanged += stats.unchanged;
                    }
                    Err(StoreError::Database(e)) => return Err(RunError::Store(StoreError::Database(e))),
                    Err(e) => summary.failed.push((path, describe(&e))),
                }
            }
        }
    }
    bar.inc(files);
    let done = summary.written + summary.unchanged;
    bar.set_message(format!("{done} resources, {:.0}/s", done as f64 / started.elapsed().as_secs_f64().max(1e-9)));
    Ok(())
}

fn describe(e: &StoreError) -> String {
    match e {
        StoreError::InBundle { index, source } => format!("resource #{index}: {}", describe(source)),
        StoreError::Invalid(issues) => issues
            .iter()
            .take(3)
            .map(|i| match &i.expression {
                Some(at) => format!("{at}: {}", i.diagnostics),
                None => i.diagnostics.clone(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

pub fn collect_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            // Symbolic links are followed (a folder of links to exports is a common way to pick
            // some); walkdir detects loops.
            for entry in walkdir::WalkDir::new(path).follow_links(true).sort_by_file_name().into_iter().flatten() {
                if entry.file_type().is_file() && is_importable(entry.path()) {
                    files.push(entry.into_path());
                }
            }
        } else {
            // Named files are taken as they are (a missing one is reported when read).
            files.push(path.clone());
        }
    }
    files
}

fn is_importable(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    [".json", ".ndjson", ".json.gz", ".ndjson.gz"].iter().any(|ext| name.ends_with(ext))
}

/// A file's text, gunzipped when its name ends in `.gz`.
pub fn read_text(path: &Path) -> Result<String, String> {
    let raw = std::fs::read(path).map_err(|e| e.to_string())?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.ends_with(".gz") {
        let mut out = String::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice()).read_to_string(&mut out).map_err(|e| format!("gzip: {e}"))?;
        Ok(out)
    } else {
        String::from_utf8(raw).map_err(|_| "not UTF-8 text".to_string())
    }
}

/// A file's resources; `from` converts DSTU2 or STU3 content to R4 first.
pub fn read_file(path: &Path, from: Option<fhir::convert::Version>) -> Result<Vec<Value>, String> {
    let text = read_text(path)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.trim_end_matches(".gz").ends_with(".ndjson") {
        let mut resources = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", n + 1))?;
            resources.extend(resources_of(converted(value, from)?)?);
        }
        return Ok(resources);
    }
    let value: Value = serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?;
    resources_of(converted(value, from)?)
}

fn converted(value: Value, from: Option<fhir::convert::Version>) -> Result<Value, String> {
    match from {
        None => Ok(value),
        Some(version) => {
            let mut report = fhir::convert::Report::default();
            fhir::convert::convert(version, value, &mut report).map_err(|e| e.to_string())
        }
    }
}

pub fn resources_of(value: Value) -> Result<Vec<Value>, String> {
    match value.get("resourceType").and_then(Value::as_str) {
        Some("Bundle")
            if matches!(value.get("type").and_then(Value::as_str), Some("transaction" | "batch" | "collection")) =>
        {
            resources_of_bundle(value)
        }
        Some(_) => {
            if value.get("id").and_then(Value::as_str).is_none() {
                return Err("a resource without an id cannot be imported (ids are kept)".into());
            }
            Ok(vec![value])
        }
        None => Err("not a FHIR resource (no resourceType)".into()),
    }
}

/// The resources of a Bundle with `fullUrl` references (e.g. `urn:uuid:…`) rewritten to
/// `Type/id`. A resource keeps its id; one without gets a stable id derived from its fullUrl.
pub fn resources_of_bundle(mut bundle: Value) -> Result<Vec<Value>, String> {
    let Some(Value::Array(entries)) = bundle.get_mut("entry").map(Value::take) else { return Ok(Vec::new()) };
    let mut map = HashMap::new();
    let mut resources = Vec::with_capacity(entries.len());
    for (i, mut entry) in entries.into_iter().enumerate() {
        let method = entry.pointer("/request/method").and_then(Value::as_str).unwrap_or("PUT");
        if matches!(method, "DELETE" | "GET" | "HEAD") {
            continue;
        }
        let full_url = entry.get("fullUrl").and_then(Value::as_str).map(String::from);
        let Some(mut resource) = entry.get_mut("resource").map(Value::take) else { continue };
        let rtype = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or(format!("entry {i} has no resourceType"))?
            .to_string();
        let id = match resource.get("id").and_then(Value::as_str) {
            Some(id) => id.to_string(),
            None => {
                // Without an id or fullUrl nothing can refer to the entry; its id comes from
                // its content (and place), so that a re-import gives it the same one.
                let seed = full_url.clone().unwrap_or_else(|| format!("entry-{i}-{resource}"));
                let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, seed.as_bytes()).to_string();
                if let Some(obj) = resource.as_object_mut() {
                    obj.insert("id".into(), Value::String(id.clone()));
                }
                id
            }
        };
        if let Some(url) = full_url {
            map.insert(url, format!("{rtype}/{id}"));
        }
        resources.push(resource);
    }
    for resource in &mut resources {
        fhir::references::rewrite(resource, &map);
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::collect_files;

    #[cfg(unix)]
    #[test]
    fn folders_of_links_are_followed() {
        let exports = tempfile::tempdir().unwrap();
        let picked = tempfile::tempdir().unwrap();
        std::fs::write(exports.path().join("a.json"), "{}").unwrap();
        std::fs::write(exports.path().join("notes.txt"), "").unwrap();
        std::os::unix::fs::symlink(exports.path().join("a.json"), picked.path().join("a.json")).unwrap();
        std::os::unix::fs::symlink(exports.path().join("notes.txt"), picked.path().join("notes.txt")).unwrap();
        std::os::unix::fs::symlink(exports.path(), picked.path().join("all")).unwrap();
        let found = collect_files(&[picked.path().to_path_buf()]);
        let names: Vec<String> =
            found.iter().map(|p| p.strip_prefix(picked.path()).unwrap().display().to_string()).collect();
        assert_eq!(names, ["a.json", "all/a.json"]);
    }
}
