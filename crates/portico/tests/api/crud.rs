//! create, read, vread, update, delete, history, conditional create, Prefer, ETag/If-Match.

use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{Backend, TestServer};

both_backends!(
    create_read_update_delete,
    conditional_create_and_update,
    history_and_since,
    prefer_return,
    if_match_concurrency,
    writes_from_another_process_invalidate_the_cache,
    cached_search_answers_follow_writes_and_their_own_links
);

fn patient(family: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family, "given": ["Ann"]}], "gender": "female", "birthDate": "1980-05-06"})
}

async fn create_read_update_delete(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let (status, headers, created) = s.post("Patient", &patient("Smith")).await;
    assert_eq!(status, 201);
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["meta"]["versionId"], "1");
    assert!(created["meta"]["lastUpdated"].as_str().unwrap().ends_with('Z'));
    assert_eq!(headers["etag"], "W/\"1\"");
    assert!(headers.contains_key("last-modified"));
    assert_eq!(headers["location"].to_str().unwrap(), s.url(&format!("Patient/{id}/_history/1")));

    let (status, read) = s.get(&format!("Patient/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(read, created);

    let mut changed = read.clone();
    changed["gender"] = json!("male");
    let (status, headers, updated) = s.put(&format!("Patient/{id}"), &changed).await;
    assert_eq!(status, 200);
    assert_eq!(updated["meta"]["versionId"], "2");
    assert_eq!(headers["etag"], "W/\"2\"");
    assert_eq!(updated["gender"], "male");

    let (status, v1) = s.get(&format!("Patient/{id}/_history/1")).await;
    assert_eq!((status, v1["gender"].clone()), (200, json!("female")));
    assert_eq!(s.get(&format!("Patient/{id}/_history/9")).await.0, 404);

    // create-on-update with a client id
    let mut with_id = patient("Jones");
    with_id["id"] = json!("client-chosen-1");
    let (status, _, body) = s.put("Patient/client-chosen-1", &with_id).await;
    assert_eq!((status, body["id"].clone()), (201, json!("client-chosen-1")));

    let (status, headers, _) = s.send(Method::DELETE, &format!("Patient/{id}"), None).await;
    assert_eq!(status, 204);
    assert_eq!(headers["etag"], "W/\"3\"");
    let (status, outcome) = s.get(&format!("Patient/{id}")).await;
    assert_eq!(status, 410);
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    // deleting again is harmless; the deleted resource no longer matches searches
    assert_eq!(s.send(Method::DELETE, &format!("Patient/{id}"), None).await.0, 204);
    assert!(s.search_ids("Patient?family=smith").await.is_empty());
    assert_eq!(s.search_ids("Patient?family=jones").await, vec!["client-chosen-1"]);
    // and it can be brought back with a new version
    let mut again = patient("Smith");
    again["id"] = json!(id);
    let (status, _, back) = s.put(&format!("Patient/{id}"), &again).await;
    assert_eq!((status, back["meta"]["versionId"].clone()), (201, json!("4")));
    assert_eq!(s.get("Patient/does-not-exist").await.0, 404);
}

async fn conditional_create_and_update(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let mut p = patient("Cond");
    p["identifier"] = json!([{"system": "http://example.org/mrn", "value": "M1"}]);
    let create = |body: Value| {
        s.client
            .post(s.url("Patient"))
            .header("content-type", "application/fhir+json")
            .header("if-none-exist", "identifier=http://example.org/mrn|M1")
            .body(body.to_string())
            .send()
    };
    let first = create(p.clone()).await.unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = first.json().await.unwrap();
    let second = create(p.clone()).await.unwrap();
    assert_eq!(second.status().as_u16(), 200, "a match means no new resource");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(s.search_ids("Patient?identifier=M1").await.len(), 1);

    // conditional update: one match updates it
    p["gender"] = json!("other");
    let (status, _, updated) = s.put("Patient?identifier=http://example.org/mrn|M1", &p).await;
    assert_eq!(status, 200);
    assert_eq!(updated["id"], first["id"]);
    assert_eq!(updated["meta"]["versionId"], "2");
    // two matches: 412
    let mut dup = patient("Cond");
    dup["identifier"] = json!([{"system": "http://example.org/mrn", "value": "M1"}]);
    assert_eq!(s.post("Patient", &dup).await.0, 201);
    assert_eq!(s.put("Patient?identifier=M1", &p).await.0, 412);
    assert_eq!(create(p.clone()).await.unwrap().status().as_u16(), 412);
}

async fn history_and_since(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let (_, _, a) = s.post("Patient", &patient("Hist")).await;
    let id = a["id"].as_str().unwrap();
    let mut changed = a.clone();
    for g in ["male", "other", "unknown"] {
        changed["gender"] = json!(g);
        s.put(&format!("Patient/{id}"), &changed).await;
    }
    let (status, h) = s.get(&format!("Patient/{id}/_history")).await;
    assert_eq!(status, 200);
    assert_eq!(h["type"], "history");
    let versions: Vec<&str> =
        h["entry"].as_array().unwrap().iter().map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap()).collect();
    assert_eq!(versions, vec!["4", "3", "2", "1"]);
    assert_eq!(h["entry"][3]["request"]["method"], "POST");
    assert_eq!(h["entry"][0]["request"]["method"], "PUT");

    // paging through history with _count
    let (_, page1) = s.get(&format!("Patient/{id}/_history?_count=3")).await;
    assert_eq!(page1["entry"].as_array().unwrap().len(), 3);
    let next = page1["link"].as_array().unwrap().iter().find(|l| l["relation"] == "next").unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let page2: Value = s.client.get(next).send().await.unwrap().json().await.unwrap();
    assert_eq!(page2["entry"][0]["resource"]["meta"]["versionId"], "1");

    // _since keeps later versions only
    let third_lu = h["entry"][1]["resource"]["meta"]["lastUpdated"].as_str().unwrap().to_string();
    let (_, since) = s.get(&format!("Patient/{id}/_history?_since={}", third_lu.replace('+', "%2B"))).await;
    let versions: Vec<&str> = since["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap())
        .collect();
    assert!(versions.contains(&"4") && versions.contains(&"3") && !versions.contains(&"1"), "{versions:?}");

    // type and system history include deletions
    s.send(Method::DELETE, &format!("Patient/{id}"), None).await;
    let (_, th) = s.get("Patient/_history").await;
    assert_eq!(th["entry"][0]["request"]["method"], "DELETE");
    assert!(th["entry"][0].get("resource").is_none());
    let (status, sh) = s.get("_history?_count=2").await;
    assert_eq!(status, 200);
    assert_eq!(sh["entry"].as_array().unwrap().len(), 2);
    assert_eq!(s.get("_history?_since=notadate").await.0, 400);
    assert_eq!(s.get("Patient/nope/_history").await.0, 404);
}

async fn prefer_return(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let send = |prefer: &'static str| {
        s.client
            .post(s.url("Patient"))
            .header("content-type", "application/fhir+json")
            .header("prefer", prefer)
            .body(patient("Pref").to_string())
            .send()
    };
    let minimal = send("return=minimal").await.unwrap();
    assert_eq!(minimal.status().as_u16(), 201);
    assert!(minimal.headers().contains_key("location"));
    assert!(minimal.text().await.unwrap().is_empty());
    let outcome: Value = send("return=OperationOutcome").await.unwrap().json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    let full: Value = send("return=representation").await.unwrap().json().await.unwrap();
    assert_eq!(full["resourceType"], "Patient");
}

/// Concurrent updates that all carry If-Match: exactly one wins per version; no write is lost.
async fn if_match_concurrency(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let mut obs =
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "counter"}, "valueInteger": 0});
    let (_, _, created) = s.post("Observation", &obs).await;
    let id = created["id"].as_str().unwrap().to_string();
    obs["id"] = json!(id);
    let workers = 8;
    let increments_each = 5;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let client = s.client.clone();
        let url = s.url(&format!("Observation/{id}"));
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            let mut conflicts = 0;
            while done < increments_each {
                let r = client.get(&url).send().await.unwrap();
                let etag = r.headers()["etag"].to_str().unwrap().to_string();
                let mut current: Value = r.json().await.unwrap();
                current["valueInteger"] = json!(current["valueInteger"].as_i64().unwrap() + 1);
                let put = client
                    .put(&url)
                    .header("content-type", "application/fhir+json")
                    .header("if-match", etag)
                    .body(current.to_string())
                    .send()
                    .await
                    .unwrap();
                match put.status().as_u16() {
                    200 => done += 1,
                    412 => conflicts += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
            conflicts
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, last) = s.get(&format!("Observation/{id}")).await;
    let total = workers * increments_each;
    assert_eq!(last["valueInteger"], json!(total), "every successful If-Match update is counted exactly once");
    assert_eq!(last["meta"]["versionId"], json!((total + 1).to_string()));
    // a stale ETag is refused
    let stale = s
        .client
        .put(s.url(&format!("Observation/{id}")))
        .header("content-type", "application/fhir+json")
        .header("if-match", "W/\"1\"")
        .body(last.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status().as_u16(), 412);
}

/// Reads and searches are cached in-process; a write by a different process (here: a second
/// store on the same database) must show within the commit-sequence poll interval.
async fn writes_from_another_process_invalidate_the_cache(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let (_, _, created) =
        s.put("Patient/shared", &json!({"resourceType": "Patient", "id": "shared", "gender": "female"})).await;
    assert_eq!(created["meta"]["versionId"], "1");
    // warm the cache
    for _ in 0..3 {
        assert_eq!(s.get("Patient/shared").await.1["gender"], "female");
        assert_eq!(s.search_ids("Patient?gender=male").await.len(), 0);
    }
    let other = store::Store::connect(
        &s.database_url,
        store::StoreOptions { cache_bytes: 0, ..store::StoreOptions::default() },
        std::sync::Arc::new(store::SystemClock),
    )
    .await
    .unwrap();
    other
        .write(vec![store::WriteRequest::Update {
            resource_type: "Patient".into(),
            id: "shared".into(),
            resource: json!({"resourceType": "Patient", "id": "shared", "gender": "male"}),
            if_match: None,
        }])
        .await
        .unwrap();
    other.close().await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let (_, read) = s.get("Patient/shared").await;
    assert_eq!(read["gender"], "male", "the other process's write is visible");
    assert_eq!(read["meta"]["versionId"], "2");
    assert_eq!(s.search_ids("Patient?gender=male").await, vec!["shared"]);
}

/// Search answers are cached as finished Bundles: one must never be served for a request whose
/// links differ (same search, other parameter text), nor after this process wrote.
async fn cached_search_answers_follow_writes_and_their_own_links(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let self_link = |bundle: &Value| {
        bundle["link"].as_array().unwrap().iter().find(|l| l["relation"] == "self").unwrap()["url"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(s.post("Patient", &patient("Cachetest")).await.0, 201);
    for _ in 0..3 {
        let (status, bundle) = s.get("Patient?family=Cachetest").await;
        assert_eq!(status, 200);
        assert_eq!(bundle["entry"].as_array().map(Vec::len), Some(1));
        assert!(self_link(&bundle).contains("family=Cachetest"), "{}", self_link(&bundle));
    }
    // The same search written differently (string search ignores case) has its own links.
    let (_, other_text) = s.get("Patient?family=cachetest").await;
    assert_eq!(other_text["entry"].as_array().map(Vec::len), Some(1));
    assert!(self_link(&other_text).contains("family=cachetest"), "{}", self_link(&other_text));
    // A write through this server shows at once.
    assert_eq!(s.post("Patient", &patient("Cachetest")).await.0, 201);
    let (_, after) = s.get("Patient?family=Cachetest").await;
    assert_eq!(after["entry"].as_array().map(Vec::len), Some(2));
    let (_, count) = s.get("Patient?family=Cachetest&_summary=count").await;
    assert_eq!(count["total"], 2);
}
