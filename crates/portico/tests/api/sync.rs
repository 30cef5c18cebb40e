//! Offline sync over HTTP: pulls in commit order that miss no write and repeat none (also under
//! many concurrent writers), tombstones, patients leaving a practitioner's list, `meta.lastUpdated`
//! in commit order for `_lastUpdated=gt` clients, and batch pushes whose stale entries answer
//! 412 with the current version.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use store::auth::Role;

use crate::both_backends;
use crate::enforcement::{apps, token, user};
use crate::harness::{Backend, TestServer};

async fn sync_server(backend: Backend) -> Option<TestServer> {
    TestServer::start_with(backend, |c| {
        c.auth.patient_list_cache_seconds = 0;
        c.auth.liveness_cache_millis = 0;
    })
    .await
}

/// One pull page: (the entries, the next cursor).
async fn pull(server: &TestServer, token: &str, cursor: Option<&str>, count: usize) -> (Vec<Value>, String) {
    let mut url = server.url(&format!("/$sync?_count={count}"));
    if let Some(c) = cursor {
        url.push_str(&format!("&cursor={c}"));
    }
    let r = server.client.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let bundle: Value = r.json().await.unwrap();
    assert_eq!(bundle["type"], "history");
    let next = bundle["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let cursor = next.split("cursor=").nth(1).unwrap().split('&').next().unwrap().to_owned();
    (bundle["entry"].as_array().cloned().unwrap_or_default(), cursor)
}

/// Pull until caught up; returns every entry and the last cursor.
async fn pull_all(server: &TestServer, token: &str, mut cursor: Option<String>, count: usize) -> (Vec<Value>, String) {
    let mut all = Vec::new();
    loop {
        let (entries, next) = pull(server, token, cursor.as_deref(), count).await;
        let n = entries.len();
        all.extend(entries);
        cursor = Some(next);
        if n < count {
            return (all, cursor.unwrap_or_default());
        }
    }
}

/// `Type/id` → the versions pulled (in order).
fn versions(entries: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in entries {
        let Some(url) = e["fullUrl"].as_str() else { continue };
        let key = url.rsplit('/').take(2).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("/");
        out.entry(key).or_default().push(e["response"]["etag"].as_str().unwrap_or_default().to_owned());
    }
    out
}

fn sync_patients(entries: &[Value], which: &str) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "Parameters")
        .flat_map(|e| e["resource"]["parameter"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["name"] == which)
        .map(|p| p["valueReference"]["reference"].as_str().unwrap().to_owned())
        .collect()
}

async fn send(
    server: &TestServer,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = server.client.request(method, server.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.header("content-type", "application/fhir+json").body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn obs(id: &str, patient: &str, text: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": text},
           "subject": {"reference": format!("Patient/{patient}")}})
}

both_backends!(pulls_follow_commit_order_and_the_patient_list);

async fn pulls_follow_commit_order_and_the_patient_list(backend: Backend) {
    let Some(server) = sync_server(backend).await else { return };
    apps(&server).await;
    let gp = |refs: &[&str]| -> Value {
        Value::Array(refs.iter().map(|r| json!({"reference": format!("Practitioner/{r}")})).collect())
    };
    server
        .seed(vec![
            json!({"resourceType": "Practitioner", "id": "dr1"}),
            json!({"resourceType": "Practitioner", "id": "dr2"}),
            json!({"resourceType": "Patient", "id": "p1", "generalPractitioner": gp(&["dr1"])}),
            json!({"resourceType": "Patient", "id": "p2", "generalPractitioner": gp(&["dr1", "dr2"])}),
            json!({"resourceType": "Patient", "id": "p3", "generalPractitioner": gp(&["dr2"])}),
            obs("o1", "p1", "one"),
            obs("o2", "p2", "two"),
            obs("o3", "p3", "three"),
        ])
        .await;
    user(&server, "dr1", Role::Practitioner, Some("Practitioner/dr1".into()), &[]).await;
    user(&server, "dr2", Role::Practitioner, Some("Practitioner/dr2".into()), &[]).await;
    let t1 = token(&server, Some("dr1"), "user/*.cruds offline_access", None, &[]).await;
    let t2 = token(&server, Some("dr2"), "user/*.cruds offline_access", None, &[]).await;

    // First pull: dr1's patients and their records (and the shared directory), not p3's.
    let (first, c1) = pull_all(&server, &t1, None, 3).await;
    let got: BTreeSet<String> = versions(&first).into_keys().collect();
    for want in ["Patient/p1", "Patient/p2", "Observation/o1", "Observation/o2", "Practitioner/dr1"] {
        assert!(got.contains(want), "{want} missing from the first pull: {got:?}");
    }
    assert!(!got.contains("Patient/p3") && !got.contains("Observation/o3"), "{got:?}");
    let (nothing, c1b) = pull(&server, &t1, Some(&c1), 100).await;
    assert!(nothing.is_empty(), "caught up: {nothing:?}");
    assert_eq!(c1b, c1, "nothing new: the same cursor (an idle client's polling writes nothing)");
    // A cursor is the grant's own.
    let r = server.client.get(server.url(&format!("/$sync?cursor={c1b}"))).bearer_auth(&t2).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 410);

    // dr2 edits o2 online; dr1, offline, edited the same version: the push's entry is 412 with
    // the current version; dr1's other entries apply.
    let (status, _) =
        send(&server, &t2, reqwest::Method::PUT, "/Observation/o2", Some(&obs("o2", "p2", "dr2's"))).await;
    assert_eq!(status, 200);
    let push = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": obs("o2", "p2", "dr1's"), "request": {"method": "PUT", "url": "Observation/o2", "ifMatch": "W/\"1\""}},
        {"resource": obs("new1", "p1", "created offline"), "request": {"method": "PUT", "url": "Observation/new1"}},
        {"request": {"method": "DELETE", "url": "Observation/o1", "ifMatch": "W/\"1\""}}]});
    let (status, answer) = send(&server, &t1, reqwest::Method::POST, "/", Some(&push)).await;
    assert_eq!(status, 200, "{answer}");
    let entries = answer["entry"].as_array().unwrap();
    assert!(entries[0]["response"]["status"].as_str().unwrap().starts_with("412"), "{answer}");
    assert_eq!(entries[0]["response"]["etag"], "W/\"2\"");
    assert_eq!(entries[0]["resource"]["code"]["text"], "dr2's", "the current version to merge with");
    assert!(entries[1]["response"]["status"].as_str().unwrap().starts_with("201"));
    assert!(entries[2]["response"]["status"].as_str().unwrap().starts_with("20"));
    // The same push again: the create is idempotent (same id), nothing duplicated.
    let (status, again) = send(&server, &t1, reqwest::Method::POST, "/", Some(&push)).await;
    assert_eq!(status, 200);
    assert!(again["entry"][1]["response"]["status"].as_str().unwrap().starts_with("200"));
    // After a merge, with the current version's ETag, dr1's edit applies.
    let merged = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": obs("o2", "p2", "merged"), "request": {"method": "PUT", "url": "Observation/o2", "ifMatch": "W/\"2\""}}]});
    let (_, answer) = send(&server, &t1, reqwest::Method::POST, "/", Some(&merged)).await;
    assert!(answer["entry"][0]["response"]["status"].as_str().unwrap().starts_with("200"), "{answer}");

    // dr1's next pull: o2's versions 2 and 3 in order, new1, o1's tombstone; no o3.
    let (changes, c2) = pull_all(&server, &t1, Some(c1b), 2).await;
    let v = versions(&changes);
    assert_eq!(v["Observation/o2"], vec!["W/\"2\"", "W/\"3\""]);
    // Pushed twice under its client-chosen id: one resource (the second PUT is its version 2).
    assert_eq!(v["Observation/new1"], vec!["W/\"1\"", "W/\"2\""]);
    let tombstone = changes.iter().find(|e| e["fullUrl"].as_str().unwrap().ends_with("/Observation/o1")).unwrap();
    assert_eq!(tombstone["request"]["method"], "DELETE");
    assert!(tombstone.get("resource").is_none());
    assert!(!v.contains_key("Observation/o3"));

    // p2 leaves dr1's list (the general practitioner is now dr2 alone): the next pull says so.
    let p2 = json!({"resourceType": "Patient", "id": "p2", "generalPractitioner": gp(&["dr2"])});
    let (status, _) = send(&server, &t2, reqwest::Method::PUT, "/Patient/p2", Some(&p2)).await;
    assert_eq!(status, 200);
    let (changes, c3) = pull_all(&server, &t1, Some(c2), 50).await;
    assert_eq!(sync_patients(&changes, "left"), vec!["Patient/p2"]);
    assert!(!versions(&changes).contains_key("Patient/p2"), "a patient who left is not sent");
    // And p3 joins: the pull names them (the client fetches Patient/p3/$everything).
    let p3 = json!({"resourceType": "Patient", "id": "p3", "generalPractitioner": gp(&["dr1", "dr2"])});
    send(&server, &t2, reqwest::Method::PUT, "/Patient/p3", Some(&p3)).await;
    let (changes, c4) = pull_all(&server, &t1, Some(c3), 50).await;
    assert_eq!(sync_patients(&changes, "joined"), vec!["Patient/p3"]);

    // Many concurrent writers (each its own transaction), pulled while they write: every version
    // exactly once.
    let before_lu = {
        let (_, o) = send(&server, &t1, reqwest::Method::GET, "/Observation/new1", None).await;
        o["meta"]["lastUpdated"].as_str().unwrap().to_owned()
    };
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let client = server.client.clone();
            let url = server.url(&format!("/Observation/c{i}"));
            let body = obs(&format!("c{i}"), if i % 2 == 0 { "p1" } else { "p3" }, "concurrent");
            let t = t1.clone();
            tokio::spawn(async move {
                let r = client
                    .put(url)
                    .bearer_auth(t)
                    .header("content-type", "application/fhir+json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201);
            })
        })
        .collect();
    let mut seen = Vec::new();
    let mut cursor = c4;
    for w in writers {
        let (entries, next) = pull(&server, &t1, Some(&cursor), 7).await;
        seen.extend(entries);
        cursor = next;
        w.await.unwrap();
    }
    let (rest, _) = pull_all(&server, &t1, Some(cursor), 7).await;
    seen.extend(rest);
    let v = versions(&seen);
    for i in 0..40 {
        assert_eq!(
            v.get(&format!("Observation/c{i}")).map(Vec::len),
            Some(1),
            "c{i}: {:?}",
            v.get(&format!("Observation/c{i}"))
        );
    }
    // meta.lastUpdated follows commit order: the download pattern `_lastUpdated=gt<newest held>`
    // finds all 40, and the pull's order is lastUpdated order.
    let lus: Vec<String> =
        seen.iter().filter_map(|e| e["resource"]["meta"]["lastUpdated"].as_str().map(str::to_owned)).collect();
    let mut sorted = lus.clone();
    sorted.sort();
    assert_eq!(lus, sorted, "pulled in commit order, lastUpdated never goes back");
    let (_, bundle) = send(
        &server,
        &t1,
        reqwest::Method::GET,
        &format!("/Observation?_lastUpdated=gt{}&_sort=_lastUpdated&_count=100", urlencode(&before_lu)),
        None,
    )
    .await;
    let found: BTreeSet<String> =
        bundle["entry"].as_array().unwrap().iter().map(|e| e["resource"]["id"].as_str().unwrap().to_owned()).collect();
    for i in 0..40 {
        assert!(found.contains(&format!("c{i}")), "c{i} missed by _lastUpdated=gt");
    }
}

fn urlencode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
