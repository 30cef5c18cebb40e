//! Index extraction over real Synthea R4 bundles from the shared fixtures (not in the repository;
//! the tests print a message and pass when the fixtures are absent).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use fhir::datetime::parse_range;
use fhir::{extract, Extracted, IndexValue, Registry};
use serde_json::Value;

fn fixtures_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/synthea-r4");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: Synthea fixtures not found at {}", dir.display());
        None
    }
}

/// The first `n` bundle files (sorted by name, so runs are repeatable), plus the shared
/// hospital/practitioner bundles that hold Organization, Location, Practitioner, PractitionerRole.
fn bundle_paths(n: usize) -> Vec<PathBuf> {
    let Some(dir) = fixtures_dir() else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .collect();
    paths.sort();
    let (shared, patients): (Vec<PathBuf>, Vec<PathBuf>) = paths.into_iter().partition(|p| {
        let name = p.file_name().unwrap().to_string_lossy();
        name.starts_with("hospitalInformation") || name.starts_with("practitionerInformation")
    });
    shared.into_iter().chain(patients.into_iter().take(n)).collect()
}

/// The resources of a transaction bundle, with `urn:uuid:X` references rewritten to `Type/X`
/// (as the server does when it processes the transaction).
fn load_resources(path: &PathBuf) -> Vec<Value> {
    let mut json = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut json).unwrap();
    let bundle: Value = serde_json::from_str(&json).unwrap();
    let entries = bundle["entry"].as_array().unwrap();
    let types: HashMap<String, String> = entries
        .iter()
        .map(|e| {
            (e["fullUrl"].as_str().unwrap().to_owned(), e["resource"]["resourceType"].as_str().unwrap().to_owned())
        })
        .collect();
    entries
        .iter()
        .map(|e| {
            let mut resource = e["resource"].clone();
            rewrite_references(&mut resource, &types);
            resource
        })
        .collect()
}

fn rewrite_references(node: &mut Value, types: &HashMap<String, String>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(reference) if key == "reference" => {
                        if let Some(resource_type) = types.get(reference.as_str()) {
                            let id = reference.trim_start_matches("urn:uuid:").to_owned();
                            *reference = format!("{resource_type}/{id}");
                        }
                    }
                    _ => rewrite_references(value, types),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_references(v, types)),
        _ => {}
    }
}

fn values<'a>(extracted: &'a Extracted, param: &str) -> Vec<&'a IndexValue> {
    extracted.entries.iter().filter(|e| e.param == param).map(|e| &e.value).collect()
}

fn has_token(extracted: &Extracted, param: &str, system: &str, code: &str) -> bool {
    values(extracted, param)
        .into_iter()
        .any(|v| matches!(v, IndexValue::Token { system: Some(s), code: Some(c), .. } if s == system && c == code))
}

fn date_of(s: &str) -> IndexValue {
    let r = parse_range(s).unwrap();
    IndexValue::Date { start: r.start, end: r.end }
}

fn by_type<'a>(resources: &'a [Value], resource_type: &str) -> impl Iterator<Item = &'a Value> + 'a {
    let resource_type = resource_type.to_owned();
    resources.iter().filter(move |r| r["resourceType"] == resource_type.as_str())
}

#[test]
fn synthea_patient_observation_encounter() {
    let Some(path) = bundle_paths(1).into_iter().last() else {
        return;
    };
    let resources = load_resources(&path);
    let registry = Registry::r4();
    let patient = by_type(&resources, "Patient").next().unwrap();
    let patient_id = patient["id"].as_str().unwrap();

    // Patient
    let e = extract(registry, patient);
    let name = &patient["name"][0];
    let family = name["family"].as_str().unwrap();
    assert!(values(&e, "family").iter().any(|v| matches!(v, IndexValue::String { exact, .. } if exact == family)));
    for given in name["given"].as_array().unwrap() {
        let given = given.as_str().unwrap();
        assert!(values(&e, "given").iter().any(|v| matches!(v, IndexValue::String { exact, .. } if exact == given)));
        assert!(values(&e, "name").iter().any(|v| matches!(v, IndexValue::String { exact, .. } if exact == given)));
    }
    assert_eq!(values(&e, "birthdate"), [&date_of(patient["birthDate"].as_str().unwrap())]);
    let gender = patient["gender"].as_str().unwrap();
    assert_eq!(values(&e, "gender"), [&IndexValue::Token { system: None, code: Some(gender.into()), text: None }]);
    let city = patient["address"][0]["city"].as_str().unwrap();
    assert_eq!(
        values(&e, "address-city"),
        [&IndexValue::String { normalized: fhir::normalize::normalize_string(city), exact: city.into() }]
    );
    let identifier = &patient["identifier"][0];
    let (system, value) = (identifier["system"].as_str().unwrap(), identifier["value"].as_str().unwrap());
    assert!(has_token(&e, "identifier", system, value));
    assert_eq!(e.compartments, [patient_id]);

    // Observations: one vital sign and one laboratory result with a quantity
    for category in ["vital-signs", "laboratory"] {
        let obs = by_type(&resources, "Observation")
            .find(|o| o["category"][0]["coding"][0]["code"] == category && o.get("valueQuantity").is_some())
            .unwrap();
        let e = extract(registry, obs);
        let code = obs["code"]["coding"][0]["code"].as_str().unwrap();
        assert!(has_token(&e, "code", "http://loinc.org", code), "{:?}", values(&e, "code"));
        assert!(has_token(&e, "category", "http://terminology.hl7.org/CodeSystem/observation-category", category));
        let patient_ref = IndexValue::Reference {
            target_type: Some("Patient".into()),
            target_id: Some(patient_id.into()),
            url: None,
        };
        assert_eq!(values(&e, "patient"), [&patient_ref]);
        assert_eq!(values(&e, "subject"), [&patient_ref]);
        assert_eq!(values(&e, "date"), [&date_of(obs["effectiveDateTime"].as_str().unwrap())]);
        let q = &obs["valueQuantity"];
        assert_eq!(
            values(&e, "value-quantity"),
            [&IndexValue::Quantity {
                value: q["value"].as_f64().unwrap(),
                system: Some("http://unitsofmeasure.org".into()),
                code: q["code"].as_str().map(str::to_owned),
                unit: q["unit"].as_str().map(str::to_owned),
            }]
        );
        assert!(has_token(&e, "_tag", "https://smarthealthit.org/tags", "synthea-5-2019") || obs.get("meta").is_none());
        assert_eq!(values(&e, "encounter").len(), 1);
        assert_eq!(e.compartments, [patient_id]);
    }

    // Encounter period
    let encounter = by_type(&resources, "Encounter").next().unwrap();
    let e = extract(registry, encounter);
    let period = &encounter["period"];
    let start = parse_range(period["start"].as_str().unwrap()).unwrap().start;
    let end = parse_range(period["end"].as_str().unwrap()).unwrap().end;
    assert_eq!(values(&e, "date"), [&IndexValue::Date { start, end }]);
    assert!(!values(&e, "class").is_empty() && !values(&e, "type").is_empty());
    assert_eq!(e.compartments, [patient_id]);
}

/// Every resource of ~20 bundles: nothing panics, the supported types produce index rows, and
/// every resource in the Patient compartment of its patient lands in it.
#[test]
fn synthea_bundles_extract_cleanly() {
    let paths = bundle_paths(18);
    if paths.is_empty() {
        return;
    }
    let registry = Registry::r4();
    let mut per_type: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut without_compartment = Vec::new();
    for path in &paths {
        for resource in load_resources(path) {
            let resource_type = resource["resourceType"].as_str().unwrap().to_owned();
            let e = extract(registry, &resource);
            let counts = per_type.entry(resource_type.clone()).or_default();
            counts.0 += 1;
            counts.1 += e.entries.len();
            assert!(!e.entries.is_empty(), "{resource_type} {} produced no entries", resource["id"]);
            if !registry.patient_compartment_params(&resource_type).is_empty()
                && e.compartments.is_empty()
                && !matches!(resource_type.as_str(), "Provenance")
            {
                without_compartment.push(format!("{resource_type}/{}", resource["id"]));
            }
        }
    }
    eprintln!("resources and index entries per type: {per_type:#?}");
    assert!(without_compartment.is_empty(), "not in any Patient compartment: {without_compartment:?}");
    for t in ["Patient", "Observation", "Encounter", "Claim", "ExplanationOfBenefit", "Organization", "Practitioner"] {
        assert!(per_type.contains_key(t), "no {t} in the fixtures");
    }
}

/// Throughput of `extract` per resource type (best of several trials, since CI machines are
/// shared). Run with `cargo test -p fhir --release --test index_synthea -- --ignored --nocapture`.
#[test]
#[ignore]
fn extraction_speed() {
    let paths = bundle_paths(5);
    if paths.is_empty() {
        return;
    }
    let resources: Vec<Value> = paths.iter().flat_map(load_resources).collect();
    let started = Instant::now();
    let registry = Registry::r4();
    eprintln!("registry built in {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    let best_micros = |sample: &[&Value]| {
        let rounds = (5_000 / sample.len()).max(1);
        (0..7)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..rounds {
                    for resource in sample {
                        std::hint::black_box(extract(registry, resource));
                    }
                }
                started.elapsed().as_secs_f64() * 1e6 / (rounds * sample.len()) as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    for resource_type in ["Observation", "Patient", "Encounter", "Claim", "ExplanationOfBenefit", "Procedure"] {
        let sample: Vec<&Value> = by_type(&resources, resource_type).collect();
        if sample.is_empty() {
            continue;
        }
        let entries: usize = sample.iter().map(|r| extract(registry, r).entries.len()).sum();
        eprintln!(
            "{resource_type:>22}: {:6.2} µs/resource ({:.1} entries each, {} resources)",
            best_micros(&sample),
            entries as f64 / sample.len() as f64,
            sample.len()
        );
    }
    let all: Vec<&Value> = resources.iter().collect();
    eprintln!("all {} resources: {:.2} µs/resource", all.len(), best_micros(&all));
}
