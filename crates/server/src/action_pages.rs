//! The pages behind a single-task action link, `/act/{secret}`: the one action a link offers,
//! behind its policy, and nothing else (the `tasks` crate decides what is read and written).
//!
//! Forms carry a CSRF value bound to a cookie this page sets (`portico_act`, HttpOnly, path
//! `/act`) and to the link: another site can neither read the cookie nor guess the value. A
//! PIN, once right, travels with the decision form and is checked again there (a wrong one still
//! counts); a sign-in is an ordinary portal session.

use std::net::SocketAddr;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use oauth::authorize::SignIn;
use oauth::PageError;
use store::auth::{Role, User};
use store::AuditRecord;
use tasks::{Decider, Decision, LinkState, Opened, Policy, Presentation, TaskError};

use crate::oauth_api::{cookie, set_cookie, SESSION_COOKIE};
use crate::pages::{form_map, html, see_other, when, PageResponse};
use crate::AppState;

const ACT_COOKIE: &str = "portico_act";

type Page = Result<Response, PageResponse>;

pub fn routes() -> Router<AppState> {
    Router::new().route("/act/{secret}", get(show).post(submit))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Pin,
    SignIn,
    WrongPerson,
    Decide,
    Done,
    Closed,
}

#[derive(Template)]
#[template(path = "action.html")]
struct ActionPage {
    title: String,
    step: Step,
    error: Option<String>,
    csrf: String,
    action_path: String,
    presentation: Option<Presentation>,
    pin: Option<String>,
    expires: Option<String>,
    signed_in_as: String,
    message: String,
}

impl ActionPage {
    fn new(title: impl Into<String>, step: Step, csrf: &str, secret: &str) -> ActionPage {
        ActionPage {
            title: title.into(),
            step,
            error: None,
            csrf: csrf.to_owned(),
            action_path: format!("/act/{secret}"),
            presentation: None,
            pin: None,
            expires: None,
            signed_in_as: String::new(),
            message: String::new(),
        }
    }

    fn message(mut self, text: impl Into<String>) -> ActionPage {
        self.message = text.into();
        self
    }
}

/// The browser's CSRF cookie, made when missing (then also returned as a `Set-Cookie`).
fn act_cookie(headers: &HeaderMap) -> (String, Option<String>) {
    match cookie(headers, ACT_COOKIE) {
        Some(value) if value.len() >= 32 => (value, None),
        _ => {
            let value = auth::password::random_token(32);
            (value.clone(), Some(value))
        }
    }
}

fn csrf_for(browser: &str, secret: &str) -> String {
    store::auth::token_hash(&format!("action-link:{browser}:{}", store::auth::token_hash(secret)))
}

fn with_cookie(mut response: Response, state: &AppState, new_cookie: Option<String>) -> Response {
    if let Some(value) = new_cookie {
        let secure = state.auth.config().secure_cookies();
        if let Ok(v) = HeaderValue::from_str(&set_cookie(ACT_COOKIE, &value, "/act", None, secure)) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

/// The page for a link that cannot be used (or is unknown), with its status.
fn not_usable(e: TaskError, csrf: &str, secret: &str) -> Result<(StatusCode, ActionPage), PageResponse> {
    let page = |title: &str, status: StatusCode, message: String| {
        Ok((status, ActionPage::new(title, Step::Closed, csrf, secret).message(message)))
    };
    match e {
        TaskError::NotFound(_) => page(
            "Link not recognised",
            StatusCode::NOT_FOUND,
            "This link is not known. Check that you copied all of it, or ask the sender for a new one.".into(),
        ),
        TaskError::Closed(link, state) => match state {
            LinkState::Used => page(
                "This link has been used",
                StatusCode::GONE,
                format!(
                    "The request was {} on {}. A link works only once.",
                    link.outcome.as_deref().unwrap_or("decided"),
                    link.used_at.map(when).unwrap_or_default()
                ),
            ),
            LinkState::Expired => page(
                "This link has expired",
                StatusCode::GONE,
                format!("It could be used until {}. Ask the sender for a new link.", when(link.expires_at)),
            ),
            LinkState::Locked => page(
                "This link is locked",
                StatusCode::GONE,
                "The PIN was entered wrongly too many times. Ask the sender for a new link.".into(),
            ),
            LinkState::Revoked | LinkState::Open => page(
                "This link was withdrawn",
                StatusCode::GONE,
                "The sender replaced or withdrew this link. If you still need to decide, ask them for a new one."
                    .into(),
            ),
        },
        TaskError::Changed(m) => page(
            "This request has changed",
            StatusCode::CONFLICT,
            format!("This request is no longer waiting for this decision: {m}."),
        ),
        TaskError::Invalid(m) => page("This link cannot be used", StatusCode::CONFLICT, m),
        TaskError::Store(e) => {
            tracing::error!(error = %e, "action link store failure");
            Err(PageResponse(PageError::new(503, "Please try again", "The page could not be shown. Please try again.")))
        }
        TaskError::Internal(m) => {
            tracing::error!(error = %m, "action link failure");
            Err(PageResponse(PageError::new(500, "Something went wrong", "The page could not be shown.")))
        }
    }
}

/// The decision form.
fn decide_page(opened: &Opened, csrf: &str, secret: &str, pin: Option<String>) -> ActionPage {
    let presentation = tasks::present(opened);
    let mut page = ActionPage::new(presentation.heading.clone(), Step::Decide, csrf, secret);
    page.presentation = Some(presentation);
    page.pin = pin;
    page.expires = Some(when(opened.link.expires_at));
    page
}

/// Under `sign-in`: the signed-in person, when they may act for the Task's patient.
enum Person {
    None,
    Allowed(User),
    Other(User),
}

async fn person(state: &AppState, headers: &HeaderMap, opened: &Opened) -> Result<Person, PageResponse> {
    let Some((user, _)) = state.auth.session_user(cookie(headers, SESSION_COOKIE).as_deref()).await? else {
        return Ok(Person::None);
    };
    if user.role != Role::Patient {
        return Ok(Person::Other(user));
    }
    let patients = state.store.user_patients(&user.user_id).await.map_err(PageError::from)?;
    if patients.iter().any(|p| p.as_str() == opened.link.patient_id) {
        Ok(Person::Allowed(user))
    } else {
        Ok(Person::Other(user))
    }
}

/// The page a policy shows before any form is sent.
async fn first_page(state: &AppState, headers: &HeaderMap, opened: &Opened, csrf: &str, secret: &str) -> Page {
    let page = match opened.policy {
        Policy::ClickThrough => decide_page(opened, csrf, secret, None),
        Policy::Pin => ActionPage::new("Enter your PIN", Step::Pin, csrf, secret),
        Policy::SignIn => match person(state, headers, opened).await? {
            Person::Allowed(_) => decide_page(opened, csrf, secret, None),
            Person::None => ActionPage::new("Sign in to continue", Step::SignIn, csrf, secret),
            Person::Other(user) => {
                let mut page = ActionPage::new("This request is for someone else", Step::WrongPerson, csrf, secret);
                page.signed_in_as = user.username;
                return Ok(html(StatusCode::FORBIDDEN, &page));
            }
        },
    };
    Ok(html(StatusCode::OK, &page))
}

async fn show(State(state): State<AppState>, Path(secret): Path<String>, headers: HeaderMap) -> Page {
    let (browser, new_cookie) = act_cookie(&headers);
    let csrf = csrf_for(&browser, &secret);
    let response = match tasks::open(&state.store, &secret).await {
        Ok(opened) => first_page(&state, &headers, &opened, &csrf, &secret).await?,
        Err(e) => {
            let (status, page) = not_usable(e, &csrf, &secret)?;
            html(status, &page)
        }
    };
    Ok(with_cookie(response, &state, new_cookie))
}

fn audit(state: &AppState, opened: &Opened, outcome: i64, status: i64, user: Option<&User>, detail: String) {
    state.audit.record(AuditRecord {
        recorded_ms: store::clock::epoch_ms(state.store.clock().now()),
        interaction: "action-link".into(),
        action: if outcome == 0 { "U".into() } else { "E".into() },
        outcome,
        status,
        user_id: user.map(|u| u.user_id.to_string()),
        fhir_user: user.and_then(|u| u.fhir_user.clone()),
        client_id: None,
        grant_id: None,
        patient_id: Some(opened.link.patient_id.clone()),
        resource_type: Some("Task".into()),
        resource_id: Some(opened.link.task_id.clone()),
        detail: Some(detail),
        ..Default::default()
    });
}

async fn submit(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(secret): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Page {
    let (browser, new_cookie) = act_cookie(&headers);
    let csrf = csrf_for(&browser, &secret);
    let form = form_map(&body);
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
    if new_cookie.is_some() || field("csrf") != csrf {
        return Err(PageResponse(PageError::new(
            400,
            "Please try again",
            "This form has expired. Open the link again and try once more.",
        )));
    }
    let opened = match tasks::open(&state.store, &secret).await {
        Ok(opened) => opened,
        Err(e) => {
            let (status, page) = not_usable(e, &csrf, &secret)?;
            return Ok(html(status, &page));
        }
    };
    let step = field("step");

    // Who is deciding, once the policy is satisfied.
    let mut signed_in: Option<User> = None;
    let decider = match opened.policy {
        Policy::ClickThrough => Decider::LinkHolder(Policy::ClickThrough),
        Policy::Pin => {
            let pin = field("pin").trim();
            let right = opened.link.pin_hash.as_deref().is_some_and(|hash| auth::password::verify_secret(pin, hash));
            if !right {
                let link = state
                    .store
                    .action_link_pin_failed(&opened.link.link_id, tasks::MAX_PIN_FAILURES)
                    .await
                    .map_err(PageError::from)?;
                audit(&state, &opened, 4, 401, None, format!("wrong PIN for the {} link", opened.action.as_str()));
                let now = state.auth.now();
                let failures = link.as_ref().map_or(tasks::MAX_PIN_FAILURES, |l| l.pin_failures);
                if let Some(link) = link.filter(|l| l.state(now) != LinkState::Open) {
                    let state_now = link.state(now);
                    let (status, page) = not_usable(TaskError::Closed(Box::new(link), state_now), &csrf, &secret)?;
                    return Ok(html(status, &page));
                }
                let left = tasks::MAX_PIN_FAILURES - failures;
                let mut page = ActionPage::new("Enter your PIN", Step::Pin, &csrf, &secret);
                page.error =
                    Some(format!("That PIN is not right. {left} attempt{} left.", if left == 1 { "" } else { "s" }));
                return Ok(html(StatusCode::UNAUTHORIZED, &page));
            }
            if step == "pin" {
                return Ok(html(StatusCode::OK, &decide_page(&opened, &csrf, &secret, Some(pin.to_owned()))));
            }
            Decider::LinkHolder(Policy::Pin)
        }
        Policy::SignIn => {
            match step {
                "signin" => return sign_in(&state, addr, field("username"), field("password"), &csrf, &secret).await,
                "signout" => {
                    if let Some(session) = cookie(&headers, SESSION_COOKIE) {
                        state.auth.sign_out(&session).await?;
                    }
                    let secure = state.auth.config().secure_cookies();
                    return Ok(redirect_to_link(&secret, Some(set_cookie(SESSION_COOKIE, "", "/", Some(0), secure))));
                }
                _ => {}
            }
            match person(&state, &headers, &opened).await? {
                Person::Allowed(user) => {
                    let own_patient = user
                        .fhir_user
                        .as_deref()
                        .and_then(|r| r.strip_prefix("Patient/"))
                        .and_then(|id| id.parse::<auth::PatientId>().ok());
                    let name = match own_patient {
                        Some(id) => state.auth.patient_choices(&[id]).await.into_iter().next().map(|c| c.name),
                        None => None,
                    }
                    .unwrap_or_else(|| user.username.clone());
                    let decider = Decider::Person { reference: user.fhir_user.clone(), name };
                    signed_in = Some(user);
                    decider
                }
                Person::None => {
                    return Ok(html(
                        StatusCode::OK,
                        &ActionPage::new("Sign in to continue", Step::SignIn, &csrf, &secret),
                    ))
                }
                Person::Other(user) => {
                    let mut page =
                        ActionPage::new("This request is for someone else", Step::WrongPerson, &csrf, &secret);
                    page.signed_in_as = user.username;
                    return Ok(html(StatusCode::FORBIDDEN, &page));
                }
            }
        }
    };
    if step != "decide" {
        return Ok(html(StatusCode::OK, &decide_page(&opened, &csrf, &secret, None)));
    }
    let Some(decision) = Decision::parse(field("decision")) else {
        let mut page = decide_page(
            &opened,
            &csrf,
            &secret,
            (opened.policy == Policy::Pin).then(|| field("pin").trim().to_owned()),
        );
        page.error = Some("Choose one of the two buttons.".into());
        return Ok(html(StatusCode::BAD_REQUEST, &page));
    };
    match tasks::decide(&state.store, &opened, decision, &decider).await {
        Ok(()) => {
            audit(
                &state,
                &opened,
                0,
                200,
                signed_in.as_ref(),
                format!(
                    "{} Task/{} ({}, {}/{}) through a {} link, by {}",
                    decision.as_str(),
                    opened.link.task_id,
                    opened.action.as_str(),
                    opened.focus_type,
                    opened.focus_id,
                    opened.policy.as_str(),
                    decider.describe()
                ),
            );
            let presentation = tasks::present(&opened);
            let done = match decision {
                Decision::Approve => format!("Thank you. You chose {}", presentation.approve_means),
                Decision::Decline => format!("Thank you. You chose {}", presentation.decline_means),
            };
            let page = ActionPage::new("Your answer was recorded", Step::Done, &csrf, &secret).message(done);
            Ok(html(StatusCode::OK, &page))
        }
        Err(e) => {
            let (status, page) = not_usable(e, &csrf, &secret)?;
            Ok(html(status, &page))
        }
    }
}

fn redirect_to_link(secret: &str, set: Option<String>) -> Response {
    see_other(&format!("/act/{secret}"), set)
}

async fn sign_in(state: &AppState, addr: SocketAddr, username: &str, password: &str, csrf: &str, secret: &str) -> Page {
    match state.auth.check_password(username, password, addr.ip()).await? {
        Ok(user) => {
            let session = state.auth.start_session(&user).await?;
            let secure = state.auth.config().secure_cookies();
            Ok(redirect_to_link(secret, Some(set_cookie(SESSION_COOKIE, &session, "/", None, secure))))
        }
        Err(SignIn::Refused { message, status }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED);
            let mut page = ActionPage::new("Sign in to continue", Step::SignIn, csrf, secret);
            page.error = Some(message);
            Ok(html(status, &page))
        }
        Err(SignIn::Done { .. }) => Ok(redirect_to_link(secret, None)),
    }
}
