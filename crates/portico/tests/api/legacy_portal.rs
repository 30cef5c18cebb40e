//! A DSTU2 or STU3 portal for Link's tests: one Synthea fixture patient served read-only behind
//! a real authorization-code flow (SMART discovery, a sign-in form, PKCE S256 checked at the
//! token endpoint, single-use codes, refresh), bearer tokens checked on every FHIR call, a
//! `Conformance` (DSTU2) or `CapabilityStatement` (STU3) of that version, reads, searches by
//! patient with paging, and `Patient/{id}/$everything`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Form;
use serde_json::{json, Value};

use crate::smart::Browser;

pub const LEGACY_USER: &str = "sarah";
pub const LEGACY_PASSWORD: &str = "legacy portal password";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legacy {
    Dstu2,
    Stu3,
}

impl Legacy {
    pub fn fhir_version(self) -> &'static str {
        match self {
            Legacy::Dstu2 => "1.0.2",
            Legacy::Stu3 => "3.0.1",
        }
    }

    /// The fixture folder under `../shared/fixtures`.
    pub fn fixtures(self) -> &'static str {
        match self {
            Legacy::Dstu2 => "dstu2-synthea",
            Legacy::Stu3 => "stu3-synthea",
        }
    }
}

struct Pending {
    redirect_uri: String,
    state: String,
    client_id: String,
    challenge: String,
}

#[derive(Clone)]
struct PortalState {
    base: String,
    version: Legacy,
    patient: String,
    /// `Type/id` → resource, in the fixture's order.
    resources: Arc<Vec<(String, Value)>>,
    requests: Arc<Mutex<HashMap<String, Pending>>>,
    codes: Arc<Mutex<HashMap<String, Pending>>>,
    access: Arc<Mutex<HashSet<String>>>,
    refresh: Arc<Mutex<HashSet<String>>>,
    unauthorized: Arc<AtomicUsize>,
}

pub struct LegacyPortal {
    pub base: String,
    pub version: Legacy,
    pub patient: String,
    /// What the portal holds, by type (the source of truth for the tests' counts).
    pub resources: Arc<Vec<(String, Value)>>,
    /// FHIR calls without a valid bearer token.
    pub unauthorized: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// A fixture bundle as a portal stores it: every resource with an id (assigned where the
/// fixture has none) and `urn:uuid:` references made relative (`Type/id`).
fn load(path: &std::path::Path) -> (String, Vec<(String, Value)>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let bundle: Value = serde_json::from_reader(flate2::read::GzDecoder::new(file)).unwrap();
    let mut by_full_url = HashMap::new();
    let mut resources = Vec::new();
    for (index, entry) in bundle["entry"].as_array().unwrap().iter().enumerate() {
        let mut r = entry["resource"].clone();
        let full_url = entry["fullUrl"].as_str().unwrap_or_default().to_owned();
        if r.get("id").is_none() {
            // As a server assigns ids on create: the fullUrl's UUID, else a counter.
            r["id"] = match full_url.strip_prefix("urn:uuid:") {
                Some(uuid) => json!(uuid),
                None => json!(format!("{}-{index}", r["resourceType"].as_str().unwrap().to_ascii_lowercase())),
            };
        }
        let key = format!("{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap());
        by_full_url.insert(full_url, key.clone());
        resources.push((key, r));
    }
    fn relink(v: &mut Value, map: &HashMap<String, String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    match (k.as_str(), v) {
                        ("reference", Value::String(s)) => {
                            if let Some(key) = map.get(s.as_str()) {
                                *s = key.clone();
                            }
                        }
                        (_, v) => relink(v, map),
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|v| relink(v, map)),
            _ => {}
        }
    }
    for (_, r) in &mut resources {
        relink(r, &by_full_url);
    }
    let patient =
        resources.iter().find(|(k, _)| k.starts_with("Patient/")).unwrap().1["id"].as_str().unwrap().to_owned();
    (patient, resources)
}

impl LegacyPortal {
    pub async fn start(version: Legacy, fixture: &std::path::Path) -> LegacyPortal {
        let (patient, resources) = load(fixture);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let state = PortalState {
            base: format!("{origin}/fhir"),
            version,
            patient,
            resources: Arc::new(resources),
            requests: Arc::default(),
            codes: Arc::default(),
            access: Arc::default(),
            refresh: Arc::default(),
            unauthorized: Arc::default(),
        };
        let router = axum::Router::new()
            .route("/fhir/.well-known/smart-configuration", get(smart_configuration))
            .route("/fhir/metadata", get(metadata))
            .route("/auth/authorize", get(authorize).post(sign_in))
            .route("/auth/token", axum::routing::post(token))
            .route("/fhir/{*path}", get(fhir))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        LegacyPortal {
            base: state.base,
            version,
            patient: state.patient,
            resources: state.resources,
            unauthorized: state.unauthorized,
            task,
        }
    }

    /// How many resources of a type the portal holds.
    pub fn count(&self, resource_type: &str) -> usize {
        self.resources.iter().filter(|(k, _)| k.split('/').next() == Some(resource_type)).count()
    }
}

impl Drop for LegacyPortal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A person's login at a legacy portal through Link: from the app's connect URL, through the
/// portal's sign-in form, back to the app. Returns the app's redirect.
pub async fn login_at_legacy(browser: &Browser, portal: &LegacyPortal, connect_url: &str) -> String {
    let first = browser.get(connect_url).await;
    assert_eq!(first.status, 303, "{}", first.body);
    let authorize = first.location.unwrap();
    assert!(authorize.starts_with(portal.base.trim_end_matches("/fhir")), "{authorize}");
    let form = browser.get(&authorize).await;
    assert_eq!(form.status, 200, "{}", form.body);
    let request = crate::smart::hidden(&form.body, "request");
    let action = format!("{}/auth/authorize", portal.base.trim_end_matches("/fhir"));
    let wrong = browser.post(&action, &[("request", &request), ("username", LEGACY_USER), ("password", "wrong")]).await;
    assert_eq!(wrong.status, 401, "a wrong password is refused");
    let signed_in =
        browser.post(&action, &[("request", &request), ("username", LEGACY_USER), ("password", LEGACY_PASSWORD)]).await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let back = browser.get(&signed_in.location.unwrap()).await;
    assert_eq!(back.status, 303, "Link sends the browser on: {}", back.body);
    back.location.unwrap()
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({"error": error}))).into_response()
}

async fn smart_configuration(State(s): State<PortalState>) -> Response {
    let origin = s.base.trim_end_matches("/fhir").to_owned();
    axum::Json(json!({
        "authorization_endpoint": format!("{origin}/auth/authorize"),
        "token_endpoint": format!("{origin}/auth/token"),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "capabilities": ["launch-standalone", "client-public", "context-standalone-patient", "permission-offline"],
    }))
    .into_response()
}

async fn metadata(State(s): State<PortalState>) -> Response {
    let mut types: Vec<&str> = s.resources.iter().filter_map(|(k, _)| k.split('/').next()).collect();
    types.sort();
    types.dedup();
    let resource: Vec<Value> = types
        .iter()
        .map(|t| {
            let mut r = json!({"type": t, "interaction": [{"code": "read"}, {"code": "search-type"}],
                "searchParam": [{"name": "patient", "type": "reference"}]});
            if *t == "Patient" {
                r["operation"] = json!([{"name": "everything", "definition": {"reference": "OperationDefinition/Patient-everything"}}]);
            }
            r
        })
        .collect();
    let resource_type = match s.version {
        Legacy::Dstu2 => "Conformance",
        Legacy::Stu3 => "CapabilityStatement",
    };
    axum::Json(json!({"resourceType": resource_type, "status": "active", "date": "2017-08-01", "kind": "instance",
        "fhirVersion": s.version.fhir_version(), "acceptUnknown": "no", "format": ["json"],
        "rest": [{"mode": "server", "resource": resource}]}))
    .into_response()
}

async fn authorize(State(s): State<PortalState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code" || get("client_id").is_empty() || get("redirect_uri").is_empty() {
        return (StatusCode::BAD_REQUEST, "response_type=code, client_id and redirect_uri are required")
            .into_response();
    }
    if get("code_challenge_method") != "S256" || get("code_challenge").len() < 43 {
        return (StatusCode::BAD_REQUEST, "PKCE with S256 is required").into_response();
    }
    let aud = get("aud");
    if aud.trim_end_matches('/') != s.base {
        return (StatusCode::BAD_REQUEST, format!("aud {aud} is not this server")).into_response();
    }
    let request = uuid::Uuid::new_v4().simple().to_string();
    s.requests.lock().unwrap().insert(
        request.clone(),
        Pending {
            redirect_uri: get("redirect_uri"),
            state: get("state"),
            client_id: get("client_id"),
            challenge: get("code_challenge"),
        },
    );
    Html(format!(
        "<!doctype html><title>Sign in</title><form method=post action=/auth/authorize>\
         <input type=hidden name=\"request\" value=\"{request}\"><input name=username><input name=password type=password>\
         <button>Sign in</button></form>"
    ))
    .into_response()
}

#[derive(serde::Deserialize)]
struct SignIn {
    request: String,
    username: String,
    password: String,
}

async fn sign_in(State(s): State<PortalState>, Form(f): Form<SignIn>) -> Response {
    if f.username != LEGACY_USER || f.password != LEGACY_PASSWORD {
        return (StatusCode::UNAUTHORIZED, "wrong user name or password").into_response();
    }
    let Some(pending) = s.requests.lock().unwrap().remove(&f.request) else {
        return (StatusCode::BAD_REQUEST, "no such sign-in").into_response();
    };
    let code = uuid::Uuid::new_v4().simple().to_string();
    let target = format!(
        "{}?code={code}&state={}",
        pending.redirect_uri,
        form_urlencoded::byte_serialize(pending.state.as_bytes()).collect::<String>()
    );
    s.codes.lock().unwrap().insert(code, pending);
    (StatusCode::SEE_OTHER, [("location", target)]).into_response()
}

async fn token(State(s): State<PortalState>, Form(f): Form<HashMap<String, String>>) -> Response {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    match get("grant_type").as_str() {
        "authorization_code" => {
            // Single use: taken out whatever happens next.
            let Some(pending) = s.codes.lock().unwrap().remove(&get("code")) else {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            };
            if pending.redirect_uri != get("redirect_uri") || pending.client_id != get("client_id") {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
            if auth::pkce::s256_challenge(&get("code_verifier")) != pending.challenge {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
        }
        "refresh_token" => {
            if !s.refresh.lock().unwrap().remove(&get("refresh_token")) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
            }
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    }
    let access = format!("legacy-access-{}", uuid::Uuid::new_v4().simple());
    let refresh = format!("legacy-refresh-{}", uuid::Uuid::new_v4().simple());
    s.access.lock().unwrap().insert(access.clone());
    s.refresh.lock().unwrap().insert(refresh.clone());
    axum::Json(json!({"access_token": access, "token_type": "Bearer", "expires_in": 3600, "refresh_token": refresh,
        "patient": s.patient, "scope": "launch/patient offline_access patient/*.read"}))
    .into_response()
}

fn outcome(status: StatusCode, code: &str, text: &str) -> Response {
    (
        status,
        axum::Json(json!({"resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}]})),
    )
        .into_response()
}

/// A searchset page of `matches`, with a `next` link while more remain.
fn page(s: &PortalState, matches: Vec<&(String, Value)>, query: &BTreeMap<String, String>, path: &str) -> Response {
    let count: usize = query.get("_count").and_then(|c| c.parse().ok()).unwrap_or(50).clamp(1, 100);
    let offset: usize = query.get("_offset").and_then(|c| c.parse().ok()).unwrap_or(0);
    let total = matches.len();
    let entries: Vec<Value> = matches
        .into_iter()
        .skip(offset)
        .take(count)
        .map(|(k, r)| json!({"fullUrl": format!("{}/{k}", s.base), "resource": r, "search": {"mode": "match"}}))
        .collect();
    let link_to = |offset: usize| {
        let mut q = query.clone();
        q.insert("_offset".into(), offset.to_string());
        q.insert("_count".into(), count.to_string());
        format!("{}/{path}?{}", s.base, form_urlencoded::Serializer::new(String::new()).extend_pairs(&q).finish())
    };
    let mut links = vec![json!({"relation": "self", "url": link_to(offset)})];
    if offset + count < total {
        links.push(json!({"relation": "next", "url": link_to(offset + count)}));
    }
    axum::Json(json!({"resourceType": "Bundle", "type": "searchset", "total": total, "link": links, "entry": entries}))
        .into_response()
}

async fn fhir(
    State(s): State<PortalState>,
    axum::extract::Path(path): axum::extract::Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    if !s.access.lock().unwrap().contains(&bearer) {
        s.unauthorized.fetch_add(1, Ordering::SeqCst);
        return outcome(StatusCode::UNAUTHORIZED, "login", "a valid bearer token is required");
    }
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["Patient", id, "$everything"] => {
            if *id != s.patient {
                return outcome(StatusCode::FORBIDDEN, "forbidden", "not this token's patient");
            }
            page(&s, s.resources.iter().collect(), &query, &path)
        }
        [t, id] => match s.resources.iter().find(|(k, _)| k == &format!("{t}/{id}")) {
            Some((_, r)) => axum::Json(r.clone()).into_response(),
            None => outcome(StatusCode::NOT_FOUND, "not-found", "no such resource"),
        },
        [t] => {
            let Some(patient) = query.get("patient") else {
                return outcome(StatusCode::FORBIDDEN, "forbidden", "searches name the patient");
            };
            let needle = format!("\"Patient/{}\"", patient.trim_start_matches("Patient/"));
            let matches = s
                .resources
                .iter()
                .filter(|(k, r)| k.split('/').next() == Some(*t) && r.to_string().contains(&needle))
                .collect();
            page(&s, matches, &query, &path)
        }
        _ => outcome(StatusCode::NOT_FOUND, "not-supported", "unknown path"),
    }
}
