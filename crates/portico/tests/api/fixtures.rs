//! `portico import` of the real Synthea fixtures, read back through the HTTP API.
//!
//! Also the shared fixture helpers of `search_oracle`: reading the gzip Bundles independently of
//! the CLI (own `urn:uuid:` → `Type/id` rewrite), importing them with the real CLI and comparing
//! stored resources with fixture resources.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{cli_import, synthea_dir, synthea_files, Backend, TestServer};

both_backends!(import_and_read_back);

/// How many fixture bundles the fixture tests import (all with `PORTICO_FULL_FIXTURES=1`).
pub const DEFAULT_BUNDLES: usize = 40;

/// `(resourceType, id)`
pub type Key = (String, String);

/// The fixture files and their resources (as `portico import` should store them).
pub struct Fixtures {
    /// Per file, its resources with `urn:uuid:` references rewritten to `Type/id`.
    pub bundles: Vec<Vec<Value>>,
}

impl Fixtures {
    /// Read and rewrite the given gzip Bundles (in parallel: the full set is ~190k resources).
    pub fn load(files: &[PathBuf]) -> Fixtures {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
        let chunk = files.len().div_ceil(threads).max(1);
        let bundles = std::thread::scope(|scope| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || part.iter().map(|f| bundle_resources(&read_json(f))).collect::<Vec<_>>())
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("fixture reader thread")).collect()
        });
        Fixtures { bundles }
    }

    /// The content each key ends up with: the last occurrence in import (file) order.
    pub fn latest(&self) -> HashMap<Key, &Value> {
        let mut latest = HashMap::new();
        for r in self.bundles.iter().flatten() {
            latest.insert(key_of(r), r);
        }
        latest
    }

    /// Keys that occur with different content in different places (Synthea repeats its
    /// Organizations and Practitioners in every patient bundle and once more, with utilization
    /// extensions, in `hospitalInformation*`/`practitionerInformation*`).
    pub fn conflicting(&self) -> HashSet<Key> {
        let mut first: HashMap<Key, &Value> = HashMap::new();
        let mut conflicting = HashSet::new();
        for r in self.bundles.iter().flatten() {
            let k = key_of(r);
            match first.get(&k) {
                Some(seen) if *seen != r => {
                    conflicting.insert(k);
                }
                Some(_) => {}
                None => {
                    first.insert(k, r);
                }
            }
        }
        conflicting
    }

    /// Distinct resources per type.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (t, _) in self.latest().keys() {
            *counts.entry(t.clone()).or_default() += 1;
        }
        counts
    }
}

pub fn key_of(r: &Value) -> Key {
    (r["resourceType"].as_str().unwrap_or_default().to_string(), r["id"].as_str().unwrap_or_default().to_string())
}

/// A `.json` / `.json.gz` file as JSON.
pub fn read_json(path: &Path) -> Value {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let text = if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("gunzip {}: {e}", path.display()));
        text
    } else {
        String::from_utf8(raw).expect("utf-8")
    };
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// The resources of a Bundle with every `reference` naming one of its `fullUrl`s rewritten to
/// `Type/id` (written here independently of `fhir::references`).
pub fn bundle_resources(bundle: &Value) -> Vec<Value> {
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    let mut map = HashMap::new();
    let mut resources = Vec::new();
    for entry in entries {
        if matches!(entry["request"]["method"].as_str(), Some("DELETE" | "GET" | "HEAD")) {
            continue;
        }
        let resource = entry["resource"].clone();
        if !resource.is_object() {
            continue;
        }
        let (t, id) = key_of(&resource);
        assert!(!id.is_empty(), "fixture resources carry ids");
        if let Some(url) = entry["fullUrl"].as_str() {
            map.insert(url.to_string(), format!("{t}/{id}"));
        }
        resources.push(resource);
    }
    for r in &mut resources {
        rewrite_references(r, &map);
    }
    resources
}

fn rewrite_references(value: &mut Value, map: &HashMap<String, String>) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj.iter_mut() {
                match (k.as_str(), &*v) {
                    ("reference", Value::String(s)) => {
                        if let Some(to) = map.get(s) {
                            *v = Value::String(to.clone());
                        }
                    }
                    _ => rewrite_references(v, map),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| rewrite_references(i, map)),
        _ => {}
    }
}

/// The numbers of `portico import`'s summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub written: usize,
    pub unchanged: usize,
    pub failed: usize,
}

/// Parse `imported N files: W resources written, U unchanged, F files failed, …`.
pub fn parse_summary(stdout: &str) -> Option<Summary> {
    let line = stdout.lines().find(|l| l.starts_with("imported "))?;
    let number_before = |marker: &str| -> Option<usize> {
        let head = &line[..line.find(marker)?];
        head.rsplit(|c: char| !c.is_ascii_digit()).find(|s| !s.is_empty())?.parse().ok()
    };
    Some(Summary {
        files: number_before(" files:")?,
        written: number_before(" resources written")?,
        unchanged: number_before(" unchanged")?,
        failed: number_before(" files failed")?,
    })
}

/// Run the CLI off the async workers; returns (success, stdout, stderr).
pub async fn run_import(database_url: &str, files: Vec<PathBuf>) -> (bool, String, String) {
    let url = database_url.to_string();
    let out = tokio::task::spawn_blocking(move || cli_import(&url, &files)).await.expect("import task");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Import fixture files with the CLI into the server's database; it must succeed entirely.
pub async fn import_ok(s: &TestServer, files: &[PathBuf]) -> Summary {
    let (ok, stdout, stderr) = run_import(&s.database_url, files.to_vec()).await;
    assert!(ok, "portico import failed\nstdout: {stdout}\nstderr: {stderr}");
    let summary = parse_summary(&stdout).unwrap_or_else(|| panic!("no summary line in: {stdout}"));
    assert_eq!((summary.files, summary.failed), (files.len(), 0), "{stdout}");
    summary
}

/// A server whose database holds the given fixture files, imported by the CLI.
pub async fn imported_server(backend: Backend, files: &[PathBuf]) -> Option<(TestServer, Summary)> {
    let s = TestServer::start(backend).await?;
    let summary = import_ok(&s, files).await;
    Some((s, summary))
}

/// A stored resource without the server-assigned `meta.versionId`/`meta.lastUpdated` (and
/// without `meta` if nothing else is left), plus the versionId it had.
pub fn without_server_meta(mut r: Value) -> (Value, Option<String>) {
    let mut version = None;
    if let Some(obj) = r.as_object_mut() {
        let mut drop_meta = false;
        if let Some(Value::Object(meta)) = obj.get_mut("meta") {
            version = meta.shift_remove("versionId").and_then(|v| v.as_str().map(String::from));
            meta.shift_remove("lastUpdated");
            drop_meta = meta.is_empty();
        }
        if drop_meta {
            obj.shift_remove("meta");
        }
    }
    (r, version)
}

/// Where two JSON values first differ (for failure messages).
pub fn first_difference(a: &Value, b: &Value, at: &str) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) if p == q => {}
                    (Some(p), Some(q)) => return first_difference(p, q, &format!("{at}.{k}")),
                    (p, q) => return format!("{at}.{k}: {p:?} vs {q:?}"),
                }
            }
            format!("{at}: objects differ")
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                if p != q {
                    return first_difference(p, q, &format!("{at}[{i}]"));
                }
            }
            format!("{at}: arrays differ")
        }
        _ => format!("{at}: {a} vs {b}"),
    }
}

/// What the store keeps of a fixture resource: the same content plus the sensitivity labels the
/// default labeler adds in `meta.security`.
pub fn labeled(resource: &Value) -> Value {
    let mut r = resource.clone();
    if let Value::Object(map) = &mut r {
        fhir::labels::Labeler::default_lists().apply(map);
    }
    r
}

/// Read every key back through HTTP and compare with the expected content: `GET Type/id` for
/// `by_read`, batched `GET Type?_id=…&_count=100` for `by_search`. Returns one message per
/// problem. `expect_v1` lists keys whose versionId must be "1".
pub async fn read_back(
    s: &TestServer,
    expected: &HashMap<Key, &Value>,
    by_read: &[Key],
    by_search: &[Key],
    expect_v1: &dyn Fn(&Key) -> bool,
) -> Vec<String> {
    let check = |k: &Key, got: Value| -> Option<String> {
        let want = expected.get(k).copied()?;
        let (got, version) = without_server_meta(got);
        let (want, _) = without_server_meta(labeled(want));
        if got != want {
            return Some(format!("{}/{} differs: {}", k.0, k.1, first_difference(&want, &got, &k.0)));
        }
        if expect_v1(k) && version.as_deref() != Some("1") {
            return Some(format!("{}/{} has versionId {version:?}, expected \"1\"", k.0, k.1));
        }
        None
    };
    let mut problems = Vec::new();

    let reads = futures::stream::iter(by_read.iter().cloned())
        .map(|k| async move {
            let (status, body) = s.get(&format!("{}/{}", k.0, k.1)).await;
            (k, status, body)
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    for (k, status, body) in reads {
        if status != 200 {
            problems.push(format!("GET {}/{}: status {status}", k.0, k.1));
        } else {
            problems.extend(check(&k, body));
        }
    }

    let mut by_type: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (t, id) in by_search {
        by_type.entry(t).or_default().push(id);
    }
    let mut batches = Vec::new();
    for (t, ids) in &by_type {
        for chunk in ids.chunks(100) {
            batches.push((t.to_string(), chunk.iter().map(|i| i.to_string()).collect::<Vec<_>>()));
        }
    }
    let pages = futures::stream::iter(batches)
        .map(|(t, ids)| async move {
            let (status, bundle) = s.get(&format!("{t}?_id={}&_count=100", ids.join(","))).await;
            (t, ids, status, bundle)
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for (t, ids, status, bundle) in pages {
        if status != 200 {
            problems.push(format!("GET {t}?_id=… ({} ids): status {status}", ids.len()));
            continue;
        }
        let mut found = HashSet::new();
        for e in bundle["entry"].as_array().into_iter().flatten() {
            let k = key_of(&e["resource"]);
            if k.0 != t || !ids.contains(&k.1) || !found.insert(k.1.clone()) {
                problems.push(format!("GET {t}?_id=…: unexpected or repeated entry {}/{}", k.0, k.1));
                continue;
            }
            problems.extend(check(&k, e["resource"].clone()));
        }
        if bundle["link"].as_array().into_iter().flatten().any(|l| l["relation"] == "next") {
            problems.push(format!("GET {t}?_id=… ({} ids, _count=100) has a next link", ids.len()));
        }
        for id in ids.iter().filter(|id| !found.contains(*id)) {
            problems.push(format!("{t}/{id} not returned by _id search"));
        }
    }
    problems
}

fn report(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s), first ones:\n  {}",
        problems.len(),
        problems.iter().take(15).cloned().collect::<Vec<_>>().join("\n  ")
    );
}

async fn import_and_read_back(backend: Backend) {
    let Some(dir) = synthea_dir() else { return };
    let all = synthea_files(&dir, usize::MAX);
    let files = synthea_files(&dir, DEFAULT_BUNDLES);
    let fixtures = Fixtures::load(&files);
    let total_entries: usize = fixtures.bundles.iter().map(Vec::len).sum();
    let latest = fixtures.latest();
    let conflicting = fixtures.conflicting();

    // 1. import with the CLI
    let Some((s, first)) = imported_server(backend, &files).await else { return };
    assert!(
        first.written >= latest.len(),
        "every distinct resource is written at least once: {first:?} vs {}",
        latest.len()
    );
    assert!(first.written + first.unchanged <= total_entries, "{first:?} vs {total_entries} entries");
    // The load into an empty database set indexes aside and built them at its end: the
    // database has every index a freshly migrated one has.
    let Some(fresh) = TestServer::start(backend).await else { return };
    assert_eq!(index_names(&s.database_url).await, index_names(&fresh.database_url).await);
    drop(fresh);

    // 2. re-import: nothing new. Files holding a resource whose final content differs (only
    //    with the full fixture set) would rightly write again, so they are left out.
    let clean: Vec<PathBuf> = files
        .iter()
        .zip(&fixtures.bundles)
        .filter(|(_, resources)| resources.iter().all(|r| latest.get(&key_of(r)).is_some_and(|l| *l == r)))
        .map(|(f, _)| f.clone())
        .collect();
    assert!(!clean.is_empty());
    let (ok, stdout, stderr) = run_import(&s.database_url, clean.clone()).await;
    assert!(ok, "re-import failed\n{stdout}\n{stderr}");
    assert!(stdout.contains(" 0 resources written,"), "re-import summary says 0 resources written: {stdout}");
    let again = parse_summary(&stdout).expect("summary");
    assert_eq!((again.files, again.written, again.failed), (clean.len(), 0, 0), "{stdout}");

    // 3. every resource reads back equal to the fixture; versionIds stay "1"
    let mut keys: Vec<Key> = Vec::new();
    let mut seen = HashSet::new();
    for r in fixtures.bundles.iter().flatten() {
        if seen.insert(key_of(r)) {
            keys.push(key_of(r));
        }
    }
    let sample: HashSet<Key> = fixtures.bundles.iter().take(5).flatten().map(key_of).collect();
    let (by_read, by_search): (Vec<Key>, Vec<Key>) = keys.into_iter().partition(|k| sample.contains(k));
    assert!(!by_read.is_empty() && (files.len() <= 5 || !by_search.is_empty()));
    let problems = read_back(&s, &latest, &by_read, &by_search, &|k| !conflicting.contains(k)).await;
    report("read back", &problems);

    // 4. counts per type
    for (t, n) in fixtures.counts() {
        let (status, bundle) = s.get(&format!("{t}?_summary=count")).await;
        assert_eq!(status, 200);
        assert_eq!(bundle["total"].as_u64(), Some(n as u64), "{t}?_summary=count");
        assert!(bundle.get("entry").is_none_or(|e| e.as_array().is_some_and(Vec::is_empty)), "{t}: no entries");
    }

    // 5. plain .json (a resource and a Bundle), .ndjson and .ndjson.gz from a folder
    small_files(&s).await;

    // 6. broken files are named, the good ones still load
    broken_files(&s, &all, &files).await;
}

/// The names of a database's indexes (SQLite's automatic ones apart).
async fn index_names(database_url: &str) -> std::collections::BTreeSet<String> {
    use sqlx::Connection;
    let names: Vec<(String,)> = if database_url.starts_with("postgres://") {
        let mut pg = sqlx::PgConnection::connect(database_url).await.expect("connect");
        sqlx::query_as("SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public'")
            .fetch_all(&mut pg)
            .await
            .expect("pg_indexes")
    } else {
        let mut lite = sqlx::SqliteConnection::connect(database_url).await.expect("connect");
        sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_autoindex%'")
            .fetch_all(&mut lite)
            .await
            .expect("sqlite_master")
    };
    let names: std::collections::BTreeSet<String> = names.into_iter().map(|(n,)| n).collect();
    assert!(names.len() > 10, "{names:?}");
    names
}

async fn small_files(s: &TestServer) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let patient = json!({"resourceType": "Patient", "id": "ndjson-p1", "name": [{"family": "Ndjson", "given": ["Nora"]}], "birthDate": "1970-01-02"});
    let obs = |id: &str, code: &str| {
        json!({"resourceType": "Observation", "id": id, "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
               "subject": {"reference": "Patient/ndjson-p1"}, "valueQuantity": {"value": 1.50, "unit": "kg"}})
    };
    let ndjson = format!("{}\n\n{}\n{}\n", patient, obs("ndjson-o1", "29463-7"), obs("ndjson-o2", "8302-2"));
    std::fs::write(tmp.path().join("small.ndjson"), ndjson).expect("write");
    let org = json!({"resourceType": "Organization", "id": "plain-org-1", "name": "Plain JSON Org", "active": true});
    std::fs::write(tmp.path().join("single.json"), org.to_string()).expect("write");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:0f9e8d7c-0000-4000-8000-000000000001",
         "resource": {"resourceType": "Patient", "id": "plain-bundle-p", "gender": "other"},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:0f9e8d7c-0000-4000-8000-000000000002",
         "resource": {"resourceType": "Encounter", "id": "plain-bundle-e", "status": "finished",
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                      "subject": {"reference": "urn:uuid:0f9e8d7c-0000-4000-8000-000000000001"}},
         "request": {"method": "POST", "url": "Encounter"}}
    ]});
    std::fs::write(tmp.path().join("bundle.json"), bundle.to_string()).expect("write");
    let practitioner = json!({"resourceType": "Practitioner", "id": "gz-pr-1", "name": [{"family": "Gzip"}]});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(format!("{practitioner}\n").as_bytes()).expect("gzip");
    std::fs::write(tmp.path().join("more.ndjson.gz"), gz.finish().expect("gzip")).expect("write");
    std::fs::write(tmp.path().join("ignored.txt"), "not imported").expect("write");

    let (ok, stdout, stderr) = run_import(&s.database_url, vec![tmp.path().to_path_buf()]).await;
    assert!(ok, "{stdout}\n{stderr}");
    let summary = parse_summary(&stdout).expect("summary");
    assert_eq!(summary, Summary { files: 4, written: 7, unchanged: 0, failed: 0 }, "{stdout}");

    let mut encounter = bundle["entry"][1]["resource"].clone();
    encounter["subject"]["reference"] = json!("Patient/plain-bundle-p");
    let expected_values = [
        patient,
        obs("ndjson-o1", "29463-7"),
        obs("ndjson-o2", "8302-2"),
        org,
        bundle["entry"][0]["resource"].clone(),
        encounter,
        practitioner,
    ];
    let expected: HashMap<Key, &Value> = expected_values.iter().map(|v| (key_of(v), v)).collect();
    let keys: Vec<Key> = expected.keys().cloned().collect();
    report("small files", &read_back(s, &expected, &keys, &keys, &|_| true).await);
    assert_eq!(s.search_ids("Observation?patient=ndjson-p1").await.len(), 2);
    assert_eq!(s.search_ids("Encounter?subject=Patient/plain-bundle-p").await, vec!["plain-bundle-e"]);
}

async fn broken_files(s: &TestServer, all: &[PathBuf], imported: &[PathBuf]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let not_json = tmp.path().join("broken.json");
    std::fs::write(&not_json, "{\"resourceType\": \"Patient\", \"id\": \"broken-0\",").expect("write");
    let invalid = tmp.path().join("invalid-resource.json");
    let bad = json!({"resourceType": "Patient", "id": "broken-invalid-1", "birthDate": "1980-13-45", "favouriteColour": "green"});
    std::fs::write(&invalid, bad.to_string()).expect("write");
    // Two real bundles: not yet imported ones when there are any.
    let good: Vec<PathBuf> = if all.len() >= imported.len() + 2 {
        all[imported.len()..imported.len() + 2].to_vec()
    } else {
        all[..2].to_vec()
    };
    let args = vec![not_json.clone(), good[0].clone(), invalid.clone(), good[1].clone()];
    let (ok, stdout, stderr) = run_import(&s.database_url, args).await;
    assert!(!ok, "a failed file makes the exit status non-zero\n{stdout}\n{stderr}");
    let summary = parse_summary(&stdout).unwrap_or_else(|| panic!("summary: {stdout}"));
    assert_eq!((summary.files, summary.failed), (2, 2), "{stdout}");
    for path in [&not_json, &invalid] {
        assert!(stdout.contains(&format!("failed: {}:", path.display())), "{} named in:\n{stdout}", path.display());
    }
    for path in &good {
        assert!(!stdout.contains(&format!("failed: {}", path.display())), "good file reported failed:\n{stdout}");
    }
    assert_eq!(s.get("Patient/broken-invalid-1").await.0, 404);
    assert_eq!(s.get("Patient/broken-0").await.0, 404);

    let mut both = imported.to_vec();
    both.extend(good.iter().cloned());
    let fixtures = Fixtures::load(&both);
    let latest = fixtures.latest();
    let good_keys: Vec<Key> =
        fixtures.bundles[imported.len()..].iter().flatten().map(key_of).collect::<HashSet<_>>().into_iter().collect();
    report("good files next to broken ones", &read_back(s, &latest, &[], &good_keys, &|_| false).await);
}
