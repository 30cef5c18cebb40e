//! Real DSTU2 and STU3 exports (the shared Synthea fixtures, 100 patients each) converted to R4:
//! every converted resource validates, each source type's count is preserved (under its R4
//! name), every reference resolves inside the converted Bundle, and an oracle reading the source
//! JSON on its own checks, per resource, that codes, dates, values, statuses and subjects
//! survive. Without `../shared/fixtures` the tests print a skip message and pass, unless
//! `PORTICO_REQUIRE_SHARED=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::path::PathBuf;

use fhir::convert::{convert_bundle, r4_type, Report, Version};
use fhir::validate::Validator;
use serde_json::Value;

fn fixtures(folder: &str) -> Option<Vec<PathBuf>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures").join(folder);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(".json.gz")).collect()
        })
        .unwrap_or_default();
    if files.is_empty() {
        let required = std::env::var("PORTICO_REQUIRE_SHARED").is_ok_and(|v| v == "1" || v == "true");
        assert!(!required, "PORTICO_REQUIRE_SHARED=1 but {} has no fixtures", dir.display());
        eprintln!(
            "SKIP: {} not found (a fresh clone has no ../shared); set PORTICO_REQUIRE_SHARED=1 to fail instead",
            dir.display()
        );
        return None;
    }
    files.sort();
    Some(files)
}

fn read(path: &PathBuf) -> Value {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// All values under keys named `key` (anywhere in the value).
fn collect<'a>(v: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    out.push(x);
                }
                collect(x, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect(x, key, out)),
        _ => {}
    }
}

/// Every string leaf of a value (extensions included).
fn strings(v: &Value, out: &mut HashSet<String>) {
    match v {
        Value::String(s) => {
            out.insert(s.clone());
        }
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        _ => {}
    }
}

fn numbers(v: &Value, out: &mut HashSet<String>) {
    match v {
        Value::Number(n) => {
            out.insert(n.to_string());
        }
        Value::Object(m) => m.values().for_each(|x| numbers(x, out)),
        Value::Array(a) => a.iter().for_each(|x| numbers(x, out)),
        _ => {}
    }
}

fn is_datetime(s: &str) -> bool {
    s.len() >= 10 && s.as_bytes()[4] == b'-' && fhir::datetime::parse_range(s).is_some()
}

/// The oracle: what of the source must be found in the converted resource.
fn survives(source: &Value, converted: &Value) -> Result<(), String> {
    let mut target_strings = HashSet::new();
    strings(converted, &mut target_strings);
    let mut target_numbers = HashSet::new();
    numbers(converted, &mut target_numbers);
    // Codes of every Coding (Condition's DSTU2 category "diagnosis" is mapped on purpose).
    let mut codings = Vec::new();
    collect(source, "coding", &mut codings);
    for list in codings {
        for c in list.as_array().into_iter().flatten() {
            if let Some(code) = c.get("code").and_then(Value::as_str) {
                if code != "diagnosis" && !target_strings.contains(code) {
                    return Err(format!("code {code} is lost"));
                }
            }
        }
    }
    // Dates and times, wherever they were.
    let mut source_strings = HashSet::new();
    strings(source, &mut source_strings);
    for s in source_strings.iter().filter(|s| is_datetime(s)) {
        if !target_strings.contains(s) {
            return Err(format!("date {s} is lost"));
        }
    }
    // Values: every number (quantities, components, dosages).
    let mut source_numbers = HashSet::new();
    numbers(source, &mut source_numbers);
    for n in &source_numbers {
        if !target_numbers.contains(n) && !target_strings.contains(n) {
            return Err(format!("value {n} is lost"));
        }
    }
    // Statuses: the source status, as R4 spells it, in a status element or its extension.
    if let Some(status) = source.get("status").and_then(Value::as_str) {
        let r4_statuses: Vec<&str> = ["status", "lifecycleStatus", "clinicalStatus"]
            .iter()
            .filter_map(|k| converted.get(*k))
            .flat_map(|v| {
                let mut all = HashSet::new();
                strings(v, &mut all);
                all.into_iter().collect::<Vec<_>>()
            })
            .map(|s| &*Box::leak(s.into_boxed_str()))
            .collect();
        let expected_any: &[&str] = match status {
            "in-progress" if source["resourceType"] == "Goal" => &["active"],
            "proposed" if source["resourceType"] == "CarePlan" => &["draft"],
            "aborted" => &["stopped"],
            _ => &[],
        };
        let found = r4_statuses.contains(&status)
            || expected_any.iter().any(|e| r4_statuses.contains(e))
            || target_strings.contains(status);
        if !found {
            return Err(format!("status {status} is lost"));
        }
    }
    // Subjects: the patient the source names is the converted resource's subject or patient.
    for key in ["subject", "patient"] {
        if let Some(r) = source.get(key).and_then(|s| s.get("reference")).and_then(Value::as_str) {
            let converted_ref = converted
                .get("subject")
                .or_else(|| converted.get("patient"))
                .and_then(|s| s.get("reference"))
                .and_then(Value::as_str);
            if converted_ref != Some(r) {
                return Err(format!("subject {r} is lost"));
            }
        }
    }
    Ok(())
}

fn check_all(folder: &str, version: Version) {
    let Some(files) = fixtures(folder) else { return };
    assert_eq!(files.len(), 100, "the fixture set has 100 bundles");
    let validator = Validator::r4();
    let mut report = Report::default();
    let mut source_counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut target_counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    for file in &files {
        let source = read(file);
        let entries = source["entry"].as_array().cloned().unwrap_or_default();
        for e in &entries {
            let t = e["resource"]["resourceType"].as_str().unwrap();
            *source_counts.entry(r4_type(version, t).to_owned()).or_insert(0) += 1;
        }
        let converted = convert_bundle(version, source, &mut report).unwrap();
        let out = converted["entry"].as_array().unwrap();
        assert_eq!(out.len(), entries.len(), "{}", file.display());
        let mut targets: HashSet<String> = HashSet::new();
        for e in out {
            if let Some(u) = e["fullUrl"].as_str() {
                targets.insert(u.to_owned());
            }
            let r = &e["resource"];
            if let Some(id) = r["id"].as_str() {
                targets.insert(format!("{}/{id}", r["resourceType"].as_str().unwrap()));
            }
        }
        for (source_entry, e) in entries.iter().zip(out) {
            let r = &e["resource"];
            let t = r["resourceType"].as_str().unwrap().to_owned();
            *target_counts.entry(t.clone()).or_insert(0) += 1;
            if let Err(issues) = validator.validate(r) {
                problems.push(format!("{}: {t}: {issues:?}", file.display()));
            }
            if let Err(why) = survives(&source_entry["resource"], r) {
                problems.push(format!("{}: {t}: {why}", file.display()));
            }
            let mut refs = Vec::new();
            collect(r, "reference", &mut refs);
            for reference in refs.iter().filter_map(|v| v.as_str()) {
                if !targets.contains(reference) {
                    problems.push(format!("{}: {t}: reference {reference} does not resolve", file.display()));
                }
            }
        }
    }
    problems.truncate(20);
    assert!(problems.is_empty(), "{} problems, the first:\n{}", problems.len(), problems.join("\n"));
    assert_eq!(source_counts, target_counts, "per-type counts are preserved");
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    eprintln!(
        "{folder}: {} resources; kept in extensions: {:?}; derived: {:?}",
        target_counts.values().sum::<usize>(),
        report.kept_in_extensions,
        report.derived
    );
    let types: BTreeSet<&String> = report.resources.keys().collect();
    assert!(types.len() >= 12, "{types:?}");
}

#[test]
fn dstu2_exports_convert_to_valid_r4() {
    check_all("dstu2-synthea", Version::Dstu2);
}

#[test]
fn stu3_exports_convert_to_valid_r4() {
    check_all("stu3-synthea", Version::Stu3);
}
