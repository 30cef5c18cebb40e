//! Link when portals misbehave and processes die: a portal refusing connections, one answering
//! after 30 s, one answering 500, one answering invalid JSON, one throttling — the job ends
//! `partial` with each one's error and everything else intact; a duplicate request finds the
//! running job, an app over its rate is throttled, webhooks are retried until delivered; and a
//! `kill -9` of Link in the middle of a job, then a restart, finishes the job.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use link::directory::Category;
use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{fresh_database, Backend};
use crate::link_harness::*;
use crate::smart::Browser;

both_backends!(
    failing_portals_end_only_their_part,
    duplicates_rates_and_webhook_retries,
    a_killed_link_finishes_its_job
);

async fn connect_fake(
    link: &LinkServer,
    key: &str,
    app: &link::ids::AppId,
    name: &str,
    fake: &FakePortal,
    person: &str,
) -> String {
    let ep = link.add_endpoint(name, Category::Clinical, &fake.base, "link").await;
    let back = login_at_fake(&Browser::new(), &connect_url(link, &ep, app, "s", Some(person))).await;
    redeem(link, key, &back).await["connectionId"].as_str().unwrap().to_owned()
}

async fn failing_portals_end_only_their_part(backend: Backend) {
    let Some(link) = LinkServer::start(backend, |_| {}).await else { return };
    let Some(clinic) = portico_portal(backend, &link, "clinic", |_| {}).await else { return };
    let hooks = WebhookReceiver::start().await;
    let app = link.app(Some(&hooks.url)).await;
    let key = app.secret_key.clone();
    let app_id = app.app.app_id.clone();
    let clinic_ep = link.add_endpoint("Clinic", Category::Clinical, &clinic.base, "link").await;
    connect_portico(&link, &key, &app_id, &clinic_ep, &clinic, "pat").await;
    let mut fakes = Vec::new();
    for (name, mode) in [
        ("down", None),
        ("slow", Some(Mode::Slow)),
        ("failing", Some(Mode::Failing)),
        ("garbage", Some(Mode::Garbage)),
        ("throttling", Some(Mode::Throttling)),
    ] {
        let fake = FakePortal::start(Mode::Healthy).await;
        let connection = connect_fake(&link, &key, &app_id, name, &fake, "pat").await;
        fakes.push((name, mode, fake, connection));
    }
    for (_, mode, fake, _) in &fakes {
        match mode {
            Some(m) => fake.set(*m),
            None => fake.stop().await,
        }
    }
    let started = std::time::Instant::now();
    let (status, _, body) = link
        .call_with(
            &key,
            Method::POST,
            "/link/v1/persons/pat/fetch",
            Some(json!({"resources": ["Patient", "Labs", "Immunization"]})),
            &[("prefer", "respond-async")],
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let job = body["transactionId"].as_str().unwrap().to_owned();
    let finished = link.wait_job(&key, &job).await;
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the slow portal did not hold the job: {:?}",
        started.elapsed()
    );
    assert_eq!(finished["status"], "partial", "{finished}");
    let errors = finished["errors"].as_array().unwrap();
    for (name, _, _, connection) in &fakes {
        let mine: Vec<&Value> = errors.iter().filter(|e| e["connectionId"] == connection.as_str()).collect();
        assert!(!mine.is_empty(), "{name} reports an error: {finished}");
        let text = mine
            .iter()
            .map(|e| e["outcome"]["issue"][0]["diagnostics"].as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" | ");
        let expected = match *name {
            "down" => "could not be reached",
            "slow" => "did not answer within",
            "failing" => "answered 500: database on fire",
            "garbage" => "not valid JSON",
            _ => "throttling",
        };
        assert!(text.contains(expected), "{name}: {text}");
        assert_eq!(mine[0]["outcome"]["resourceType"], "OperationOutcome");
    }
    let progress = finished["progress"].as_array().unwrap();
    let clinic_progress = progress.iter().find(|p| p["endpointId"] == clinic_ep.as_str()).unwrap();
    assert_eq!(clinic_progress["status"], "done", "{clinic_progress}");
    let (status, result) = link.get(&key, &format!("/link/v1/jobs/{job}/result")).await;
    assert_eq!(status, 200);
    let ids: Vec<String> = result["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["resource"]["resourceType"] != "OperationOutcome")
        .map(|e| {
            format!("{}/{}", e["resource"]["resourceType"].as_str().unwrap(), e["resource"]["id"].as_str().unwrap())
        })
        .collect();
    for expected in ["Patient/p1", "Observation/clinic-a1c-2019", "Immunization/clinic-flu"] {
        assert!(ids.contains(&expected.to_owned()), "the clinic's records are intact: {ids:?}");
    }
    hooks.wait_for("fetch.completed", |d| d["transactionId"] == job.as_str() && d["status"] == "partial").await;
    // The failures count against the portals' health.
    link.link.health().flush().await;
    let (_, directory) = link.get(&key, "/link/v1/directory/clinical").await;
    let failing_ep = directory.as_array().unwrap().iter().find(|e| e["name"] == "failing").unwrap();
    assert!(failing_ep["health"]["errorRate24h"].as_f64().unwrap() > 0.0, "{failing_ep}");
    assert_ne!(failing_ep["status"], "active", "{failing_ep}");
    let failing_id = failing_ep["id"].as_str().unwrap();
    let changed = hooks.wait_for("endpoint.status_changed", |d| d["endpointId"] == failing_id).await;
    assert_eq!(changed.body["data"]["previousStatus"], "active", "{:?}", changed.body);
    let healthy = directory.as_array().unwrap().iter().find(|e| e["name"] == "Clinic").unwrap();
    assert_eq!(healthy["status"], "active", "{healthy}");
    assert!(healthy["health"]["medianResponseMs"].as_i64().is_some(), "{healthy}");
    assert_eq!(healthy["health"]["loginSuccessRate"], 1.0);
    assert_eq!(healthy["health"]["refreshTokensIssued"], true);
}

async fn duplicates_rates_and_webhook_retries(backend: Backend) {
    let Some(link) = LinkServer::start(backend, |c| c.app_fetches_per_minute = 4).await else { return };
    let hooks = WebhookReceiver::start().await;
    let app = link.app(Some(&hooks.url)).await;
    let key = app.secret_key.clone();
    let fake = FakePortal::start(Mode::Healthy).await;
    let connection = connect_fake(&link, &key, &app.app.app_id, "fake", &fake, "pat").await;
    fake.set(Mode::Delayed(400));
    let path = format!("/link/v1/connections/{connection}/fetch");
    let start = |body: Value| {
        let (link, key, path) = (&link, key.clone(), path.clone());
        async move { link.call_with(&key, Method::POST, &path, Some(body), &[("prefer", "respond-async")]).await }
    };
    // The first delivery of the first webhook fails; it is sent again.
    hooks.refuse_next(1);
    let (status, _, first) = start(json!({"resources": ["Patient"]})).await;
    assert_eq!(status, 202, "{first}");
    let job = first["transactionId"].as_str().unwrap().to_owned();
    let (status, headers, again) = start(json!({"resources": ["Patient"]})).await;
    assert_eq!((status, again["error"].as_str()), (429, Some("transient")), "{again}");
    assert_eq!(again["transactionId"], job.as_str(), "the running job is named");
    assert_eq!(headers["link-transaction-id"].to_str().unwrap(), job);
    let (status, _, other) = start(json!({"resources": ["Immunization"]})).await;
    assert_eq!(status, 202, "a different request is a different job: {other}");
    // Four per minute: the fourth start of the minute passes, the fifth is throttled.
    let (status, _, _) = start(json!({"resources": ["Labs"]})).await;
    assert_eq!(status, 202);
    let (status, headers, throttled) = start(json!({"resources": ["Vitals"]})).await;
    assert_eq!((status, throttled["error"].as_str()), (429, Some("throttled")), "{throttled}");
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);

    link.wait_job(&key, &job).await;
    hooks.wait_for("fetch.completed", |d| d["transactionId"] == job.as_str()).await;
    let refused = hooks.all().into_iter().find(|r| r.refused).expect("the first delivery was refused");
    // Past the first retry delay (on Link's clock) the event is sent again, with the same id.
    link.clock.advance(5);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let copies = hooks.all().into_iter().filter(|r| r.id == refused.id).count();
        if copies >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the refused webhook was not retried");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let copies: Vec<Received> = hooks.all().into_iter().filter(|r| r.id == refused.id).collect();
    assert_eq!(copies[0].raw, copies[1].raw, "a retry sends the same event");
    let secret = app.webhook_secret.as_deref().unwrap();
    for c in &copies {
        assert!(link::webhooks::verify(
            secret,
            &c.id,
            &c.timestamp,
            &c.raw,
            &c.signature,
            link.link.now_ms() / 1000,
            300
        ));
    }
}

/// `portico link serve` as a process, on the given database; returns it and its base URL.
fn spawn_link(database_url: &str, dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["link", "serve", "--listen", "127.0.0.1:0", "--database-url", database_url])
        .arg("--key-file")
        .arg(dir.join("link.keys"))
        .arg("--config")
        .arg(dir.join("link.toml"))
        .env("PORTICO_LOG", "warn")
        .env_remove("PORTICO_LINK_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start portico link serve");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line).expect("banner");
    let base = line.split_whitespace().find(|w| w.starts_with("http://")).expect("the banner names the URL").to_owned();
    (child, base)
}

fn cli(args: &[&str], database_url: &str, dir: &std::path::Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .arg("link")
        .args(args)
        .args(["--database-url", database_url])
        .arg("--key-file")
        .arg(dir.join("link.keys"))
        .env_remove("PORTICO_LINK_KEY")
        .output()
        .expect("run portico link");
    assert!(out.status.success(), "portico link {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("JSON from portico link {args:?}: {}", String::from_utf8_lossy(&out.stdout)))
}

async fn a_killed_link_finishes_its_job(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (url, pg) = match backend {
        Backend::Sqlite => (dir.path().join("link.db").display().to_string(), None),
        Backend::Postgres => match fresh_database(backend, &dir).await {
            Some(d) => d,
            None => return,
        },
    };
    std::fs::write(
        dir.path().join("link.toml"),
        "job_lease_seconds = 2\ndiscovery_interval_seconds = 0\n[portal]\nrequests_per_second = 0.0\n",
    )
    .unwrap();
    let fake = FakePortal::start(Mode::Healthy).await;
    let created = cli(&["app", "add", "--name", "Killed", "--client-url", CLIENT_URL], &url, dir.path());
    let key = created["secretKey"].as_str().unwrap().to_owned();
    let app_id = created["appId"].as_str().unwrap().to_owned();
    let added = cli(
        &[
            "endpoint",
            "add",
            "--name",
            "Slow portal",
            "--category",
            "clinical",
            "--fhir-base",
            &fake.base,
            "--client-id",
            "link",
        ],
        &url,
        dir.path(),
    );
    let endpoint = added["endpoint"]["id"].as_str().unwrap().to_owned();
    assert_eq!(added["endpoint"]["connectable"], true, "{added}");

    let (mut first, base) = spawn_link(&url, dir.path());
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let connect = format!(
        "{base}/link/v1/connect/{endpoint}?app={app_id}&clientURL={}&state=s",
        form_urlencoded::byte_serialize(CLIENT_URL.as_bytes()).collect::<String>()
    );
    let back = login_at_fake(&Browser::new(), &connect).await;
    let code = param(&back, "code").unwrap();
    let connection: Value = http
        .post(format!("{base}/link/v1/token"))
        .bearer_auth(&key)
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let connection = connection["connectionId"].as_str().unwrap().to_owned();

    // Every FHIR answer takes 300 ms: sixteen groups and the references take a few seconds.
    fake.set(Mode::Delayed(300));
    let started: Value = http
        .post(format!("{base}/link/v1/connections/{connection}/fetch"))
        .bearer_auth(&key)
        .header("prefer", "respond-async")
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = started["transactionId"].as_str().unwrap().to_owned();
    let status = |base: String| {
        let (http, key, job) = (http.clone(), key.clone(), job.clone());
        async move {
            http.get(format!("{base}/link/v1/jobs/{job}"))
                .bearer_auth(&key)
                .send()
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()
        }
    };
    // Wait until part of the work is stored, then kill the process outright.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(base.clone()).await.unwrap_or(Value::Null);
        if s["progress"][0]["partsDone"].as_u64().unwrap_or(0) >= 1 {
            assert_eq!(s["status"], "running", "{s}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no progress: {s}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let hits_at_kill = fake.fhir_hits.load(std::sync::atomic::Ordering::SeqCst);

    let (mut second, base2) = spawn_link(&url, dir.path());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let s = status(base2.clone()).await.unwrap_or(Value::Null);
        if s["status"] == "done" || s["status"] == "partial" || s["status"] == "failed" {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "the restarted Link did not finish the job: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(finished["status"], "done", "{finished}");
    let parts = finished["progress"][0]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 17, "sixteen groups and the references, each once: {finished}");
    let hits = fake.fhir_hits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(hits > hits_at_kill, "the second process did the rest");
    assert!(hits < 2 * 17, "finished parts were not fetched again ({hits} requests)");
    let result: Value = http
        .get(format!("{base2}/link/v1/jobs/{job}/result"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(result.to_string().contains("\"fimm\""), "{result}");
    second.kill().unwrap();
    second.wait().unwrap();
    if let Some(name) = pg {
        let _ = crate::harness::drop_database(&name).await;
    }
}

both_backends!(two_links_share_the_jobs);

/// Two Link processes on one database: every job runs once (claimed under `SKIP LOCKED` on
/// PostgreSQL, by the single writer on SQLite).
async fn two_links_share_the_jobs(backend: Backend) {
    let Some(link) = LinkServer::start(backend, |_| {}).await else { return };
    let second = {
        let vault = link::vault::Vault::from_keys(&[link.key]).unwrap();
        link::Link::open(&link.database_url, link.link.config().clone(), vault, link.clock.clone()).await.unwrap()
    };
    let second_workers = second.start_workers();
    let app = link.app(None).await;
    let key = app.secret_key.clone();
    let fake = FakePortal::start(Mode::Healthy).await;
    let connection = connect_fake(&link, &key, &app.app.app_id, "fake", &fake, "pat").await;
    fake.set(Mode::Delayed(100));
    let groups = ["Patient", "Labs", "Vitals", "Condition", "Immunization", "Coverage", "Procedure", "CarePlan"];
    let mut jobs = Vec::new();
    for g in groups {
        let (status, _, body) = link
            .call_with(
                &key,
                Method::POST,
                &format!("/link/v1/connections/{connection}/fetch"),
                Some(json!({"resources": [g]})),
                &[("prefer", "respond-async")],
            )
            .await;
        assert_eq!(status, 202, "{body}");
        jobs.push(body["transactionId"].as_str().unwrap().to_owned());
    }
    for job in &jobs {
        let finished = link.wait_job(&key, job).await;
        assert_eq!(finished["status"], "done", "{finished}");
        assert_eq!(finished["attempts"], 1, "each job was taken up once: {finished}");
        assert_eq!(
            finished["progress"][0]["parts"].as_array().unwrap().len(),
            2,
            "its group and the references, once each"
        );
    }
    second_workers.abort();
    second.close().await;
}
