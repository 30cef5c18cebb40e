//! Integration tests for the demo data generator.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use demo::{generate, DemoConfig, DemoData};
use serde_json::Value;

fn default_data() -> &'static DemoData {
    static DATA: OnceLock<DemoData> = OnceLock::new();
    DATA.get_or_init(|| generate(&DemoConfig::default()))
}

fn rt(r: &Value) -> &str {
    r["resourceType"].as_str().unwrap_or("")
}

fn id(r: &Value) -> &str {
    r["id"].as_str().unwrap_or("")
}

fn counts(data: &DemoData) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in data.resources() {
        *m.entry(rt(r).to_string()).or_insert(0) += 1;
    }
    m
}

fn index(data: &DemoData) -> HashMap<String, &Value> {
    data.resources().map(|r| (format!("{}/{}", rt(r), id(r)), r)).collect()
}

/// Every `reference` string anywhere inside `v`.
fn references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "reference" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_string());
                    }
                } else {
                    references(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        _ => {}
    }
}

fn refs_of(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    references(v, &mut out);
    out
}

fn subject_of(r: &Value) -> Option<&str> {
    ["subject", "patient", "beneficiary"].iter().find_map(|k| r[*k]["reference"].as_str())
}

fn of_type<'a>(data: &'a DemoData, t: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    data.resources().filter(move |r| rt(r) == t)
}

#[test]
fn same_seed_is_identical_and_other_seed_differs() {
    let a = generate(&DemoConfig::default());
    let b = generate(&DemoConfig::default());
    assert_eq!(a, b);
    let sa = serde_json::to_string(&a.bundles).unwrap_or_default();
    let sb = serde_json::to_string(&b.bundles).unwrap_or_default();
    assert!(!sa.is_empty());
    assert_eq!(sa, sb, "serialized output must be byte-identical");

    let c = generate(&DemoConfig { seed: 7, ..DemoConfig::default() });
    assert_ne!(a.bundles, c.bundles);
    assert_ne!(a.accounts.member_patient_id, c.accounts.member_patient_id);
    let ids_a: HashSet<&str> = a.resources().map(id).collect();
    assert!(c.resources().all(|r| !ids_a.contains(id(r))), "ids of different seeds never collide");
}

#[test]
fn bundles_are_put_transactions() {
    let data = default_data();
    assert!(data.bundles.len() >= 3);
    for b in &data.bundles {
        assert_eq!(b["resourceType"], "Bundle");
        assert_eq!(b["type"], "transaction");
        let entries = b["entry"].as_array().expect("entries");
        assert!(!entries.is_empty());
        for e in entries {
            let r = &e["resource"];
            assert!(!rt(r).is_empty(), "resourceType missing: {r}");
            assert!(!id(r).is_empty(), "id missing: {r}");
            assert_eq!(e["request"]["method"], "PUT");
            assert_eq!(e["request"]["url"], format!("{}/{}", rt(r), id(r)));
            assert_eq!(e["fullUrl"], format!("urn:uuid:{}", id(r)));
            assert!(uuid_like(id(r)), "id is a UUID: {}", id(r));
        }
    }
    // The first bundle is the shared directory.
    let first: HashSet<&str> =
        data.bundles[0]["entry"].as_array().expect("entries").iter().map(|e| rt(&e["resource"])).collect();
    let expected: HashSet<&str> =
        ["Organization", "Practitioner", "PractitionerRole", "Location"].into_iter().collect();
    assert_eq!(first, expected);
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36
        && s.chars()
            .enumerate()
            .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-') && (c == '-' || c.is_ascii_hexdigit()))
}

#[test]
fn ids_are_unique() {
    let data = default_data();
    let mut seen = HashSet::new();
    for b in &data.bundles {
        assert!(seen.insert(id(b).to_string()), "duplicate bundle id");
    }
    for r in data.resources() {
        assert!(seen.insert(id(r).to_string()), "duplicate id {}", id(r));
    }
}

#[test]
fn every_reference_resolves() {
    let data = default_data();
    let idx = index(data);
    let mut n = 0;
    for r in data.resources() {
        for reference in refs_of(r) {
            n += 1;
            let parts: Vec<&str> = reference.split('/').collect();
            assert_eq!(parts.len(), 2, "relative Type/id reference: {reference}");
            assert!(idx.contains_key(&reference), "{}/{} references missing {reference}", rt(r), id(r));
        }
    }
    assert!(n > 10_000, "plenty of references: {n}");
}

#[test]
fn references_in_a_patient_bundle_stay_in_its_compartment_or_directory() {
    let data = default_data();
    let shared: HashSet<String> = data.bundles[0]["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| format!("{}/{}", rt(&e["resource"]), id(&e["resource"])))
        .collect();
    for b in &data.bundles[1..] {
        let local: HashSet<String> = b["entry"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| format!("{}/{}", rt(&e["resource"]), id(&e["resource"])))
            .collect();
        for e in b["entry"].as_array().expect("entries") {
            for reference in refs_of(&e["resource"]) {
                assert!(local.contains(&reference) || shared.contains(&reference), "{reference} leaves its bundle");
            }
        }
    }
}

#[test]
fn accounts_exist() {
    let data = default_data();
    let idx = index(data);
    let acc = &data.accounts;
    assert!(idx.contains_key(&format!("Patient/{}", acc.member_patient_id)));
    assert!(idx.contains_key(&format!("Patient/{}", acc.proxy_parent_patient_id)));
    assert_eq!(acc.proxy_patient_ids.len(), 2);
    for child in &acc.proxy_patient_ids {
        let p = idx[&format!("Patient/{child}")];
        let birth = p["birthDate"].as_str().expect("birthDate");
        let year: i32 = birth[..4].parse().expect("year");
        assert!(2026 - year <= 14, "proxy patients are children: {birth}");
        // The child's coverage is subscribed by the parent.
        let cov = of_type(data, "Coverage")
            .find(|c| c["beneficiary"]["reference"] == format!("Patient/{child}"))
            .expect("child coverage");
        assert_eq!(cov["subscriber"]["reference"], format!("Patient/{}", acc.proxy_parent_patient_id));
        assert_eq!(cov["relationship"]["coding"][0]["code"], "child");
        // RelatedPerson for the parent.
        assert!(of_type(data, "RelatedPerson").any(|rp| rp["patient"]["reference"] == format!("Patient/{child}")));
    }
    let member = idx[&format!("Patient/{}", acc.member_patient_id)];
    let birth = member["birthDate"].as_str().expect("birthDate");
    let year: i32 = birth[..4].parse().expect("year");
    assert!(2026 - year >= 18, "member is an adult");
    assert_eq!(acc.practitioner_ids.len(), 2);
    assert_ne!(acc.practitioner_ids[0], acc.practitioner_ids[1]);
    for p in &acc.practitioner_ids {
        assert!(idx.contains_key(&format!("Practitioner/{p}")));
    }
    let all: HashSet<&String> = [&acc.member_patient_id, &acc.proxy_parent_patient_id]
        .into_iter()
        .chain(acc.proxy_patient_ids.iter())
        .collect();
    assert_eq!(all.len(), 4, "four distinct patients");
}

#[test]
fn counts_are_sensible() {
    let data = default_data();
    let c = counts(data);
    let get = |t: &str| c.get(t).copied().unwrap_or(0);
    let patients = get("Patient");
    assert_eq!(patients, 25);
    assert!(get("Organization") >= 2);
    assert!(get("Practitioner") >= 4);
    assert!(get("PractitionerRole") >= 4);
    assert!(get("Location") >= 1);
    assert_eq!(get("Coverage"), patients);
    assert_eq!(get("CareTeam"), patients);
    assert!(get("Encounter") >= 5 * patients && get("Encounter") <= 20 * patients);
    assert_eq!(get("Claim"), get("Encounter"));
    assert_eq!(get("ExplanationOfBenefit"), get("Claim"));
    assert!(get("Observation") >= 5 * get("Encounter"));
    assert!(get("DiagnosticReport") >= patients);
    assert!(get("Condition") >= patients);
    assert!(get("MedicationRequest") >= patients);
    assert!(get("Immunization") >= patients);
    assert!(get("AllergyIntolerance") >= 3);
    assert!(get("Procedure") >= patients);
    assert!(get("CarePlan") >= patients);
    assert!(get("Goal") >= patients);

    // Per patient.
    let mut per: HashMap<(&str, &str), usize> = HashMap::new();
    for r in data.resources() {
        if let Some(s) = subject_of(r) {
            *per.entry((rt(r), s)).or_insert(0) += 1;
        }
    }
    for p in of_type(data, "Patient") {
        let pref = format!("Patient/{}", id(p));
        let n = |t: &str| per.get(&(t, pref.as_str())).copied().unwrap_or(0);
        assert!((5..=20).contains(&n("Encounter")), "{pref}: {} encounters", n("Encounter"));
        assert!(n("Observation") >= 5 * n("Encounter") / 2);
        assert_eq!(n("Coverage"), 1);
        assert_eq!(n("Claim"), n("Encounter"));
        assert_eq!(n("ExplanationOfBenefit"), n("Encounter"));
        assert!(n("CarePlan") >= 1 && n("Goal") >= 1 && n("CareTeam") == 1);
    }
    // Counts vary between patients.
    let enc_counts: HashSet<usize> = of_type(data, "Patient")
        .map(|p| per.get(&("Encounter", format!("Patient/{}", id(p)).as_str())).copied().unwrap_or(0))
        .collect();
    assert!(enc_counts.len() >= 5);
}

#[test]
fn shared_directory_is_complete() {
    let data = default_data();
    let payers: Vec<&Value> =
        of_type(data, "Organization").filter(|o| o["type"][0]["coding"][0]["code"] == "pay").collect();
    assert_eq!(payers.len(), 1);
    assert_eq!(payers[0]["name"], "Portico Health Plan");
    let providers = of_type(data, "Organization").filter(|o| o["type"][0]["coding"][0]["code"] == "prov").count();
    assert!(providers >= 2);
    for o in of_type(data, "Organization") {
        assert!(o["address"][0]["city"].is_string());
    }
    let mut npis = HashSet::new();
    for p in of_type(data, "Practitioner") {
        let ident = &p["identifier"][0];
        assert_eq!(ident["system"], "http://hl7.org/fhir/sid/us-npi");
        let npi = ident["value"].as_str().expect("npi");
        assert!(npi.len() == 10 && npi.chars().all(|c| c.is_ascii_digit()));
        assert!(npi_valid(npi), "Luhn-valid NPI {npi}");
        assert!(npis.insert(npi.to_string()));
        assert!(p["name"][0]["family"].is_string());
        assert!(p["name"][0]["given"][0].is_string());
    }
    for role in of_type(data, "PractitionerRole") {
        assert!(role["practitioner"]["reference"].is_string());
        assert!(role["organization"]["reference"].is_string());
    }
}

fn npi_valid(npi: &str) -> bool {
    let digits: Vec<u32> = format!("80840{npi}").chars().filter_map(|c| c.to_digit(10)).collect();
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn codings(concept: &Value) -> Vec<(String, String)> {
    concept["coding"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| (c["system"].as_str().unwrap_or("").to_string(), c["code"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

const ICD10: &str = "http://hl7.org/fhir/sid/icd-10-cm";

fn is_sud(code: &str) -> bool {
    // F10–F19: mental and behavioral disorders due to psychoactive substance use.
    code.len() >= 3 && code.starts_with("F1") && code.as_bytes()[2].is_ascii_digit()
}

#[test]
fn member_has_behavioral_health_and_substance_use_conditions() {
    let data = default_data();
    let member = format!("Patient/{}", data.accounts.member_patient_id);
    let codes: Vec<String> = of_type(data, "Condition")
        .filter(|c| c["subject"]["reference"] == member.as_str())
        .flat_map(|c| codings(&c["code"]))
        .filter(|(s, _)| s == ICD10)
        .map(|(_, c)| c)
        .collect();
    assert!(codes.iter().any(|c| c.starts_with('F') && !is_sud(c)), "behavioral-health condition: {codes:?}");
    assert!(codes.iter().any(|c| is_sud(c)), "substance-use condition: {codes:?}");
    assert!(codes.iter().any(|c| c == "F10.20"));
    assert!(codes.iter().any(|c| c == "F32.9" || c == "F41.1"));
}

#[test]
fn conditions_use_snomed_and_icd10() {
    let data = default_data();
    let mut snomed = HashSet::new();
    let mut icd = HashSet::new();
    let mut patients_with_bh = HashSet::new();
    for c in of_type(data, "Condition") {
        for (system, code) in codings(&c["code"]) {
            if system == "http://snomed.info/sct" {
                snomed.insert(code);
            } else if system == ICD10 {
                if code.starts_with('F') {
                    patients_with_bh.insert(c["subject"]["reference"].as_str().unwrap_or("").to_string());
                }
                icd.insert(code);
            }
        }
        assert!(c["clinicalStatus"]["coding"][0]["code"].is_string());
        assert_eq!(c["verificationStatus"]["coding"][0]["code"], "confirmed");
    }
    for code in ["38341003", "195967001"] {
        assert!(snomed.contains(code), "SNOMED {code} present");
    }
    assert!(snomed.len() >= 10);
    assert!(patients_with_bh.len() >= 3, "a few patients with behavioral-health conditions");
    assert!(patients_with_bh.len() < 25);
}

#[test]
fn practitioner_patient_lists_overlap_partially() {
    let data = default_data();
    let patients: Vec<String> = of_type(data, "Patient").map(|p| format!("Patient/{}", id(p))).collect();
    let lists: Vec<HashSet<String>> = data
        .accounts
        .practitioner_ids
        .iter()
        .map(|pid| {
            let pref = format!("Practitioner/{pid}");
            of_type(data, "CareTeam")
                .filter(|ct| {
                    ct["participant"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["member"]["reference"] == pref.as_str()))
                })
                .filter_map(|ct| ct["subject"]["reference"].as_str().map(str::to_string))
                .collect()
        })
        .collect();
    let (a, b) = (&lists[0], &lists[1]);
    let both: HashSet<&String> = a.intersection(b).collect();
    assert_eq!(a.len(), 15);
    assert_eq!(b.len(), 15);
    assert_eq!(both.len(), 5);
    // A: patients 0..15, B: patients 10..25 (bundle order follows patient order).
    let expected_a: HashSet<String> = patients[..15].iter().cloned().collect();
    let expected_b: HashSet<String> = patients[10..].iter().cloned().collect();
    assert_eq!(a, &expected_a);
    assert_eq!(b, &expected_b);
    assert_eq!(patients[0], format!("Patient/{}", data.accounts.member_patient_id));

    // Encounters with A or B only happen for patients on their care team.
    for (pid, list) in data.accounts.practitioner_ids.iter().zip(&lists) {
        let pref = format!("Practitioner/{pid}");
        for e in of_type(data, "Encounter") {
            let with = e["participant"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["individual"]["reference"] == pref.as_str()));
            if with {
                let s = e["subject"]["reference"].as_str().unwrap_or("");
                assert!(list.contains(s), "{pref} saw {s} outside the care team");
            }
        }
        // Each patient's general practitioner is on their care team.
        for p in of_type(data, "Patient") {
            if p["generalPractitioner"][0]["reference"] == pref.as_str() {
                assert!(list.contains(&format!("Patient/{}", id(p))));
            }
        }
    }
}

#[test]
fn patients_are_complete() {
    let data = default_data();
    let mut mrns = HashSet::new();
    for p in of_type(data, "Patient") {
        let name = &p["name"][0];
        assert!(name["family"].is_string() && name["given"][0].is_string());
        assert!(p["gender"] == "male" || p["gender"] == "female");
        assert!(p["birthDate"].is_string());
        let addr = &p["address"][0];
        for k in ["city", "state", "postalCode"] {
            assert!(addr[k].is_string(), "address.{k}");
        }
        let systems: Vec<&str> =
            p["identifier"].as_array().expect("identifiers").iter().filter_map(|i| i["system"].as_str()).collect();
        assert!(systems.contains(&"http://portico.example/mrn"));
        assert!(systems.contains(&"http://portico.example/member-id"));
        let mrn = p["identifier"][0]["value"].as_str().expect("mrn");
        assert!(mrns.insert(mrn.to_string()), "unique MRN");
        let telecom: Vec<&str> =
            p["telecom"].as_array().expect("telecom").iter().filter_map(|t| t["system"].as_str()).collect();
        assert!(telecom.contains(&"phone"));
        assert!(p["generalPractitioner"][0]["reference"].is_string());
        assert!(p["managingOrganization"]["reference"].is_string());
    }
    // Adults have email addresses.
    assert!(of_type(data, "Patient").filter(|p| p["telecom"].as_array().is_some_and(|t| t.len() > 1)).count() >= 15);
}

#[test]
fn clinical_content_uses_standard_terminologies() {
    let data = default_data();
    let mut loinc = HashSet::new();
    let mut categories = HashSet::new();
    for o in of_type(data, "Observation") {
        for (system, code) in codings(&o["code"]) {
            assert_eq!(system, "http://loinc.org");
            loinc.insert(code);
        }
        for (system, code) in codings(&o["category"][0]) {
            assert_eq!(system, "http://terminology.hl7.org/CodeSystem/observation-category");
            categories.insert(code);
        }
        let quantities: Vec<&Value> = std::iter::once(&o["valueQuantity"])
            .chain(o["component"].as_array().into_iter().flatten().map(|c| &c["valueQuantity"]))
            .filter(|q| q.is_object())
            .collect();
        for q in &quantities {
            assert_eq!(q["system"], "http://unitsofmeasure.org");
            assert!(q["value"].is_number());
        }
        assert!(!quantities.is_empty() || o["valueCodeableConcept"].is_object());
        assert!(o["effectiveDateTime"].is_string());
    }
    for code in [
        "2339-0", "4548-4", "2093-3", "18262-6", "2085-9", "2571-8", "2160-0", "718-7", "8302-2", "29463-7", "39156-5",
        "8867-4", "9279-1", "8310-5", "85354-9", "72166-2",
    ] {
        assert!(loinc.contains(code), "LOINC {code} present");
    }
    for cat in ["laboratory", "vital-signs", "social-history", "survey"] {
        assert!(categories.contains(cat), "category {cat}");
    }
    // Blood pressure panels carry systolic/diastolic components.
    let bp = of_type(data, "Observation").find(|o| o["code"]["coding"][0]["code"] == "85354-9").expect("bp");
    let comps: Vec<(String, String)> =
        bp["component"].as_array().expect("components").iter().flat_map(|c| codings(&c["code"])).collect();
    assert!(comps.iter().any(|(_, c)| c == "8480-6") && comps.iter().any(|(_, c)| c == "8462-4"));

    let systems_of = |t: &str, field: &str| -> HashSet<String> {
        of_type(data, t).flat_map(|r| codings(&r[field])).map(|(s, _)| s).collect()
    };
    assert_eq!(
        systems_of("MedicationRequest", "medicationCodeableConcept"),
        ["http://www.nlm.nih.gov/research/umls/rxnorm".to_string()].into()
    );
    assert_eq!(systems_of("Immunization", "vaccineCode"), ["http://hl7.org/fhir/sid/cvx".to_string()].into());
    assert_eq!(systems_of("AllergyIntolerance", "code"), ["http://snomed.info/sct".to_string()].into());
    let classes: HashSet<String> =
        of_type(data, "Encounter").map(|e| e["class"]["code"].as_str().unwrap_or("").to_string()).collect();
    for c in ["AMB", "EMER", "IMP"] {
        assert!(classes.contains(c), "encounter class {c}");
    }
    for e in of_type(data, "Encounter") {
        assert!(e["participant"][0]["individual"]["reference"].is_string());
        assert!(e["serviceProvider"]["reference"].is_string());
        assert!(e["period"]["start"].is_string() && e["period"]["end"].is_string());
        assert!(e["reasonCode"][0]["coding"][0]["code"].is_string());
        assert!(e["type"][0]["coding"][0]["code"].is_string());
    }
    // Diagnostic reports point at lab observations.
    let idx = index(data);
    for d in of_type(data, "DiagnosticReport") {
        let results = d["result"].as_array().expect("results");
        assert!(!results.is_empty());
        for r in results {
            let o = idx[r["reference"].as_str().unwrap_or("")];
            assert_eq!(o["category"][0]["coding"][0]["code"], "laboratory");
        }
    }
}

#[test]
fn claims_and_eobs_are_consistent() {
    let data = default_data();
    let idx = index(data);
    let mut types = HashSet::new();
    for c in of_type(data, "Claim") {
        types.insert(c["type"]["coding"][0]["code"].as_str().unwrap_or("").to_string());
        let items = c["item"].as_array().expect("items");
        assert!(!items.is_empty());
        let sum: f64 = items.iter().map(|i| i["net"]["value"].as_f64().unwrap_or(0.0)).sum();
        let total = c["total"]["value"].as_f64().unwrap_or(-1.0);
        assert!((sum - total).abs() < 0.005, "claim total {total} = sum {sum}");
        assert_eq!(c["total"]["currency"], "USD");
        for i in items {
            let system = i["productOrService"]["coding"][0]["system"].as_str().unwrap_or("");
            assert!(
                system == "http://www.ama-assn.org/go/cpt"
                    || system == "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                "{system}"
            );
        }
        let cov = c["insurance"][0]["coverage"]["reference"].as_str().unwrap_or("");
        assert!(idx.contains_key(cov));
    }
    assert!(types.contains("professional") && types.contains("institutional"));
    let claims_with_eob: HashSet<&str> =
        of_type(data, "ExplanationOfBenefit").filter_map(|e| e["claim"]["reference"].as_str()).collect();
    assert_eq!(claims_with_eob.len(), of_type(data, "Claim").count());
    for e in of_type(data, "ExplanationOfBenefit") {
        assert_eq!(e["outcome"], "complete");
        assert!(e["insurer"]["reference"].is_string());
        assert!(e["provider"]["reference"].is_string());
        assert!(e["payment"]["amount"]["value"].is_number());
        let paid = e["payment"]["date"].as_str().unwrap_or("");
        assert!(paid <= demo::AS_OF, "paid {paid} by {}", demo::AS_OF);
        let totals: Vec<&str> = e["total"]
            .as_array()
            .expect("totals")
            .iter()
            .filter_map(|t| t["category"]["coding"][0]["code"].as_str())
            .collect();
        assert!(totals.contains(&"submitted") && totals.contains(&"benefit"));
    }
    for c in of_type(data, "Coverage") {
        assert!(c["subscriberId"].is_string());
        let classes: Vec<&str> = c["class"]
            .as_array()
            .expect("classes")
            .iter()
            .filter_map(|k| k["type"]["coding"][0]["code"].as_str())
            .collect();
        assert_eq!(classes, ["group", "plan"]);
    }
}

#[test]
fn timeline_spans_several_years_up_to_2026() {
    let data = default_data();
    let starts: Vec<&str> = of_type(data, "Encounter").filter_map(|e| e["period"]["start"].as_str()).collect();
    let years: HashSet<&str> = starts.iter().map(|s| &s[..4]).collect();
    assert!(years.len() >= 5, "{years:?}");
    assert!(years.contains("2026"));
    assert!(starts.iter().all(|s| *s < "2026-03-01"));
    // Encounter periods are well-formed and end after they start.
    for e in of_type(data, "Encounter") {
        let (s, t) = (e["period"]["start"].as_str().unwrap_or(""), e["period"]["end"].as_str().unwrap_or(""));
        assert!(s[..10] <= t[..10]);
    }
}

/// Codes must not contain whitespace; dateTimes with a time carry a timezone.
#[test]
fn primitive_formats() {
    fn walk(key: &str, v: &Value) {
        match v {
            Value::Object(m) => m.iter().for_each(|(k, x)| walk(k, x)),
            Value::Array(a) => a.iter().for_each(|x| walk(key, x)),
            Value::String(s) => {
                if key == "code" || key == "valueCode" || key == "status" || key == "gender" {
                    assert!(!s.is_empty() && !s.chars().any(char::is_whitespace), "{key}: {s:?}");
                }
                if s.len() > 10 && s.as_bytes().get(10) == Some(&b'T') && s[..4].chars().all(|c| c.is_ascii_digit()) {
                    assert!(
                        s.ends_with('Z') || s[s.len() - 6..].starts_with(['+', '-']),
                        "{key}: {s} lacks a timezone"
                    );
                }
            }
            _ => {}
        }
    }
    for b in &default_data().bundles {
        walk("", b);
    }
}

#[test]
fn small_and_large_configs() {
    for (patients, expected) in [(0, 4), (1, 4), (4, 4), (7, 7), (40, 40)] {
        let data = generate(&DemoConfig { seed: 3, patients });
        assert_eq!(of_type(&data, "Patient").count(), expected);
        let idx = index(&data);
        for r in data.resources() {
            for reference in refs_of(r) {
                assert!(idx.contains_key(&reference), "{reference}");
            }
        }
        let acc = &data.accounts;
        assert!(idx.contains_key(&format!("Patient/{}", acc.member_patient_id)));
        assert!(acc.proxy_patient_ids.iter().all(|p| idx.contains_key(&format!("Patient/{p}"))));
    }
}

#[test]
fn generation_is_fast() {
    let start = std::time::Instant::now();
    let data = generate(&DemoConfig::default());
    let elapsed = start.elapsed();
    assert!(data.resources().count() > 1000);
    // Unoptimized test builds on a busy machine; release builds take ~0.1 s.
    assert!(elapsed.as_secs_f64() < 10.0, "{elapsed:?}");
}

// ---------------------------------------------------------------------------
/// Every generated resource passes Portico's structural validation (the official R4 JSON schema).
#[test]
fn resources_validate_against_fhir_r4_json_schema() {
    let data = generate(&DemoConfig::default());
    let validator = fhir::validate::Validator::r4();
    let errors: Vec<String> = data
        .resources()
        .filter_map(|r| {
            validator.validate(r).err().map(|issues| format!("{}/{}: {issues:?}", r["resourceType"], r["id"]))
        })
        .collect();
    assert!(errors.is_empty(), "{} schema errors, first: {:#?}", errors.len(), &errors[..errors.len().min(10)]);
}

#[test]
fn account_ids_do_not_depend_on_patient_count() {
    let small = generate(&DemoConfig { seed: 42, patients: 6 });
    let big = default_data();
    assert_eq!(small.accounts, big.accounts);
    // The first patients' demographics are the same as well.
    let a: Vec<&Value> = of_type(&small, "Patient").take(4).collect();
    let b: Vec<&Value> = of_type(big, "Patient").take(4).collect();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["name"], y["name"]);
        assert_eq!(x["birthDate"], y["birthDate"]);
    }
}

/// Pins the exact output for the default configuration, so that a dependency
/// upgrade (or an accidental change) can't silently alter the demo data.
/// After an intentional generator change, update the expected value.
#[test]
fn default_output_fingerprint_is_pinned() {
    let text = serde_json::to_string(&default_data().bundles).unwrap();
    // FNV-1a, 64 bit.
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    assert_eq!(format!("{hash:016x}"), "6e42ae18fadb0599", "demo output changed ({} bytes)", text.len());
}
