//! The sample aggregator app `portico demo` serves next to Link: what an app developer builds on
//! Link's API. It holds its own Link app key (server side only), lets a person search the
//! directory, sends them through Link's connect flow, fetches all of their connections as a
//! job, shows the records side by side with where each came from, and receives Link's webhooks,
//! checking each signature. It talks to Link only over HTTP, like any app.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::pages::html;

/// How the sample app reaches Link and who it is there.
#[derive(Clone)]
pub struct AggregatorConfig {
    /// Link's base URL (for the API and for sending browsers to the connect flow).
    pub link_base: String,
    /// This app's own origin (the client URL is `{origin}/connected`).
    pub origin: String,
    pub app_id: String,
    pub secret_key: String,
    pub webhook_secret: String,
}

#[derive(Clone)]
struct Aggregator {
    config: Arc<AggregatorConfig>,
    http: reqwest::Client,
    events: Arc<Mutex<Vec<Event>>>,
}

#[derive(Clone)]
struct Event {
    kind: String,
    verified: bool,
    received: String,
    data: Value,
}

const PERSON_COOKIE: &str = "acme_person";
const STATE_COOKIE: &str = "acme_state";

pub fn router(config: AggregatorConfig) -> Router {
    let state = Aggregator {
        config: Arc::new(config),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap_or_default(),
        events: Arc::default(),
    };
    Router::new()
        .route("/", get(home))
        .route("/search", get(search))
        .route("/connect", get(connect))
        .route("/connected", get(connected))
        .route("/fetch", post(fetch))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/result.json", get(result_json))
        .route("/webhooks", post(webhook))
        .route("/events.json", get(events_json))
        .with_state(state)
}

/// Serve the sample app until `stop` completes.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    config: AggregatorConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(config)).with_graceful_shutdown(stop).await
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The person this browser is (a random id in a cookie; Link groups connections by it).
fn person(headers: &HeaderMap) -> (String, Option<String>) {
    match cookie(headers, PERSON_COOKIE).filter(|p| p.len() == 32 && p.bytes().all(|b| b.is_ascii_hexdigit())) {
        Some(p) => (p.to_owned(), None),
        None => {
            let p = uuid::Uuid::new_v4().simple().to_string();
            let set = format!("{PERSON_COOKIE}={p}; Path=/; HttpOnly; SameSite=Lax; Max-Age=31536000");
            (p, Some(set))
        }
    }
}

fn with_cookie(mut r: Response, cookie: Option<String>) -> Response {
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().append(header::SET_COOKIE, c);
    }
    r
}

fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

impl Aggregator {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        prefer_async: bool,
    ) -> Result<(u16, Value), String> {
        let mut request =
            self.http.request(method, format!("{}{path}", self.config.link_base)).bearer_auth(&self.config.secret_key);
        if let Some(b) = body {
            request = request.json(&b);
        }
        if prefer_async {
            request = request.header("prefer", "respond-async");
        }
        let response = request.send().await.map_err(|e| format!("Link could not be reached ({e})"))?;
        let status = response.status().as_u16();
        let value = response.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, value))
    }

    async fn get(&self, path: &str) -> Result<(u16, Value), String> {
        self.call(reqwest::Method::GET, path, None, false).await
    }
}

fn link_error(v: &Value) -> String {
    v["error_description"].as_str().or(v["error"].as_str()).unwrap_or("unexpected answer").to_owned()
}

struct ConnectionRow {
    portal: String,
    status: String,
    patient: String,
    expires: String,
}

struct EventRow {
    kind: String,
    verified: bool,
    received: String,
}

#[derive(Template)]
#[template(path = "aggregator_home.html")]
struct HomePage {
    title: &'static str,
    refresh: bool,
    notice: Option<String>,
    error: Option<String>,
    connections: Vec<ConnectionRow>,
    events: Vec<EventRow>,
}

async fn home(State(app): State<Aggregator>, headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    let (person, set) = person(&headers);
    let mut error = q.get("error").cloned();
    let connections = match app.get(&format!("/link/v1/connections?person={person}")).await {
        Ok((200, Value::Array(items))) => items
            .iter()
            .map(|c| ConnectionRow {
                portal: c["endpointName"].as_str().unwrap_or("?").to_owned(),
                status: c["status"].as_str().unwrap_or("?").to_owned(),
                patient: c["patientId"].as_str().unwrap_or("?").to_owned(),
                expires: c["tokenExpires"].as_str().unwrap_or("—").to_owned(),
            })
            .collect(),
        Ok((_, v)) => {
            error = Some(link_error(&v));
            Vec::new()
        }
        Err(e) => {
            error = Some(e);
            Vec::new()
        }
    };
    let events = app
        .events
        .lock()
        .map(|e| {
            e.iter()
                .rev()
                .map(|e| EventRow { kind: e.kind.clone(), verified: e.verified, received: e.received.clone() })
                .collect()
        })
        .unwrap_or_default();
    let page = HomePage { title: "Home", refresh: false, notice: q.get("notice").cloned(), error, connections, events };
    with_cookie(html(StatusCode::OK, &page), set)
}

struct PortalRow {
    id: String,
    name: String,
    organization: String,
    place: String,
    status: String,
    connectable: bool,
}

#[derive(Template)]
#[template(path = "aggregator_search.html")]
struct SearchPage {
    title: &'static str,
    refresh: bool,
    notice: Option<String>,
    error: Option<String>,
    query: String,
    results: Vec<PortalRow>,
}

async fn search(State(app): State<Aggregator>, Query(q): Query<HashMap<String, String>>) -> Response {
    let category = if q.get("category").map(String::as_str) == Some("payer") { "payer" } else { "clinical" };
    let query = q.get("q").map(|s| s.trim().to_owned()).unwrap_or_default();
    let mut page = SearchPage {
        title: "Search",
        refresh: false,
        notice: None,
        error: None,
        query: query.clone(),
        results: Vec::new(),
    };
    if query.is_empty() {
        page.error = Some("Type a name or a zip code.".into());
        return html(StatusCode::OK, &page);
    }
    let term: String = percent_encoding::utf8_percent_encode(&query, percent_encoding::NON_ALPHANUMERIC).collect();
    match app.get(&format!("/link/v1/directory/{category}/search/{term}")).await {
        Ok((200, Value::Array(items))) => {
            page.results = items
                .iter()
                .map(|e| PortalRow {
                    id: e["id"].as_str().unwrap_or_default().to_owned(),
                    name: e["name"].as_str().unwrap_or_default().to_owned(),
                    organization: e["organization"].as_str().unwrap_or_default().to_owned(),
                    place: [
                        e["address"]["city"].as_str(),
                        e["address"]["state"].as_str(),
                        e["address"]["zip"].as_str(),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", "),
                    status: e["status"].as_str().unwrap_or_default().to_owned(),
                    connectable: e["connectable"].as_bool().unwrap_or(false),
                })
                .collect()
        }
        Ok((_, v)) => page.error = Some(link_error(&v)),
        Err(e) => page.error = Some(e),
    }
    html(StatusCode::OK, &page)
}

/// Send the browser into Link's connect flow with a fresh state remembered in a cookie.
async fn connect(
    State(app): State<Aggregator>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (person, set) = person(&headers);
    let Some(endpoint) = q.get("endpoint").filter(|e| e.len() < 100) else {
        return see_other("/?error=No+portal+chosen");
    };
    let state = uuid::Uuid::new_v4().simple().to_string();
    let client_url = format!("{}/connected", app.config.origin);
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("app", &app.config.app_id)
        .append_pair("clientURL", &client_url)
        .append_pair("state", &state)
        .append_pair("person", &person)
        .finish();
    let endpoint: String =
        percent_encoding::utf8_percent_encode(endpoint, percent_encoding::NON_ALPHANUMERIC).collect();
    let r = see_other(&format!("{}/link/v1/connect/{endpoint}?{query}", app.config.link_base));
    let r = with_cookie(r, set);
    with_cookie(r, Some(format!("{STATE_COOKIE}={state}; Path=/connected; HttpOnly; SameSite=Lax; Max-Age=900")))
}

/// Back from Link: check the state, redeem the code.
async fn connected(
    State(app): State<Aggregator>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let expected = cookie(&headers, STATE_COOKIE);
    if expected.is_none() || q.get("state").map(String::as_str) != expected {
        return see_other("/?error=That+sign-in+was+not+started+here");
    }
    if let Some(error) = q.get("error") {
        let text = q.get("error_description").filter(|d| !d.is_empty()).unwrap_or(error);
        return see_other(&format!(
            "/?error={}",
            form_urlencoded::byte_serialize(format!("The portal said: {text}").as_bytes()).collect::<String>()
        ));
    }
    let Some(code) = q.get("code") else { return see_other("/?error=No+code") };
    match app.call(reqwest::Method::POST, "/link/v1/token", Some(json!({"code": code})), false).await {
        Ok((200, c)) => {
            let notice = format!("Connected {}.", c["endpointName"].as_str().unwrap_or("the portal"));
            see_other(&format!("/?notice={}", form_urlencoded::byte_serialize(notice.as_bytes()).collect::<String>()))
        }
        Ok((_, v)) => see_other(&format!(
            "/?error={}",
            form_urlencoded::byte_serialize(link_error(&v).as_bytes()).collect::<String>()
        )),
        Err(e) => see_other(&format!("/?error={}", form_urlencoded::byte_serialize(e.as_bytes()).collect::<String>())),
    }
}

async fn fetch(State(app): State<Aggregator>, headers: HeaderMap) -> Response {
    let (person, _) = person(&headers);
    match app.call(reqwest::Method::POST, &format!("/link/v1/persons/{person}/fetch"), Some(json!({})), true).await {
        Ok((202 | 429, v)) if v["transactionId"].is_string() => {
            see_other(&format!("/jobs/{}", v["transactionId"].as_str().unwrap_or_default()))
        }
        Ok((_, v)) => see_other(&format!(
            "/?error={}",
            form_urlencoded::byte_serialize(link_error(&v).as_bytes()).collect::<String>()
        )),
        Err(e) => see_other(&format!("/?error={}", form_urlencoded::byte_serialize(e.as_bytes()).collect::<String>())),
    }
}

struct Group {
    kind: String,
    items: Vec<String>,
}

struct Source {
    name: String,
    base: String,
    count: usize,
    groups: Vec<Group>,
}

#[derive(Template)]
#[template(path = "aggregator_job.html")]
struct JobPage {
    title: &'static str,
    refresh: bool,
    notice: Option<String>,
    error: Option<String>,
    job_id: String,
    status: String,
    finished: bool,
    problems: Vec<String>,
    sources: Vec<Source>,
}

/// A line a person can read about a resource.
fn summary(r: &Value) -> String {
    let text = |v: &Value| -> Option<String> {
        v["text"]
            .as_str()
            .map(String::from)
            .or_else(|| v["coding"][0]["display"].as_str().map(String::from))
            .or_else(|| v["coding"][0]["code"].as_str().map(String::from))
    };
    let what = match r["resourceType"].as_str().unwrap_or_default() {
        "Patient" => {
            r["name"][0]["given"][0].as_str().map(|g| format!("{g} {}", r["name"][0]["family"].as_str().unwrap_or("")))
        }
        "Immunization" => text(&r["vaccineCode"]),
        "MedicationRequest" | "MedicationStatement" => text(&r["medicationCodeableConcept"]),
        "Coverage" => r["type"]["text"]
            .as_str()
            .map(String::from)
            .or_else(|| r["subscriberId"].as_str().map(|s| format!("member {s}"))),
        "ExplanationOfBenefit" | "Claim" => text(&r["type"]),
        "Practitioner" => {
            r["name"][0]["family"].as_str().map(|f| format!("{} {f}", r["name"][0]["given"][0].as_str().unwrap_or("")))
        }
        "Organization" | "Location" => r["name"].as_str().map(String::from),
        _ => text(&r["code"]),
    };
    let when = [
        "effectiveDateTime",
        "occurrenceDateTime",
        "onsetDateTime",
        "authoredOn",
        "performedDateTime",
        "created",
        "date",
        "recordedDate",
    ]
    .iter()
    .find_map(|k| r[*k].as_str())
    .map(|d| format!(" ({})", d.get(..10).unwrap_or(d)))
    .unwrap_or_default();
    format!("{}{when}", what.unwrap_or_else(|| r["id"].as_str().unwrap_or("?").to_owned()))
}

async fn job(State(app): State<Aggregator>, Path(id): Path<String>) -> Response {
    let id: String = id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
    let mut page = JobPage {
        title: "Your records",
        refresh: false,
        notice: None,
        error: None,
        job_id: id.clone(),
        status: "unknown".into(),
        finished: false,
        problems: Vec::new(),
        sources: Vec::new(),
    };
    let status = match app.get(&format!("/link/v1/jobs/{id}")).await {
        Ok((200, v)) => v,
        Ok((_, v)) => {
            page.error = Some(link_error(&v));
            return html(StatusCode::OK, &page);
        }
        Err(e) => {
            page.error = Some(e);
            return html(StatusCode::OK, &page);
        }
    };
    page.status = status["status"].as_str().unwrap_or("?").to_owned();
    page.finished = matches!(page.status.as_str(), "done" | "partial" | "failed");
    page.refresh = !page.finished;
    let names: HashMap<String, String> = status["progress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["endpointId"].as_str()?.to_owned(), p["endpointName"].as_str()?.to_owned())))
        .collect();
    for e in status["errors"].as_array().into_iter().flatten() {
        let portal = e["endpointId"].as_str().and_then(|i| names.get(i)).cloned().unwrap_or_default();
        page.problems
            .push(format!("{portal}: {}", e["outcome"]["issue"][0]["diagnostics"].as_str().unwrap_or("failed")));
    }
    if page.finished {
        if let Ok((200, bundle)) = app.get(&format!("/link/v1/jobs/{id}/result")).await {
            let mut by_source: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
            let mut endpoint_of: HashMap<String, String> = HashMap::new();
            for entry in bundle["entry"].as_array().into_iter().flatten() {
                let r = &entry["resource"];
                let Some(base) = r["meta"]["source"].as_str() else { continue };
                if let Some(tag) = r["meta"]["tag"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["system"] == link::fetch::run::ENDPOINT_TAG_SYSTEM)
                {
                    endpoint_of.insert(base.to_owned(), tag["code"].as_str().unwrap_or_default().to_owned());
                }
                let kind = r["resourceType"].as_str().unwrap_or("?").to_owned();
                by_source.entry(base.to_owned()).or_default().entry(kind).or_default().push(summary(r));
            }
            page.sources = by_source
                .into_iter()
                .map(|(base, groups)| Source {
                    name: endpoint_of.get(&base).and_then(|e| names.get(e)).cloned().unwrap_or_else(|| base.clone()),
                    count: groups.values().map(Vec::len).sum(),
                    base,
                    groups: groups
                        .into_iter()
                        .map(|(kind, mut items)| {
                            items.sort();
                            Group { kind, items }
                        })
                        .collect(),
                })
                .collect();
        }
    }
    html(StatusCode::OK, &page)
}

async fn result_json(State(app): State<Aggregator>, Path(id): Path<String>) -> Response {
    let id: String = id.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
    match app.get(&format!("/link/v1/jobs/{id}/result")).await {
        Ok((status, v)) => {
            let mut r =
                (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), v.to_string()).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+json"));
            r
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e).into_response(),
    }
}

/// Link's webhooks: the signature checked as the README shows, the event kept for the page.
async fn webhook(State(app): State<Aggregator>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let verified = link::webhooks::verify(
        &app.config.webhook_secret,
        header("webhook-id"),
        header("webhook-timestamp"),
        &text,
        header("webhook-signature"),
        now,
        300,
    );
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let event = Event {
        kind: value["type"].as_str().unwrap_or("?").to_owned(),
        verified,
        received: store::clock::instant_text(now * 1000),
        data: value["data"].clone(),
    };
    if let Ok(mut events) = app.events.lock() {
        events.push(event);
        let excess = events.len().saturating_sub(200);
        events.drain(..excess);
    }
    if verified {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::UNAUTHORIZED
    }
}

async fn events_json(State(app): State<Aggregator>) -> Response {
    let events: Vec<Value> = app
        .events
        .lock()
        .map(|e| {
            e.iter()
                .map(|e| json!({"type": e.kind, "verified": e.verified, "received": e.received, "data": e.data}))
                .collect()
        })
        .unwrap_or_default();
    axum::Json(events).into_response()
}
