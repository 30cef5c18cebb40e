//! Bulk Data Access 2.0 `$export` over HTTP: what an export holds is what a search of the same
//! scope finds, line for line, under the same access (scopes, compartments, withheld categories).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use auth::SensitiveCategory;
use serde_json::{json, Value};
use store::auth::Role;
use store::{Clock, Restriction, WriteRequest};

use crate::both_backends;
use crate::enforcement::{apps, token, user, Demo};
use crate::harness::{Backend, TestServer};
use crate::smart::register_with;

const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";

async fn bulk_server(backend: Backend, dir: &tempfile::TempDir) -> Option<TestServer> {
    let storage = dir.path().join("bulk").to_string_lossy().into_owned();
    TestServer::start_with(backend, move |c| {
        c.bulk.storage = Some(storage);
        c.bulk.min_poll_interval_ms = 0;
        // Small files and pages, so types span several files and pages.
        c.bulk.resources_per_file = 150;
        c.bulk.page_size = 40;
    })
    .await
}

/// Kick off (GET) and answer the status URL.
async fn kick_off(server: &TestServer, token: &str, path: &str, prefer: &str) -> (u16, Option<String>, Value) {
    let r = server
        .client
        .get(server.url(path))
        .bearer_auth(token)
        .header("accept", "application/fhir+json")
        .header("prefer", prefer)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r.headers().get("content-location").map(|v| v.to_str().unwrap().to_owned());
    (status, location, r.json().await.unwrap_or(Value::Null))
}

/// Poll until the manifest (bounded; the export runs in the background).
async fn manifest(server: &TestServer, token: &str, status_url: &str) -> Value {
    for _ in 0..600 {
        let r = server.client.get(status_url).bearer_auth(token).send().await.unwrap();
        match r.status().as_u16() {
            202 => {
                assert!(r.headers().get("x-progress").is_some(), "202 without X-Progress");
                assert!(r.headers().get("retry-after").is_some(), "202 without Retry-After");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            200 => return r.json().await.unwrap(),
            other => panic!("status {other}: {}", r.text().await.unwrap()),
        }
    }
    panic!("the export did not finish in 30 s");
}

async fn export(server: &TestServer, token: &str, path: &str) -> Value {
    let (status, location, body) = kick_off(server, token, path, "respond-async").await;
    assert_eq!(status, 202, "kick-off {path}: {body}");
    manifest(server, token, &location.expect("Content-Location")).await
}

/// Every line of every `output` file, by type, as `Type/id` (in file order; duplicates kept),
/// each line checked against the manifest's counts.
async fn lines(server: &TestServer, token: &str, manifest: &Value, key: &str) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for file in manifest[key].as_array().unwrap() {
        let r = server.client.get(file["url"].as_str().unwrap()).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.headers()["content-type"], "application/fhir+ndjson");
        let text = r.text().await.unwrap();
        let parsed: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
        if key != "error" {
            assert_eq!(parsed.len() as i64, file["count"].as_i64().unwrap(), "count of {}", file["url"]);
        }
        out.entry(file["type"].as_str().unwrap().to_owned()).or_default().extend(parsed);
    }
    out
}

fn ids(lines: &[Value]) -> Vec<String> {
    lines.iter().map(|r| format!("{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap())).collect()
}

/// Every id a search of `rtype?query` finds under `restriction`, through all pages.
async fn searched(server: &TestServer, rtype: &str, query: &str, restriction: &Restriction) -> BTreeSet<String> {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    pairs.push(("_count".into(), "500".into()));
    let mut request = fhir::search::parse(fhir::Registry::r4(), rtype, &pairs, fhir::search::Handling::Strict).unwrap();
    let mut found = BTreeSet::new();
    loop {
        let page = server.store.search(&request, restriction).await.unwrap();
        found.extend(page.matches.iter().map(|m| format!("{}/{}", m.resource_type, m.id)));
        match page.next_cursor {
            Some(c) => request.cursor = Some(c),
            None => return found,
        }
    }
}

/// The export of one type holds exactly the search's ids, each once.
fn same(what: &str, exported: &[String], expected: &BTreeSet<String>) {
    let set: BTreeSet<String> = exported.iter().cloned().collect();
    assert_eq!(set.len(), exported.len(), "{what}: a resource was exported twice");
    assert_eq!(&set, expected, "{what}: the export differs from the search");
}

both_backends!(exports_hold_what_searches_find);

async fn exports_hold_what_searches_find(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = bulk_server(backend, &dir).await else { return };
    apps(&server).await;
    let demo = Demo::load(&server).await;
    let svc = token(&server, None, "system/*.rs", None, &[]).await;
    let all = Restriction::default();

    // System level, every type: each type's lines are its search's ids.
    let m = export(&server, &svc, "/$export").await;
    assert_eq!(m["requiresAccessToken"], true);
    assert!(m["request"].as_str().unwrap().ends_with("/fhir/$export"));
    assert!(m["transactionTime"].as_str().unwrap().ends_with('Z'));
    assert!(m.get("deleted").is_none(), "no deleted list without _since");
    let out = lines(&server, &svc, &m, "output").await;
    let stored: BTreeSet<String> =
        demo.data.resources().map(|r| r["resourceType"].as_str().unwrap().to_owned()).collect();
    assert_eq!(out.keys().cloned().collect::<BTreeSet<_>>(), stored);
    for (t, rows) in &out {
        same(&format!("system {t}"), &ids(rows), &searched(&server, t, "", &all).await);
    }
    let big = out.iter().find(|(_, rows)| rows.len() > 150).map(|(t, _)| t.clone()).expect("a type over one file");
    assert!(m["output"].as_array().unwrap().iter().filter(|f| f["type"] == big.as_str()).count() >= 2);

    // Patient level with _type and _typeFilter.
    let m = export(
        &server,
        &svc,
        &format!(
            "/Patient/$export?_type=Observation,Condition&_typeFilter=Observation%3Fcategory%3D{}",
            urlencode(LAB)
        ),
    )
    .await;
    let out = lines(&server, &svc, &m, "output").await;
    assert_eq!(out.keys().cloned().collect::<Vec<_>>(), vec!["Condition", "Observation"]);
    same(
        "lab observations",
        &ids(&out["Observation"]),
        &searched(&server, "Observation", &format!("category={LAB}"), &all).await,
    );
    same("conditions", &ids(&out["Condition"]), &searched(&server, "Condition", "", &all).await);

    // _elements: only the named elements (and the mandatory ones), marked SUBSETTED.
    let m = export(&server, &svc, "/$export?_type=Patient&_elements=Patient.gender,birthDate").await;
    for p in &lines(&server, &svc, &m, "output").await["Patient"] {
        let keys: BTreeSet<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(keys.is_subset(&["resourceType", "id", "meta", "gender", "birthDate"].into()), "{keys:?}");
        assert!(p["meta"]["tag"].as_array().unwrap().iter().any(|t| t["code"] == "SUBSETTED"));
    }

    // Group level: the members' compartments, nothing else.
    let patients: Vec<String> = demo
        .data
        .resources()
        .filter(|r| r["resourceType"] == "Patient")
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let members = vec![patients[0].clone(), patients[1].clone()];
    let group = json!({"resourceType": "Group", "id": "attributed", "type": "person", "actual": true,
        "member": [{"entity": {"reference": format!("Patient/{}", members[0])}},
                   {"entity": {"reference": format!("Patient/{}", members[1])}},
                   {"entity": {"reference": format!("Patient/{}", patients[2])}, "inactive": true}]});
    server.seed(vec![group]).await;
    let m = export(&server, &svc, "/Group/attributed/$export?_type=Encounter,Patient").await;
    let out = lines(&server, &svc, &m, "output").await;
    let of_members = Restriction::new(Some(Arc::new(members.clone())), Arc::new(vec![]), Default::default());
    for t in ["Encounter", "Patient"] {
        same(&format!("group {t}"), &ids(&out[t]), &searched(&server, t, "", &of_members).await);
    }
    let (status, _, _) = kick_off(&server, &svc, "/Group/no-such-group/$export", "respond-async").await;
    assert_eq!(status, 404);

    // _since: what changed since, and the deletions in `deleted`.
    server.clock.advance(10);
    let since = server.clock.now().format(&time::format_description::well_known::Rfc3339).unwrap();
    server.clock.advance(1);
    let cond_id = searched(&server, "Condition", "", &all).await.into_iter().next().unwrap();
    let delete = WriteRequest::Delete {
        resource_type: "Condition".into(),
        id: cond_id.trim_start_matches("Condition/").into(),
        if_match: None,
    };
    let new_obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "late"},
        "subject": {"reference": format!("Patient/{}", patients[0])}});
    let written = server.store.write(vec![delete, WriteRequest::Create { resource: new_obs }]).await.unwrap();
    let created_id = written[1].id.clone();
    let m = export(&server, &svc, &format!("/$export?_since={}", urlencode(&since))).await;
    let out = lines(&server, &svc, &m, "output").await;
    assert_eq!(out.keys().cloned().collect::<Vec<_>>(), vec!["Observation"]);
    assert_eq!(ids(&out["Observation"]), vec![format!("Observation/{created_id}")]);
    let deleted = lines(&server, &svc, &m, "deleted").await;
    let urls: Vec<&str> =
        deleted["Condition"].iter().map(|b| b["entry"][0]["request"]["url"].as_str().unwrap()).collect();
    assert_eq!(urls, vec![cond_id.as_str()]);
    assert_eq!(deleted["Condition"][0]["entry"][0]["request"]["method"], "DELETE");

    // A backend client with a granular scope exports only that category; a type outside its
    // scopes is refused (strict) or left out with a note in `error` (lenient).
    let (jwks, _, _) = crate::smart::backend_keys();
    let lab_scope = format!("system/Observation.rs?category={LAB}");
    register_with(
        &server,
        "lab-svc",
        store::auth::ClientType::ConfidentialAsymmetric,
        vec![],
        &lab_scope,
        Some(jwks),
        false,
    )
    .await;
    let lab = client_token(&server, "lab-svc", &lab_scope).await;
    let m = export(&server, &lab, "/$export").await;
    let out = lines(&server, &lab, &m, "output").await;
    assert_eq!(out.keys().cloned().collect::<Vec<_>>(), vec!["Observation"]);
    same(
        "lab scope",
        &ids(&out["Observation"]),
        &searched(&server, "Observation", &format!("category={LAB}"), &all).await,
    );
    let (status, _, _) = kick_off(&server, &lab, "/$export?_type=Condition", "respond-async").await;
    assert_eq!(status, 403);
    let m = export_with(&server, &lab, "/$export?_type=Condition,Observation", "respond-async, handling=lenient").await;
    let errors = lines(&server, &lab, &m, "error").await;
    assert!(errors["OperationOutcome"][0]["issue"][0]["diagnostics"].as_str().unwrap().contains("Condition"));
    assert!(m["output"].as_array().unwrap().iter().all(|f| f["type"] == "Observation"));

    // Another client knows neither the job nor its files.
    let (status, location, _) = kick_off(&server, &svc, "/$export?_type=Patient", "respond-async").await;
    assert_eq!(status, 202);
    let location = location.unwrap();
    let done = manifest(&server, &svc, &location).await;
    let file = done["output"][0]["url"].as_str().unwrap().to_owned();
    for (url, what) in [(&location, "status"), (&file, "file")] {
        let r = server.client.get(url).bearer_auth(&lab).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "another client's {what}");
        let r = server.client.get(url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{what} without a token");
    }
    // A second token of the same client may download.
    let svc2 = token(&server, None, "system/*.rs", None, &[]).await;
    assert_eq!(server.client.get(&file).bearer_auth(&svc2).send().await.unwrap().status().as_u16(), 200);

    // Files expire: past the configured time the status and the files are gone.
    server.clock.advance(3601);
    let svc = token(&server, None, "system/*.rs", None, &[]).await; // the first one expired too
    for url in [&location, &file] {
        assert_eq!(server.client.get(url).bearer_auth(&svc).send().await.unwrap().status().as_u16(), 404);
    }

    // Cancel: DELETE answers 202, then the job is unknown.
    let (status, location, _) = kick_off(&server, &svc, "/$export", "respond-async").await;
    assert_eq!(status, 202);
    let location = location.unwrap();
    let r = server.client.delete(&location).bearer_auth(&svc).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(server.client.get(&location).bearer_auth(&svc).send().await.unwrap().status().as_u16(), 404);
    assert_eq!(server.client.delete(&location).bearer_auth(&svc).send().await.unwrap().status().as_u16(), 404);

    // Bad kick-offs are answered at once.
    for (path, prefer, want) in [
        ("/$export", "", 400),
        ("/$export?_outputFormat=text/csv", "respond-async", 400),
        ("/$export?_since=yesterday", "respond-async", 400),
        ("/$export?_type=Nonsense", "respond-async", 400),
        ("/$export?_typeFilter=Observation%3F_sort%3Ddate", "respond-async", 400),
        ("/Patient/$export?includeAssociatedData=_custom", "respond-async", 400),
        ("/Patient/$export?_type=Practitioner", "respond-async", 403),
    ] {
        let (status, _, body) = kick_off(&server, &svc, path, prefer).await;
        assert_eq!(status, want, "{path}: {body}");
        assert_eq!(body["resourceType"], "OperationOutcome", "{path}");
    }
    let (status, _, _) =
        kick_off(&server, &svc, "/Patient/$export?includeAssociatedData=x", "respond-async, handling=lenient").await;
    assert_eq!(status, 202);
    // POST with a Parameters body (and `patient`).
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient"},
        {"name": "patient", "valueReference": {"reference": format!("Patient/{}", members[0])}}]});
    let r = server
        .client
        .post(server.url("/Patient/$export"))
        .bearer_auth(&svc)
        .header("prefer", "respond-async")
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let location = r.headers()["content-location"].to_str().unwrap().to_owned();
    let m = manifest(&server, &svc, &location).await;
    assert_eq!(ids(&lines(&server, &svc, &m, "output").await["Patient"]), vec![format!("Patient/{}", members[0])]);
}

both_backends!(person_exports_keep_the_persons_limits);

/// A patient-authorized export holds the patient's compartment without what the grant withheld;
/// a practitioner's holds their patients only.
async fn person_exports_keep_the_persons_limits(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = bulk_server(backend, &dir).await else { return };
    apps(&server).await;
    let demo = Demo::load(&server).await;
    let member = demo.data.accounts.member_patient_id.clone();
    user(&server, "member", Role::Patient, Some(format!("Patient/{member}")), &[&member]).await;
    let withheld = [SensitiveCategory::BehavioralHealth, SensitiveCategory::SubstanceUse];
    let t = token(&server, Some("member"), "patient/*.rs", Some(&member), &withheld).await;
    let m = export(&server, &t, "/Patient/$export").await;
    let out = lines(&server, &t, &m, "output").await;
    let codes: Vec<String> = vec!["PSY".into(), "ETH".into()];
    let view = Restriction::new(Some(Arc::new(vec![member.clone()])), Arc::new(codes), Default::default());
    let mut labeled = 0;
    for (rtype, rows) in &out {
        same(&format!("member {rtype}"), &ids(rows), &searched(&server, rtype, "", &view).await);
        for r in rows {
            let labels = r["meta"]["security"].as_array().cloned().unwrap_or_default();
            assert!(labels.iter().all(|l| l["code"] != "PSY" && l["code"] != "ETH"), "withheld record exported: {r}");
        }
    }
    for t in ["Condition", "Encounter", "Observation"] {
        labeled += searched(
            &server,
            t,
            &format!("patient={member}&_security=http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY"),
            &Restriction::default(),
        )
        .await
        .len();
    }
    assert!(labeled > 0, "the member has labeled records to withhold");
    // The same grant cannot export another patient's data: their compartment is empty to it.
    let other = demo.data.resources().find(|r| r["resourceType"] == "Patient" && r["id"] != member.as_str()).unwrap();
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": format!("Patient/{}", other["id"].as_str().unwrap())}}]});
    let r = server
        .client
        .post(server.url("/Patient/$export"))
        .bearer_auth(&t)
        .header("prefer", "respond-async")
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let location = r.headers()["content-location"].to_str().unwrap().to_owned();
    let m = manifest(&server, &t, &location).await;
    assert_eq!(m["output"], json!([]), "another patient's data through a patient grant");
    // Revoking the grant ends its exports: the status URL is gone.
    let (_, location, _) = kick_off(&server, &t, "/Patient/$export", "respond-async").await;
    let job = location.unwrap().rsplit('/').next().unwrap().to_owned();
    let user_id = server.store.user_by_username("member").await.unwrap().unwrap().user_id;
    for g in server.store.grants_for_user(&user_id).await.unwrap() {
        server.store.revoke_grant(&g.grant_id, "test").await.unwrap();
    }
    let record = server.store.job(&job).await.unwrap().unwrap();
    assert_eq!(record.status, store::JobStatus::Cancelled, "revoking the grant cancels its export");
}

/// A token for a grant of `client` (a backend service) with `scopes`.
async fn client_token(server: &TestServer, client: &str, scopes: &str) -> String {
    let grant = server
        .store
        .create_grant(store::auth::NewGrant {
            lifetime_seconds: Some(3600),
            ..store::auth::NewGrant::new(client.parse().unwrap(), auth::ScopeSet::parse(scopes).0)
        })
        .await
        .unwrap();
    server.auth.access_token_for(&grant).await.unwrap().access_token
}

async fn export_with(server: &TestServer, token: &str, path: &str, prefer: &str) -> Value {
    let (status, location, body) = kick_off(server, token, path, prefer).await;
    assert_eq!(status, 202, "kick-off {path}: {body}");
    manifest(server, token, &location.expect("Content-Location")).await
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

both_backends!(associated_provenance_follows_the_exported_resources);

/// `includeAssociatedData`: the Provenance naming an exported resource in `target` is added —
/// every one (`RelevantProvenanceResources`) or each resource's most recent by `recorded`
/// (`LatestProvenanceResources`) — under the same view as the resources themselves, and none twice.
async fn associated_provenance_follows_the_exported_resources(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = bulk_server(backend, &dir).await else { return };
    apps(&server).await;
    let demo = Demo::load(&server).await;
    let member = demo.data.accounts.member_patient_id.clone();
    let other = demo.data.resources().find(|r| r["resourceType"] == "Patient" && r["id"] != member.as_str()).unwrap()
        ["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let obs = |id: &str, category: &str, patient: &str| {
        json!({"resourceType": "Observation", "id": id, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": category}]}],
            "code": {"text": id}, "subject": {"reference": format!("Patient/{patient}")}})
    };
    let prov = |id: &str, recorded: &str, targets: &[String]| {
        json!({"resourceType": "Provenance", "id": id, "recorded": recorded,
            "target": targets.iter().map(|t| json!({"reference": t})).collect::<Vec<_>>(),
            "agent": [{"who": {"display": "test"}}]})
    };
    // A behavioral-health record (labels already present are kept).
    let mut psy_obs = obs("psy-1", "survey", &member);
    psy_obs["meta"] =
        json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]});
    let psy = "Observation/psy-1".to_owned();
    let (me, them) = (format!("Patient/{member}"), format!("Patient/{other}"));
    server
        .seed(vec![
            obs("lab-1", "laboratory", &member),
            obs("vital-1", "vital-signs", &member),
            obs("lab-2", "laboratory", &other),
            psy_obs,
            json!({"resourceType": "Condition", "id": "cond-1", "subject": {"reference": me},
                   "code": {"text": "c"}}),
            prov("p-old", "2024-01-01T00:00:00Z", &[me.clone(), "Observation/lab-1".into(), "Condition/cond-1".into()]),
            prov("p-new", "2024-06-01T00:00:00Z", &[me.clone(), "Observation/lab-1".into()]),
            prov("p-vital", "2024-02-01T00:00:00Z", &[me.clone(), format!("{}/Observation/vital-1", server.base)]),
            prov("p-them", "2024-03-01T00:00:00Z", &[them.clone(), "Observation/lab-2/_history/1".into()]),
            prov("p-psy", "2024-04-01T00:00:00Z", &[me.clone(), psy.clone()]),
            prov(
                "p-nothing",
                "2025-01-01T00:00:00Z",
                &["Observation/no-such".into(), "https://elsewhere/Observation/lab-1".into()],
            ),
        ])
        .await;
    let svc = token(&server, None, "system/*.rs", None, &[]).await;
    let provenance = |out: &BTreeMap<String, Vec<Value>>| -> Vec<String> {
        let mut ids: Vec<String> = out
            .get("Provenance")
            .map(|rows| rows.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        ids.sort();
        ids
    };
    let export_out = |path: String, token: String| {
        let server = &server;
        async move {
            let m = export(server, &token, &path).await;
            (lines(server, &token, &m, "output").await, m)
        }
    };

    // Every Provenance of an exported resource; not one naming nothing exported.
    let (out, m) =
        export_out("/$export?_type=Observation&includeAssociatedData=RelevantProvenanceResources".into(), svc.clone())
            .await;
    assert_eq!(provenance(&out), vec!["p-new", "p-old", "p-psy", "p-them", "p-vital"]);
    assert!(m["output"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["url"].as_str().unwrap().contains("Provenance-associated")));
    // The latest per resource: p-old is lab-1's older one, and the Condition is not exported.
    let (out, _) =
        export_out("/$export?_type=Observation&includeAssociatedData=LatestProvenanceResources".into(), svc.clone())
            .await;
    assert_eq!(provenance(&out), vec!["p-new", "p-psy", "p-them", "p-vital"]);
    // With the Condition exported, p-old is its latest.
    let (out, _) = export_out(
        "/$export?_type=Observation,Condition&includeAssociatedData=LatestProvenanceResources".into(),
        svc.clone(),
    )
    .await;
    assert!(provenance(&out).contains(&"p-old".to_owned()));
    // _typeFilter narrows the resources, and with them their Provenance; the Patient level too.
    let (out, _) = export_out(
        format!(
            "/Patient/$export?_type=Observation&_typeFilter=Observation%3Fcategory%3D{}&includeAssociatedData=RelevantProvenanceResources",
            urlencode(LAB)
        ),
        svc.clone(),
    )
    .await;
    assert_eq!(provenance(&out), vec!["p-new", "p-old", "p-them"]);
    // Provenance exported as a type too: each one once.
    let (out, _) = export_out(
        "/$export?_type=Observation,Provenance&includeAssociatedData=RelevantProvenanceResources".into(),
        svc.clone(),
    )
    .await;
    let all = provenance(&out);
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a Provenance written twice: {all:?}");
    assert_eq!(all.len(), 6, "{all:?}");

    // A member's own export: their compartment, without what they withheld, and so without the
    // Provenance of what they withheld.
    user(&server, "member", Role::Patient, Some(me.clone()), &[&member]).await;
    let withheld = [SensitiveCategory::BehavioralHealth, SensitiveCategory::SubstanceUse];
    let t = token(&server, Some("member"), "patient/*.rs", Some(&member), &withheld).await;
    let (out, _) =
        export_out("/Patient/$export?_type=Observation&includeAssociatedData=RelevantProvenanceResources".into(), t)
            .await;
    assert_eq!(provenance(&out), vec!["p-new", "p-old", "p-vital"]);

    // A client that may not read Provenance: refused, or (lenient) exported without it and told.
    let (jwks, _, _) = crate::smart::backend_keys();
    register_with(
        &server,
        "obs-svc",
        store::auth::ClientType::ConfidentialAsymmetric,
        vec![],
        "system/Observation.rs",
        Some(jwks),
        false,
    )
    .await;
    let obs_only = client_token(&server, "obs-svc", "system/Observation.rs").await;
    let path = "/$export?includeAssociatedData=LatestProvenanceResources";
    let (status, _, body) = kick_off(&server, &obs_only, path, "respond-async").await;
    assert_eq!(status, 403, "{body}");
    let m = export_with(&server, &obs_only, path, "respond-async, handling=lenient").await;
    let errors = lines(&server, &obs_only, &m, "error").await;
    assert!(errors["OperationOutcome"][0]["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("includeAssociatedData"));
    assert!(m["output"].as_array().unwrap().iter().all(|f| f["type"] == "Observation"));

    // Many Provenance of one resource: several files of at most `resources_per_file` lines,
    // none written twice; the latest is the newest of them all.
    let many: Vec<Value> = (0..320)
        .map(|i| {
            prov(
                &format!("many-{i:03}"),
                &format!("2025-01-01T00:{:02}:{:02}Z", i / 60, i % 60),
                &["Observation/vital-1".into()],
            )
        })
        .collect();
    server.seed(many).await;
    let (out, m) =
        export_out("/$export?_type=Observation&includeAssociatedData=RelevantProvenanceResources".into(), svc.clone())
            .await;
    let all = provenance(&out);
    assert_eq!(all.len(), 325);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 325, "a Provenance written twice");
    let files: Vec<&Value> = m["output"].as_array().unwrap().iter().filter(|f| f["type"] == "Provenance").collect();
    assert!(files.len() >= 3 && files.iter().all(|f| f["count"].as_i64().unwrap() <= 150), "{files:?}");
    let (out, _) =
        export_out("/$export?_type=Observation&includeAssociatedData=LatestProvenanceResources".into(), svc).await;
    assert_eq!(provenance(&out), vec!["many-319", "p-new", "p-psy", "p-them"]);
}
