//! The authorization endpoint and the pages after it (RFC 6749 §4.1, SMART App Launch 2.x).
//!
//! `/authorize` checks the client and its redirect URI first: when either cannot be trusted the
//! person sees an error page and nothing is sent anywhere. Every other problem goes back to the
//! app as `error=…&state=…`. A valid request is stored as a pending authorization bound to the
//! browser that made it (a cookie) and then walks through sign-in, patient choice and consent; each
//! form carries the request's CSRF value. Approving creates the grant and a single-use code.

use std::collections::BTreeSet;

use auth::consent::{self, ConsentAnswer, ConsentOffer};
use auth::password::{random_token, verify_against_nothing, verify_secret};
use auth::{ClientId, Context, PatientId, PkceChallenge, Scope, ScopeSet};
use serde::{Deserialize, Serialize};
use store::auth::{
    token_hash, Client, LockoutPolicy, NewCode, NewGrant, NewPendingAuthorization, PendingAuthorization, User,
};

use crate::error::{ErrorCode, PageError};
use crate::patients::PatientChoice;
use crate::{with_query, AuthServer};

/// The parameters of an authorization request, from the query (GET) or the form (POST).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub aud: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub launch: Option<String>,
    pub nonce: Option<String>,
    pub prompt: Option<String>,
}

impl AuthorizeParams {
    /// Collect parameters; RFC 6749 §3.1 forbids repeating one, so repeats are returned by name.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> (AuthorizeParams, Vec<String>) {
        let mut p = AuthorizeParams::default();
        let mut repeated = Vec::new();
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "response_type" => &mut p.response_type,
                "client_id" => &mut p.client_id,
                "redirect_uri" => &mut p.redirect_uri,
                "scope" => &mut p.scope,
                "state" => &mut p.state,
                "aud" => &mut p.aud,
                "code_challenge" => &mut p.code_challenge,
                "code_challenge_method" => &mut p.code_challenge_method,
                "launch" => &mut p.launch,
                "nonce" => &mut p.nonce,
                "prompt" => &mut p.prompt,
                _ => continue,
            };
            if slot.is_some() {
                repeated.push(name);
            } else {
                *slot = Some(value);
            }
        }
        (p, repeated)
    }
}

/// The browser's cookies and address, as the HTTP layer read them.
#[derive(Debug, Clone)]
pub struct BrowserContext {
    /// The browser-binding cookie, if the browser has one.
    pub browser: Option<String>,
    /// The sign-in session cookie, if any.
    pub session: Option<String>,
    pub addr: std::net::IpAddr,
}

/// Where the person is in the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    SignIn,
    PickPatient,
    Consent,
}

/// The result of `/authorize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// Continue in the browser at `step` of `request_id`; set the browser cookie when given.
    Continue { request_id: String, step: Step, set_browser_cookie: Option<String> },
    /// Back to the app (an error, with `state`).
    Redirect(String),
}

/// The launch context taken for an EHR launch, kept with the request until the grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredLaunch {
    encounter_id: Option<String>,
    fhir_context: Option<serde_json::Value>,
    need_patient_banner: bool,
    smart_style_url: Option<String>,
}

/// The validated request, as stored with the pending authorization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredRequest {
    redirect_uri: String,
    state: String,
    /// What may be granted: requested, understood, and allowed for the client (canonical text).
    scope: String,
    /// Requested scopes that were not understood or not allowed (shown to nobody, logged).
    dropped: Vec<String>,
    code_challenge: String,
    nonce: Option<String>,
    launch: Option<StoredLaunch>,
}

/// A pending authorization with everything the pages need.
#[derive(Debug, Clone)]
pub struct Flow {
    pub request_id: String,
    pub csrf: String,
    pub client: Client,
    pub user: Option<User>,
    pub patient_id: Option<PatientId>,
    pub step: Step,
    /// What may be granted.
    pub scopes: ScopeSet,
    pending: PendingAuthorization,
    request: StoredRequest,
}

/// Outcome of a sign-in attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    /// Signed in: set the session cookie, go to `step`.
    Done { session_cookie: String, step: Step },
    /// Refused, with the message to show and the HTTP status (401, or 429 when throttled).
    Refused { message: String, status: u16 },
}

/// The words shown for any failed sign-in, whatever the cause (unknown user, wrong password,
/// paused account), so the page never tells whether a username exists.
pub const SIGN_IN_FAILED: &str =
    "That username and password did not work. After several failed attempts, sign-in is paused for a while.";

/// What the authorization screen shows.
#[derive(Debug, Clone)]
pub struct ConsentView {
    pub offer: ConsentOffer,
    pub patient: Option<PatientChoice>,
    pub user_name: String,
}

/// The person's answer on the authorization screen.
#[derive(Debug, Clone)]
pub enum Decision {
    Approve(ConsentAnswer),
    Deny,
}

fn page(status: u16, title: &str, message: impl Into<String>) -> PageError {
    PageError::new(status, title, message)
}

fn error_redirect(redirect_uri: &str, code: ErrorCode, description: &str, state: Option<&str>) -> Started {
    let mut params = vec![("error", code.as_str()), ("error_description", description)];
    if let Some(state) = state {
        params.push(("state", state));
    }
    Started::Redirect(with_query(redirect_uri, &params))
}

impl AuthServer {
    /// Handle `/authorize`.
    pub async fn start_authorization(
        &self,
        params: AuthorizeParams,
        repeated: &[String],
        browser: &BrowserContext,
    ) -> Result<Started, PageError> {
        // 1. The client and the redirect URI: never redirect to an address we cannot trust.
        if repeated.iter().any(|n| n == "client_id" || n == "redirect_uri") {
            return Err(page(400, "This link is not valid", "The app sent client_id or redirect_uri more than once."));
        }
        let Some(client_id) = params.client_id.as_deref().filter(|c| !c.is_empty()) else {
            return Err(page(400, "This link is not valid", "The app did not say who it is (client_id is missing)."));
        };
        let unknown = || {
            page(
                400,
                "Unknown app",
                "The app that sent you here is not registered with this server, so you cannot connect it.",
            )
        };
        let client_id: ClientId = client_id.parse().map_err(|_| unknown())?;
        let client = self.inner.store.client(&client_id).await?.ok_or_else(unknown)?;
        let redirect_uri = match params.redirect_uri.as_deref() {
            Some(uri) if client.has_redirect_uri(uri) => uri.to_owned(),
            Some(_) => {
                return Err(page(
                    400,
                    "This link is not valid",
                    format!(
                        "The app \"{}\" asked to send you back to an address it has not registered, so it was \
                         stopped. Nothing was shared.",
                        client.name
                    ),
                ))
            }
            // SMART requires it, so a client that leaves it out is told rather than guessed for.
            None => {
                return Err(page(
                    400,
                    "This link is not valid",
                    "The app did not say where to send you back (redirect_uri).",
                ))
            }
        };

        // 2. Everything else goes back to the app.
        let state = params.state.as_deref();
        let fail = |code: ErrorCode, description: &str| Ok(error_redirect(&redirect_uri, code, description, state));
        if let Some(name) = repeated.first() {
            return fail(ErrorCode::InvalidRequest, &format!("parameter {name} appears more than once"));
        }
        let Some(state) = state.filter(|s| !s.is_empty()) else {
            return fail(ErrorCode::InvalidRequest, "state is required");
        };
        match params.response_type.as_deref() {
            Some("code") => {}
            None => return fail(ErrorCode::InvalidRequest, "response_type is required"),
            Some(_) => return fail(ErrorCode::UnsupportedResponseType, "only response_type=code is supported"),
        }
        let base = self.config().fhir_base_url.trim_end_matches('/');
        match params.aud.as_deref() {
            Some(aud) if aud.trim_end_matches('/') == base => {}
            Some(_) => {
                return fail(ErrorCode::InvalidRequest, &format!("aud must be this server's FHIR base URL, {base}"))
            }
            None => {
                return fail(
                    ErrorCode::InvalidRequest,
                    &format!("aud is required (this server's FHIR base URL, {base})"),
                )
            }
        }
        let Some(challenge) = params.code_challenge.as_deref() else {
            return fail(
                ErrorCode::InvalidRequest,
                "PKCE is required: send code_challenge with code_challenge_method=S256",
            );
        };
        if let Err(e) = PkceChallenge::new(params.code_challenge_method.as_deref(), challenge) {
            return fail(ErrorCode::InvalidRequest, &e.to_string());
        }

        // 3. Scopes: unknown ones are dropped, then limited to what the client may ever have.
        let (requested, mut dropped) = ScopeSet::parse(params.scope.as_deref().unwrap_or_default());
        let mut allowed: ScopeSet = client
            .allowed_scopes
            .narrow_to(&requested)
            .iter()
            // Backend scopes never come from a person's consent.
            .filter(|s| !matches!(s, Scope::Clinical(c) if c.context == Context::System))
            .cloned()
            .collect();
        for s in requested.iter() {
            if !allowed.iter().any(|a| a.is_subset_of(s) || s.is_subset_of(a)) {
                dropped.push(s.to_string());
            }
        }

        // 4. EHR launch: take the context the EHR stored (single use).
        let mut launch = None;
        let mut patient_id = None;
        match params.launch.as_deref() {
            Some(launch_id) => {
                let Some(ctx) = self.inner.store.take_launch(launch_id).await? else {
                    return fail(ErrorCode::InvalidRequest, "the launch value is unknown, expired or already used");
                };
                if client.allowed_scopes.contains(&Scope::Launch) {
                    allowed.insert(Scope::Launch);
                }
                patient_id = ctx.patient_id;
                launch = Some(StoredLaunch {
                    encounter_id: ctx.encounter_id,
                    fhir_context: ctx.fhir_context,
                    need_patient_banner: ctx.need_patient_banner,
                    smart_style_url: ctx.smart_style_url,
                });
            }
            None => {
                // `launch` without a launch value means nothing; the encounter cannot be chosen in
                // a standalone launch.
                allowed =
                    allowed.iter().filter(|s| !matches!(s, Scope::Launch | Scope::LaunchEncounter)).cloned().collect();
            }
        }
        if !allowed.clinical().any(|_| true) && !allowed.contains(&Scope::OpenId) {
            return fail(
                ErrorCode::InvalidScope,
                "none of the requested scopes can be granted to this app (check the app's registered scopes)",
            );
        }
        if !dropped.is_empty() {
            tracing::info!(client = %client.client_id, dropped = ?dropped, "scopes dropped from an authorization request");
        }

        // 5. Remember the request, bound to this browser.
        let (browser_cookie, set_browser_cookie) = match &browser.browser {
            Some(b) if !b.is_empty() && b.len() <= 128 => (b.clone(), None),
            _ => {
                let fresh = random_token(32);
                (fresh.clone(), Some(fresh))
            }
        };
        let request = StoredRequest {
            redirect_uri: redirect_uri.clone(),
            state: state.to_owned(),
            scope: allowed.to_string(),
            dropped,
            code_challenge: challenge.to_owned(),
            nonce: params.nonce.clone(),
            launch,
        };
        let request_id = random_token(24);
        let params_json = serde_json::to_value(&request).map_err(PageError::internal)?;
        self.inner
            .store
            .create_pending_authorization(NewPendingAuthorization {
                request_id: request_id.clone(),
                browser_hash: token_hash(&browser_cookie),
                csrf: random_token(24),
                client_id: client.client_id.clone(),
                params: params_json,
                patient_id,
                ttl_seconds: self.config().authorize_request_seconds,
            })
            .await?;

        // An existing sign-in carries over, unless the app asks for a fresh one.
        let prompt: BTreeSet<&str> = params.prompt.as_deref().unwrap_or_default().split_whitespace().collect();
        let mut signed_in = false;
        if !prompt.contains("login") {
            if let Some(session) = browser.session.as_deref() {
                let hash = token_hash(session);
                if let Some(s) = self.inner.store.live_session(&hash).await? {
                    signed_in = self.inner.store.set_pending_user(&request_id, &s.user_id, &hash).await?;
                }
            }
        }
        if prompt.contains("none") {
            // Portico always asks for consent, so a request that may not show a page cannot succeed.
            let code = if signed_in { ErrorCode::ConsentRequired } else { ErrorCode::LoginRequired };
            self.inner.store.complete_pending_authorization(&request_id).await?;
            return fail(code, "this request needs the person to sign in and approve");
        }
        let flow = self.load_flow(&request_id).await?;
        Ok(Started::Continue { request_id, step: flow.step, set_browser_cookie })
    }

    /// The pending authorization `request_id`, checked to be open and bound to this browser.
    pub async fn flow(&self, request_id: &str, browser: &BrowserContext) -> Result<Flow, PageError> {
        let flow = self.load_flow(request_id).await?;
        let bound = browser.browser.as_deref().is_some_and(|b| token_hash(b) == flow.pending.browser_hash);
        if !bound {
            return Err(page(
                400,
                "Please start again from the app",
                "This sign-in was started in another browser or window, or your browser blocked its cookie.",
            ));
        }
        Ok(flow)
    }

    async fn load_flow(&self, request_id: &str) -> Result<Flow, PageError> {
        if request_id.is_empty() || request_id.len() > 64 {
            return Err(PageError::expired());
        }
        let now = self.now();
        let Some(pending) = self.inner.store.pending_authorization(request_id).await? else {
            return Err(PageError::expired());
        };
        if !pending.is_open(now) {
            return Err(PageError::expired());
        }
        let request: StoredRequest = serde_json::from_value(pending.params.clone()).map_err(PageError::internal)?;
        let client = self.inner.store.client(&pending.client_id).await?.ok_or_else(PageError::expired)?;
        let mut user = None;
        if let (Some(user_id), Some(session)) = (&pending.user_id, &pending.session_hash) {
            if self.inner.store.live_session(session).await?.is_some() {
                user = self.inner.store.user(user_id).await?;
            }
        }
        let scopes = ScopeSet::parse(&request.scope).0;
        let mut pending = pending;
        let step = match &user {
            None => Step::SignIn,
            Some(u) if scopes.needs_patient_context() && pending.patient_id.is_none() => {
                // Someone who can act for exactly one patient is not asked to choose.
                match self.patients_for(u).await?.as_slice() {
                    [only] if self.inner.store.set_pending_patient(request_id, only).await? => {
                        pending.patient_id = Some(only.clone());
                        Step::Consent
                    }
                    _ => Step::PickPatient,
                }
            }
            Some(_) => Step::Consent,
        };
        // An EHR launch names the patient up front: the person must be allowed to act for them.
        if let (Some(u), Some(p)) = (&user, &pending.patient_id) {
            if u.role != store::auth::Role::Admin && !self.patients_for(u).await?.contains(p) {
                return Err(page(
                    403,
                    "You cannot share these records",
                    "The record this app was opened for belongs to someone you are not allowed to act for. \
                     Nothing was shared.",
                ));
            }
        }
        Ok(Flow {
            request_id: pending.request_id.clone(),
            csrf: pending.csrf.clone(),
            client,
            user,
            patient_id: pending.patient_id.clone(),
            step,
            scopes,
            pending,
            request,
        })
    }

    fn check_csrf(flow: &Flow, csrf: &str) -> Result<(), PageError> {
        let a = token_hash(csrf);
        let b = token_hash(&flow.csrf);
        if a == b {
            Ok(())
        } else {
            Err(page(
                400,
                "Please try again",
                "This form has expired or was not sent from this page. Go back to the app and start again.",
            ))
        }
    }

    /// Check a username and password for the pending request `request_id`.
    pub async fn sign_in(
        &self,
        request_id: &str,
        csrf: &str,
        username: &str,
        password: &str,
        browser: &BrowserContext,
    ) -> Result<SignIn, PageError> {
        let flow = self.flow(request_id, browser).await?;
        Self::check_csrf(&flow, csrf)?;
        let user = match self.check_password(username, password, browser.addr).await? {
            Ok(user) => user,
            Err(refused) => return Ok(refused),
        };
        let session = random_token(32);
        let session_hash = token_hash(&session);
        self.inner.store.create_session(&session_hash, &user.user_id, self.config().session_seconds).await?;
        if !self.inner.store.set_pending_user(request_id, &user.user_id, &session_hash).await? {
            return Err(PageError::expired());
        }
        let flow = self.load_flow(request_id).await?;
        Ok(SignIn::Done { session_cookie: session, step: flow.step })
    }

    /// The password check shared by the authorization flow and the account pages: throttled per
    /// address, locked per account, and equally slow and equally worded for every failure.
    pub async fn check_password(
        &self,
        username: &str,
        password: &str,
        addr: std::net::IpAddr,
    ) -> Result<Result<User, SignIn>, PageError> {
        if let Some(wait) = self.inner.throttle.wait(addr) {
            let minutes = wait.div_ceil(60);
            return Ok(Err(SignIn::Refused {
                message: format!(
                    "Too many failed sign-in attempts from this device. Please wait {minutes} minute{} and try again.",
                    if minutes == 1 { "" } else { "s" }
                ),
                status: 429,
            }));
        }
        let refused = || SignIn::Refused { message: SIGN_IN_FAILED.to_owned(), status: 401 };
        let username = username.trim();
        let user = if username.is_empty() || username.len() > 255 {
            None
        } else {
            self.inner.store.user_by_username(username).await?
        };
        let now = self.now();
        let password_owned = password.to_owned();
        let Some(user) = user else {
            tokio::task::spawn_blocking(move || verify_against_nothing(&password_owned))
                .await
                .map_err(PageError::internal)?;
            self.inner.throttle.failed(addr);
            return Ok(Err(refused()));
        };
        if user.is_locked(now) {
            tokio::task::spawn_blocking(move || verify_against_nothing(&password_owned))
                .await
                .map_err(PageError::internal)?;
            self.inner.throttle.failed(addr);
            return Ok(Err(refused()));
        }
        let hash = user.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || verify_secret(&password_owned, &hash))
            .await
            .map_err(PageError::internal)?;
        if !ok {
            let policy = LockoutPolicy {
                max_failures: self.config().lockout_failures,
                lock_seconds: self.config().lockout_seconds,
            };
            self.inner.store.record_failed_login(&user.user_id, &policy).await?;
            self.inner.throttle.failed(addr);
            return Ok(Err(refused()));
        }
        self.inner.store.reset_failed_logins(&user.user_id).await?;
        self.inner.throttle.succeeded(addr);
        Ok(Ok(user))
    }

    /// The patients the signed-in person may choose for this request.
    pub async fn picker(&self, flow: &Flow) -> Result<Vec<PatientChoice>, PageError> {
        let Some(user) = &flow.user else { return Ok(Vec::new()) };
        let ids = self.patients_for(user).await?;
        Ok(self.patient_choices(&ids).await)
    }

    /// Record the patient chosen on the picker.
    pub async fn choose_patient(
        &self,
        request_id: &str,
        csrf: &str,
        patient: &str,
        browser: &BrowserContext,
    ) -> Result<Step, PageError> {
        let flow = self.flow(request_id, browser).await?;
        Self::check_csrf(&flow, csrf)?;
        let Some(user) = &flow.user else { return Ok(Step::SignIn) };
        let allowed = self.patients_for(user).await?;
        let chosen = allowed
            .into_iter()
            .find(|p| p.as_str() == patient)
            .ok_or_else(|| page(400, "Please choose again", "Choose one of the people listed."))?;
        if !self.inner.store.set_pending_patient(request_id, &chosen).await? {
            return Err(PageError::expired());
        }
        Ok(self.load_flow(request_id).await?.step)
    }

    /// What the authorization screen shows for `flow`.
    pub async fn consent_view(&self, flow: &Flow) -> Result<ConsentView, PageError> {
        let offer = consent::offer(&flow.scopes);
        let patient = match &flow.patient_id {
            Some(p) => self.patient_choices(std::slice::from_ref(p)).await.into_iter().next(),
            None => None,
        };
        let user_name = match &flow.user {
            Some(u) => self.display_name(u.fhir_user.as_deref()).await.unwrap_or_else(|| u.username.clone()),
            None => String::new(),
        };
        Ok(ConsentView { offer, patient, user_name })
    }

    /// Approve or deny: returns the redirect back to the app (with a code or `access_denied`).
    pub async fn decide(
        &self,
        request_id: &str,
        csrf: &str,
        decision: Decision,
        browser: &BrowserContext,
    ) -> Result<String, PageError> {
        let flow = self.flow(request_id, browser).await?;
        Self::check_csrf(&flow, csrf)?;
        if flow.step != Step::Consent {
            return Err(page(409, "Please continue", "Sign in and choose a patient before deciding."));
        }
        let Some(user) = flow.user.clone() else { return Err(PageError::expired()) };
        // Single use: a form submitted twice issues one answer.
        if !self.inner.store.complete_pending_authorization(request_id).await? {
            return Err(PageError::expired());
        }
        let request = &flow.request;
        let state = Some(request.state.as_str());
        let answer = match decision {
            Decision::Deny => {
                return Ok(
                    match error_redirect(
                        &request.redirect_uri,
                        ErrorCode::AccessDenied,
                        "the person did not allow access",
                        state,
                    ) {
                        Started::Redirect(url) => url,
                        Started::Continue { .. } => request.redirect_uri.clone(),
                    },
                );
            }
            Decision::Approve(answer) => answer,
        };
        let offer = consent::offer(&flow.scopes);
        let decided = consent::decide(&offer, &answer);

        let now = self.now();
        let config = self.config();
        let session_hash = flow.pending.session_hash.clone();
        let (lifetime, session_id) = if decided.granted.offline() {
            (config.offline_access_seconds, None)
        } else if decided.granted.online() {
            let session_end = match &session_hash {
                Some(h) => self.inner.store.live_session(h).await?.map_or(now, |s| s.expires_at),
                None => now,
            };
            ((session_end - now).max(1), session_hash.clone())
        } else {
            (config.access_token_seconds, None)
        };
        let launch = request.launch.clone();
        let grant = self
            .inner
            .store
            .create_grant(NewGrant {
                user_id: Some(user.user_id.clone()),
                patient_id: flow.patient_id.clone(),
                encounter_id: launch.as_ref().and_then(|l| l.encounter_id.clone()),
                fhir_context: launch.as_ref().and_then(|l| l.fhir_context.clone()),
                withheld: decided.withheld,
                lifetime_seconds: Some(lifetime),
                session_id,
                need_patient_banner: launch.as_ref().map(|l| l.need_patient_banner),
                smart_style_url: launch.as_ref().and_then(|l| l.smart_style_url.clone()),
                ..NewGrant::new(flow.client.client_id.clone(), decided.granted)
            })
            .await?;
        let code = random_token(32);
        let challenge = PkceChallenge::new(Some("S256"), &request.code_challenge).map_err(PageError::internal)?;
        self.inner
            .store
            .create_code(NewCode {
                code_hash: &token_hash(&code),
                grant_id: &grant.grant_id,
                client_id: &flow.client.client_id,
                redirect_uri: &request.redirect_uri,
                challenge: &challenge,
                ttl_seconds: config.code_seconds,
                nonce: request.nonce.as_deref(),
            })
            .await?;
        Ok(with_query(&request.redirect_uri, &[("code", &code), ("state", &request.state)]))
    }

    /// Where to send a browser that holds no pending request but a session (the account pages).
    pub async fn session_user(&self, session_cookie: Option<&str>) -> Result<Option<(User, String)>, PageError> {
        let Some(cookie) = session_cookie else { return Ok(None) };
        let hash = token_hash(cookie);
        let Some(session) = self.inner.store.live_session(&hash).await? else { return Ok(None) };
        Ok(self.inner.store.user(&session.user_id).await?.map(|u| (u, hash)))
    }

    /// Start a session after a successful [`Self::check_password`] outside an authorization
    /// request (the account pages). Returns the cookie value.
    pub async fn start_session(&self, user: &User) -> Result<String, PageError> {
        let session = random_token(32);
        self.inner.store.create_session(&token_hash(&session), &user.user_id, self.config().session_seconds).await?;
        Ok(session)
    }

    /// Sign out: end the session and its `online_access` grants.
    pub async fn sign_out(&self, session_cookie: &str) -> Result<(), PageError> {
        let revoked = self.inner.store.end_session(&token_hash(session_cookie), "sign-out").await?;
        self.forget_grants(&revoked);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_and_repeats() {
        let pairs = [("client_id", "a"), ("scope", "openid"), ("scope", "x"), ("other", "y"), ("state", "s")]
            .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let (p, repeated) = AuthorizeParams::from_pairs(pairs);
        assert_eq!(p.client_id.as_deref(), Some("a"));
        assert_eq!(p.scope.as_deref(), Some("openid"));
        assert_eq!(p.state.as_deref(), Some("s"));
        assert_eq!(repeated, ["scope"]);
    }
}
