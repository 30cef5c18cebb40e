//! transaction and batch Bundles.

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{Backend, TestServer};

both_backends!(
    transaction_rewrites_urn_references,
    transaction_is_atomic,
    batch_entries_are_independent,
    revinclude_cap_is_reported
);

fn tx(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

async fn transaction_rewrites_urn_references(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let bundle = tx(vec![
        json!({"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
               "resource": {"resourceType": "Patient", "name": [{"family": "Tx"}]},
               "request": {"method": "POST", "url": "Patient"}}),
        json!({"fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222",
               "resource": {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                            "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"}},
               "request": {"method": "POST", "url": "Observation"}}),
        json!({"resource": {"resourceType": "Patient", "id": "put-1", "name": [{"family": "Put"}]},
               "request": {"method": "PUT", "url": "Patient/put-1"}}),
    ]);
    let (status, _, response) = s.post("", &bundle).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["type"], "transaction-response");
    let entries = response["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["response"]["status"], "201 Created");
    assert_eq!(entries[2]["response"]["status"], "201 Created");
    let patient_id = entries[0]["resource"]["id"].as_str().unwrap();
    assert_eq!(entries[1]["resource"]["subject"]["reference"], format!("Patient/{patient_id}"));
    assert!(entries[1]["response"]["location"].as_str().unwrap().contains("/Observation/"));
    // the reference is searchable and in the patient's compartment
    let ids = s.search_ids(&format!("Observation?patient={patient_id}")).await;
    assert_eq!(ids.len(), 1);
    let (_, everything) = s.get(&format!("Patient/{patient_id}/$everything")).await;
    assert_eq!(everything["entry"].as_array().unwrap().len(), 2);
}

async fn transaction_is_atomic(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let (_, _, existing) =
        s.put("Patient/keep", &json!({"resourceType": "Patient", "id": "keep", "gender": "female"})).await;
    assert_eq!(existing["meta"]["versionId"], "1");
    for failing in [
        // invalid resource in the last entry
        json!({"resource": {"resourceType": "Observation", "status": "final"}, "request": {"method": "POST", "url": "Observation"}}),
        // version conflict
        json!({"resource": {"resourceType": "Patient", "id": "keep", "gender": "male"}, "request": {"method": "PUT", "url": "Patient/keep", "ifMatch": "W/\"7\""}}),
        // unknown method
        json!({"resource": {"resourceType": "Patient"}, "request": {"method": "PATCH", "url": "Patient/keep"}}),
    ] {
        let bundle = tx(vec![
            json!({"resource": {"resourceType": "Patient", "name": [{"family": "Atomic"}]}, "request": {"method": "POST", "url": "Patient"}}),
            json!({"resource": {"resourceType": "Patient", "id": "keep", "gender": "other"}, "request": {"method": "PUT", "url": "Patient/keep"}}),
            json!({"request": {"method": "DELETE", "url": "Patient/keep"}}),
            failing,
        ]);
        let (status, _, outcome) = s.post("", &bundle).await;
        assert!(status == 400 || status == 412, "status {status}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert!(outcome["issue"][0]["diagnostics"].as_str().unwrap().contains("Bundle.entry["), "{outcome}");
        assert!(s.search_ids("Patient?family=atomic").await.is_empty(), "no partial write");
        let (status, keep) = s.get("Patient/keep").await;
        assert_eq!(status, 200);
        assert_eq!(keep["meta"]["versionId"], "1");
        assert_eq!(keep["gender"], "female");
    }
    let (_, h) = s.get("_history").await;
    assert_eq!(h["entry"].as_array().unwrap().len(), 1, "history holds only the first PUT");
}

async fn batch_entries_are_independent(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "Batch"}]}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "bogus": true}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"request": {"url": "Patient"}}
    ]});
    let (status, _, response) = s.post("", &bundle).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["type"], "batch-response");
    let e = response["entry"].as_array().unwrap();
    assert_eq!(e[0]["response"]["status"], "201 Created");
    assert!(e[1]["response"]["status"].as_str().unwrap().starts_with("400"));
    assert_eq!(e[1]["response"]["outcome"]["resourceType"], "OperationOutcome");
    assert!(e[2]["response"]["status"].as_str().unwrap().starts_with("404"));
    assert!(e[3]["response"]["status"].as_str().unwrap().starts_with("400"));
    let id = e[0]["resource"]["id"].as_str().unwrap();
    let read = json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": format!("Patient/{id}")}}]});
    let (_, _, r) = s.post("", &read).await;
    assert_eq!(r["entry"][0]["resource"]["id"], id);
    // a document Bundle cannot be posted as a transaction
    let (status, _, _) = s.post("", &json!({"resourceType": "Bundle", "type": "document"})).await;
    assert_eq!(status, 400);
}

/// `_revinclude` adds at most 1000 resources to a page and says so when it stops there.
async fn revinclude_cap_is_reported(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let mut entries = vec![json!({"fullUrl": "urn:uuid:00000000-0000-0000-0000-000000000001",
        "resource": {"resourceType": "Patient", "name": [{"family": "Many"}]}, "request": {"method": "POST", "url": "Patient"}})];
    for i in 0..1001 {
        entries.push(json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": format!("n{i}")},
            "subject": {"reference": "urn:uuid:00000000-0000-0000-0000-000000000001"}}, "request": {"method": "POST", "url": "Observation"}}));
    }
    let (status, _, response) = s.post("", &tx(entries)).await;
    assert_eq!(status, 200);
    let patient = response["entry"][0]["resource"]["id"].as_str().unwrap().to_string();
    let (_, bundle) = s.get(&format!("Patient?_id={patient}&_revinclude=Observation:patient")).await;
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(entries.iter().filter(|e| e["search"]["mode"] == "include").count(), 1000);
    let outcome = entries.iter().find(|e| e["search"]["mode"] == "outcome").expect("a warning says the list was cut");
    assert_eq!(outcome["resource"]["issue"][0]["code"], "too-costly");
    // below the cap there is no warning
    let (_, small) = s.get(&format!("Observation?patient={patient}&_count=3&_include=Observation:patient")).await;
    assert!(small["entry"].as_array().unwrap().iter().all(|e| e["search"]["mode"] != "outcome"));
}
