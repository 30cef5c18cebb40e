//! The login broker: runs a person's SMART standalone launch at any portal and hands the app a
//! one-time code for the connection it produced. Link is the OAuth client here: PKCE S256, a
//! fresh single-use `state` bound to the browser that started the login (a cookie), `nonce` with
//! `openid`, `aud` = the portal's FHIR base, and the client authentication the portal requires
//! (none, `client_secret_basic`, or `private_key_jwt`). Portal tokens never leave Link.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::db::{Col, RowExt};
use crate::directory::{ClientAuth, Endpoint};
use crate::discovery::Discovery;
use crate::error::{LinkError, Result};
use crate::health::EventKind;
use crate::ids::{AppId, ConnectionId, EndpointId};
use crate::portal::{printable, PortalError, PortalRequest};
use crate::Link;

/// What the app's browser asked for at `/link/v1/connect/{endpoint}`.
#[derive(Debug, Clone, Default)]
pub struct ConnectParams {
    pub endpoint: String,
    pub app: Option<String>,
    pub client_url: Option<String>,
    pub state: Option<String>,
    pub person: Option<String>,
}

/// Where the browser goes next.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// To the portal's authorization endpoint, setting the browser-binding cookie.
    Portal { location: String, cookie_name: String, cookie_value: String, max_age_seconds: i64 },
    /// Back to the app's client URL (`?code=…&state=…` or `?error=…&state=…`).
    App { location: String },
    /// Nowhere: a page saying what went wrong (the request cannot be trusted to redirect).
    Page { status: u16, title: String, message: String },
}

impl Next {
    fn page(status: u16, title: &str, message: impl Into<String>) -> Next {
        Next::Page { status, title: title.to_owned(), message: message.into() }
    }
}

/// The callback's query, as the portal sent it.
#[derive(Debug, Clone, Default)]
pub struct CallbackParams {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The cookie that binds a login to its browser; named per login so that several logins in one
/// browser (two portals in two tabs) do not overwrite each other.
pub fn cookie_name(state: &str) -> String {
    format!("link_login_{}", &sha256_hex(state)[..16])
}

/// `url` with `pairs` added to its query.
fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().filter(|(_, v)| !v.is_empty()))
        .finish();
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// An OAuth error code as Link passes it on: only the characters RFC 6749 allows in one.
fn error_code(text: &str) -> String {
    let code: String = text.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
    if code.is_empty() {
        "server_error".to_owned()
    } else {
        code
    }
}

fn flow_context(state_hash: &str) -> String {
    format!("flow:{state_hash}:verifier")
}

pub(crate) fn tokens_context(id: &ConnectionId) -> String {
    format!("connection:{id}:tokens")
}

/// The portal's tokens for one connection, as sealed in the vault.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PortalTokens {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// The parts of a token response Link uses.
#[derive(Debug, Clone)]
pub struct TokenAnswer {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub expires_in: Option<i64>,
    pub scope: Option<String>,
    pub patient: Option<String>,
    pub id_token: Option<String>,
}

/// Check a token endpoint's JSON answer (RFC 6749 §5.1; SMART's `patient`).
pub fn read_token_answer(value: &Value) -> std::result::Result<TokenAnswer, PortalError> {
    let invalid = |why: &str| PortalError::Invalid(format!("token response: {why}"));
    let access_token = value
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.len() < 16_384)
        .ok_or_else(|| invalid("no access_token"))?;
    let token_type = value.get("token_type").and_then(Value::as_str).unwrap_or_default();
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(invalid("token_type is not Bearer"));
    }
    let text =
        |k: &str| value.get(k).and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() < 16_384).map(String::from);
    let expires_in = match value.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .filter(|s| *s > 0)
                .ok_or_else(|| invalid("expires_in is not a positive number"))?,
        ),
    };
    let patient = text("patient");
    if let Some(p) = &patient {
        if !fhir::search::is_valid_id(p) {
            return Err(invalid("patient is not a FHIR id"));
        }
    }
    Ok(TokenAnswer {
        access_token: access_token.to_owned(),
        refresh_token: text("refresh_token"),
        expires_in,
        scope: text("scope"),
        patient,
        id_token: text("id_token"),
    })
}

/// The signing key and algorithm for a `private_key_jwt` client assertion (RSA: RS384; EC:
/// ES384 or ES256 by curve).
pub fn client_assertion_key(pem: &str, _kid: Option<&str>) -> Result<(EncodingKey, Algorithm)> {
    let bad = || LinkError::bad_request("the private key is not an RSA or EC private key in PEM");
    let probe = json!({"probe": true});
    if let Ok(key) = EncodingKey::from_rsa_pem(pem.as_bytes()) {
        if jsonwebtoken::encode(&Header::new(Algorithm::RS384), &probe, &key).is_ok() {
            return Ok((key, Algorithm::RS384));
        }
    }
    let key = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|_| bad())?;
    for alg in [Algorithm::ES384, Algorithm::ES256] {
        if jsonwebtoken::encode(&Header::new(alg), &probe, &key).is_ok() {
            return Ok((key, alg));
        }
    }
    Err(bad())
}

/// A connection as apps see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionView {
    pub connection_id: ConnectionId,
    pub endpoint_id: EndpointId,
    pub endpoint_name: Option<String>,
    pub person: Option<String>,
    pub patient_id: Option<String>,
    pub fhir_user: Option<String>,
    pub scope: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// When the current access token expires.
    pub token_expires: Option<String>,
    pub refreshable: bool,
    pub created: String,
    pub last_fetch: Option<String>,
}

impl Link {
    /// `GET /link/v1/connect/{endpoint}`: check the app and its client URL, then send the browser
    /// to the portal.
    pub async fn start_connect(&self, params: &ConnectParams) -> Result<Next> {
        let Some(app) = params.app.as_deref().and_then(|a| a.parse::<AppId>().ok()) else {
            return Ok(Next::page(400, "Unknown app", "The link that brought you here does not name a known app."));
        };
        let Some(client_url) = params.client_url.as_deref().filter(|u| u.len() <= 2048) else {
            return Ok(Next::page(400, "No return address", "The link that brought you here has no clientURL."));
        };
        if !self.client_url_registered(&app, client_url).await? {
            return Ok(Next::page(
                400,
                "Unregistered return address",
                "The app asked to send you back to an address it has not registered with Link, so Link will not go there.",
            ));
        }
        let state = params.state.as_deref().unwrap_or_default();
        let to_app = |error: &str, description: &str| Next::App {
            location: with_query(client_url, &[("error", error), ("error_description", description), ("state", state)]),
        };
        if state.is_empty() || state.len() > 1024 {
            return Ok(to_app("invalid_request", "state is required (at most 1024 characters)"));
        }
        if params.person.as_ref().is_some_and(|p| p.is_empty() || p.len() > 256) {
            return Ok(to_app("invalid_request", "person must be 1 to 256 characters"));
        }
        let endpoint = match params.endpoint.parse::<EndpointId>() {
            Ok(id) => self.endpoint(&id).await?,
            Err(_) => None,
        };
        let Some(endpoint) = endpoint else {
            return Ok(to_app("invalid_request", "the endpoint is not in the directory"));
        };
        let Some(client_id) = endpoint.client_id.clone() else {
            return Ok(to_app("portal_unavailable", "Link holds no app registration at this portal"));
        };
        let discovery = match self.discovery_for(&endpoint).await? {
            Ok(d) => d,
            Err(e) => {
                return Ok(to_app(
                    "portal_unavailable",
                    &format!("the portal's SMART configuration could not be read: {e}"),
                ))
            }
        };
        let Some(authorize) = discovery.authorize_endpoint.clone() else {
            return Ok(to_app("portal_unavailable", "the portal publishes no authorization endpoint"));
        };
        if !discovery.allows_s256() {
            return Ok(to_app("portal_unsupported", "the portal does not offer PKCE S256 (plain is not accepted)"));
        }
        let scope = endpoint.scopes_or_default().to_owned();
        let link_state = auth::password::random_token(32);
        let state_hash = sha256_hex(&link_state);
        let verifier = auth::password::random_token(48);
        let challenge = auth::pkce::s256_challenge(&verifier);
        let nonce = scope.split_whitespace().any(|s| s == "openid").then(|| auth::password::random_token(24));
        let browser = auth::password::random_token(32);
        let now = self.now_ms();
        let expires_at = now + self.config().flow_seconds * 1000;
        let db = self.db();
        let mut sql = db.sql();
        sql.push(
            "INSERT INTO link_flows (state_hash, app_id, endpoint_id, client_url, app_state, person, verifier, nonce, \
             scope, browser_hash, created_at, expires_at) VALUES (",
        )
        .bind(state_hash.as_str())
        .push(", ")
        .bind(app.as_str())
        .push(", ")
        .bind(endpoint.id.as_str())
        .push(", ")
        .bind(client_url)
        .push(", ")
        .bind(state)
        .push(", ")
        .bind(params.person.clone())
        .push(", ")
        .bind(self.vault().seal_str(&flow_context(&state_hash), &verifier)?)
        .push(", ")
        .bind(nonce.clone())
        .push(", ")
        .bind(scope.as_str())
        .push(", ")
        .bind(sha256_hex(&browser))
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(expires_at)
        .push(")");
        db.execute(&sql).await?;
        let redirect_uri = self.callback_url();
        let mut pairs = vec![
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("scope", scope.as_str()),
            ("state", link_state.as_str()),
            ("aud", endpoint.fhir_base.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        if let Some(n) = &nonce {
            pairs.push(("nonce", n.as_str()));
        }
        Ok(Next::Portal {
            location: with_query(&authorize, &pairs),
            cookie_name: cookie_name(&link_state),
            cookie_value: browser,
            max_age_seconds: self.config().flow_seconds,
        })
    }

    pub fn callback_url(&self) -> String {
        format!("{}/link/v1/callback", self.config().base_url)
    }

    /// `GET /link/v1/callback`: the portal sent the browser back. `browser` is the value of the
    /// login's cookie, when the browser sent one.
    pub async fn finish_connect(&self, params: &CallbackParams, browser: Option<&str>) -> Result<Next> {
        let Some(state) = params.state.as_deref().filter(|s| !s.is_empty() && s.len() < 1024) else {
            return Ok(Next::page(400, "Login not recognised", "The portal sent you back without the login's state."));
        };
        let state_hash = sha256_hex(state);
        let db = self.db();
        let mut sql = db.sql();
        sql.push(
            "SELECT app_id, endpoint_id, client_url, app_state, person, verifier, nonce, scope, browser_hash, \
             expires_at, used_at FROM link_flows WHERE state_hash = ",
        )
        .bind(state_hash.as_str());
        let cols = [
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Text,
            Col::Int,
            Col::Int,
        ];
        let Some(mut row) = db.rows(&sql, &cols).await?.into_iter().next() else {
            return Ok(Next::page(
                400,
                "Login not recognised",
                "This login is unknown to Link, or it has expired. Start again from the app.",
            ));
        };
        let bound = browser.is_some_and(|b| Some(sha256_hex(b).as_str()) == row.text(8));
        if !bound {
            return Ok(Next::page(
                400,
                "Login started elsewhere",
                "This login was started in another browser (or its cookie is gone). Start again from the app.",
            ));
        }
        if crate::db::opt_int(&row, 10).is_some() {
            return Ok(Next::page(
                400,
                "Login already finished",
                "This login has already been used. Start again from the app.",
            ));
        }
        let client_url = row.take_text(2).unwrap_or_default();
        let app_state = row.take_text(3).unwrap_or_default();
        let to_app = |error: &str, description: &str| Next::App {
            location: with_query(
                &client_url,
                &[("error", error), ("error_description", description), ("state", &app_state)],
            ),
        };
        let now = self.now_ms();
        // Single use, even when two callbacks race.
        let mut sql = db.sql();
        sql.push("UPDATE link_flows SET used_at = ")
            .bind(now)
            .push(" WHERE state_hash = ")
            .bind(state_hash.as_str())
            .push(" AND used_at IS NULL");
        if db.execute(&sql).await? == 0 {
            return Ok(Next::page(
                400,
                "Login already finished",
                "This login has already been used. Start again from the app.",
            ));
        }
        if row.int(9) < now {
            return Ok(to_app("login_expired", "the login at the portal took too long; start again"));
        }
        let (Some(app), Some(endpoint_id)) =
            (row.text(0).and_then(|a| a.parse::<AppId>().ok()), row.text(1).and_then(|e| e.parse::<EndpointId>().ok()))
        else {
            return Ok(to_app("server_error", "the login record is damaged"));
        };
        let Some(endpoint) = self.endpoint(&endpoint_id).await? else {
            return Ok(to_app("server_error", "the portal was removed from the directory during the login"));
        };
        if let Some(error) = &params.error {
            let code = error_code(error);
            if code != "access_denied" {
                self.health().record(&endpoint.id, EventKind::Login, false, None, Some(json!({"error": code})));
            }
            let description = params.error_description.as_deref().map(|d| printable(d, 300)).unwrap_or_default();
            return Ok(to_app(&code, &description));
        }
        let Some(code) = params.code.as_deref().filter(|c| !c.is_empty() && c.len() < 4096) else {
            return Ok(to_app("server_error", "the portal sent neither a code nor an error"));
        };
        let verifier = self.vault().open_string(&flow_context(&state_hash), row.text(5).unwrap_or_default())?;
        let nonce = row.take_text(6);
        let scope_asked = row.take_text(7).unwrap_or_default();
        let person = row.take_text(4);
        let answer = match self.exchange_code(&endpoint, code, &verifier).await? {
            Ok(a) => a,
            Err(e) => {
                self.health().record(&endpoint.id, EventKind::Login, false, None, None);
                return Ok(to_app("server_error", &format!("the portal's token endpoint: {e}")));
            }
        };
        let discovery = endpoint.discovery.clone().unwrap_or_default();
        let fhir_user = match &answer.id_token {
            Some(id_token) if scope_asked.split_whitespace().any(|s| s == "openid") => {
                match self.verify_id_token(&endpoint, &discovery, id_token, nonce.as_deref()).await {
                    Ok(claims) => claims.get("fhirUser").and_then(Value::as_str).map(String::from),
                    Err(why) => {
                        self.health().record(&endpoint.id, EventKind::Login, false, None, None);
                        tracing::warn!(endpoint = %endpoint.id, why = %why, "ID token refused");
                        return Ok(to_app(
                            "server_error",
                            &format!("the portal's ID token failed verification: {why}"),
                        ));
                    }
                }
            }
            _ => None,
        };
        let Some(patient) = answer.patient.clone() else {
            self.health().record(&endpoint.id, EventKind::Login, false, None, None);
            return Ok(to_app("server_error", "the portal did not say whose records were shared (no patient)"));
        };
        self.health().record(&endpoint.id, EventKind::Login, true, None, None);
        let connection = self
            .store_connection(&app, &endpoint, person.as_deref(), &patient, fhir_user.as_deref(), &scope_asked, &answer)
            .await?;
        let link_code = auth::password::random_token(32);
        let mut sql = db.sql();
        sql.push("INSERT INTO link_codes (code_hash, app_id, connection_id, expires_at) VALUES (")
            .bind(sha256_hex(&link_code))
            .push(", ")
            .bind(app.as_str())
            .push(", ")
            .bind(connection.as_str())
            .push(", ")
            .bind(now + self.config().code_seconds * 1000)
            .push(")");
        db.execute(&sql).await?;
        Ok(Next::App { location: with_query(&client_url, &[("code", &link_code), ("state", &app_state)]) })
    }

    /// Exchange an authorization code at the portal (never retried once sent: codes are single use).
    async fn exchange_code(
        &self,
        endpoint: &Endpoint,
        code: &str,
        verifier: &str,
    ) -> Result<std::result::Result<TokenAnswer, PortalError>> {
        let form = vec![
            ("grant_type".to_owned(), "authorization_code".to_owned()),
            ("code".to_owned(), code.to_owned()),
            ("redirect_uri".to_owned(), self.callback_url()),
            ("code_verifier".to_owned(), verifier.to_owned()),
        ];
        let answer = match self.token_request(endpoint, form, EventKind::Token).await? {
            Ok(v) => read_token_answer(&v),
            Err(e) => Err(e),
        };
        if let Ok(a) = &answer {
            let detail = json!({"refreshToken": a.refresh_token.is_some(), "expiresIn": a.expires_in});
            self.health().record(&endpoint.id, EventKind::Token, true, None, Some(detail));
        }
        Ok(answer)
    }

    /// POST a form to the portal's token (or revocation) endpoint with Link's client
    /// authentication there.
    pub(crate) async fn token_request(
        &self,
        endpoint: &Endpoint,
        form: Vec<(String, String)>,
        kind: EventKind,
    ) -> Result<std::result::Result<Value, PortalError>> {
        let discovery = match self.discovery_for(endpoint).await? {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let url = match kind {
            EventKind::Revoke => discovery.revocation_endpoint.clone(),
            _ => discovery.token_endpoint.clone(),
        };
        let Some(url) = url else { return Ok(Err(PortalError::Invalid("no token endpoint".into()))) };
        let request = self.authenticated_form(endpoint, &discovery, &url, form, kind).await?;
        let response = match self.portals().send(&endpoint.id, &request).await {
            Ok(r) => r,
            Err(e) => return Ok(Err(e)),
        };
        if kind == EventKind::Revoke {
            return Ok(Ok(Value::Null));
        }
        Ok(response.json())
    }

    async fn authenticated_form(
        &self,
        endpoint: &Endpoint,
        discovery: &Discovery,
        url: &str,
        mut form: Vec<(String, String)>,
        kind: EventKind,
    ) -> Result<PortalRequest> {
        let client_id = endpoint.client_id.clone().unwrap_or_default();
        let mut basic = None;
        match endpoint.client_auth {
            ClientAuth::None => form.push(("client_id".into(), client_id)),
            ClientAuth::ClientSecretBasic => {
                let secret = self.endpoint_secret(&endpoint.id).await?.unwrap_or_default();
                let post_only = discovery.token_endpoint_auth_methods.iter().any(|m| m == "client_secret_post")
                    && !discovery.token_endpoint_auth_methods.iter().any(|m| m == "client_secret_basic");
                if post_only {
                    form.push(("client_id".into(), client_id));
                    form.push(("client_secret".into(), secret));
                } else {
                    basic = Some((client_id, secret));
                }
            }
            ClientAuth::PrivateKeyJwt => {
                let (pem, kid) = self.endpoint_key(&endpoint.id).await?.unwrap_or_default();
                let (key, alg) = client_assertion_key(&pem, kid.as_deref())?;
                let mut header = Header::new(alg);
                header.kid = kid;
                let now = self.now_ms() / 1000;
                // The audience is the authorization server's token endpoint, also when the
                // assertion authenticates at its revocation endpoint (RFC 7523 §3; SMART).
                let aud = discovery.token_endpoint.as_deref().unwrap_or(url);
                let claims = json!({"iss": client_id, "sub": client_id, "aud": aud, "iat": now, "exp": now + 300,
                    "jti": auth::password::random_token(24)});
                let assertion = jsonwebtoken::encode(&header, &claims, &key)
                    .map_err(|_| LinkError::Vault("the client assertion could not be signed".into()))?;
                form.push((
                    "client_assertion_type".into(),
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion".into(), assertion));
                form.push(("client_id".into(), client_id));
            }
        }
        let mut request = PortalRequest::form(url, form, kind);
        request.basic = basic;
        Ok(request)
    }

    /// Verify an OpenID Connect ID token: signature against the portal's JWKS, issuer, audience
    /// (Link's client id), expiry, and the login's nonce. Returns its claims.
    async fn verify_id_token(
        &self,
        endpoint: &Endpoint,
        discovery: &Discovery,
        token: &str,
        nonce: Option<&str>,
    ) -> std::result::Result<Value, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "not a JWT".to_owned())?;
        let allowed = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::ES256,
            Algorithm::ES384,
            Algorithm::PS256,
        ];
        if !allowed.contains(&header.alg) {
            return Err(format!("algorithm {:?} is not accepted", header.alg));
        }
        let jwks_uri = match &discovery.jwks_uri {
            Some(u) => u.clone(),
            None => {
                let issuer = discovery.issuer.clone().unwrap_or_else(|| endpoint.fhir_base.clone());
                let config = self
                    .portals()
                    .get_json(
                        &endpoint.id,
                        &PortalRequest::get(format!("{issuer}/.well-known/openid-configuration"), EventKind::Discovery),
                    )
                    .await
                    .map_err(|e| format!("openid-configuration: {e}"))?;
                config.get("jwks_uri").and_then(Value::as_str).map(String::from).ok_or("no jwks_uri")?
            }
        };
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(
            self.portals()
                .get_json(&endpoint.id, &PortalRequest::get(jwks_uri, EventKind::Discovery))
                .await
                .map_err(|e| format!("JWKS: {e}"))?,
        )
        .map_err(|_| "the JWKS is not a JWK set".to_owned())?;
        let jwk = match &header.kid {
            Some(kid) => jwks.find(kid),
            None if jwks.keys.len() == 1 => jwks.keys.first(),
            None => None,
        }
        .ok_or("no JWKS key matches the token's kid")?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|_| "unusable JWKS key".to_owned())?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.leeway = 60;
        validation.set_audience(&[endpoint.client_id.as_deref().unwrap_or_default()]);
        let issuer = discovery.issuer.clone().unwrap_or_else(|| endpoint.fhir_base.clone());
        validation.set_issuer(&[issuer.as_str(), issuer.trim_end_matches('/')]);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| format!("{:?}", e.kind()))?;
        let claims = data.claims;
        let now = self.now_ms() / 1000;
        match claims.get("exp").and_then(Value::as_i64) {
            Some(exp) if exp + 60 >= now => {}
            _ => return Err("expired".into()),
        }
        if let Some(expected) = nonce {
            if claims.get("nonce").and_then(Value::as_str) != Some(expected) {
                return Err("the nonce does not match the login".into());
            }
        }
        Ok(claims)
    }

    /// `POST /link/v1/token`: redeem the one-time code handed to the app's client URL.
    pub async fn redeem_code(&self, app: &AppId, code: &str) -> Result<ConnectionView> {
        let refused = || LinkError::InvalidGrant("the code is unknown, used, expired or another app's".into());
        if code.is_empty() || code.len() > 256 {
            return Err(refused());
        }
        let now = self.now_ms();
        let db = self.db();
        let mut sql = db.sql();
        sql.push("UPDATE link_codes SET used_at = ")
            .bind(now)
            .push(" WHERE code_hash = ")
            .bind(sha256_hex(code))
            .push(" AND app_id = ")
            .bind(app.as_str())
            .push(" AND used_at IS NULL AND expires_at >= ")
            .bind(now)
            .push(" RETURNING connection_id");
        let rows = db.write_rows(&sql, &[Col::Text]).await?;
        let connection: ConnectionId =
            rows.first().and_then(|r| r.text(0)).and_then(|c| c.parse().ok()).ok_or_else(refused)?;
        self.connection_view(app, &connection).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers_are_checked() {
        let ok = read_token_answer(&json!({"access_token": "a", "token_type": "bearer", "expires_in": 10, "patient": "p1", "refresh_token": "r"})).unwrap();
        assert_eq!(
            (ok.expires_in, ok.patient.as_deref(), ok.refresh_token.as_deref()),
            (Some(10), Some("p1"), Some("r"))
        );
        for bad in [
            json!({"token_type": "Bearer"}),
            json!({"access_token": "a", "token_type": "mac"}),
            json!({"access_token": "a", "token_type": "Bearer", "expires_in": -5}),
            json!({"access_token": "a", "token_type": "Bearer", "patient": "../etc"}),
            json!("nonsense"),
        ] {
            assert!(read_token_answer(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queries_and_codes_are_built_safely() {
        assert_eq!(
            with_query("https://app/cb", &[("code", "a b"), ("state", "s&t")]),
            "https://app/cb?code=a+b&state=s%26t"
        );
        assert_eq!(
            with_query("https://app/cb?x=1", &[("error", "e"), ("error_description", "")]),
            "https://app/cb?x=1&error=e"
        );
        assert_eq!(error_code("access_denied"), "access_denied");
        assert_eq!(error_code("<script>"), "script");
        assert_eq!(error_code("!!"), "server_error");
        assert_ne!(cookie_name("a"), cookie_name("b"));
    }
}
