//! The pages people use after connecting apps: **Connected apps** (every grant: app, owner type,
//! permissions, withheld categories, since, last used; Revoke) and **Access history** (who
//! accessed which records, when, through which app), behind a sign-in with the portal
//! credentials.
//!
//! Forms carry a CSRF value derived from the session cookie (its SHA-256 with a purpose tag): a
//! page on another site cannot read the HttpOnly cookie, so it cannot produce the value.

use std::collections::HashMap;
use std::net::SocketAddr;

use askama::Template;
use auth::{GrantId, ScopeSet, SensitiveCategory};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use oauth::authorize::SignIn;
use oauth::PageError;
use serde::Deserialize;
use store::auth::{OwnerType, User};
use store::AuditQuery;

use crate::oauth_api::{cookie, set_cookie, SESSION_COOKIE};
use crate::pages::{form_map, html, see_other, when, PageResponse};
use crate::AppState;

type Page = Result<Response, PageResponse>;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/account", get(|| async { see_other("/account/apps", None) }))
        .route("/account/signin", get(signin_page).post(signin_submit))
        .route("/account/signout", post(signout))
        .route("/account/apps", get(apps_page))
        .route("/account/apps/revoke", post(revoke))
        .route("/account/history", get(history_page))
}

#[derive(Template)]
#[template(path = "home.html")]
struct Home<'a> {
    base_url: &'a str,
    demo_app: bool,
}

async fn home(State(state): State<AppState>) -> Response {
    html(StatusCode::OK, &Home { base_url: &state.config.base_url, demo_app: state.config.demo_app })
}

fn csrf_for(session: &str) -> String {
    store::auth::token_hash(&format!("account-form:{session}"))
}

/// The signed-in user, or a redirect to the sign-in page.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Result<(User, String), Response>, PageResponse> {
    let cookie_value = cookie(headers, SESSION_COOKIE);
    match state.auth.session_user(cookie_value.as_deref()).await? {
        Some((user, _)) => Ok(Ok((user, cookie_value.unwrap_or_default()))),
        None => Ok(Err(see_other("/account/signin", None))),
    }
}

fn check_csrf(session: &str, sent: &str) -> Result<(), PageResponse> {
    if csrf_for(session) == sent {
        Ok(())
    } else {
        Err(PageResponse(PageError::new(
            400,
            "Please try again",
            "This form has expired. Reload the page and try again.",
        )))
    }
}

#[derive(Template)]
#[template(path = "account_signin.html")]
struct SignInPage<'a> {
    username: &'a str,
    error: Option<&'a str>,
}

async fn signin_page() -> Response {
    html(StatusCode::OK, &SignInPage { username: "", error: None })
}

async fn signin_submit(State(state): State<AppState>, ConnectInfo(addr): ConnectInfo<SocketAddr>, body: Bytes) -> Page {
    let form = form_map(&body);
    let username = form.get("username").map(String::as_str).unwrap_or_default();
    let password = form.get("password").map(String::as_str).unwrap_or_default();
    match state.auth.check_password(username, password, addr.ip()).await? {
        Ok(user) => {
            let session = state.auth.start_session(&user).await?;
            let secure = state.auth.config().secure_cookies();
            Ok(see_other("/account/apps", Some(set_cookie(SESSION_COOKIE, &session, "/", None, secure))))
        }
        Err(SignIn::Refused { message, status }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
            Ok(html(status, &SignInPage { username, error: Some(&message) }))
        }
        Err(SignIn::Done { .. }) => Ok(see_other("/account/apps", None)),
    }
}

async fn signout(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Page {
    let (_, session) = match signed_in(&state, &headers).await? {
        Ok(u) => u,
        Err(redirect) => return Ok(redirect),
    };
    check_csrf(&session, form_map(&body).get("csrf").map(String::as_str).unwrap_or_default())?;
    state.auth.sign_out(&session).await?;
    let secure = state.auth.config().secure_cookies();
    Ok(see_other("/account/signin", Some(set_cookie(SESSION_COOKIE, "", "/", Some(0), secure))))
}

struct GrantView {
    grant_id: String,
    app_name: String,
    owner_label: &'static str,
    live: bool,
    ended: String,
    patient: String,
    since: String,
    last_used: String,
    until: String,
    permissions: Vec<String>,
    withheld: String,
    /// Token exchange: access this app passed on to helper services (child grants).
    shared: Vec<SharedView>,
    /// Subscriptions (pushed updates) running under this grant.
    subscriptions: Vec<String>,
}

/// A child grant: "shared by App X with Service Y".
struct SharedView {
    grant_id: String,
    line: String,
    live: bool,
    status: String,
    permissions: Vec<String>,
}

#[derive(Template)]
#[template(path = "account_apps.html")]
struct AppsPage {
    current: &'static str,
    csrf: String,
    user_name: String,
    notice: Option<String>,
    grants: Vec<GrantView>,
}

fn owner_label(owner: OwnerType) -> &'static str {
    match owner {
        OwnerType::HealthPlan => "Health plan app",
        OwnerType::CoveredEntity => "Covered entity app",
        OwnerType::IndependentDeveloper => "Independent developer",
    }
}

#[derive(Deserialize)]
struct Notice {
    #[serde(default)]
    revoked: Option<String>,
}

async fn apps_page(State(state): State<AppState>, headers: HeaderMap, Query(notice): Query<Notice>) -> Page {
    let (user, session) = match signed_in(&state, &headers).await? {
        Ok(u) => u,
        Err(redirect) => return Ok(redirect),
    };
    let now = state.auth.now();
    let grants = state.store.grants_for_user(&user.user_id).await.map_err(PageError::from)?;
    let mut names: HashMap<String, (String, OwnerType)> = HashMap::new();
    for g in &grants {
        let client = g.client_id.to_string();
        if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(client) {
            let found = state.store.client(&g.client_id).await.map_err(PageError::from)?;
            let entry =
                found.map_or((g.client_id.to_string(), OwnerType::IndependentDeveloper), |c| (c.name, c.owner_type));
            slot.insert(entry);
        }
    }
    let name_of = |g: &store::auth::Grant| {
        names.get(g.client_id.as_str()).cloned().unwrap_or((g.client_id.to_string(), OwnerType::IndependentDeveloper))
    };
    let by_id: HashMap<&str, &store::auth::Grant> = grants.iter().map(|g| (g.grant_id.as_str(), g)).collect();
    // The grant a child hangs under on the page: its top ancestor among this person's grants.
    let root_of = |g: &store::auth::Grant| {
        let mut at = g;
        while let Some(parent) = at.parent_grant_id.as_ref().and_then(|p| by_id.get(p.as_str())) {
            at = parent;
        }
        at.grant_id.to_string()
    };
    let mut views: Vec<GrantView> = Vec::new();
    let mut children: HashMap<String, Vec<SharedView>> = HashMap::new();
    for g in &grants {
        let (app_name, owner) = name_of(g);
        let live = g.is_live(now);
        let ended = match (g.revoked_at, g.expires_at) {
            (Some(at), _) => format!("Revoked {}", when(at)),
            (None, Some(at)) => format!("Expired {}", when(at)),
            (None, None) => "Ended".into(),
        };
        if let Some(parent) = g.parent_grant_id.as_ref().and_then(|p| by_id.get(p.as_str())) {
            let (by, _) = name_of(parent);
            let status = if live {
                format!("Active until {}", g.expires_at.map_or_else(|| "the app's access ends".into(), when))
            } else {
                ended
            };
            children.entry(root_of(g)).or_default().push(SharedView {
                grant_id: g.grant_id.to_string(),
                line: format!("Shared by {by} with {app_name}"),
                live,
                status,
                permissions: permissions(&g.scopes),
            });
            continue;
        }
        let patient = match &g.patient_id {
            Some(p) => state
                .auth
                .patient_choices(std::slice::from_ref(p))
                .await
                .into_iter()
                .next()
                .map(|c| c.name)
                .unwrap_or_default(),
            None => String::new(),
        };
        let withheld: Vec<&str> = g.withheld.iter().map(|c: &SensitiveCategory| c.display()).collect();
        views.push(GrantView {
            grant_id: g.grant_id.to_string(),
            app_name,
            owner_label: owner_label(owner),
            live,
            ended,
            patient,
            since: when(g.created_at),
            last_used: g.last_used_at.map_or_else(|| "Not yet".into(), when),
            until: g.expires_at.map_or_else(|| "You revoke it".into(), when),
            permissions: permissions(&g.scopes),
            withheld: withheld.join(", "),
            shared: Vec::new(),
            subscriptions: Vec::new(),
        });
    }
    let live_ids: Vec<&str> = views.iter().filter(|v| v.live).map(|v| v.grant_id.as_str()).collect();
    let subs = state.store.subscriptions_of_grants(&live_ids).await.map_err(PageError::from)?;
    let mut subs_by_grant: HashMap<String, Vec<String>> = HashMap::new();
    for sub in subs.iter().filter(|s| s.status != store::subscriptions::SubscriptionStatus::Off) {
        let topic = subscriptions::topics::by_url(&sub.topic).map_or(sub.topic.as_str(), |t| t.title);
        let host = reqwest_host(&sub.endpoint);
        let until = sub.end_at.map_or_else(String::new, |e| format!(", until {}", when(e)));
        subs_by_grant
            .entry(sub.grant_id.to_string())
            .or_default()
            .push(format!("Sends updates: {topic} — to {host} ({}{until})", sub.status.as_str()));
    }
    for view in &mut views {
        if let Some(list) = subs_by_grant.remove(&view.grant_id) {
            view.subscriptions = list;
        }
        if let Some(mut shared) = children.remove(&view.grant_id) {
            shared.sort_by_key(|s| !s.live);
            view.shared = shared;
        }
    }
    // Connected ones first, newest first within each group (the store's order).
    views.sort_by_key(|v| !v.live);
    let user_name = state.auth.display_name(user.fhir_user.as_deref()).await.unwrap_or_else(|| user.username.clone());
    let notice = notice.revoked.map(|app| format!("{app} can no longer reach your records."));
    Ok(html(StatusCode::OK, &AppsPage { current: "apps", csrf: csrf_for(&session), user_name, notice, grants: views }))
}

/// The host a subscription sends to (never its path or query, which may carry secrets).
fn reqwest_host(endpoint: &str) -> String {
    endpoint
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', '?', '#']).next())
        .unwrap_or("an app server")
        .to_owned()
}

/// Plain-language lines for a grant's scopes (launch context scopes are not permissions).
fn permissions(scopes: &ScopeSet) -> Vec<String> {
    let shown: ScopeSet = scopes
        .iter()
        .filter(|s| !matches!(s, auth::Scope::Launch | auth::Scope::LaunchPatient | auth::Scope::LaunchEncounter))
        .cloned()
        .collect();
    shown.describe()
}

async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Page {
    let (user, session) = match signed_in(&state, &headers).await? {
        Ok(u) => u,
        Err(redirect) => return Ok(redirect),
    };
    let form = form_map(&body);
    check_csrf(&session, form.get("csrf").map(String::as_str).unwrap_or_default())?;
    let not_yours =
        || PageResponse(PageError::new(404, "No such app", "This connection was not found on your account."));
    let grant_id: GrantId = form.get("grant").and_then(|g| g.parse().ok()).ok_or_else(not_yours)?;
    let grant = state.store.grant(&grant_id).await.map_err(PageError::from)?.ok_or_else(not_yours)?;
    if grant.user_id.as_ref() != Some(&user.user_id) {
        return Err(not_yours());
    }
    state.auth.revoke_grant(&grant_id, &format!("user:{}", user.user_id)).await.map_err(PageError::internal)?;
    let app = state
        .store
        .client(&grant.client_id)
        .await
        .map_err(PageError::from)?
        .map_or_else(|| grant.client_id.to_string(), |c| c.name);
    let query = form_urlencoded::Serializer::new(String::new()).append_pair("revoked", &app).finish();
    Ok(see_other(&format!("/account/apps?{query}"), None))
}

struct EventView {
    when: String,
    who: String,
    app: String,
    what: String,
    result: &'static str,
}

#[derive(Template)]
#[template(path = "account_history.html")]
struct HistoryPage {
    current: &'static str,
    csrf: String,
    patients: String,
    limit: i64,
    events: Vec<EventView>,
}

async fn history_page(State(state): State<AppState>, headers: HeaderMap) -> Page {
    let (user, session) = match signed_in(&state, &headers).await? {
        Ok(u) => u,
        Err(redirect) => return Ok(redirect),
    };
    let patients = state.auth.patients_for(&user).await?;
    let choices = state.auth.patient_choices(&patients).await;
    let limit = 200;
    let query =
        AuditQuery { patients: Some(patients.iter().map(|p| p.to_string()).collect()), limit, ..AuditQuery::default() };
    // Recent requests may still be in the writer's batch.
    state.audit.flush().await;
    let records = state.store.audit_events(&query).await.map_err(PageError::from)?;
    let mut app_names: HashMap<String, String> = HashMap::new();
    let mut who_names: HashMap<String, String> = HashMap::new();
    let mut events = Vec::new();
    for r in records {
        let app = match &r.client_id {
            Some(c) => {
                if !app_names.contains_key(c) {
                    let name = match c.parse() {
                        Ok(id) => state
                            .store
                            .client(&id)
                            .await
                            .map_err(PageError::from)?
                            .map_or_else(|| c.clone(), |cl| cl.name),
                        Err(_) => c.clone(),
                    };
                    app_names.insert(c.clone(), name);
                }
                app_names.get(c).cloned().unwrap_or_default()
            }
            None => "—".into(),
        };
        let who = match &r.fhir_user {
            Some(f) => {
                if !who_names.contains_key(f) {
                    let name = state.auth.display_name(Some(f)).await.unwrap_or_else(|| f.clone());
                    who_names.insert(f.clone(), name);
                }
                who_names.get(f).cloned().unwrap_or_default()
            }
            None if r.client_id.is_some() => "A backend service".into(),
            None => "Unknown".into(),
        };
        let what = describe_interaction(&r.interaction, r.resource_type.as_deref());
        let result = match r.outcome {
            0 => "Allowed",
            4 => "Refused or not found",
            _ => "Failed",
        };
        events.push(EventView { when: when(r.recorded_ms / 1000), who, app, what, result });
    }
    let patients = choices.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(", ");
    Ok(html(StatusCode::OK, &HistoryPage { current: "history", csrf: csrf_for(&session), patients, limit, events }))
}

fn describe_interaction(interaction: &str, resource_type: Option<&str>) -> String {
    let noun = resource_type.map(auth::resource_friendly_name).unwrap_or_else(|| "records".into());
    match interaction {
        "read" | "vread" => format!("Read {noun}"),
        "search-type" => format!("Searched {noun}"),
        "history-instance" | "history-type" | "history-system" => format!("Read the history of {noun}"),
        "create" => format!("Added {noun}"),
        "update" => format!("Changed {noun}"),
        "delete" => format!("Deleted {noun}"),
        "operation" => "Downloaded the whole record".into(),
        "token-exchange" => "Was given part of another app's access (token exchange)".into(),
        other => format!("{other} {noun}"),
    }
}
