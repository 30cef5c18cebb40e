//! `portico sync`, the reference offline client, against a server on both backends: a mirror
//! pulled, edited offline through its own `portico serve`, pushed while another practitioner
//! edited the same resource online; the conflict reported and resolved both ways with no write
//! lost; deletes propagating both ways; a patient leaving the list disappearing from the mirror.

use serde_json::{json, Value};
use store::auth::Role;
use store::{ReadOutcome, WriteRequest};

use crate::both_backends;
use crate::enforcement::{apps, token, user};
use crate::harness::{free_port, Backend, ServeProcess, TestServer};

fn sync(server: &TestServer, mirror: &str, token: Option<&str>, args: &[&str]) -> Value {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_portico"));
    cmd.arg("sync").args(["--database-url", mirror]);
    if let Some(t) = token {
        cmd.args(["--server", &server.base, "--token", t]);
    }
    let out = cmd.args(args).env("PORTICO_LOG", "warn").output().unwrap();
    assert!(out.status.success(), "portico sync {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("JSON from sync: {}", String::from_utf8_lossy(&out.stdout)))
}

fn obs(id: &str, patient: &str, text: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": text},
           "subject": {"reference": format!("Patient/{patient}")}})
}

async fn server_text(server: &TestServer, id: &str) -> String {
    match server.store.read("Observation", id).await.unwrap() {
        ReadOutcome::Found(r) => {
            serde_json::from_str::<Value>(&r.body).unwrap()["code"]["text"].as_str().unwrap().to_owned()
        }
        other => panic!("Observation/{id} on the server: {other:?}"),
    }
}

both_backends!(an_offline_mirror_reconciles);

async fn an_offline_mirror_reconciles(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |c| {
        c.auth.patient_list_cache_seconds = 0;
        c.auth.liveness_cache_millis = 0;
    })
    .await
    else {
        return;
    };
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
            json!({"resourceType": "Patient", "id": "p3", "generalPractitioner": gp(&["dr1"])}),
            obs("o1", "p1", "one"),
            obs("o2", "p2", "two"),
            obs("o3", "p3", "three"),
            json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}),
        ])
        .await;
    user(&server, "dr1", Role::Practitioner, Some("Practitioner/dr1".into()), &[]).await;
    user(&server, "dr2", Role::Practitioner, Some("Practitioner/dr2".into()), &[]).await;
    let t1 = token(&server, Some("dr1"), "user/*.cruds offline_access", None, &[]).await;
    let t2 = token(&server, Some("dr2"), "user/*.cruds offline_access", None, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror.db").to_string_lossy().into_owned();

    // The first pull fills the mirror.
    let first = sync(&server, &mirror, Some(&t1), &["pull"]);
    assert!(first["pulled"].as_u64().unwrap() >= 8, "{first}");

    // Offline: the app edits through the mirror's own server.
    let port = free_port();
    let local = ServeProcess::start(&["--database-url", &mirror, "--dev-open-access", "--cache-mb", "0"], port).await;
    let lbase = format!("http://127.0.0.1:{port}/fhir");
    let http = reqwest::Client::new();
    let put = |url: String, body: Value| {
        http.put(url).header("content-type", "application/fhir+json").body(body.to_string()).send()
    };
    assert_eq!(put(format!("{lbase}/Observation/o2"), obs("o2", "p2", "offline edit")).await.unwrap().status(), 200);
    assert_eq!(put(format!("{lbase}/Observation/n1"), obs("n1", "p1", "new offline")).await.unwrap().status(), 201);
    assert_eq!(http.delete(format!("{lbase}/Observation/o1")).send().await.unwrap().status(), 204);
    let status = sync(&server, &mirror, None, &["status"]);
    assert_eq!(status["pending"].as_array().unwrap().len(), 3, "{status}");

    // Online meanwhile: dr2 edits the same Observation; the server deletes c1; p3 leaves dr1's list.
    let r = server
        .client
        .put(server.url("/Observation/o2"))
        .bearer_auth(&t2)
        .header("content-type", "application/fhir+json")
        .body(obs("o2", "p2", "online edit").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    server
        .store
        .write(vec![
            WriteRequest::Delete { resource_type: "Condition".into(), id: "c1".into(), if_match: None },
            WriteRequest::Update {
                resource_type: "Patient".into(),
                id: "p3".into(),
                resource: json!({"resourceType": "Patient", "id": "p3", "generalPractitioner": gp(&["dr2"])}),
                if_match: None,
            },
        ])
        .await
        .unwrap();

    // Reconnect: the push applies the create and the delete; o2 is a conflict.
    let pushed = sync(&server, &mirror, None, &["push"]);
    assert_eq!(pushed["pushed"], 2, "{pushed}");
    assert_eq!(pushed["conflicts"], json!(["Observation/o2"]));
    assert_eq!(server_text(&server, "n1").await, "new offline");
    assert!(matches!(server.store.read("Observation", "o1").await.unwrap(), ReadOutcome::Deleted { .. }));
    assert_eq!(server_text(&server, "o2").await, "online edit", "a conflict overwrites nothing");
    let pulled = sync(&server, &mirror, None, &["pull"]);
    assert!(pulled["purged"].as_u64().unwrap() >= 2, "p3 and o3 leave the mirror: {pulled}");
    for (path, want) in [("Condition/c1", 410), ("Patient/p3", 410), ("Observation/o3", 410), ("Observation/n1", 200)] {
        let got = http.get(format!("{lbase}/{path}")).send().await.unwrap().status().as_u16();
        assert_eq!(got, want, "{path} in the mirror");
    }

    // Resolve keeping mine: pushed over the online edit, which stays in the server's history.
    sync(&server, &mirror, None, &["resolve", "Observation/o2", "--keep", "mine"]);
    let pushed = sync(&server, &mirror, None, &["push"]);
    assert_eq!(pushed["pushed"], 1, "{pushed}");
    assert_eq!(server_text(&server, "o2").await, "offline edit");
    let history = server.client.get(server.url("/Observation/o2/_history")).bearer_auth(&t1).send().await.unwrap();
    let history: Value = history.json().await.unwrap();
    let texts: Vec<&str> =
        history["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["code"]["text"].as_str()).collect();
    assert!(texts.contains(&"online edit") && texts.contains(&"offline edit"), "no write lost: {texts:?}");

    // Resolve keeping theirs: a new online edit meets a new offline edit at the next pull.
    let r = server
        .client
        .put(server.url("/Observation/o2"))
        .bearer_auth(&t2)
        .header("content-type", "application/fhir+json")
        .body(obs("o2", "p2", "second online").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(put(format!("{lbase}/Observation/o2"), obs("o2", "p2", "second offline")).await.unwrap().status(), 200);
    let pulled = sync(&server, &mirror, None, &["pull"]);
    assert_eq!(pulled["conflicts"], json!(["Observation/o2"]), "{pulled}");
    sync(&server, &mirror, None, &["resolve", "Observation/o2", "--keep", "theirs"]);
    let local_o2: Value = http.get(format!("{lbase}/Observation/o2")).send().await.unwrap().json().await.unwrap();
    assert_eq!(local_o2["code"]["text"], "second online");
    let status = sync(&server, &mirror, None, &["status"]);
    assert_eq!(status["pending"], json!([]), "{status}");
    assert_eq!(status["conflicts"], json!([]), "{status}");
    drop(local);
}

both_backends!(signs_in_through_a_browser_and_refreshes);

/// `portico sync --sign-in`: the authorization-code flow with PKCE through a browser (here the
/// test's cookie-keeping client) to the loopback redirect; later an expired access token is
/// replaced with the refresh token, so a long-offline client keeps working.
async fn signs_in_through_a_browser_and_refreshes(backend: Backend) {
    use crate::smart::{consent, follow, register, sign_in, Browser, PASSWORD};
    use std::io::BufRead;

    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    server
        .seed(vec![
            json!({"resourceType": "Practitioner", "id": "dr1"}),
            json!({"resourceType": "Patient", "id": "p1", "generalPractitioner": [{"reference": "Practitioner/dr1"}]}),
            obs("o1", "p1", "one"),
        ])
        .await;
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let scopes = "openid fhirUser offline_access user/*.cruds";
    register(&server, "ward", store::auth::ClientType::Public, vec![redirect.clone()], scopes).await;
    server
        .store
        .create_user(store::auth::NewUser {
            username: "dr1".into(),
            password_hash: auth::password::hash_secret(PASSWORD).unwrap(),
            role: Role::Practitioner,
            fhir_user: Some("Practitioner/dr1".into()),
            patients: vec![],
        })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror.db").to_string_lossy().into_owned();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["sync", "--server", &server.base, "--client-id", "ward", "--sign-in", "--redirect-uri", &redirect])
        .args(["--scope", scopes, "--database-url", &mirror, "pull"])
        .env("PORTICO_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("http") {
                let _ = tx.send(line.clone());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let address = tokio::task::spawn_blocking(move || rx.recv().unwrap()).await.unwrap();
    assert!(address.contains("code_challenge_method=S256") && address.contains("state="), "{address}");
    let browser = Browser::new();
    let after = sign_in(&browser, &server, &address, "dr1", PASSWORD).await;
    let page = follow(&browser, &server, &after).await;
    let back = consent(&browser, &server, &page, &[]).await;
    assert!(back.starts_with(&redirect), "{back}");
    let answer = browser.get(&back).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let log = log.join().unwrap();
    assert!(out.status.success(), "portico sync --sign-in: {log}");
    let pulled: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(pulled["pulled"].as_u64().unwrap() >= 3, "{pulled}");

    // The access token expires; the remembered refresh token gets a new one.
    let state_file = format!("{mirror}.sync.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    assert!(state["refresh_token"].is_string(), "offline_access gave a refresh token");
    state["token"] = json!("expired-or-garbage");
    std::fs::write(&state_file, state.to_string()).unwrap();
    server.seed(vec![obs("o2", "p1", "two")]).await;
    let pulled = sync(&server, &mirror, None, &["pull"]);
    assert_eq!(pulled["pulled"], 1, "{pulled}");
}
