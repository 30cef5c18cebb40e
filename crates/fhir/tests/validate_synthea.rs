//! Real data: every resource of the shared Synthea R4 transaction Bundles must validate.
//!
//! The fixtures live outside the repository, in `shared/fixtures/synthea-r4` beside the checkout.
//! Without them the tests print a skip message and pass, unless `PORTICO_REQUIRE_SHARED=1`.
//! By default 50 bundles are checked; `PORTICO_FULL_FIXTURES=1` checks all of them.
//!
//! Speed (release build, whole fixture set):
//! `cargo test --release -p fhir --test validate_synthea -- --ignored --nocapture`

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use fhir::validate::Validator;
use serde_json::Value;

const DEFAULT_BUNDLES: usize = 50;

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// The sorted fixture files, or `None` (after printing why) when they are absent.
fn fixture_files() -> Option<Vec<PathBuf>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/synthea-r4");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".json.gz")))
            .collect(),
        Err(_) => Vec::new(),
    };
    if files.is_empty() {
        assert!(
            !env_flag("PORTICO_REQUIRE_SHARED"),
            "PORTICO_REQUIRE_SHARED=1 but no Synthea fixtures in {}",
            dir.display()
        );
        eprintln!("SKIP: no Synthea fixtures (*.json.gz) in {}", dir.display());
        return None;
    }
    files.sort();
    Some(files)
}

fn read_bundle(path: &PathBuf) -> Value {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("gunzip {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

fn entry_resources(bundle: &Value) -> impl Iterator<Item = &Value> {
    bundle["entry"].as_array().into_iter().flatten().filter_map(|e| e.get("resource"))
}

#[test]
fn synthea_resources_are_valid() {
    let Some(files) = fixture_files() else { return };
    let take = if env_flag("PORTICO_FULL_FIXTURES") { files.len() } else { DEFAULT_BUNDLES.min(files.len()) };
    let validator = Validator::r4();
    let mut checked = 0usize;
    let mut per_type: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for path in &files[..take] {
        let bundle = read_bundle(path);
        // the transaction Bundle itself, which walks every entry resource too
        if let Err(issues) = validator.validate(&bundle) {
            failures.push(format!("{} (Bundle): {issues:#?}", path.display()));
        }
        // and each entry resource on its own, as an import would
        for r in entry_resources(&bundle) {
            checked += 1;
            let rt = r["resourceType"].as_str().unwrap_or("?").to_string();
            *per_type.entry(rt).or_default() += 1;
            if let Err(issues) = validator.validate(r) {
                failures.push(format!("{} {}/{}: {issues:#?}", path.display(), r["resourceType"], r["id"]));
            }
        }
    }
    eprintln!("validated {checked} resources from {take} bundles: {per_type:?}");
    assert!(checked > 0, "no resources in the fixtures");
    assert!(
        failures.is_empty(),
        "{} invalid resources; first ones:\n{}",
        failures.len(),
        failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Prints µs/resource over the whole fixture set (JSON parsing excluded).
#[test]
#[ignore = "performance measurement; run in release with --ignored --nocapture"]
fn synthea_validation_speed() {
    let Some(files) = fixture_files() else { return };
    let t = Instant::now();
    let validator = Validator::r4();
    eprintln!("compiled the schema in {:.1?}", t.elapsed());
    let t = Instant::now();
    let bundles: Vec<Value> = files.iter().map(read_bundle).collect();
    eprintln!("loaded {} bundles in {:.1?}", bundles.len(), t.elapsed());
    let resources: Vec<&Value> = bundles.iter().flat_map(entry_resources).collect();
    let bytes: usize = resources.iter().map(|r| r.to_string().len()).sum();

    // warm up (and build the validator)
    for r in resources.iter().take(2000) {
        assert!(validator.validate(r).is_ok());
    }

    let rounds = 3;
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        let mut ok = 0usize;
        for r in &resources {
            ok += usize::from(validator.validate(r).is_ok());
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(ok, resources.len());
        best = best.min(secs);
    }
    eprintln!(
        "validate: {} resources ({:.1} MB of JSON), best of {rounds}: {:.3} s = {:.2} µs/resource, {:.0} resources/s, {:.0} MB/s",
        resources.len(),
        bytes as f64 / 1e6,
        best,
        best * 1e6 / resources.len() as f64,
        resources.len() as f64 / best,
        bytes as f64 / 1e6 / best
    );

    // Per type: "cold" walks every resource once (each one is out of cache, as above); "hot"
    // validates a resource 20 times in a row, as an import does right after parsing it.
    let mut by_type: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for r in &resources {
        by_type.entry(r["resourceType"].as_str().unwrap_or("?")).or_default().push(r);
    }
    eprintln!("  {:<24} {:>8} {:>10} {:>10} {:>10}", "type", "count", "avg bytes", "cold µs", "hot µs");
    for (rt, rs) in &by_type {
        let t = Instant::now();
        for r in rs {
            assert!(validator.validate(r).is_ok());
        }
        let cold = t.elapsed().as_secs_f64() * 1e6 / rs.len() as f64;
        let sample: Vec<&Value> = rs.iter().step_by((rs.len() / 500).max(1)).copied().collect();
        let reps = 20;
        let t = Instant::now();
        for r in &sample {
            for _ in 0..reps {
                assert!(validator.validate(r).is_ok());
            }
        }
        let hot = t.elapsed().as_secs_f64() * 1e6 / (sample.len() * reps) as f64;
        let avg_bytes = sample.iter().map(|r| r.to_string().len()).sum::<usize>() / sample.len().max(1);
        eprintln!("  {rt:<24} {:>8} {avg_bytes:>10} {cold:>10.2} {hot:>10.2}", rs.len());
    }
}

/// Every object and every scalar in real resources is checked: an unknown property added to any
/// object, or any scalar replaced by an object, is reported at that place.
#[test]
fn synthea_every_node_is_checked() {
    let Some(files) = fixture_files() else { return };
    let validator = Validator::r4();
    let bundle = read_bundle(&files[0]);
    let mut mutations = 0usize;
    for r in entry_resources(&bundle).take(60) {
        let mut pointers = Vec::new();
        collect_pointers(r, String::new(), &mut pointers);
        for (pointer, is_object) in pointers {
            let mut m = r.clone();
            let Some(node) = m.pointer_mut(&pointer) else {
                continue;
            };
            let expected_suffix = if is_object {
                if let Some(obj) = node.as_object_mut() {
                    obj.insert("zzUnknown".into(), Value::from(1));
                }
                ".zzUnknown".to_string()
            } else {
                *node = serde_json::json!({"x": 1});
                pointer_tail(&pointer)
            };
            mutations += 1;
            let issues = validator.validate(&m).err().unwrap_or_default();
            assert!(
                issues.iter().any(|i| i.path.ends_with(&expected_suffix)),
                "mutation at {pointer} of {}/{} not reported at *{expected_suffix}: {issues:#?}",
                r["resourceType"],
                r["id"]
            );
        }
    }
    eprintln!("{mutations} mutations all reported");
    assert!(mutations > 1000);
}

fn collect_pointers(v: &Value, at: String, out: &mut Vec<(String, bool)>) {
    match v {
        Value::Object(m) => {
            out.push((at.clone(), true));
            for (k, child) in m {
                collect_pointers(child, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                collect_pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => out.push((at, false)),
    }
}

/// `/name/0/given/1` -> `name[0].given[1]` (the issue path ends with it)
fn pointer_tail(pointer: &str) -> String {
    let mut s = String::new();
    for seg in pointer.split('/').skip(1) {
        if seg.bytes().all(|b| b.is_ascii_digit()) {
            s.push_str(&format!("[{seg}]"));
        } else {
            s.push('.');
            s.push_str(seg);
        }
    }
    s
}
