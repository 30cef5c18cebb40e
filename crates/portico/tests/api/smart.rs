//! The SMART App Launch authorization server over HTTP, as an app and a person in a browser see
//! it: discovery, `/authorize` with its pages, the token endpoint's grant types, refresh rotation,
//! introspection, revocation, registration and EHR launch. Pages are driven with a cookie-keeping
//! HTTP client (the Chromium tests in `tests/browser` drive the same pages in a real browser).

use auth::pkce::s256_challenge;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use oauth::register::{ClientSpec, DEFAULT_APP_SCOPES};
use serde_json::{json, Value};
use store::auth::{ClientType, OwnerType, RegistrationSource};

use crate::both_backends;
use crate::harness::{Backend, TestServer};

pub const REDIRECT: &str = "https://app.example/callback";
pub const VERIFIER: &str = "a-verifier-that-is-long-enough-to-satisfy-rfc-7636-rules-1234";
pub const PASSWORD: &str = "correct horse battery";

/// A person's browser: keeps cookies, does not follow redirects.
pub struct Browser {
    pub http: reqwest::Client,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Browser {
    pub fn new() -> Browser {
        let http =
            reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http }
    }

    async fn answer(r: reqwest::Response) -> Page {
        let status = r.status().as_u16();
        let location = r.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
        Page { status, location, body: r.text().await.unwrap() }
    }

    pub async fn get(&self, url: &str) -> Page {
        Self::answer(self.http.get(url).send().await.unwrap()).await
    }

    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> Page {
        Self::answer(self.http.post(url).form(form).send().await.unwrap()).await
    }
}

/// The value of a hidden input in a page.
pub fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in page:\n{html}")) + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// A query parameter of a URL.
pub fn param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

pub fn authorize_url(server: &TestServer, client_id: &str, scope: &str, extra: &[(&str, &str)]) -> String {
    let challenge = s256_challenge(VERIFIER);
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", scope),
        ("state", "st-123"),
        ("aud", &server.base),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        match params.iter_mut().find(|(name, _)| name == k) {
            Some(slot) => slot.1 = v,
            None => params.push((k, v)),
        }
    }
    let params: Vec<(&str, &str)> = params.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
    format!("{}/auth/authorize?{query}", server.origin)
}

/// Seed patients, a public app, a confidential app, and accounts.
pub async fn setup(server: &TestServer) {
    let mut resources = Vec::new();
    for (id, given, family) in [("p1", "Alice", "Member"), ("p2", "Bobby", "Member"), ("p3", "Carol", "Other")] {
        resources.push(json!({"resourceType": "Patient", "id": id, "name": [{"given": [given], "family": family}], "birthDate": "1990-01-01"}));
    }
    resources.push(json!({"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"}, "subject": {"reference": "Patient/p3"}}));
    server.seed(resources).await;
    register(server, "growth", ClientType::Public, vec![REDIRECT.into()], DEFAULT_APP_SCOPES).await;
    let hash = auth::password::hash_secret(PASSWORD).unwrap();
    for (username, patients) in [("alice", vec!["p1", "p2"]), ("carol", vec!["p3"])] {
        server
            .store
            .create_user(store::auth::NewUser {
                username: username.into(),
                password_hash: hash.clone(),
                role: store::auth::Role::Patient,
                fhir_user: Some(format!("Patient/{}", patients[0])),
                patients: patients.iter().map(|p| p.parse().unwrap()).collect(),
            })
            .await
            .unwrap();
    }
}

pub async fn register(
    server: &TestServer,
    id: &str,
    client_type: ClientType,
    redirect_uris: Vec<String>,
    scopes: &str,
) -> oauth::register::Registered {
    register_with(server, id, client_type, redirect_uris, scopes, None, false).await
}

pub async fn register_with(
    server: &TestServer,
    id: &str,
    client_type: ClientType,
    redirect_uris: Vec<String>,
    scopes: &str,
    jwks: Option<Value>,
    ehr_launcher: bool,
) -> oauth::register::Registered {
    server
        .auth
        .register_client(ClientSpec {
            client_id: Some(id.into()),
            name: format!("App {id}"),
            owner_type: OwnerType::IndependentDeveloper,
            client_type,
            redirect_uris,
            scopes: scopes.into(),
            jwks,
            jwks_uri: None,
            logo_uri: None,
            policy_uri: Some("https://app.example/privacy".into()),
            tos_uri: None,
            ehr_launcher,
            source: RegistrationSource::Cli,
        })
        .await
        .unwrap()
}

/// Sign in on the page `start` leads to and return the page after sign-in.
pub async fn sign_in(browser: &Browser, server: &TestServer, start: &str, username: &str, password: &str) -> Page {
    let first = browser.get(start).await;
    assert_eq!(first.status, 303, "authorize should continue in the browser: {}", first.body);
    let signin_url = format!("{}{}", server.origin, first.location.unwrap());
    let page = browser.get(&signin_url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let form = [
        ("req", hidden(&page.body, "req")),
        ("csrf", hidden(&page.body, "csrf")),
        ("username", username.to_owned()),
        ("password", password.to_owned()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    browser.post(&format!("{}/auth/signin", server.origin), &form).await
}

/// Follow a 303 inside Portico.
pub async fn follow(browser: &Browser, server: &TestServer, page: &Page) -> Page {
    assert_eq!(page.status, 303, "expected a redirect: {}", page.body);
    browser.get(&format!("{}{}", server.origin, page.location.as_ref().unwrap())).await
}

/// Drive the whole standalone flow for `alice`, choosing `patient`, accepting everything offered
/// (plus `extra` form fields); returns the redirect back to the app.
pub async fn approve(
    server: &TestServer,
    browser: &Browser,
    scope: &str,
    patient: Option<&str>,
    extra: &[(&str, &str)],
) -> String {
    let after =
        sign_in(browser, server, &authorize_url(server, "growth", scope, &[("nonce", "n-1")]), "alice", PASSWORD).await;
    let mut page = follow(browser, server, &after).await;
    if let Some(p) = patient {
        assert!(page.body.contains("Whose records"), "picker expected: {}", page.body);
        let req = hidden(&page.body, "req");
        let csrf = hidden(&page.body, "csrf");
        let chosen = browser
            .post(&format!("{}/auth/patient", server.origin), &[("req", &req), ("csrf", &csrf), ("patient", p)])
            .await;
        page = follow(browser, server, &chosen).await;
    }
    consent(browser, server, &page, extra).await
}

/// On a consent page: send every checkbox as rendered (all ticked by default) plus `extra` form
/// fields (`("-name", value)` unticks that box), Allow; returns where Portico sends the browser.
pub async fn consent(browser: &Browser, server: &TestServer, page: &Page, extra: &[(&str, &str)]) -> String {
    assert!(page.body.contains("Allow"), "consent expected: {}", page.body);
    let req = hidden(&page.body, "req");
    let csrf = hidden(&page.body, "csrf");
    let mut form: Vec<(&str, String)> = vec![("req", req), ("csrf", csrf), ("decision", "allow".into())];
    // Every checkbox as rendered (checked by default).
    for chunk in page.body.split("<input type=\"checkbox\"").skip(1) {
        if !chunk.split('>').next().unwrap().contains("checked") {
            continue;
        }
        let name = chunk.split("name=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let value = chunk.split("value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let name: &'static str = Box::leak(html_unescape(&name).into_boxed_str());
        form.push((name, html_unescape(&value)));
    }
    let mut drop_keys: Vec<String> = Vec::new();
    for (k, v) in extra {
        if let Some(key) = k.strip_prefix('-') {
            // "-name" with a value: untick that box.
            drop_keys.push(format!("{key}={v}"));
        } else {
            form.push((k, (*v).to_owned()));
        }
    }
    form.retain(|(k, v)| !drop_keys.contains(&format!("{k}={v}")));
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = browser.post(&format!("{}/auth/consent", server.origin), &form).await;
    assert_eq!(done.status, 303, "{}", done.body);
    done.location.unwrap()
}

fn html_unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&#x3a;", ":")
        .replace("&#124;", "|")
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
}

pub async fn token(server: &TestServer, form: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = server.client.post(format!("{}/auth/token", server.origin)).form(form).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

pub async fn exchange(server: &TestServer, code: &str) -> (u16, Value) {
    let (s, _, v) = token(
        server,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("client_id", "growth"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    (s, v)
}

pub async fn fhir_get(server: &TestServer, token: &str, path: &str) -> (u16, Value) {
    let r = server.client.get(server.url(path)).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn introspect(server: &TestServer, bearer: &str, token: &str) -> Value {
    let r = server
        .client
        .post(format!("{}/auth/introspect", server.origin))
        .bearer_auth(bearer)
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

fn id_token_claims(jwks: &Value, token: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk_value =
        jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header.kid.clone().unwrap().as_str()).unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk_value.clone()).unwrap();
    let mut v = Validation::new(header.alg);
    v.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(&jwk).unwrap(), &v).unwrap().claims
}

async fn discovery_documents(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    let (s, smart) = server.get(".well-known/smart-configuration").await;
    assert_eq!(s, 200);
    for field in [
        "issuer",
        "jwks_uri",
        "authorization_endpoint",
        "token_endpoint",
        "grant_types_supported",
        "capabilities",
        "code_challenge_methods_supported",
        "scopes_supported",
        "response_types_supported",
        "introspection_endpoint",
        "revocation_endpoint",
        "registration_endpoint",
        "token_endpoint_auth_methods_supported",
    ] {
        assert!(smart.get(field).is_some(), "smart-configuration lacks {field}");
    }
    assert_eq!(smart["code_challenge_methods_supported"], json!(["S256"]));
    let caps: Vec<&str> = smart["capabilities"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for cap in [
        "launch-ehr",
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "context-ehr-patient",
        "context-standalone-patient",
        "permission-offline",
        "permission-online",
        "permission-patient",
        "permission-user",
        "permission-v1",
        "permission-v2",
        "sso-openid-connect",
        "authorize-post",
    ] {
        assert!(caps.contains(&cap), "capability {cap} missing");
    }
    assert_eq!(smart["token_endpoint"], format!("{}/auth/token", server.origin));
    let (s, oidc) = server.get(".well-known/openid-configuration").await;
    assert_eq!(s, 200);
    assert_eq!(oidc["issuer"], server.base.as_str());
    assert_eq!(oidc["id_token_signing_alg_values_supported"], json!(["RS256"]));
    let jwks: Value =
        server.client.get(format!("{}/auth/jwks", server.origin)).send().await.unwrap().json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    let mut algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    algs.sort_unstable();
    assert_eq!(algs, ["ES256", "RS256"], "ES256 for access tokens, RS256 for ID tokens");
    for key in keys {
        assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
        assert!(key.get("d").is_none(), "private key material published");
    }
    // The CapabilityStatement names the OAuth endpoints (SMART's security extension).
    let (_, cs) = server.get("metadata").await;
    let security = &cs["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let uris = &security["extension"][0]["extension"];
    assert!(uris.as_array().unwrap().iter().any(|u| u["url"] == "token" && u["valueUri"] == smart["token_endpoint"]));
    // CORS for browser apps: preflight on the token endpoint and the FHIR API allows Authorization.
    for path in ["/auth/token", "/fhir/Patient/x"] {
        let r = server
            .client
            .request(reqwest::Method::OPTIONS, format!("{}{path}", server.origin))
            .header("Origin", "https://app.example")
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
            .await
            .unwrap();
        let allowed = r.headers().get("access-control-allow-headers").map(|v| v.to_str().unwrap().to_ascii_lowercase());
        assert!(allowed.is_some_and(|a| a.contains("authorization")), "{path}");
    }
}

async fn standalone_launch_with_picker_and_choices(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let browser = Browser::new();
    let scope =
        "launch/patient openid fhirUser offline_access patient/Observation.rs patient/Patient.r patient/Condition.rs";
    // Untick Condition access, keep only laboratory observations, share HIV records.
    let obs_categories =
        ["vital-signs", "social-history", "survey", "imaging", "exam", "procedure", "therapy", "activity"];
    let mut extra: Vec<(&str, &str)> = vec![("-scope", "patient/Condition.rs"), ("share", "hiv")];
    for c in obs_categories {
        extra.push(("-category:patient/Observation.rs", c));
    }
    let back = approve(&server, &browser, scope, Some("p2"), &extra).await;
    assert!(back.starts_with(REDIRECT), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("st-123"));
    let code = param(&back, "code").unwrap();

    let (s, headers, t) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", "growth"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    assert_eq!(t["token_type"], "Bearer");
    let expires = t["expires_in"].as_i64().expect("expires_in is a number");
    assert!(expires > 0 && expires <= 3600);
    assert_eq!(t["patient"], "p2");
    assert_eq!(t["need_patient_banner"], true);
    assert_eq!(
        t["scope"],
        "openid fhirUser launch/patient offline_access \
         patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory patient/Patient.r"
    );
    assert!(t["refresh_token"].as_str().is_some_and(|r| r.len() >= 32));
    let jwks: Value =
        server.client.get(format!("{}/auth/jwks", server.origin)).send().await.unwrap().json().await.unwrap();
    let id = id_token_claims(&jwks, t["id_token"].as_str().unwrap());
    assert_eq!(id["aud"], "growth");
    assert_eq!(id["iss"], server.base.as_str());
    assert_eq!(id["nonce"], "n-1");
    assert_eq!(id["fhirUser"], format!("{}/Patient/p1", server.base));

    let access = t["access_token"].as_str().unwrap();
    let (s, patient) = fhir_get(&server, access, "Patient/p2").await;
    assert_eq!(s, 200);
    assert_eq!(patient["id"], "p2");
    // The grant records what the person withheld.
    let grants = server
        .store
        .grants_for_user(&server.store.user_by_username("alice").await.unwrap().unwrap().user_id)
        .await
        .unwrap();
    let withheld: Vec<&str> = grants[0].withheld.iter().map(|c| c.as_str()).collect();
    assert_eq!(withheld, ["behavioral-health", "substance-use", "sexual-reproductive"]);

    // A forged or garbage token is a 401 with the RFC 6750 challenge.
    let r = server.client.get(server.url("Patient/p2")).bearer_auth("not-a-token").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer error=\"invalid_token\""));
}

async fn code_is_single_use_and_reuse_revokes(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let browser = Browser::new();
    let back = approve(&server, &browser, "launch/patient offline_access patient/*.rs", Some("p1"), &[]).await;
    let code = param(&back, "code").unwrap();
    let (s, first) = exchange(&server, &code).await;
    assert_eq!(s, 200);
    let (s, again) = exchange(&server, &code).await;
    assert_eq!(s, 400);
    assert_eq!(again["error"], "invalid_grant");
    // Everything issued from the code is dead.
    let (s, _) = fhir_get(&server, first["access_token"].as_str().unwrap(), "Patient/p1").await;
    assert_eq!(s, 401);
    let (s, _, refreshed) = token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", first["refresh_token"].as_str().unwrap()),
            ("client_id", "growth"),
        ],
    )
    .await;
    assert_eq!((s, refreshed["error"].as_str()), (400, Some("invalid_grant")));
}

async fn authorize_errors(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let scope = "launch/patient patient/*.rs";
    let browser = Browser::new();
    // Never redirect to an address that cannot be trusted: a page instead.
    for (extra, what) in [
        (vec![("client_id", "nobody")], "Unknown app"),
        (vec![("redirect_uri", "https://evil.example/cb")], "not registered"),
        (vec![("client_id", "")], "client_id is missing"),
    ] {
        let page = browser.get(&authorize_url(&server, "growth", scope, &extra)).await;
        assert_eq!(page.status, 400, "{extra:?}");
        assert!(page.location.is_none(), "{extra:?} redirected");
        assert!(page.body.contains(what) || page.body.contains("has not registered"), "{extra:?}: {}", page.body);
    }
    // Other problems go back to the app with error and state.
    for (extra, error) in [
        (vec![("state", "")], "invalid_request"),
        (vec![("aud", "https://other.example/fhir")], "invalid_request"),
        (vec![("aud", "")], "invalid_request"),
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("code_challenge", "")], "invalid_request"),
        (vec![("code_challenge", "short")], "invalid_request"),
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("scope", "system/*.rs nonsense")], "invalid_scope"),
        (vec![("launch", "no-such-launch")], "invalid_request"),
    ] {
        let page = browser.get(&authorize_url(&server, "growth", scope, &extra)).await;
        assert_eq!(page.status, 303, "{extra:?}: {}", page.body);
        let location = page.location.unwrap();
        assert!(location.starts_with(REDIRECT), "{location}");
        assert_eq!(param(&location, "error").as_deref(), Some(error), "{extra:?}: {location}");
        if !extra.iter().any(|(k, _)| *k == "state") {
            assert_eq!(param(&location, "state").as_deref(), Some("st-123"));
        }
        if extra[0].1 == "plain" {
            assert!(param(&location, "error_description").unwrap().contains("S256"));
        }
    }
    // A parameter twice.
    let doubled = format!("{}&scope=openid", authorize_url(&server, "growth", scope, &[]));
    let page = browser.get(&doubled).await;
    assert_eq!(param(&page.location.unwrap(), "error").as_deref(), Some("invalid_request"));
}

async fn token_errors(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let fresh_code = || async {
        let browser = Browser::new();
        let back = approve(&server, &browser, "launch/patient patient/*.rs", Some("p1"), &[]).await;
        param(&back, "code").unwrap()
    };
    let code = fresh_code().await;
    let base = |code: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("client_id", "growth".to_owned()),
            ("code_verifier", VERIFIER.to_owned()),
        ]
    };
    let send = |form: Vec<(&'static str, String)>| {
        let server = &server;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            token(server, &form).await
        }
    };
    // Wrong verifier: invalid_grant, and the code is spent.
    let mut form = base(&code);
    form[4].1 = "another-verifier-that-is-long-enough-to-satisfy-rfc-7636-xyz".into();
    let (s, _, v) = send(form).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    let (s, _, v) = send(base(&code)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")), "spent after a failed check: {v}");

    // Wrong redirect_uri.
    let code = fresh_code().await;
    let mut form = base(&code);
    form[2].1 = "https://app.example/other".into();
    let (_, _, v) = send(form).await;
    assert_eq!(v["error"], "invalid_grant");

    // Expired: codes live at most 60 seconds.
    let code = fresh_code().await;
    server.clock.advance(61);
    let (_, _, v) = send(base(&code)).await;
    assert_eq!(v["error"], "invalid_grant", "{v}");

    // Missing pieces, unknown grant types and clients.
    let code = fresh_code().await;
    let mut form = base(&code);
    form.remove(4);
    let (s, _, v) = send(form).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
    let (s, _, v) = send(vec![("grant_type", "password".into()), ("client_id", "growth".into())]).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("unsupported_grant_type")));
    let mut form = base(&code);
    form[3].1 = "nobody".into();
    let (s, _, v) = send(form).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    let (s, headers, v) = send(vec![("grant_type", "authorization_code".into()), ("code", code.clone())]).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    assert_eq!(headers["cache-control"], "no-store");
    // Not a form at all.
    let r = server
        .client
        .post(format!("{}/auth/token", server.origin))
        .json(&json!({"grant_type": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
}

async fn refresh_rotation_narrowing_and_reuse(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let browser = Browser::new();
    let back = approve(
        &server,
        &browser,
        "launch/patient offline_access patient/Observation.rs patient/Patient.rs",
        Some("p1"),
        &[],
    )
    .await;
    let (_, first) = exchange(&server, &param(&back, "code").unwrap()).await;
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |rt: String, scope: Option<&'static str>| {
        let server = &server;
        async move {
            let mut form =
                vec![("grant_type", "refresh_token"), ("refresh_token", rt.as_str()), ("client_id", "growth")];
            if let Some(s) = scope {
                form.push(("scope", s));
            }
            token(server, &form).await
        }
    };
    // Narrowing is allowed; the new token carries the narrower scope.
    let (s, headers, second) = refresh(rt1.clone(), Some("patient/Patient.rs")).await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(headers["pragma"], "no-cache");
    assert_eq!(second["scope"], "patient/Patient.rs");
    assert_eq!(second["patient"], "p1");
    let (s, _) = fhir_get(&server, second["access_token"].as_str().unwrap(), "Patient/p1").await;
    assert_eq!(s, 200);
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt1, rt2, "rotation");
    // Broadening is refused and does not burn the token.
    let (s, _, v) = refresh(rt2.clone(), Some("patient/*.cruds")).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")));
    let (s, _, v) = refresh(rt2.clone(), Some("patient/Observation.rs made/up")).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")));
    // Another client cannot use it.
    register(&server, "other", ClientType::Public, vec![REDIRECT.into()], DEFAULT_APP_SCOPES).await;
    let (s, _, v) =
        token(&server, &[("grant_type", "refresh_token"), ("refresh_token", &rt2), ("client_id", "other")]).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    let (s, _, third) = refresh(rt2.clone(), None).await;
    assert_eq!(s, 200, "{third}");
    assert_eq!(third["scope"], first["scope"], "without scope the whole grant");
    // Presenting a used refresh token again revokes the grant: the newest tokens die too.
    let (s, _, v) = refresh(rt1, None).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    let (s, _, v) = refresh(third["refresh_token"].as_str().unwrap().to_owned(), None).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    let (s, _) = fhir_get(&server, third["access_token"].as_str().unwrap(), "Patient/p1").await;
    assert_eq!(s, 401);
}

/// RFC 6749 §6 and SMART's fhirclient: a public client's refresh token may come alone (the
/// token names its client); with another client's id it is refused without being burnt; rotation
/// and reuse detection are the same either way.
async fn public_refresh_without_client_id(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    register(&server, "other", ClientType::Public, vec![REDIRECT.into()], DEFAULT_APP_SCOPES).await;
    let browser = Browser::new();
    let back = approve(&server, &browser, "launch/patient offline_access patient/*.rs", Some("p1"), &[]).await;
    let (_, first) = exchange(&server, &param(&back, "code").unwrap()).await;
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
    let alone = |rt: String| {
        let server = &server;
        async move { token(server, &[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())]).await }
    };
    // As fhirclient sends it: grant_type and refresh_token only.
    let (s, headers, second) = alone(rt1.clone()).await;
    assert_eq!(s, 200, "{second}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(second["patient"], "p1");
    assert_eq!(second["scope"], first["scope"]);
    let rt2 = second["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt2, rt1, "rotation");
    let (s, patient) = fhir_get(&server, second["access_token"].as_str().unwrap(), "Patient/p1").await;
    assert_eq!((s, patient["id"].as_str()), (200, Some("p1")));
    // With the right client_id it works too.
    let (s, _, third) =
        token(&server, &[("grant_type", "refresh_token"), ("refresh_token", &rt2), ("client_id", "growth")]).await;
    assert_eq!(s, 200, "{third}");
    let rt3 = third["refresh_token"].as_str().unwrap().to_owned();
    // Another client's id: invalid_grant, and the token is not burnt.
    let (s, _, v) =
        token(&server, &[("grant_type", "refresh_token"), ("refresh_token", &rt3), ("client_id", "other")]).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    let (s, _, fourth) = alone(rt3.clone()).await;
    assert_eq!(s, 200, "{fourth}");
    // Unknown or missing tokens.
    let (s, _, v) = alone("not-a-refresh-token".into()).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    let (s, _, v) = token(&server, &[("grant_type", "refresh_token")]).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_request")));
    // Reuse of a rotated token, presented alone, still revokes the grant.
    let (s, _, v) = alone(rt1).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    let (s, _, v) = alone(fourth["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));
    let (s, _) = fhir_get(&server, fourth["access_token"].as_str().unwrap(), "Patient/p1").await;
    assert_eq!(s, 401);
}

/// A confidential client's refresh token is useless without that client's authentication: alone
/// or with only its client_id it is 401 invalid_client, and those attempts burn nothing.
async fn confidential_refresh_needs_authentication(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let registered =
        register(&server, "portal", ClientType::ConfidentialSymmetric, vec![REDIRECT.into()], DEFAULT_APP_SCOPES).await;
    let secret = registered.client_secret.unwrap();
    let browser = Browser::new();
    let after = sign_in(
        &browser,
        &server,
        &authorize_url(&server, "portal", "launch/patient offline_access patient/*.rs", &[]),
        "carol",
        PASSWORD,
    )
    .await;
    let page = follow(&browser, &server, &after).await;
    let form = [
        ("req", hidden(&page.body, "req")),
        ("csrf", hidden(&page.body, "csrf")),
        ("decision", "allow".into()),
        ("scope", "offline_access".into()),
        ("scope", "patient/*.rs".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = browser.post(&format!("{}/auth/consent", server.origin), &form).await;
    let code = param(done.location.as_ref().unwrap(), "code").unwrap();
    let r = server
        .client
        .post(format!("{}/auth/token", server.origin))
        .basic_auth("portal", Some(&secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let t: Value = r.json().await.unwrap();
    let rt = t["refresh_token"].as_str().expect("offline_access granted: a refresh token").to_owned();
    let (s, _, v) = token(&server, &[("grant_type", "refresh_token"), ("refresh_token", &rt)]).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")), "{v}");
    let (s, _, v) =
        token(&server, &[("grant_type", "refresh_token"), ("refresh_token", &rt), ("client_id", "portal")]).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")), "{v}");
    let r = server
        .client
        .post(format!("{}/auth/token", server.origin))
        .basic_auth("portal", Some(&secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "the refused attempts burnt nothing");
    let refreshed: Value = r.json().await.unwrap();
    assert_ne!(refreshed["refresh_token"].as_str().unwrap(), rt);
}

async fn introspection_and_revocation(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let get_tokens = || async {
        let browser = Browser::new();
        let back = approve(&server, &browser, "launch/patient offline_access patient/*.rs", Some("p1"), &[]).await;
        exchange(&server, &param(&back, "code").unwrap()).await.1
    };
    let t = get_tokens().await;
    let (at, rt) = (t["access_token"].as_str().unwrap(), t["refresh_token"].as_str().unwrap());
    let live = introspect(&server, at, at).await;
    assert_eq!(live["active"], true);
    assert_eq!(live["client_id"], "growth");
    assert_eq!(live["patient"], "p1");
    assert_eq!(live["scope"], t["scope"]);
    assert_eq!(live["token_type"], "Bearer");
    let live_rt = introspect(&server, at, rt).await;
    assert_eq!(live_rt["active"], true);
    assert_eq!(live_rt["token_type"], "refresh_token");
    assert_eq!(introspect(&server, at, "garbage").await, json!({"active": false}));
    // Introspection needs a caller: an authenticated client or a bearer token.
    let r =
        server.client.post(format!("{}/auth/introspect", server.origin)).form(&[("token", at)]).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = server
        .client
        .post(format!("{}/auth/introspect", server.origin))
        .form(&[("token", at), ("client_id", "growth")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "a public client cannot authenticate");

    // Revoking the refresh token kills the access token as well.
    let other = get_tokens().await;
    let r = server
        .client
        .post(format!("{}/auth/revoke", server.origin))
        .form(&[("token", rt), ("client_id", "growth")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let other_at = other["access_token"].as_str().unwrap();
    assert_eq!(introspect(&server, other_at, at).await, json!({"active": false}));
    assert_eq!(introspect(&server, other_at, rt).await, json!({"active": false}));
    let (s, _) = fhir_get(&server, at, "Patient/p1").await;
    assert_eq!(s, 401);
    // Revoking an access token kills its refresh token; unknown tokens are fine.
    let r = server
        .client
        .post(format!("{}/auth/revoke", server.origin))
        .form(&[("token", other_at), ("client_id", "growth")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (_, _, v) = token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", other["refresh_token"].as_str().unwrap()),
            ("client_id", "growth"),
        ],
    )
    .await;
    assert_eq!(v["error"], "invalid_grant");
    let r = server
        .client
        .post(format!("{}/auth/revoke", server.origin))
        .form(&[("token", "nope"), ("client_id", "growth")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

async fn confidential_client_authentication(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let registered =
        register(&server, "portal", ClientType::ConfidentialSymmetric, vec![REDIRECT.into()], DEFAULT_APP_SCOPES).await;
    let secret = registered.client_secret.unwrap();
    let browser = Browser::new();
    let after = sign_in(
        &browser,
        &server,
        &authorize_url(&server, "portal", "openid fhirUser launch/patient patient/*.rs", &[]),
        "carol",
        PASSWORD,
    )
    .await;
    let page = follow(&browser, &server, &after).await;
    let form = [
        ("req", hidden(&page.body, "req")),
        ("csrf", hidden(&page.body, "csrf")),
        ("decision", "allow".into()),
        ("scope", "patient/*.rs".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = browser.post(&format!("{}/auth/consent", server.origin), &form).await;
    let code = param(done.location.as_ref().unwrap(), "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    // No credentials: a confidential client must authenticate.
    let (s, _, v) = token(&server, &[form.as_slice(), &[("client_id", "portal")]].concat()).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    // Wrong secret by Basic: 401 with a Basic challenge.
    let r = server
        .client
        .post(format!("{}/auth/token", server.origin))
        .basic_auth("portal", Some("wrong"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    let r = server
        .client
        .post(format!("{}/auth/token", server.origin))
        .basic_auth("portal", Some(&secret))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["patient"], "p3", "carol has one patient: no picker");
    assert_eq!(t["scope"], "launch/patient patient/*.rs");
    assert!(t.get("id_token").is_none(), "openid was unticked");
    // client_secret_post works for introspection; two methods at once is invalid_request.
    let r = server
        .client
        .post(format!("{}/auth/introspect", server.origin))
        .form(&[("token", t["access_token"].as_str().unwrap()), ("client_id", "portal"), ("client_secret", &secret)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["active"], true);
    let r = server
        .client
        .post(format!("{}/auth/introspect", server.origin))
        .basic_auth("portal", Some(&secret))
        .form(&[("token", "x"), ("client_id", "portal"), ("client_secret", &secret)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_request");
}

/// A backend client's key pair: the JWKS to register and the key to sign assertions with.
pub fn backend_keys() -> (Value, EncodingKey, String) {
    let key = auth::keys::generate(auth::keys::SigningAlg::Rs256).unwrap();
    let mut jwk = key.public_jwk.clone();
    jwk["alg"] = "RS384".into();
    (json!({"keys": [jwk]}), EncodingKey::from_rsa_pem(key.private_pem.as_bytes()).unwrap(), key.kid)
}

pub fn assertion(key: &EncodingKey, kid: &str, client_id: &str, aud: &str, jti: &str, exp: i64) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::RS384);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": exp, "jti": jti}), key)
        .unwrap()
}

async fn backend_services(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let (jwks, key, kid) = backend_keys();
    register_with(
        &server,
        "bulk",
        ClientType::ConfidentialAsymmetric,
        vec![],
        "system/Patient.rs system/Observation.rs",
        Some(jwks),
        false,
    )
    .await;
    let aud = format!("{}/auth/token", server.origin);
    let now = server.auth.now();
    let jwt = assertion(&key, &kid, "bulk", &aud, "jti-1", now + 240);
    let form = |jwt: &str, scope: &str| {
        vec![
            ("grant_type", "client_credentials".to_owned()),
            ("scope", scope.to_owned()),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned()),
            ("client_assertion", jwt.to_owned()),
        ]
    };
    let send = |f: Vec<(&'static str, String)>| {
        let server = &server;
        async move {
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            token(server, &f).await
        }
    };
    let (s, _, t) = send(form(&jwt, "system/Patient.rs system/Encounter.rs patient/*.rs")).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["scope"], "system/Patient.rs", "only registered system scopes");
    assert!(t["expires_in"].as_i64().unwrap() <= 300);
    assert!(t.get("refresh_token").is_none());
    let (s, _) = fhir_get(&server, t["access_token"].as_str().unwrap(), "Patient/p1").await;
    assert_eq!(s, 200);
    // The same assertion again is a replay.
    let (s, _, v) = send(form(&jwt, "system/Patient.rs")).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")), "{v}");
    // Wrong audience, too long a lifetime, unknown scopes.
    let (_, _, v) =
        send(form(&assertion(&key, &kid, "bulk", "https://elsewhere/token", "jti-2", now + 60), "system/Patient.rs"))
            .await;
    assert_eq!(v["error"], "invalid_client");
    let (_, _, v) = send(form(&assertion(&key, &kid, "bulk", &aud, "jti-3", now + 3600), "system/Patient.rs")).await;
    assert_eq!(v["error"], "invalid_client");
    let (_, _, v) = send(form(&assertion(&key, &kid, "bulk", &aud, "jti-4", now + 60), "system/Condition.rs")).await;
    assert_eq!(v["error"], "invalid_scope");
    // A public client cannot use client_credentials.
    let (s, _, v) =
        token(&server, &[("grant_type", "client_credentials"), ("client_id", "growth"), ("scope", "system/*.rs")])
            .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("unauthorized_client")));
}

async fn ehr_launch(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let registered =
        register_with(&server, "ehr", ClientType::ConfidentialSymmetric, vec![], "user/*.rs", None, true).await;
    let secret = registered.client_secret.unwrap();
    let launch_api = format!("{}/auth/launch", server.origin);
    let body = json!({"patient": "p3", "encounter": "e1", "fhirContext": [{"reference": "Encounter/e1"}], "need_patient_banner": false, "smart_style_url": "https://ehr.example/style.json"});
    // Only an authenticated EHR launcher may create contexts.
    let r = server.client.post(&launch_api).basic_auth("ehr", Some("wrong")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = server.client.post(&launch_api).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = server
        .client
        .post(&launch_api)
        .basic_auth("ehr", Some(&secret))
        .json(&json!({"patient": "nobody"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = server.client.post(&launch_api).basic_auth("ehr", Some(&secret)).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let launch = r.json::<Value>().await.unwrap()["launch"].as_str().unwrap().to_owned();

    let browser = Browser::new();
    let url = authorize_url(&server, "growth", "launch openid fhirUser patient/*.rs", &[("launch", &launch)]);
    let after = sign_in(&browser, &server, &url, "carol", PASSWORD).await;
    let page = follow(&browser, &server, &after).await;
    assert!(page.body.contains("Carol Other"), "the launch patient is named: {}", page.body);
    let form = [
        ("req", hidden(&page.body, "req")),
        ("csrf", hidden(&page.body, "csrf")),
        ("decision", "allow".into()),
        ("scope", "patient/*.rs".into()),
        ("scope", "identity".into()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = browser.post(&format!("{}/auth/consent", server.origin), &form).await;
    let (s, t) = exchange(&server, &param(done.location.as_ref().unwrap(), "code").unwrap()).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(t["patient"], "p3");
    assert_eq!(t["encounter"], "e1");
    assert_eq!(t["fhirContext"], json!([{"reference": "Encounter/e1"}]));
    assert_eq!(t["need_patient_banner"], false);
    assert_eq!(t["smart_style_url"], "https://ehr.example/style.json");
    assert!(t["scope"].as_str().unwrap().split(' ').any(|s| s == "launch"));
    // The launch value is single use.
    let page = browser.get(&authorize_url(&server, "growth", "launch patient/*.rs", &[("launch", &launch)])).await;
    assert_eq!(param(&page.location.unwrap(), "error").as_deref(), Some("invalid_request"));
}

async fn sign_in_failures_say_nothing_about_accounts(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let browser = Browser::new();
    let url = authorize_url(&server, "growth", "launch/patient patient/*.rs", &[]);
    let unknown = sign_in(&browser, &server, &url, "nobody-here", PASSWORD).await;
    let wrong = sign_in(&browser, &server, &url, "alice", "wrong password").await;
    assert_eq!(unknown.status, 401);
    assert_eq!(wrong.status, 401);
    let message = |p: &Page| p.body.split("id=\"signin-error\">").nth(1).unwrap().split('<').next().unwrap().to_owned();
    assert_eq!(message(&unknown), message(&wrong));
    // After five failures the account is paused: even the right password is refused, in the same words.
    for _ in 0..4 {
        sign_in(&browser, &server, &url, "alice", "wrong password").await;
    }
    let locked = sign_in(&browser, &server, &url, "alice", PASSWORD).await;
    assert_eq!(locked.status, 401);
    assert_eq!(message(&locked), message(&wrong));
    server.clock.advance(15 * 60 + 1);
    let ok = sign_in(&browser, &server, &url, "alice", PASSWORD).await;
    assert_eq!(ok.status, 303, "unlocked after the pause");
    // Usernames are matched ignoring case.
    let ok = sign_in(&Browser::new(), &server, &url, "ALICE", PASSWORD).await;
    assert_eq!(ok.status, 303);
}

async fn forms_are_bound_to_their_browser(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let browser = Browser::new();
    let after = sign_in(
        &browser,
        &server,
        &authorize_url(&server, "growth", "launch/patient patient/*.rs", &[]),
        "carol",
        PASSWORD,
    )
    .await;
    let page = follow(&browser, &server, &after).await;
    let (req, csrf) = (hidden(&page.body, "req"), hidden(&page.body, "csrf"));
    // Wrong CSRF value.
    let bad = browser
        .post(&format!("{}/auth/consent", server.origin), &[("req", &req), ("csrf", "forged"), ("decision", "allow")])
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.location.is_none());
    // Another browser with the right values.
    let other = Browser::new();
    let stolen = other
        .post(&format!("{}/auth/consent", server.origin), &[("req", &req), ("csrf", &csrf), ("decision", "allow")])
        .await;
    assert_eq!(stolen.status, 400);
    assert!(stolen.body.contains("another browser"));
    // Deny goes back with access_denied; the request is then used up.
    let denied = browser
        .post(&format!("{}/auth/consent", server.origin), &[("req", &req), ("csrf", &csrf), ("decision", "deny")])
        .await;
    let location = denied.location.unwrap();
    assert_eq!(param(&location, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&location, "state").as_deref(), Some("st-123"));
    let again = browser
        .post(&format!("{}/auth/consent", server.origin), &[("req", &req), ("csrf", &csrf), ("decision", "allow")])
        .await;
    assert_eq!(again.status, 400);
    // A signed-in browser goes straight to consent next time.
    let second = browser.get(&authorize_url(&server, "growth", "launch/patient patient/*.rs", &[])).await;
    assert!(second.location.unwrap().starts_with("/auth/consent"));
    // prompt=none cannot succeed (Portico always asks).
    let none =
        browser.get(&authorize_url(&server, "growth", "launch/patient patient/*.rs", &[("prompt", "none")])).await;
    assert_eq!(param(&none.location.unwrap(), "error").as_deref(), Some("consent_required"));
}

async fn dynamic_registration(backend: Backend) {
    let Some(server) =
        TestServer::start_with(backend, |c| c.auth.registration_tokens = vec!["init-token".into()]).await
    else {
        return;
    };
    let url = format!("{}/auth/register", server.origin);
    let public = json!({"client_name": "Tiny App", "redirect_uris": ["https://tiny.example/cb"], "token_endpoint_auth_method": "none", "scope": "launch/patient patient/*.rs openid system/*.rs"});
    let r = server.client.post(&url).json(&public).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.unwrap();
    assert!(v["client_id"].as_str().is_some_and(|c| c.len() > 10));
    assert!(v.get("client_secret").is_none());
    assert_eq!(v["scope"], "openid launch/patient patient/*.rs", "system scopes are not for self-registered apps");
    // Confidential apps need the initial access token.
    let confidential = json!({"client_name": "Secret App", "redirect_uris": ["https://s.example/cb"], "token_endpoint_auth_method": "client_secret_basic"});
    let r = server.client.post(&url).json(&confidential).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = server.client.post(&url).bearer_auth("init-token").json(&confidential).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let v: Value = r.json().await.unwrap();
    assert!(v["client_secret"].as_str().is_some_and(|s| s.len() >= 32));
    // Bad metadata.
    for (body, error) in [
        (
            json!({"client_name": "X", "redirect_uris": ["http://plain.example/cb"], "token_endpoint_auth_method": "none"}),
            "invalid_redirect_uri",
        ),
        (
            json!({"client_name": "X", "redirect_uris": "https://x/cb", "token_endpoint_auth_method": "none"}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_name": "", "redirect_uris": ["https://x.example/cb"], "token_endpoint_auth_method": "none"}),
            "invalid_client_metadata",
        ),
        (
            json!({"client_name": "X", "redirect_uris": ["https://x.example/cb"], "token_endpoint_auth_method": "none", "grant_types": ["implicit"]}),
            "invalid_client_metadata",
        ),
        (json!([1, 2]), "invalid_client_metadata"),
    ] {
        let r = server.client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], error, "{body}");
    }
    let r = server.client.post(&url).body("{not json").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

async fn key_rotation_keeps_issued_tokens_valid(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let browser = Browser::new();
    let back = approve(&server, &browser, "launch/patient offline_access patient/*.rs", Some("p1"), &[]).await;
    let (_, old) = exchange(&server, &param(&back, "code").unwrap()).await;
    let old_kid = jsonwebtoken::decode_header(old["access_token"].as_str().unwrap()).unwrap().kid.unwrap();
    // Access tokens are ES256 by default; ID tokens RS256.
    let header = jsonwebtoken::decode_header(old["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    let new_kid = server.auth.rotate_keys(auth::keys::SigningAlg::Es256).await.unwrap();
    assert_ne!(old_kid, new_kid);
    let jwks: Value =
        server.client.get(format!("{}/auth/jwks", server.origin)).send().await.unwrap().json().await.unwrap();
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()), "{kids:?}");
    let (s, _) = fhir_get(&server, old["access_token"].as_str().unwrap(), "Patient/p1").await;
    assert_eq!(s, 200, "a token signed before the rotation still verifies");
    let (_, _, fresh) = token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", old["refresh_token"].as_str().unwrap()),
            ("client_id", "growth"),
        ],
    )
    .await;
    let fresh_kid = jsonwebtoken::decode_header(fresh["access_token"].as_str().unwrap()).unwrap().kid.unwrap();
    assert_eq!(fresh_kid, new_kid);
    // After the publication window the old key is gone from the JWKS.
    server.clock.advance(2 * 3600);
    let jwks: Value =
        server.client.get(format!("{}/auth/jwks", server.origin)).send().await.unwrap().json().await.unwrap();
    let kids: Vec<&str> = jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert!(!kids.contains(&old_kid.as_str()), "{kids:?}");
}

async fn online_access_ends_with_the_session(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let browser = Browser::new();
    let back = approve(&server, &browser, "launch/patient online_access patient/*.rs", Some("p1"), &[]).await;
    let (s, t) = exchange(&server, &param(&back, "code").unwrap()).await;
    assert_eq!(s, 200, "{t}");
    let rt = t["refresh_token"].as_str().expect("online_access gives a refresh token").to_owned();
    let (s, _, refreshed) =
        token(&server, &[("grant_type", "refresh_token"), ("refresh_token", &rt), ("client_id", "growth")]).await;
    assert_eq!(s, 200, "{refreshed}");
    // Signing out (the account pages share the session) ends the grant.
    let apps = browser.get(&format!("{}/account/apps", server.origin)).await;
    let csrf = hidden(&apps.body, "csrf");
    let out = browser.post(&format!("{}/account/signout", server.origin), &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    let (_, _, v) = token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refreshed["refresh_token"].as_str().unwrap()),
            ("client_id", "growth"),
        ],
    )
    .await;
    assert_eq!(v["error"], "invalid_grant");
    assert_eq!(fhir_get(&server, refreshed["access_token"].as_str().unwrap(), "Patient/p1").await.0, 401);
    // An online grant without sign-out still ends when the session expires.
    let browser = Browser::new();
    let back = approve(&server, &browser, "launch/patient online_access patient/*.rs", Some("p1"), &[]).await;
    let (_, t) = exchange(&server, &param(&back, "code").unwrap()).await;
    server.clock.advance(12 * 3600 + 1);
    let (_, _, v) = token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
            ("client_id", "growth"),
        ],
    )
    .await;
    assert_eq!(v["error"], "invalid_grant");
}

both_backends!(
    online_access_ends_with_the_session,
    discovery_documents,
    standalone_launch_with_picker_and_choices,
    code_is_single_use_and_reuse_revokes,
    authorize_errors,
    token_errors,
    refresh_rotation_narrowing_and_reuse,
    public_refresh_without_client_id,
    confidential_refresh_needs_authentication,
    introspection_and_revocation,
    confidential_client_authentication,
    backend_services,
    ehr_launch,
    sign_in_failures_say_nothing_about_accounts,
    forms_are_bound_to_their_browser,
    dynamic_registration,
    key_rotation_keeps_issued_tokens_valid,
);

/// A backend client's token by the SMART Backend Services flow (a signed assertion).
pub async fn backend_token(server: &TestServer, client: &str, scopes: &str) -> String {
    let (jwks, key, kid) = backend_keys();
    register_with(server, client, ClientType::ConfidentialAsymmetric, vec![], scopes, Some(jwks), false).await;
    let aud = format!("{}/auth/token", server.origin);
    let jwt = assertion(&key, &kid, client, &aud, &format!("jti-{client}"), server.auth.now() + 240);
    let (status, _, t) = token(
        server,
        &[
            ("grant_type", "client_credentials"),
            ("scope", scopes),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("client_assertion", &jwt),
        ],
    )
    .await;
    assert_eq!(status, 200, "{t}");
    t["access_token"].as_str().unwrap().to_owned()
}
