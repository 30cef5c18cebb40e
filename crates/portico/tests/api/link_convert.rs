//! Link over portals of every FHIR version, and one record per real-world thing: a DSTU2 and an
//! STU3 portal (Synthea fixtures behind a real authorization-code flow) next to an R4 Portico
//! come out as valid R4, converted records say what they were and every portal has its
//! Provenance; records that two portals both hold are merged unless the app asks otherwise.

use std::collections::{BTreeMap, BTreeSet};

use link::directory::Category;
use link::fetch::run::ENDPOINT_TAG_SYSTEM;
use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{shared_fixtures, Backend};
use crate::legacy_portal::{login_at_legacy, Legacy, LegacyPortal};
use crate::link_harness::*;
use crate::smart::Browser;

both_backends!(legacy_portals_come_out_as_r4, duplicates_across_portals_are_merged);

/// A patient the DSTU2 and STU3 fixtures both hold (exported by the same generator).
const FIXTURE: &str = "Auer_Sarah_58.json.gz";

fn resources(bundle: &Value) -> Vec<&Value> {
    bundle["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).collect()
}

fn from<'a>(bundle: &'a Value, base: &str) -> Vec<&'a Value> {
    resources(bundle).into_iter().filter(|r| r["meta"]["source"] == base).collect()
}

fn of_type<'a>(rs: &[&'a Value], t: &str) -> Vec<&'a Value> {
    rs.iter().copied().filter(|r| r["resourceType"] == t).collect()
}

fn provenance_of<'a>(bundle: &'a Value, base: &str) -> &'a Value {
    let found: Vec<&Value> = resources(bundle)
        .into_iter()
        .filter(|r| r["resourceType"] == "Provenance" && r["entity"][0]["what"]["identifier"]["value"] == base)
        .collect();
    assert_eq!(found.len(), 1, "one Provenance for {base}");
    found[0]
}

fn targets(provenance: &Value) -> BTreeSet<String> {
    provenance["target"].as_array().unwrap().iter().map(|t| t["reference"].as_str().unwrap().to_owned()).collect()
}

fn endpoint_tags(r: &Value) -> BTreeSet<String> {
    r["meta"]["tag"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["system"] == ENDPOINT_TAG_SYSTEM)
        .map(|t| t["code"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_valid_r4(bundle: &Value) {
    let validator = fhir::validate::Validator::r4();
    for r in resources(bundle) {
        validator.validate(r).unwrap_or_else(|e| panic!("not valid R4: {e:?}\n{r}"));
    }
}

/// How many of a legacy portal's Observations a fetch of everything keeps: vital signs and
/// laboratory results (the groups Link fetches).
fn grouped_observations(portal: &LegacyPortal) -> usize {
    portal
        .resources
        .iter()
        .filter(|(k, _)| k.starts_with("Observation/"))
        .filter(|(_, r)| {
            let text = r["category"].to_string();
            text.contains("\"vital-signs\"") || text.contains("\"laboratory\"")
        })
        .count()
}

async fn legacy_portals_come_out_as_r4(backend: Backend) {
    let (Some(dstu2_dir), Some(stu3_dir)) =
        (shared_fixtures(Legacy::Dstu2.fixtures()), shared_fixtures(Legacy::Stu3.fixtures()))
    else {
        return;
    };
    let Some(link) = LinkServer::start(backend, |_| {}).await else { return };
    let Some(clinic) = portico_portal(backend, &link, "clinic", |_| {}).await else { return };
    let dstu2 = LegacyPortal::start(Legacy::Dstu2, &dstu2_dir.join(FIXTURE)).await;
    let stu3 = LegacyPortal::start(Legacy::Stu3, &stu3_dir.join(FIXTURE)).await;
    let app = link.app(None).await;
    let key = app.secret_key.as_str();
    let dstu2_ep = link.add_endpoint("Old Town Clinic", Category::Clinical, &dstu2.base, "link").await;
    let stu3_ep = link.add_endpoint("Riverside Hospital", Category::Clinical, &stu3.base, "link").await;
    let clinic_ep = link.add_endpoint("Springfield Clinic", Category::Clinical, &clinic.base, "link").await;

    // Discovery read each portal's version from its Conformance or CapabilityStatement.
    for (ep, version) in [(&dstu2_ep, "1.0.2"), (&stu3_ep, "3.0.1"), (&clinic_ep, "4.0.1")] {
        let endpoint = link.link.require_endpoint(ep).await.unwrap();
        assert_eq!(endpoint.discovery.unwrap().fhir_version.as_deref(), Some(version));
    }

    // The person signs in at both legacy portals through Link (a wrong password first) and at
    // the R4 clinic.
    let mut connections = BTreeMap::new();
    for (portal, ep) in [(&dstu2, &dstu2_ep), (&stu3, &stu3_ep)] {
        let browser = Browser::new();
        let back =
            login_at_legacy(&browser, portal, &connect_url(&link, ep, &app.app.app_id, "s", Some("sarah"))).await;
        let connection = redeem(&link, key, &back).await;
        assert_eq!(connection["patientId"], portal.patient.as_str());
        assert_eq!(connection["refreshable"], true);
        connections.insert(portal.version.fhir_version(), connection["connectionId"].as_str().unwrap().to_owned());
    }
    connect_portico(&link, key, &app.app.app_id, &clinic_ep, &clinic, "sarah").await;

    // Everything, originals kept apart: valid R4 throughout.
    let (status, _, bundle) =
        link.call(key, Method::POST, "/link/v1/persons/sarah/fetch", Some(json!({"dedup": false}))).await;
    assert_eq!(status, 200, "{bundle}");
    assert_valid_r4(&bundle);
    assert!(!resources(&bundle).iter().any(|r| r["resourceType"] == "OperationOutcome"), "no part failed: {bundle}");
    for portal in [&dstu2, &stu3] {
        assert_eq!(portal.unauthorized.load(std::sync::atomic::Ordering::SeqCst), 0, "Link always sent its token");
        let got = from(&bundle, &portal.base);
        let version = fhir::convert::Version::parse(portal.version.fhir_version()).unwrap();
        for r in &got {
            let tags = r["meta"]["tag"].as_array().unwrap();
            assert!(
                tags.iter().any(|t| t["system"] == fhir::convert::SOURCE_VERSION_SYSTEM && t["code"] == version.code()),
                "a converted record says what it was: {r}"
            );
        }
        // Per-type counts: what the portal holds of each fetched type.
        let medication_orders = match portal.version {
            Legacy::Dstu2 => "MedicationOrder",
            Legacy::Stu3 => "MedicationRequest",
        };
        for (t, expected) in [
            ("Patient", 1),
            ("Immunization", portal.count("Immunization")),
            ("Condition", portal.count("Condition")),
            ("Procedure", portal.count("Procedure")),
            ("DiagnosticReport", portal.count("DiagnosticReport")),
            ("CarePlan", portal.count("CarePlan")),
            ("MedicationRequest", portal.count(medication_orders)),
            ("Observation", grouped_observations(portal)),
        ] {
            assert!(expected > 0 || t == "CarePlan", "{t}: the fixture has some");
            assert_eq!(of_type(&got, t).len(), expected, "{t} from the {:?} portal", portal.version);
        }
        let patient = of_type(&got, "Patient")[0];
        assert_eq!(patient["name"][0]["family"], "Auer", "DSTU2's list of family names became one: {patient}");
        // The portal's Provenance: what it supplied, converted from its version.
        let provenance = provenance_of(&bundle, &portal.base);
        assert_eq!(provenance["activity"]["coding"][0]["code"], "TRANSFORM");
        let urls: BTreeSet<String> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["resource"]["meta"]["source"] == portal.base.as_str())
            .map(|e| e["fullUrl"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(targets(provenance), urls);
    }
    let r4 = from(&bundle, &clinic.base);
    assert!(!r4.is_empty());
    assert!(r4.iter().all(|r| !r["meta"]["tag"].to_string().contains(fhir::convert::SOURCE_VERSION_SYSTEM)));
    assert!(provenance_of(&bundle, &clinic.base).get("activity").is_none(), "nothing converted at the R4 portal");

    // A fetch of two types from the DSTU2 portal: its medication orders are searched as
    // MedicationOrder and come back as MedicationRequest.
    let (status, _, meds) = link
        .call(
            key,
            Method::POST,
            &format!("/link/v1/connections/{}/fetch", connections["1.0.2"]),
            Some(json!({"resources": ["MedicationRequest", "Immunization"]})),
        )
        .await;
    assert_eq!(status, 200, "{meds}");
    assert_valid_r4(&meds);
    let got = from(&meds, &dstu2.base);
    assert_eq!(of_type(&got, "MedicationRequest").len(), dstu2.count("MedicationOrder"));
    assert_eq!(of_type(&got, "Immunization").len(), dstu2.count("Immunization"));
    assert_eq!(of_type(&got, "Condition").len(), 0, "only what was asked for");

    // By default the two exports' shared immunizations are one record each, with both sources.
    let (status, _, merged) = link
        .call(key, Method::POST, "/link/v1/persons/sarah/fetch", Some(json!({"resources": ["Immunization"]})))
        .await;
    assert_eq!(status, 200, "{merged}");
    assert_valid_r4(&merged);
    let day = |r: &Value| -> (String, String) {
        (
            r["vaccineCode"]["coding"][0]["code"].as_str().unwrap().to_owned(),
            r["occurrenceDateTime"].as_str().unwrap()[..10].to_owned(),
        )
    };
    let mut union = BTreeSet::new();
    for portal in [&dstu2, &stu3] {
        let originals = of_type(&from(&bundle, &portal.base), "Immunization");
        let distinct: BTreeSet<_> = originals.iter().map(|r| day(r)).collect();
        assert_eq!(distinct.len(), originals.len(), "no two alike within one portal");
        union.extend(distinct);
    }
    let clinic_imms = of_type(&from(&bundle, &clinic.base), "Immunization");
    union.extend(clinic_imms.iter().map(|r| day(r)));
    let imms = of_type(&resources(&merged), "Immunization");
    assert_eq!(imms.len(), union.len(), "one per vaccine and day across three portals");
    let both: Vec<_> = imms.iter().filter(|r| endpoint_tags(r).len() > 1).collect();
    assert!(both.len() >= 10, "the exports share their immunizations: {}", both.len());
}

/// Records beside `portal_records` (which both portals hold alike, under their own ids): the
/// same hepatitis B shot with no date but a shared identifier, the same tetanus shot (no
/// identifier), the same asthma diagnosis under another code system (identifier only), near
/// misses that must stay apart (a flu shot a day later, hypertension diagnosed a year later),
/// and, at the plan, a diagnosis citing a lab that merges away.
fn overlapping(prefix: &str, patient: &str) -> Vec<Value> {
    let subject = json!({"reference": format!("Patient/{patient}")});
    let imm = |id: &str, cvx: &str, when: Value, identifier: Option<&str>| {
        let mut r = json!({"resourceType": "Immunization", "id": format!("{prefix}-{id}"), "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": cvx}]}, "patient": subject});
        for (k, v) in when.as_object().unwrap() {
            r[k] = v.clone();
        }
        if let Some(value) = identifier {
            r["identifier"] = json!([{"system": "urn:oid:2.16.840.1.113883.4.642.99", "value": value}]);
        }
        r
    };
    let plan = prefix == "plan";
    let mut records = vec![
        imm(
            "hepb",
            "08",
            json!({"occurrenceString": if plan { "in childhood" } else { "as an infant" }}),
            Some("IZ-9"),
        ),
        imm("tdap", "115", json!({"occurrenceDateTime": "2019-03-01"}), None),
        imm("flu-2020", "140", json!({"occurrenceDateTime": if plan { "2020-10-02" } else { "2020-10-01" }}), None),
        json!({"resourceType": "Condition", "id": format!("{prefix}-htn"), "subject": subject,
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
            "onsetDateTime": if plan { "2016-06-01" } else { "2015-06-01" }}),
        json!({"resourceType": "Condition", "id": format!("{prefix}-asthma"), "subject": subject,
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.642.98", "value": "C-77"}],
            "code": if plan { json!({"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "J45.909"}]}) }
                    else { json!({"coding": [{"system": "http://snomed.info/sct", "code": "195967001"}]}) }}),
    ];
    if plan {
        records[3]["evidence"] = json!([{"detail": [{"reference": "Observation/plan-a1c-2021"}]}]);
    }
    records
}

async fn duplicates_across_portals_are_merged(backend: Backend) {
    let Some(link) = LinkServer::start(backend, |_| {}).await else { return };
    let Some(clinic) = portico_portal(backend, &link, "clinic", |_| {}).await else { return };
    let Some(plan) = portico_portal(backend, &link, "plan", |_| {}).await else { return };
    clinic.seed(overlapping("clinic", "p1")).await;
    plan.seed(overlapping("plan", "p1")).await;
    let app = link.app(None).await;
    let key = app.secret_key.as_str();
    let clinic_ep = link.add_endpoint("Springfield Clinic", Category::Clinical, &clinic.base, "link").await;
    let plan_ep = link.add_endpoint("Springfield Health Plan", Category::Payer, &plan.base, "link").await;
    connect_portico(&link, key, &app.app.app_id, &clinic_ep, &clinic, "alice").await;
    connect_portico(&link, key, &app.app.app_id, &plan_ep, &plan, "alice").await;
    let body = json!({"resources": ["Patient", "Immunization", "Condition", "Labs"]});

    let (status, _, merged) = link.call(key, Method::POST, "/link/v1/persons/alice/fetch", Some(body.clone())).await;
    assert_eq!(status, 200, "{merged}");
    assert_valid_r4(&merged);
    let rs = resources(&merged);
    let ids = |t: &str| -> BTreeSet<String> {
        of_type(&rs, t).iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
    };
    let set = |items: &[&str]| -> BTreeSet<String> { items.iter().map(|s| (*s).to_owned()).collect() };
    assert_eq!(
        ids("Immunization"),
        set(&["clinic-flu", "clinic-hepb", "clinic-tdap", "clinic-flu-2020", "plan-flu-2020"]),
        "same shots merged (identifier, or vaccine and day), a shot a day later kept apart"
    );
    assert_eq!(
        ids("Condition"),
        set(&["clinic-diabetes", "clinic-asthma", "clinic-htn", "plan-htn"]),
        "the same diagnoses merged, hypertension a year later kept apart"
    );
    assert_eq!(
        ids("Observation"),
        set(&["clinic-a1c-2019", "clinic-a1c-2021", "clinic-glucose-2021"]),
        "the same labs (code, time, value) merged"
    );
    assert_eq!(of_type(&rs, "Patient").len(), 2, "each portal's Patient is kept");

    // Each merged record keeps both sources: the endpoint tags and both portals' Provenance.
    let by_id = |id: &str| *rs.iter().find(|r| r["id"] == id).unwrap();
    let both = set(&[clinic_ep.as_str(), plan_ep.as_str()]);
    for id in ["clinic-flu", "clinic-hepb", "clinic-tdap", "clinic-diabetes", "clinic-asthma", "clinic-a1c-2021"] {
        assert_eq!(endpoint_tags(by_id(id)), both, "{id} names both portals");
        assert_eq!(by_id(id)["meta"]["source"], clinic.base.as_str(), "the first portal named keeps its record");
    }
    for id in ["clinic-flu-2020", "clinic-htn"] {
        assert_eq!(endpoint_tags(by_id(id)), set(&[clinic_ep.as_str()]));
    }
    let clinic_flu = format!("{}/Immunization/clinic-flu", clinic.base);
    let plan_targets = targets(provenance_of(&merged, &plan.base));
    assert!(plan_targets.contains(&clinic_flu), "the plan's Provenance names the record it also supplied");
    assert!(plan_targets.contains(&format!("{}/Immunization/plan-flu-2020", plan.base)));
    assert!(!plan_targets.iter().any(|t| t.ends_with("/plan-flu")), "nothing names a record merged away");
    assert!(targets(provenance_of(&merged, &clinic.base)).contains(&clinic_flu));
    // The plan's hypertension cited its lab, which merged into the clinic's: the reference follows.
    assert_eq!(
        by_id("plan-htn")["evidence"][0]["detail"][0]["reference"],
        format!("{}/Observation/clinic-a1c-2021", clinic.base)
    );

    // "dedup": false returns the originals.
    let mut originals_body = body.clone();
    originals_body["dedup"] = json!(false);
    let (status, _, originals) =
        link.call(key, Method::POST, "/link/v1/persons/alice/fetch", Some(originals_body)).await;
    assert_eq!(status, 200, "{originals}");
    let rs = resources(&originals);
    assert_eq!(of_type(&rs, "Immunization").len(), 8);
    assert_eq!(of_type(&rs, "Condition").len(), 6);
    assert!(rs.iter().filter(|r| r["resourceType"] != "Provenance").all(|r| endpoint_tags(r).len() == 1));
    let htn = rs.iter().find(|r| r["id"] == "plan-htn").unwrap();
    assert_eq!(htn["evidence"][0]["detail"][0]["reference"], "Observation/plan-a1c-2021");

    // A bad value for the option is refused.
    let (status, _, refused) =
        link.call(key, Method::POST, "/link/v1/persons/alice/fetch", Some(json!({"dedup": "no"}))).await;
    assert_eq!(status, 400, "{refused}");
}
