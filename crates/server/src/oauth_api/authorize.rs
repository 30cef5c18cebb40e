//! `/auth/authorize` and the pages of the flow: sign-in, patient picker, authorization screen.
//! Every POST answers with a 303 to the next page (or back to the app), so reloading a page never
//! resubmits a form.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use askama::Template;
use auth::consent::{ConsentAnswer, ConsentItem};
use auth::SensitiveCategory;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use oauth::authorize::{Decision, Flow, SignIn, Started};
use oauth::patients::PatientChoice;
use oauth::{AuthorizeParams, BrowserContext, Step};
use serde::Deserialize;
use store::auth::OwnerType;

use super::form::{cookie, set_cookie, BROWSER_COOKIE, SESSION_COOKIE};
use crate::pages::{html, with_page_headers, PageResponse};
use crate::request::query_pairs;
use crate::AppState;

type Page = Result<Response, PageResponse>;

fn browser(headers: &HeaderMap, addr: SocketAddr) -> BrowserContext {
    BrowserContext {
        browser: cookie(headers, BROWSER_COOKIE),
        session: cookie(headers, SESSION_COOKIE),
        addr: addr.ip(),
    }
}

fn step_url(step: Step, request_id: &str) -> String {
    let page = match step {
        Step::SignIn => "signin",
        Step::PickPatient => "patient",
        Step::Consent => "consent",
    };
    format!("/auth/{page}?req={request_id}")
}

/// 303 See Other to `location`, with cookies to set.
fn see_other(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    with_page_headers(response)
}

pub async fn authorize_get(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Page {
    start(&state, query_pairs(query.as_deref()), &browser(&headers, addr)).await
}

/// `POST /auth/authorize` (SMART's `authorize-post`): the same parameters as a form.
pub async fn authorize_post(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    let pairs = form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    start(&state, pairs, &browser(&headers, addr)).await
}

async fn start(state: &AppState, pairs: Vec<(String, String)>, browser: &BrowserContext) -> Page {
    let (params, repeated) = AuthorizeParams::from_pairs(pairs);
    match state.auth.start_authorization(params, &repeated, browser).await? {
        Started::Redirect(url) => Ok(see_other(&url, &[])),
        Started::Continue { request_id, step, set_browser_cookie } => {
            let secure = state.auth.config().secure_cookies();
            let cookies: Vec<String> =
                set_browser_cookie.iter().map(|v| set_cookie(BROWSER_COOKIE, v, "/auth", None, secure)).collect();
            Ok(see_other(&step_url(step, &request_id), &cookies))
        }
    }
}

#[derive(Deserialize)]
pub struct RequestQuery {
    #[serde(default)]
    req: String,
}

/// Load the flow for a page and send the browser to the right page if it is elsewhere.
async fn flow_at(
    state: &AppState,
    req: &str,
    browser: &BrowserContext,
    want: Step,
) -> Result<Result<Flow, Response>, PageResponse> {
    let flow = state.auth.flow(req, browser).await?;
    if flow.step != want {
        return Ok(Err(see_other(&step_url(flow.step, req), &[])));
    }
    Ok(Ok(flow))
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SignInPage<'a> {
    app_name: &'a str,
    request_id: &'a str,
    csrf: &'a str,
    username: &'a str,
    error: Option<&'a str>,
}

pub async fn signin_page(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Query(q): Query<RequestQuery>,
    headers: HeaderMap,
) -> Page {
    let flow = match flow_at(&state, &q.req, &browser(&headers, addr), Step::SignIn).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    Ok(html(
        StatusCode::OK,
        &SignInPage {
            app_name: &flow.client.name,
            request_id: &flow.request_id,
            csrf: &flow.csrf,
            username: "",
            error: None,
        },
    ))
}

fn form_map(body: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        map.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    map
}

fn first<'a>(form: &'a BTreeMap<String, Vec<String>>, name: &str) -> &'a str {
    form.get(name).and_then(|v| v.first()).map(String::as_str).unwrap_or_default()
}

pub async fn signin_submit(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    let form = form_map(&body);
    let (req, csrf) = (first(&form, "req"), first(&form, "csrf"));
    let username = first(&form, "username");
    let ctx = browser(&headers, addr);
    match state.auth.sign_in(req, csrf, username, first(&form, "password"), &ctx).await? {
        SignIn::Done { session_cookie, step } => {
            let secure = state.auth.config().secure_cookies();
            let c = set_cookie(SESSION_COOKIE, &session_cookie, "/", None, secure);
            Ok(see_other(&step_url(step, req), &[c]))
        }
        SignIn::Refused { message, status } => {
            let flow = state.auth.flow(req, &ctx).await?;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
            Ok(html(
                status,
                &SignInPage {
                    app_name: &flow.client.name,
                    request_id: &flow.request_id,
                    csrf: &flow.csrf,
                    username,
                    error: Some(&message),
                },
            ))
        }
    }
}

struct PatientRow {
    id: String,
    name: String,
    birth_date: Option<String>,
    is_self: bool,
}

#[derive(Template)]
#[template(path = "patient.html")]
struct PatientPage<'a> {
    app_name: &'a str,
    request_id: &'a str,
    csrf: &'a str,
    patients: Vec<PatientRow>,
}

pub async fn patient_page(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Query(q): Query<RequestQuery>,
    headers: HeaderMap,
) -> Page {
    let flow = match flow_at(&state, &q.req, &browser(&headers, addr), Step::PickPatient).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let own = flow.user.as_ref().and_then(|u| u.fhir_user.clone());
    let patients = state
        .auth
        .picker(&flow)
        .await?
        .into_iter()
        .map(|p: PatientChoice| PatientRow {
            is_self: own.as_deref() == Some(p.id.reference().as_str()),
            id: p.id.to_string(),
            name: p.name,
            birth_date: p.birth_date,
        })
        .collect();
    Ok(html(
        StatusCode::OK,
        &PatientPage { app_name: &flow.client.name, request_id: &flow.request_id, csrf: &flow.csrf, patients },
    ))
}

pub async fn patient_submit(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    let form = form_map(&body);
    let req = first(&form, "req");
    let step =
        state.auth.choose_patient(req, first(&form, "csrf"), first(&form, "patient"), &browser(&headers, addr)).await?;
    Ok(see_other(&step_url(step, req), &[]))
}

struct ItemView {
    index: usize,
    key: String,
    description: String,
    categories: Vec<CategoryView>,
}

struct CategoryView {
    code: &'static str,
    name: &'static str,
}

struct SensitiveView {
    slug: &'static str,
    name: &'static str,
    description: &'static str,
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    app_name: &'a str,
    owner_label: &'static str,
    owner_explanation: &'static str,
    logo_uri: Option<&'a str>,
    policy_uri: Option<&'a str>,
    tos_uri: Option<&'a str>,
    user_name: String,
    patient_name: String,
    request_id: &'a str,
    csrf: &'a str,
    offline: bool,
    reaches_records: bool,
    items: Vec<ItemView>,
    sensitive: Vec<SensitiveView>,
}

fn owner_words(owner: OwnerType) -> (&'static str, &'static str) {
    match owner {
        OwnerType::HealthPlan => (
            "Health plan app",
            "This app is run by a health plan. Health plans are covered by HIPAA privacy rules.",
        ),
        OwnerType::CoveredEntity => (
            "Covered entity app",
            "This app is run by a health care provider or plan covered by HIPAA privacy rules.",
        ),
        OwnerType::IndependentDeveloper => (
            "Independent developer",
            "This app is made by an independent developer, not your health plan or provider. It may not be covered by HIPAA, so what it may do with your data depends on its own privacy policy.",
        ),
    }
}

fn item_view(index: usize, item: &ConsentItem) -> ItemView {
    ItemView {
        index,
        key: item.key.clone(),
        description: item.description.clone(),
        categories: item.categories.iter().map(|c| CategoryView { code: c.code, name: c.name }).collect(),
    }
}

pub async fn consent_page(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Query(q): Query<RequestQuery>,
    headers: HeaderMap,
) -> Page {
    let flow = match flow_at(&state, &q.req, &browser(&headers, addr), Step::Consent).await? {
        Ok(f) => f,
        Err(redirect) => return Ok(redirect),
    };
    let view = state.auth.consent_view(&flow).await?;
    let (owner_label, owner_explanation) = owner_words(flow.client.owner_type);
    // Acting for someone else (a parent for a child): "their records", not "your records".
    let own = flow.user.as_ref().and_then(|u| u.fhir_user.clone());
    let for_someone_else =
        view.patient.as_ref().filter(|p| own.as_deref() != Some(p.id.reference().as_str())).map(|p| p.name.clone());
    let page = ConsentPage {
        app_name: &flow.client.name,
        owner_label,
        owner_explanation,
        logo_uri: flow.client.logo_uri.as_deref(),
        policy_uri: flow.client.policy_uri.as_deref(),
        tos_uri: flow.client.tos_uri.as_deref(),
        user_name: view.user_name,
        patient_name: view.patient.map(|p| p.name).unwrap_or_default(),
        request_id: &flow.request_id,
        csrf: &flow.csrf,
        offline: view.offer.asks_offline(),
        reaches_records: view.offer.reaches_records(),
        items: view
            .offer
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let mut v = item_view(i + 1, item);
                if let Some(name) = &for_someone_else {
                    v.description = v.description.replacen(" your ", &format!(" {name}'s "), 1);
                }
                v
            })
            .collect(),
        sensitive: SensitiveCategory::ALL
            .iter()
            .map(|c| SensitiveView { slug: c.as_str(), name: c.display(), description: c.description() })
            .collect(),
    };
    Ok(html(StatusCode::OK, &page))
}

pub async fn consent_submit(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    let form = form_map(&body);
    let decision = if first(&form, "decision") == "allow" {
        let mut answer = ConsentAnswer {
            kept: form.get("scope").into_iter().flatten().cloned().collect(),
            ..ConsentAnswer::default()
        };
        for (name, values) in &form {
            if let Some(key) = name.strip_prefix("category:") {
                answer.categories.insert(key.to_owned(), values.iter().cloned().collect::<BTreeSet<String>>());
            }
        }
        answer.shared_sensitive =
            form.get("share").into_iter().flatten().filter_map(|s| s.parse::<SensitiveCategory>().ok()).collect();
        Decision::Approve(answer)
    } else {
        Decision::Deny
    };
    let url = state.auth.decide(first(&form, "req"), first(&form, "csrf"), decision, &browser(&headers, addr)).await?;
    Ok(see_other(&url, &[]))
}
