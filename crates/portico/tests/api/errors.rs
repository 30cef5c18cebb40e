//! Everything a client can get wrong is answered with an OperationOutcome and a 4xx status, and
//! nothing is written.

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{Backend, TestServer};

both_backends!(
    bad_requests_get_operation_outcomes,
    body_limits_and_content_types,
    search_errors,
    metadata_and_health,
    unknown_endpoints_and_methods
);

async fn expect_outcome(r: reqwest::Response, status: u16, contains: &str) {
    assert_eq!(r.status().as_u16(), status);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/fhir+json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    let text = body["issue"].to_string();
    assert!(text.contains(contains), "expected '{contains}' in {text}");
}

async fn bad_requests_get_operation_outcomes(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let post = |path: &str, body: &str| {
        s.client.post(s.url(path)).header("content-type", "application/fhir+json").body(body.to_string()).send()
    };
    expect_outcome(post("Patient", "{not json").await.unwrap(), 400, "not valid JSON").await;
    expect_outcome(post("Patient", "[1,2]").await.unwrap(), 400, "JSON object").await;
    expect_outcome(
        post("Patient", r#"{"resourceType":"Observation","status":"final","code":{"text":"x"}}"#).await.unwrap(),
        400,
        "does not match",
    )
    .await;
    expect_outcome(post("Patient", r#"{"resourceType":"Patient","foo":1}"#).await.unwrap(), 400, "foo").await;
    expect_outcome(
        post("Patient", r#"{"resourceType":"Patient","birthDate":"1980-02-30"}"#).await.unwrap(),
        400,
        "birthDate",
    )
    .await;
    expect_outcome(
        post("Observation", r#"{"resourceType":"Observation","status":"final"}"#).await.unwrap(),
        400,
        "code",
    )
    .await;
    expect_outcome(post("Unicorn", r#"{"resourceType":"Unicorn"}"#).await.unwrap(), 404, "Unicorn").await;
    // control characters are not allowed in FHIR strings (and PostgreSQL's jsonb refuses NUL)
    expect_outcome(
        post("Patient", r#"{"resourceType":"Patient","name":[{"text":"a\u0000b"}]}"#).await.unwrap(),
        400,
        "Patient.name",
    )
    .await;
    expect_outcome(s.client.get(s.url("Unicorn/1")).send().await.unwrap(), 404, "Unicorn").await;
    // id mismatch and missing id on update
    expect_outcome(
        s.client
            .put(s.url("Patient/a"))
            .header("content-type", "application/fhir+json")
            .body(r#"{"resourceType":"Patient","id":"b"}"#)
            .send()
            .await
            .unwrap(),
        400,
        "does not match",
    )
    .await;
    expect_outcome(
        s.client
            .put(s.url("Patient/a"))
            .header("content-type", "application/fhir+json")
            .body(r#"{"resourceType":"Patient"}"#)
            .send()
            .await
            .unwrap(),
        400,
        "id",
    )
    .await;
    expect_outcome(
        s.client
            .put(s.url("Patient/a"))
            .header("content-type", "application/fhir+json")
            .header("if-match", "banana")
            .body(r#"{"resourceType":"Patient","id":"a"}"#)
            .send()
            .await
            .unwrap(),
        400,
        "If-Match",
    )
    .await;
    // bad ids in the URL
    expect_outcome(
        s.client
            .put(s.url("Patient/bad$id"))
            .header("content-type", "application/fhir+json")
            .body(r#"{"resourceType":"Patient","id":"bad$id"}"#)
            .send()
            .await
            .unwrap(),
        400,
        "not a valid id",
    )
    .await;
    // nothing of the above was written
    let (_, all) = s.get("Patient?_summary=count").await;
    assert_eq!(all["total"], 0);
    let (_, h) = s.get("_history").await;
    assert!(h.get("entry").is_none(), "no entries, and no empty array either: {h}");
}

async fn body_limits_and_content_types(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| {
        c.max_body_bytes = 2048;
        c.dev_open_access = true;
    })
    .await
    else {
        return;
    };
    let big = json!({"resourceType": "Patient", "name": [{"text": "x".repeat(4096)}]});
    expect_outcome(
        s.client
            .post(s.url("Patient"))
            .header("content-type", "application/fhir+json")
            .body(big.to_string())
            .send()
            .await
            .unwrap(),
        413,
        "larger than",
    )
    .await;
    expect_outcome(
        s.client
            .post(s.url("Patient"))
            .header("content-type", "application/xml")
            .body("<Patient/>")
            .send()
            .await
            .unwrap(),
        415,
        "Content-Type",
    )
    .await;
    expect_outcome(
        s.client
            .post(s.url("Patient/_search"))
            .header("content-type", "text/plain")
            .body("name=x")
            .send()
            .await
            .unwrap(),
        415,
        "form-urlencoded",
    )
    .await;
    let (_, all) = s.get("Patient?_summary=count").await;
    assert_eq!(all["total"], 0);
}

async fn search_errors(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    for (query, needle) in [
        ("Patient?foo=bar", "unknown search parameter"),
        ("Observation?date=2015-13-45", "not a valid FHIR date"),
        ("Observation?value-quantity=abc", "not a number"),
        ("Patient?gender:exact=male", "modifier"),
        ("Patient?_count=lots", "_count"),
        ("Patient?_sort=nonsense", "sort"),
        ("Patient?_include=Observation:patient", "_include"),
        ("Patient?_cursor=garbage", "cursor"),
        ("Patient?_summary=maybe", "_summary"),
        ("Observation?subject.name=x", "chained"),
    ] {
        expect_outcome(s.client.get(s.url(query)).send().await.unwrap(), 400, needle).await;
    }
    // lenient handling ignores unknown parameters and says so
    let r = s.client.get(s.url("Patient?foo=bar")).header("prefer", "handling=lenient").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let bundle: Value = r.json().await.unwrap();
    let outcome = bundle["entry"].as_array().unwrap().iter().find(|e| e["search"]["mode"] == "outcome").unwrap();
    assert!(outcome["resource"]["issue"][0]["diagnostics"].as_str().unwrap().contains("foo"));
    assert_eq!(s.send(Method::GET, "Patient/x/$nothing", None).await.0, 404);
    // control characters never reach the database
    expect_outcome(s.client.get(s.url("Patient?name=a%00b")).send().await.unwrap(), 400, "control characters").await;
    for path in ["Patient/a%00b", "Patient/a%00b/_history/1", "Patient/a%00b/_history", "Patient/a%00b/$everything"] {
        expect_outcome(s.client.get(s.url(path)).send().await.unwrap(), 404, "not a valid FHIR id").await;
    }
    expect_outcome(s.client.delete(s.url("Patient/a%00b")).send().await.unwrap(), 404, "not a valid FHIR id").await;
    // _count=0 counts rather than claiming there is nothing
    for i in 0..3 {
        s.post("Patient", &json!({"resourceType": "Patient", "name": [{"family": format!("Count{i}")}]})).await;
    }
    let (status, counted) = s.get("Patient?_count=0").await;
    assert_eq!((status, counted["total"].clone()), (200, json!(3)));
    assert!(counted.get("entry").is_none());
}

async fn metadata_and_health(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let (status, cs) = s.get("metadata").await;
    assert_eq!(status, 200);
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let patient = cs["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Patient").unwrap();
    let names: Vec<&str> =
        patient["searchParam"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for expected in ["_id", "_lastUpdated", "name", "birthdate", "identifier", "general-practitioner"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    // composite parameters are not claimed
    let obs = cs["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Observation").unwrap();
    assert!(!obs["searchParam"].to_string().contains("code-value-quantity"));
    let health = s.client.get(format!("{}/healthz", s.origin)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let ready = s.client.get(format!("{}/readyz", s.origin)).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
}

/// Paths that name no FHIR interaction are 404s and methods an endpoint lacks are 405s, both as
/// OperationOutcomes; the system endpoint takes Bundles with and without a trailing slash.
async fn unknown_endpoints_and_methods(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    for path in
        ["Patient/x/_history/1/more", "Patient/x/y/z", "a/b/c/d/e/f", "Patient/", "Patient/x/", "Patient/x/_history/"]
    {
        expect_outcome(s.client.get(s.url(path)).send().await.unwrap(), 404, "no such FHIR endpoint").await;
    }
    expect_outcome(s.client.patch(s.url("Patient/x")).send().await.unwrap(), 405, "PATCH is not supported").await;
    expect_outcome(s.client.put(s.url("_history")).send().await.unwrap(), 405, "PUT is not supported").await;
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": "metadata"}}]});
    for path in ["", "/"] {
        let r = s
            .client
            .post(format!("{}{path}", s.url("")))
            .header("content-type", "application/fhir+json")
            .body(batch.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "POST base{path}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["type"], "batch-response", "{answer}");
    }
}
