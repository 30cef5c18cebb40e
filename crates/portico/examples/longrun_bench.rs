//! Long-running access under load (issue 15's benchmark), in one process: a Portico server on
//! 127.0.0.1 (its own database: a temp SQLite file, or a PostgreSQL URL), the load generator and
//! a rest-hook receiver. Used by `bench/longrun`.
//!
//! `subscriptions`: SUBS patients, each with their own person and grant and an active
//! `lab-result-added` subscription (id-only) filtered to that patient; then lab Observations are
//! written at RATE per second for SECONDS, each for a random one of those patients (so each
//! matches exactly one subscription). Reports, per event, the time from sending the write to the
//! receiver getting its notification (p50, p90, p99, max; an upper bound of commit → POST, as
//! the write's own latency is included), and checks that every event arrived exactly once.
//!
//! `exchange`: RFC 8693 token exchanges per second: CONCURRENCY tasks exchanging a patient app's
//! access token for a narrower token for a registered service, for SECONDS.
//!
//! Usage:
//!   longrun_bench subscriptions [--database URL] [--subs N] [--rate R] [--seconds S]
//!   longrun_bench exchange [--database URL] [--concurrency C] [--seconds S]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failing loudly is the point

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use auth::ScopeSet;
use oauth::register::ClientSpec;
use serde_json::{json, Value};
use server::{AppState, ServerConfig};
use store::auth::{ClientType, NewGrant, NewUser, OwnerType, RegistrationSource, Role};
use store::{Store, StoreOptions, SystemClock};

// The allocator `portico` itself uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BP: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";

struct Args {
    mode: String,
    database: Option<String>,
    subs: usize,
    rate: u64,
    seconds: u64,
    concurrency: usize,
}

fn args() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_default();
    let mut a = Args { mode, database: None, subs: 1000, rate: 200, seconds: 30, concurrency: 16 };
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--database" => a.database = Some(value),
            "--subs" => a.subs = value.parse().unwrap(),
            "--rate" => a.rate = value.parse().unwrap(),
            "--seconds" => a.seconds = value.parse().unwrap(),
            "--concurrency" => a.concurrency = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    if !matches!(a.mode.as_str(), "subscriptions" | "exchange") {
        eprintln!("usage: longrun_bench subscriptions|exchange [--database URL] [--subs N] [--rate R] [--seconds S] [--concurrency C]");
        std::process::exit(2);
    }
    a
}

struct Server {
    base: String,
    origin: String,
    state: AppState,
    _dir: tempfile::TempDir,
}

async fn start(database: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let url = database.map(str::to_owned).unwrap_or_else(|| dir.path().join("bench.db").display().to_string());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let base = format!("{origin}/fhir");
    let options = StoreOptions { base_url: base.clone(), ..StoreOptions::default() };
    let store = Store::connect(&url, options, Arc::new(SystemClock)).await.unwrap();
    let mut config = ServerConfig { base_url: base.clone(), ..ServerConfig::default() };
    config.subscriptions.allow_loopback_http = true;
    // The load generator writes without a token (the lab feed of this benchmark); every
    // subscription is still created, matched and delivered under its own patient grant.
    config.dev_open_access = true;
    let state = AppState::new(store, config).await.unwrap();
    let serving = state.clone();
    tokio::spawn(async move {
        let _ = server::serve(listener, serving).await;
    });
    Server { base, origin, state, _dir: dir }
}

async fn register(state: &AppState, id: &str, client_type: ClientType, scopes: &str) -> Option<String> {
    state
        .auth
        .register_client(ClientSpec {
            client_id: Some(id.into()),
            name: id.into(),
            owner_type: OwnerType::IndependentDeveloper,
            client_type,
            redirect_uris: if client_type == ClientType::Public {
                vec!["https://app.example/cb".into()]
            } else {
                vec![]
            },
            scopes: scopes.into(),
            jwks: None,
            jwks_uri: None,
            logo_uri: None,
            policy_uri: None,
            tos_uri: None,
            source: RegistrationSource::Cli,
            ehr_launcher: false,
        })
        .await
        .unwrap()
        .client_secret
}

/// A person for `patient` with a grant to `client` and an access token for it.
async fn person_token(state: &AppState, client: &str, patient: &str, scopes: &str) -> String {
    let user = state
        .store
        .create_user(NewUser {
            username: format!("u-{patient}"),
            // Nobody signs in: any well-formed hash will do, and hashing 1,000 passwords would
            // dominate the setup.
            password_hash:
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g".into(),
            role: Role::Patient,
            fhir_user: Some(format!("Patient/{patient}")),
            patients: vec![patient.parse().unwrap()],
        })
        .await
        .unwrap();
    let grant = state
        .store
        .create_grant(NewGrant {
            user_id: Some(user.user_id),
            patient_id: Some(patient.parse().unwrap()),
            lifetime_seconds: Some(24 * 3600),
            ..NewGrant::new(client.parse().unwrap(), ScopeSet::parse(scopes).0)
        })
        .await
        .unwrap();
    state.auth.access_token_for(&grant).await.unwrap().access_token
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The receiver: event focus → arrival times.
type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

async fn receiver() -> (String, Arrivals, Arc<std::sync::atomic::AtomicU64>) {
    let arrivals: Arrivals = Arc::default();
    let handshakes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (a, h) = (arrivals.clone(), handshakes.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let (a, h) = (a.clone(), h.clone());
            async move {
                let now = Instant::now();
                let bundle: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let params = bundle["entry"][0]["resource"]["parameter"].as_array().cloned().unwrap_or_default();
                let kind = params.iter().find(|p| p["name"] == "type").and_then(|p| p["valueCode"].as_str());
                if kind == Some("handshake") {
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                let mut a = a.lock().unwrap();
                for p in params.iter().filter(|p| p["name"] == "notification-event") {
                    let focus = p["part"]
                        .as_array()
                        .and_then(|parts| parts.iter().find(|x| x["name"] == "focus"))
                        .and_then(|f| f["valueReference"]["reference"].as_str())
                        .unwrap_or_default();
                    // `…/Observation/{id}` or `…/Observation/{id}/_history/{v}`.
                    let id = focus
                        .split_once("Observation/")
                        .and_then(|(_, rest)| rest.split('/').next())
                        .unwrap_or_default()
                        .to_owned();
                    a.entry(id).or_default().push(now);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, arrivals, handshakes)
}

async fn subscriptions_bench(a: &Args) {
    let server = start(a.database.as_deref()).await;
    let state = &server.state;
    register(state, "app", ClientType::Public, "launch/patient patient/Observation.rs patient/Patient.rs").await;
    let patients: Vec<String> = (0..a.subs).map(|i| format!("bp{i}")).collect();
    state
        .store
        .import(patients.iter().map(|p| json!({"resourceType": "Patient", "id": p, "name": [{"family": p}]})).collect())
        .await
        .unwrap();

    let (hook, arrivals, handshakes) = receiver().await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let setup = Instant::now();
    for p in &patients {
        let token = person_token(state, "app", p, "launch/patient patient/Observation.rs patient/Patient.rs").await;
        let body = json!({
            "resourceType": "Subscription", "status": "requested", "reason": "bench",
            "criteria": "https://portico.dev/fhir/SubscriptionTopic/lab-result-added",
            "_criteria": {"extension": [{"url": format!("{BP}backport-filter-criteria"), "valueString": format!("Observation?patient=Patient/{p}")}]},
            "channel": {"type": "rest-hook", "endpoint": hook, "payload": "application/fhir+json",
                "_payload": {"extension": [{"url": format!("{BP}backport-payload-content"), "valueCode": "id-only"}]}}
        });
        let r =
            http.post(format!("{}/Subscription", server.base)).bearer_auth(&token).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
    }
    while handshakes.load(std::sync::atomic::Ordering::SeqCst) < a.subs as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Handshakes answered; give the worker a moment to mark them all active.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("{} subscriptions active after {:.1} s", a.subs, setup.elapsed().as_secs_f64());

    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let write_ms: Arc<Mutex<Vec<f64>>> = Arc::default();
    let total = a.rate * a.seconds;
    let mut ticker = tokio::time::interval(Duration::from_nanos(1_000_000_000 / a.rate.max(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..total {
        ticker.tick().await;
        let patient = &patients[(n as usize * 7919) % patients.len()];
        let id = format!("lab-{n}");
        let body = json!({"resourceType": "Observation", "id": id, "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
            "subject": {"reference": format!("Patient/{patient}")},
            "valueQuantity": {"value": 90 + (n % 40), "unit": "mg/dL"}});
        let (http, url, sent, write_ms) =
            (http.clone(), format!("{}/Observation/{id}", server.base), sent.clone(), write_ms.clone());
        writers.spawn(async move {
            let t0 = Instant::now();
            sent.lock().unwrap().insert(id, t0);
            let r = http
                .put(url)
                .header("content-type", "application/fhir+json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            write_ms.lock().unwrap().push(t0.elapsed().as_secs_f64() * 1000.0);
        });
    }
    while writers.join_next().await.is_some() {}
    let offered = started.elapsed().as_secs_f64();
    // Drain: wait until every event has arrived (or 30 s passed).
    let drain = Instant::now();
    while arrivals.lock().unwrap().len() < total as usize && drain.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = sent.lock().unwrap();
    let arrivals = arrivals.lock().unwrap();
    let mut latencies: Vec<f64> = Vec::new();
    let (mut lost, mut duplicated) = (0, 0);
    for (id, t0) in sent.iter() {
        match arrivals.get(id) {
            None => lost += 1,
            Some(times) => {
                if times.len() > 1 {
                    duplicated += 1;
                }
                latencies.push(times[0].duration_since(*t0).as_secs_f64() * 1000.0);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let mut writes = write_ms.lock().unwrap().clone();
    writes.sort_by(f64::total_cmp);
    let backend = if a.database.as_deref().is_some_and(|d| d.starts_with("postgres")) { "postgres" } else { "sqlite" };
    println!(
        "{}",
        json!({
            "bench": "subscriptions", "backend": backend, "subscriptions": a.subs, "writes": total,
            "offered_rate": a.rate, "achieved_rate": (total as f64 / offered).round(),
            "send_to_notification_ms": {"p50": percentile(&latencies, 0.5), "p90": percentile(&latencies, 0.9),
                "p99": percentile(&latencies, 0.99), "max": latencies.last().copied().unwrap_or(f64::NAN)},
            "write_ms": {"p50": percentile(&writes, 0.5), "p99": percentile(&writes, 0.99)},
            "lost": lost, "duplicated": duplicated, "unexpected": arrivals.keys().filter(|k| !sent.contains_key(*k)).count(),
        })
    );
}

async fn exchange_bench(a: &Args) {
    let server = start(a.database.as_deref()).await;
    let state = &server.state;
    register(
        state,
        "app",
        ClientType::Public,
        "launch/patient patient/Observation.rs patient/Condition.rs patient/Patient.rs",
    )
    .await;
    register(state, "cds", ClientType::ConfidentialSymmetric, "patient/Observation.rs patient/Condition.rs").await;
    state.store.import(vec![json!({"resourceType": "Patient", "id": "bp0"})]).await.unwrap();
    let subject = person_token(
        state,
        "app",
        "bp0",
        "launch/patient patient/Observation.rs patient/Condition.rs patient/Patient.rs",
    )
    .await;
    let endpoint = format!("{}/auth/token", server.origin);
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let duration = Duration::from_secs(a.seconds);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.concurrency {
        let (http, endpoint, subject) = (http.clone(), endpoint.clone(), subject.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while start.elapsed() < duration {
                let t0 = Instant::now();
                let r = http
                    .post(&endpoint)
                    .form(&[
                        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                        ("client_id", "app"),
                        ("subject_token", subject.as_str()),
                        ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
                        ("audience", "cds"),
                        ("scope", "patient/Observation.rs"),
                    ])
                    .send()
                    .await
                    .unwrap();
                if r.status().is_success() {
                    let v: Value = r.json().await.unwrap();
                    assert!(v["access_token"].is_string());
                    latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors += 1;
                    if errors == 1 {
                        eprintln!("exchange failed: {}", r.text().await.unwrap_or_default());
                    }
                }
            }
            (latencies, errors)
        });
    }
    let mut all = Vec::new();
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (l, e) = done.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    let backend = if a.database.as_deref().is_some_and(|d| d.starts_with("postgres")) { "postgres" } else { "sqlite" };
    println!(
        "{}",
        json!({
            "bench": "token-exchange", "backend": backend, "concurrency": a.concurrency, "exchanges": all.len(),
            "per_second": (all.len() as f64 / elapsed).round(), "errors": errors,
            "latency_ms": {"p50": percentile(&all, 0.5), "p99": percentile(&all, 0.99)},
        })
    );
}

#[tokio::main]
async fn main() {
    let a = args();
    match a.mode.as_str() {
        "subscriptions" => subscriptions_bench(&a).await,
        _ => exchange_bench(&a).await,
    }
}
