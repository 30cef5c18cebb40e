//! Subscriptions across real `portico serve` processes: a server killed with `kill -9` after
//! events were committed (and some while no server ran at all) delivers them all after a
//! restart, in order; two servers on one database deliver each event once, and when the one
//! delivering is killed the other takes over.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{free_port, fresh_database, Backend, ServeProcess};
use crate::subscriptions::{events_of, lab, status_param, subscription, Receiver};

/// A short lease and fast polling, so a takeover happens within a second.
fn write_config(dir: &Path) -> String {
    let path = dir.join("portico.toml");
    std::fs::write(
        &path,
        "[subscriptions]\nallow_loopback_http = true\nlease_ms = 600\npoll_ms = 50\nmax_backoff_ms = 200\n",
    )
    .unwrap();
    path.display().to_string()
}

fn cli(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_portico")).args(args).env("PORTICO_LOG", "warn").output().unwrap();
    assert!(out.status.success(), "portico {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// A backend service's token for `base` (the server checks the issuer), made with the CLI.
fn service_token(database_url: &str, config: &str, base: &str) -> String {
    let common = ["--database-url", database_url, "--config", config, "--base-url", base];
    // Backend services authenticate with a key pair (private_key_jwt); the token is issued
    // directly here, so only the public key is registered.
    let jwks = Path::new(config).with_file_name("jwks.json");
    std::fs::write(&jwks, crate::smart::backend_keys().0.to_string()).unwrap();
    let jwks = jwks.display().to_string();
    let mut add = vec!["client", "add", "--name", "Lab feed", "--client-id", "lab-feed", "--jwks", &jwks];
    add.extend(["--scopes", "system/Observation.cruds system/Patient.rs"]);
    add.extend(common);
    cli(&add);
    let mut issue =
        vec!["token", "issue", "--client", "lab-feed", "--scopes", "system/Observation.cruds system/Patient.rs"];
    issue.extend(common);
    cli(&issue)["access_token"].as_str().unwrap().to_owned()
}

async fn start(database_url: &str, config: &str, port: u16, base: &str) -> ServeProcess {
    ServeProcess::start(&["--database-url", database_url, "--config", config, "--base-url", base], port).await
}

fn kill_9(server: ServeProcess) {
    server.kill_9();
}

struct Api {
    client: reqwest::Client,
    token: String,
}

impl Api {
    async fn send(&self, base: &str, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut r = self.client.request(method, format!("{base}/{path}")).bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.header("content-type", "application/fhir+json").body(b.to_string());
        }
        let r = r.send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn put_lab(&self, base: &str, id: &str) {
        let (status, body) =
            self.send(base, reqwest::Method::PUT, &format!("Observation/{id}"), Some(&lab(id, "p1", "2345-7"))).await;
        assert_eq!(status, 201, "{body}");
    }

    /// Wait until the subscription reports `n` events (matched and recorded, delivered or not).
    async fn wait_matched(&self, base: &str, sub: &str, n: i64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let (_, bundle) = self.send(base, reqwest::Method::GET, &format!("Subscription/{sub}/$status"), None).await;
            let seen = status_param(&bundle, "events-since-subscription-start")["valueString"]
                .as_str()
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            if seen >= n {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "only {seen} of {n} events matched: {bundle}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Create an id-only subscription to lab results and wait for its handshake.
    async fn subscribe(&self, base: &str, receiver: &Receiver) -> String {
        let body =
            subscription("lab-result-added", Some("Observation?patient=Patient/p1"), &receiver.url, "id-only", vec![]);
        let (status, created) = self.send(base, reqwest::Method::POST, "Subscription", Some(&body)).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        receiver.wait_for(&id, "handshake", 1).await;
        id
    }
}

/// Every event number delivered to `sub`, in arrival order (repeats included).
fn delivered(receiver: &Receiver, sub: &str) -> Vec<u64> {
    receiver.of(sub, "event-notification").iter().flat_map(events_of).map(|(n, _)| n.parse().unwrap()).collect()
}

async fn wait_acknowledged(database_url: &str, sub: &str, through: i64) {
    let store = store::Store::connect(
        database_url,
        store::StoreOptions { max_connections: 1, ..store::StoreOptions::default() },
        std::sync::Arc::new(store::SystemClock),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.subscription(sub).await.unwrap().unwrap().delivered_through < through {
        assert!(tokio::time::Instant::now() < deadline, "delivery of {through} events not acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.close().await;
}

async fn prepare(backend: Backend) -> Option<(tempfile::TempDir, String, Option<String>, String)> {
    let dir = tempfile::tempdir().unwrap();
    let (url, pg) = fresh_database(backend, &dir).await?;
    let config = write_config(dir.path());
    cli(&["import", "--database-url", &url, "--config", &config, &{
        let file = dir.path().join("patient.ndjson");
        std::fs::write(&file, json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "One"}]}).to_string())
            .unwrap();
        file.display().to_string()
    }]);
    Some((dir, url, pg, config))
}

async fn events_survive_kill_9_and_downtime(backend: Backend) {
    let Some((dir, url, pg, config)) = prepare(backend).await else { return };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/fhir");
    let api = Api { client: reqwest::Client::new(), token: service_token(&url, &config, &base) };
    let receiver = Receiver::start().await;

    let server = start(&url, &config, port, &base).await;
    let sub = api.subscribe(&base, &receiver).await;
    // The receiver goes down: three events are committed and matched, none delivered...
    receiver.down.store(true, Ordering::SeqCst);
    for id in ["lab-1", "lab-2", "lab-3"] {
        api.put_lab(&base, id).await;
    }
    api.wait_matched(&base, &sub, 3).await;
    // ... and the server is killed mid-retry.
    kill_9(server);
    // Two more are committed while no server runs at all (nothing has matched them yet).
    let file = dir.path().join("later.ndjson");
    std::fs::write(&file, format!("{}\n{}\n", lab("lab-4", "p1", "2345-7"), lab("lab-5", "p1", "2345-7"))).unwrap();
    cli(&["import", "--database-url", &url, "--config", &config, &file.display().to_string()]);
    assert!(delivered(&receiver, &sub).is_empty());

    receiver.down.store(false, Ordering::SeqCst);
    let _server = start(&url, &config, port, &base).await;
    receiver.wait_for(&sub, "event-notification", 5).await;
    assert_eq!(delivered(&receiver, &sub), vec![1, 2, 3, 4, 5], "every event once, in order");
    drop(_server);
    if let Some(name) = pg {
        crate::harness::drop_database(&name).await.unwrap();
    }
}

async fn two_servers_deliver_each_event_once(backend: Backend) {
    let Some((_dir, url, pg, config)) = prepare(backend).await else { return };
    let (port_a, port_b) = (free_port(), free_port());
    // One public base URL in front of both processes, as behind a load balancer.
    let base = format!("http://127.0.0.1:{port_a}/fhir");
    let api = Api { client: reqwest::Client::new(), token: service_token(&url, &config, &base) };
    let receiver = Receiver::start().await;
    let a = start(&url, &config, port_a, &base).await;
    let b = start(&url, &config, port_b, &base).await;
    let at = |port: u16| format!("http://127.0.0.1:{port}/fhir");

    let sub = api.subscribe(&at(port_a), &receiver).await;
    for i in 0..20 {
        let port = if i % 2 == 0 { port_a } else { port_b };
        api.put_lab(&at(port), &format!("lab-{i}")).await;
    }
    receiver.wait_for(&sub, "event-notification", 20).await;
    // Killing a process between a successful POST and its acknowledgement would send that event
    // again (delivery is at least once): wait for the acknowledgement first.
    wait_acknowledged(&url, &sub, 20).await;
    // Whichever process delivers goes away; the other takes over once its lease lapses.
    kill_9(a);
    for i in 20..30 {
        api.put_lab(&at(port_b), &format!("lab-{i}")).await;
    }
    receiver.wait_for(&sub, "event-notification", 30).await;
    assert_eq!(delivered(&receiver, &sub), (1..=30).collect::<Vec<u64>>(), "each event once, in order");
    assert_eq!(receiver.of(&sub, "handshake").len(), 1);
    drop(b);
    if let Some(name) = pg {
        crate::harness::drop_database(&name).await.unwrap();
    }
}

crate::both_backends!(events_survive_kill_9_and_downtime, two_servers_deliver_each_event_once);
