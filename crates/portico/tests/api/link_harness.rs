//! Link booted in-process on 127.0.0.1:0 (its own SQLite file or throw-away PostgreSQL
//! database, an injected clock, fast test limits), portals next to it — real Portico servers
//! and small fake portals that misbehave on purpose — and a webhook receiver that checks
//! signatures as an app would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use link::{Link, LinkConfig};
use serde_json::{json, Value};
use store::ManualClock;

use crate::harness::{fresh_database, Backend, TestServer};
use crate::smart::{consent, follow, hidden, register, sign_in, Browser, PASSWORD};

pub const CLIENT_URL: &str = "https://aggregator.example/connected";

pub struct LinkServer {
    pub base: String,
    pub link: Link,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    pub database_url: String,
    /// The vault key this server seals with.
    pub key: [u8; 32],
    pub workers: Option<link::Workers>,
    task: tokio::task::JoinHandle<()>,
    pg_database: Option<String>,
    _dir: tempfile::TempDir,
}

/// Limits small enough that failing portals fail fast.
pub fn test_config() -> LinkConfig {
    let mut c = LinkConfig::default();
    c.portal.timeout_ms = 1_500;
    c.portal.connect_timeout_ms = 1_000;
    c.portal.retries = 1;
    c.portal.backoff_ms = 50;
    c.portal.max_retry_after_seconds = 2;
    c.portal.requests_per_second = 0.0;
    c.portal.breaker_failures = 50;
    c.job_lease_seconds = 3;
    c.app_fetches_per_minute = 1_000;
    c.discovery_interval_seconds = 0;
    c.webhooks.poll_ms = 50;
    c.webhooks.first_backoff_seconds = 1;
    c
}

impl LinkServer {
    pub async fn start(backend: Backend, tweak: impl FnOnce(&mut LinkConfig)) -> Option<LinkServer> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (url, pg_database) = match backend {
            Backend::Sqlite => (dir.path().join("link.db").display().to_string(), None),
            Backend::Postgres => fresh_database(backend, &dir).await?,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let mut config = test_config();
        config.base_url = base.clone();
        tweak(&mut config);
        let clock = Arc::new(ManualClock::new());
        let key = link::vault::new_key();
        let vault = link::vault::Vault::from_keys(&[key]).expect("vault");
        let link = Link::open(&url, config, vault, clock.clone()).await.expect("open link");
        let workers = Some(link.start_workers());
        let served = link.clone();
        let task = tokio::spawn(async move {
            let _ = server::link_api::serve_until(listener, served, std::future::pending()).await;
        });
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Some(LinkServer { base, link, clock, http, database_url: url, key, workers, task, pg_database, _dir: dir })
    }

    pub fn callback(&self) -> String {
        self.link.callback_url()
    }

    /// An app with the test client URL and, optionally, a webhook URL.
    pub async fn app(&self, webhook: Option<&str>) -> link::apps::CreatedApp {
        self.link.create_app("Aggregator", &[CLIENT_URL.to_owned()], webhook).await.expect("create app")
    }

    /// Call the API with an app key.
    pub async fn call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, HeaderMap, Value) {
        self.call_with(key, method, path, body, &[]).await
    }

    pub async fn call_with(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, HeaderMap, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(key);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let (s, _, v) = self.call(key, reqwest::Method::GET, path, None).await;
        (s, v)
    }

    /// Add a portal to the directory and discover it.
    pub async fn add_endpoint(
        &self,
        name: &str,
        category: link::directory::Category,
        fhir_base: &str,
        client_id: &str,
    ) -> link::ids::EndpointId {
        let input = link::directory::EndpointInput {
            name: name.into(),
            category: Some(category),
            fhir_base: fhir_base.into(),
            client_id: Some(client_id.into()),
            city: Some("Springfield".into()),
            state: Some("MA".into()),
            zip: Some("01103".into()),
            latitude: Some(42.1015),
            longitude: Some(-72.5898),
            source: "test".into(),
            ..Default::default()
        };
        let (id, _) = self.link.upsert_endpoint(&input).await.expect("add endpoint");
        let endpoint = self.link.require_endpoint(&id).await.unwrap();
        self.link.discover(&endpoint).await.unwrap().expect("discovery");
        id
    }

    /// Poll a job until it has finished (bounded).
    pub async fn wait_job(&self, key: &str, job: &str) -> Value {
        for _ in 0..600 {
            let (status, body) = self.get(key, &format!("/link/v1/jobs/{job}")).await;
            assert_eq!(status, 200, "{body}");
            if matches!(body["status"].as_str(), Some("done" | "partial" | "failed")) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {job} did not finish");
    }
}

impl Drop for LinkServer {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(w) = self.workers.take() {
            w.abort();
        }
        if let Some(name) = self.pg_database.take() {
            let link = self.link.clone();
            let _ = std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
                rt.block_on(async move {
                    link.close().await;
                    let _ = crate::harness::drop_database(&name).await;
                });
            })
            .join();
        }
    }
}

/// A patient's records at a portal: labs, vitals, a behavioral-health condition (withheld unless
/// shared), an immunization, a practitioner and organization they refer to, and coverage.
pub fn portal_records(patient: &str, prefix: &str) -> Vec<Value> {
    let lab = |id: &str, date: &str, code: &str| {
        json!({"resourceType": "Observation", "id": format!("{prefix}-{id}"), "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": format!("Patient/{patient}")}, "effectiveDateTime": date,
            "performer": [{"reference": format!("Practitioner/{prefix}-doc")}],
            "valueQuantity": {"value": 5.4, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}})
    };
    vec![
        json!({"resourceType": "Patient", "id": patient, "name": [{"given": ["Alice"], "family": "Member"}], "birthDate": "1980-02-03",
            "gender": "female", "generalPractitioner": [{"reference": format!("Practitioner/{prefix}-doc")}]}),
        json!({"resourceType": "Practitioner", "id": format!("{prefix}-doc"), "name": [{"family": "Doctor", "given": ["Dana"]}]}),
        json!({"resourceType": "Organization", "id": format!("{prefix}-org"), "name": format!("{prefix} Health")}),
        lab("a1c-2019", "2019-05-01T10:00:00Z", "4548-4"),
        lab("a1c-2021", "2021-05-01T10:00:00Z", "4548-4"),
        lab("glucose-2021", "2021-06-01", "2339-0"),
        json!({"resourceType": "Observation", "id": format!("{prefix}-bp"), "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}, "subject": {"reference": format!("Patient/{patient}")},
            "effectiveDateTime": "2021-05-01"}),
        json!({"resourceType": "Condition", "id": format!("{prefix}-diabetes"), "subject": {"reference": format!("Patient/{patient}")},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2"}]},
            "onsetDateTime": "2018-01-01"}),
        json!({"resourceType": "Condition", "id": format!("{prefix}-depression"), "subject": {"reference": format!("Patient/{patient}")},
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "35489007", "display": "Depressive disorder"}]},
            "onsetDateTime": "2020-01-01"}),
        json!({"resourceType": "Immunization", "id": format!("{prefix}-flu"), "status": "completed",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "patient": {"reference": format!("Patient/{patient}")}, "occurrenceDateTime": "2021-10-01",
            "performer": [{"actor": {"reference": format!("Organization/{prefix}-org")}}]}),
        json!({"resourceType": "Coverage", "id": format!("{prefix}-coverage"), "status": "active",
            "beneficiary": {"reference": format!("Patient/{patient}")}, "payor": [{"reference": format!("Organization/{prefix}-org")}]}),
    ]
}

/// A Portico portal for Link: the records of `portal_records`, an account `alice` for the
/// patient, and Link registered as a public client (`link`) with its callback.
pub async fn portico_portal(
    backend: Backend,
    link: &LinkServer,
    prefix: &str,
    tweak: impl FnOnce(&mut server::ServerConfig),
) -> Option<TestServer> {
    let portal = TestServer::start_with(backend, tweak).await?;
    portal.seed(portal_records("p1", prefix)).await;
    register(
        &portal,
        "link",
        store::auth::ClientType::Public,
        vec![link.callback()],
        oauth::register::DEFAULT_APP_SCOPES,
    )
    .await;
    let hash = auth::password::hash_secret(PASSWORD).unwrap();
    portal
        .store
        .create_user(store::auth::NewUser {
            username: "alice".into(),
            password_hash: hash,
            role: store::auth::Role::Patient,
            fhir_user: Some("Patient/p1".into()),
            patients: vec!["p1".parse().unwrap()],
        })
        .await
        .unwrap();
    Some(portal)
}

/// A person's login at a Portico portal through Link, from the app's connect URL to the app's
/// client URL: sign in as `alice`, consent (sensitive categories left unshared unless `share`),
/// back through Link's callback. Returns the final redirect to the app.
pub async fn login_at_portico(browser: &Browser, portal: &TestServer, connect_url: &str, share: &[&str]) -> String {
    let first = browser.get(connect_url).await;
    assert_eq!(first.status, 303, "connect should redirect to the portal: {}", first.body);
    let authorize = first.location.clone().unwrap();
    assert!(authorize.starts_with(&portal.origin), "to the portal: {authorize}");
    let after = sign_in(browser, portal, &authorize, "alice", PASSWORD).await;
    let page = follow(browser, portal, &after).await;
    let extra: Vec<(&str, &str)> = share.iter().map(|c| ("share", *c)).collect();
    let callback = consent(browser, portal, &page, &extra).await;
    assert!(callback.contains("/link/v1/callback?"), "the portal returns to Link: {callback}");
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 303, "Link sends the browser on: {}", back.body);
    back.location.unwrap()
}

/// The connect URL for an app and endpoint.
pub fn connect_url(
    link: &LinkServer,
    endpoint: &link::ids::EndpointId,
    app: &link::ids::AppId,
    state: &str,
    person: Option<&str>,
) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("app", app.as_str()).append_pair("clientURL", CLIENT_URL).append_pair("state", state);
    if let Some(p) = person {
        query.append_pair("person", p);
    }
    format!("{}/link/v1/connect/{endpoint}?{}", link.base, query.finish())
}

/// A login at a fake portal (which approves at once): from the connect URL to the app's redirect.
pub async fn login_at_fake(browser: &Browser, connect_url: &str) -> String {
    let first = browser.get(connect_url).await;
    assert_eq!(first.status, 303, "{}", first.body);
    let at_portal = browser.get(first.location.as_deref().unwrap()).await;
    assert_eq!(at_portal.status, 303);
    let back = browser.get(at_portal.location.as_deref().unwrap()).await;
    assert_eq!(back.status, 303, "{}", back.body);
    back.location.unwrap()
}

/// Rows a query counts in a portal's database (e.g. refresh tokens issued).
pub async fn portal_count(portal: &TestServer, sql: &str) -> i64 {
    if portal.database_url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&portal.database_url).await.unwrap();
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    } else {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", portal.database_url)).await.unwrap();
        let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        n
    }
}

/// Every stored value of Link's database as text (to look for secrets in clear).
pub async fn link_database_text(link: &LinkServer) -> String {
    if link.database_url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&link.database_url).await.unwrap();
        let mut all = String::new();
        for table in [
            "link_apps",
            "link_endpoints",
            "link_flows",
            "link_connections",
            "link_codes",
            "link_jobs",
            "link_job_parts",
            "link_outbox",
            "link_endpoint_events",
        ] {
            let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT row_to_json(t)::text FROM {table} t"))
                .fetch_all(&pool)
                .await
                .unwrap();
            all.push_str(&rows.join("\n"));
        }
        pool.close().await;
        all
    } else {
        let mut bytes = std::fs::read(&link.database_url).unwrap_or_default();
        bytes.extend(std::fs::read(format!("{}-wal", link.database_url)).unwrap_or_default());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

pub fn param(url: &str, name: &str) -> Option<String> {
    crate::smart::param(url, name)
}

/// Redeem the code in the app's redirect for the connection.
pub async fn redeem(link: &LinkServer, key: &str, back: &str) -> Value {
    let code = param(back, "code").unwrap_or_else(|| panic!("no code in {back}"));
    let (status, _, body) = link.call(key, reqwest::Method::POST, "/link/v1/token", Some(json!({"code": code}))).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Connect `alice` at a Portico portal end to end; returns the connection.
pub async fn connect_portico(
    link: &LinkServer,
    key: &str,
    app: &link::ids::AppId,
    endpoint: &link::ids::EndpointId,
    portal: &TestServer,
    person: &str,
) -> Value {
    let browser = Browser::new();
    let back =
        login_at_portico(&browser, portal, &connect_url(link, endpoint, app, "app-state-1", Some(person)), &[]).await;
    assert_eq!(param(&back, "state").as_deref(), Some("app-state-1"));
    redeem(link, key, &back).await
}

/// The hidden form value (the revoke form on Connected apps).
pub fn form_value(html: &str, name: &str) -> String {
    hidden(html, name)
}

// --- A fake portal -------------------------------------------------------------------------

/// How a fake portal's FHIR API behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers a small valid record.
    Healthy,
    /// Answers after 30 seconds.
    Slow,
    /// 500 with an OperationOutcome.
    Failing,
    /// Not JSON.
    Garbage,
    /// 429 with `Retry-After: 1`.
    Throttling,
    /// Each FHIR answer after this many milliseconds.
    Delayed(u64),
}

#[derive(Clone)]
struct FakeState {
    base: String,
    mode: Arc<Mutex<Mode>>,
    fhir_hits: Arc<AtomicUsize>,
    token_hits: Arc<AtomicUsize>,
    issued: Arc<Mutex<Vec<String>>>,
    plain_pkce_only: Arc<std::sync::atomic::AtomicBool>,
}

pub struct FakePortal {
    pub base: String,
    pub mode: Arc<Mutex<Mode>>,
    pub fhir_hits: Arc<AtomicUsize>,
    pub token_hits: Arc<AtomicUsize>,
    /// Every token it handed out (to look for them in Link's database).
    pub issued: Arc<Mutex<Vec<String>>>,
    /// Publish `code_challenge_methods_supported: ["plain"]`.
    pub plain_pkce_only: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FakePortal {
    pub async fn start(mode: Mode) -> FakePortal {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let state = FakeState {
            base: format!("{origin}/fhir"),
            mode: Arc::new(Mutex::new(mode)),
            fhir_hits: Arc::default(),
            token_hits: Arc::default(),
            issued: Arc::default(),
            plain_pkce_only: Arc::default(),
        };
        let router = axum::Router::new()
            .route("/fhir/.well-known/smart-configuration", get(fake_smart_config))
            .route("/fhir/metadata", get(fake_metadata))
            .route("/auth/authorize", get(fake_authorize))
            .route("/auth/token", post(fake_token))
            .route("/fhir/{*path}", get(fake_fhir))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakePortal {
            base: state.base,
            mode: state.mode,
            fhir_hits: state.fhir_hits,
            token_hits: state.token_hits,
            issued: state.issued,
            plain_pkce_only: state.plain_pkce_only,
            task,
        }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Stop listening: from now on connections are refused.
    pub async fn stop(&self) {
        self.task.abort();
        // Wait until the port no longer accepts.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(self.base.trim_start_matches("http://").split('/').next().unwrap())
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FakePortal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn fake_smart_config(State(s): State<FakeState>) -> Response {
    let origin = s.base.trim_end_matches("/fhir").to_owned();
    axum::Json(json!({
        "authorization_endpoint": format!("{origin}/auth/authorize"),
        "token_endpoint": format!("{origin}/auth/token"),
        "code_challenge_methods_supported": if s.plain_pkce_only.load(Ordering::SeqCst) { json!(["plain"]) } else { json!(["S256"]) },
        "token_endpoint_auth_methods_supported": ["none"],
        "capabilities": ["launch-standalone", "client-public", "permission-offline"],
    }))
    .into_response()
}

async fn fake_metadata() -> Response {
    axum::Json(
        json!({"resourceType": "CapabilityStatement", "status": "active", "kind": "instance", "fhirVersion": "4.0.1",
        "format": ["json"], "rest": [{"mode": "server", "resource": [{"type": "Patient"}, {"type": "Observation"}]}]}),
    )
    .into_response()
}

async fn fake_authorize(Query(q): Query<std::collections::HashMap<String, String>>) -> Response {
    let target = format!(
        "{}?code=fake-code&state={}",
        q.get("redirect_uri").cloned().unwrap_or_default(),
        form_urlencoded::byte_serialize(q.get("state").cloned().unwrap_or_default().as_bytes()).collect::<String>()
    );
    (StatusCode::SEE_OTHER, [("location", target)]).into_response()
}

async fn fake_token(State(s): State<FakeState>) -> Response {
    s.token_hits.fetch_add(1, Ordering::SeqCst);
    let access = format!("fake-access-{}", uuid::Uuid::new_v4().simple());
    let refresh = format!("fake-refresh-{}", uuid::Uuid::new_v4().simple());
    s.issued.lock().unwrap().extend([access.clone(), refresh.clone()]);
    axum::Json(json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600, "refresh_token": refresh,
        "patient": "fp1", "scope": "launch/patient offline_access patient/*.rs"}))
    .into_response()
}

async fn fake_fhir(State(s): State<FakeState>, axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    s.fhir_hits.fetch_add(1, Ordering::SeqCst);
    let mode = *s.mode.lock().unwrap();
    match mode {
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
        Mode::Failing => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "exception", "diagnostics": "database on fire"}]})),
        )
            .into_response(),
        Mode::Garbage => {
            (StatusCode::OK, [("content-type", "application/fhir+json")], "{\"resourceType\": \"Bundle\", \"entry\": [")
                .into_response()
        }
        Mode::Throttling => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "slow down").into_response(),
        Mode::Healthy => fake_record(&path),
        Mode::Delayed(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            fake_record(&path)
        }
    }
}

fn fake_record(path: &str) -> Response {
    if path.starts_with("Patient/fp1") && !path.contains('$') {
        return axum::Json(json!({"resourceType": "Patient", "id": "fp1", "name": [{"family": "Fake"}]}))
            .into_response();
    }
    let t = path.split(['/', '?']).next().unwrap_or_default().to_owned();
    let entries = if t == "Immunization" {
        vec![json!({"resource": {"resourceType": "Immunization", "id": "fimm", "status": "completed",
            "vaccineCode": {"text": "flu"}, "patient": {"reference": "Patient/fp1"}, "occurrenceDateTime": "2022-01-01"}})]
    } else {
        vec![]
    };
    axum::Json(json!({"resourceType": "Bundle", "type": "searchset", "entry": entries})).into_response()
}

// --- A webhook receiver --------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Received {
    /// This delivery was answered with 500 (see `refuse_next`).
    pub refused: bool,
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub raw: String,
    pub body: Value,
}

#[derive(Clone, Default)]
struct ReceiverState {
    got: Arc<Mutex<Vec<Received>>>,
    notify: Arc<tokio::sync::Notify>,
    refuse_next: Arc<AtomicUsize>,
}

pub struct WebhookReceiver {
    pub url: String,
    state: ReceiverState,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let state = ReceiverState::default();
        let router = axum::Router::new().route("/hooks", post(receive)).with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        WebhookReceiver { url, state, task }
    }

    /// Answer the next `n` deliveries with 500.
    pub fn refuse_next(&self, n: usize) {
        self.state.refuse_next.store(n, Ordering::SeqCst);
    }

    pub fn all(&self) -> Vec<Received> {
        self.state.got.lock().unwrap().clone()
    }

    /// Wait (at most 20 s) for an event of `event_type` matching `pred`.
    pub async fn wait_for(&self, event_type: &str, pred: impl Fn(&Value) -> bool) -> Received {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.state.notify.notified();
            if let Some(r) = self.all().into_iter().find(|r| r.body["type"] == event_type && pred(&r.body["data"])) {
                return r;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "no {event_type} webhook arrived; got {:?}",
                    self.all().iter().map(|r| r.body["type"].clone()).collect::<Vec<_>>()
                );
            }
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(s): State<ReceiverState>, headers: HeaderMap, body: String) -> StatusCode {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let refused = s.refuse_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    s.got.lock().unwrap().push(Received {
        refused,
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
        raw: body,
    });
    s.notify.notify_waiters();
    if refused {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}
