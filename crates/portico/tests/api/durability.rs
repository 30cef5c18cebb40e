//! A committed write survives `kill -9` of the server process (SQLite WAL; PostgreSQL commit).

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{free_port, fresh_database, Backend, ServeProcess};

both_backends!(committed_writes_survive_kill_9);

async fn start(database_url: &str, port: u16) -> ServeProcess {
    ServeProcess::start(&["--database-url", database_url, "--dev-open-access"], port).await
}

async fn committed_writes_survive_kill_9(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((url, pg_name)) = fresh_database(backend, &dir).await else { return };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/fhir");
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    {
        let server = start(&url, port).await;
        for i in 0..20 {
            let body = json!({"resourceType": "Patient", "name": [{"family": format!("Durable{i}")}]});
            let r = client
                .post(format!("{base}/Patient"))
                .header("content-type", "application/fhir+json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            let created: Value = r.json().await.unwrap();
            ids.push(created["id"].as_str().unwrap().to_string());
        }
        server.kill_9();
    }
    let _server = start(&url, port).await;
    for id in &ids {
        let r = client.get(format!("{base}/Patient/{id}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "Patient/{id} was acknowledged but lost");
    }
    drop(_server);
    if let Some(name) = pg_name {
        crate::harness::drop_database(&name).await.unwrap();
    }
}

both_backends!(sigterm_stores_the_queued_audit_trail);

/// The audit writer commits about once a second; a stop request (SIGTERM) must still store what
/// was answered just before it.
async fn sigterm_stores_the_queued_audit_trail(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((url, pg_name)) = fresh_database(backend, &dir).await else { return };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}/fhir");
    let client = reqwest::Client::new();
    {
        let mut server = start(&url, port).await;
        for i in 0..5 {
            let r = client.get(format!("{base}/Patient/sigterm-probe-{i}")).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 404);
        }
        let pid = server.0.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let mut exited = None;
        for _ in 0..150 {
            if let Some(status) = server.0.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let status = exited.expect("portico serve did not stop within 15 s of SIGTERM");
        assert!(status.success(), "a stop request is a clean exit: {status}");
    }
    let _server = start(&url, port).await;
    let trail = client.get(format!("{base}/AuditEvent?_count=100")).send().await.unwrap().text().await.unwrap();
    for i in 0..5 {
        assert!(
            trail.contains(&format!("Patient/sigterm-probe-{i}")),
            "the read of probe {i} is missing from the trail"
        );
    }
    drop(_server);
    if let Some(name) = pg_name {
        crate::harness::drop_database(&name).await.unwrap();
    }
}

both_backends!(audit_batches_survive_a_passing_database_failure);

/// A batch the database refuses (here: its table briefly renamed away, as during a failover or
/// a migration) is retried, not dropped.
async fn audit_batches_survive_a_passing_database_failure(backend: Backend) {
    let Some(s) = crate::harness::TestServer::start(backend).await else { return };
    let rename = |from: &'static str, to: &'static str| {
        let url = s.database_url.clone();
        async move {
            let sql = format!("ALTER TABLE {from} RENAME TO {to}");
            match backend {
                Backend::Postgres => {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    sqlx::query(&sql).execute(&pool).await.unwrap();
                    pool.close().await;
                }
                Backend::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{url}")).await.unwrap();
                    sqlx::query(&sql).execute(&pool).await.unwrap();
                    pool.close().await;
                }
            }
        }
    };
    rename("audit_blocks", "audit_blocks_away").await;
    let (status, _) = s.get("Patient/retry-probe").await;
    assert_eq!(status, 404);
    // The flush makes the writer try at once; it fails and waits 1 s before the next attempt.
    let audit = s.audit.clone();
    let flushed = tokio::spawn(async move { audit.flush().await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!flushed.is_finished(), "the batch cannot have been stored while its table is away");
    rename("audit_blocks_away", "audit_blocks").await;
    tokio::time::timeout(Duration::from_secs(15), flushed).await.expect("stored after a retry").unwrap();
    let (status, trail) = s.get("AuditEvent?_count=50").await;
    assert_eq!(status, 200);
    assert!(trail.to_string().contains("Patient/retry-probe"), "the refused batch was retried and stored: {trail}");
}
