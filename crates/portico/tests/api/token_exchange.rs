//! RFC 8693 token exchange at `/auth/token`: an app hands a narrower token to a registered
//! helper service (a CDS Hooks service). The child token works for what it was narrowed to and
//! nothing else, dies with its parent, and shows on Connected apps under the app that shared it.

use oauth::register::DEFAULT_APP_SCOPES;
use serde_json::Value;
use store::auth::ClientType;

use crate::both_backends;
use crate::harness::{Backend, TestServer};
use crate::smart::{approve, exchange, fhir_get, param, register, setup, token, Browser, REDIRECT};

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const APP_SCOPE: &str = "launch/patient offline_access patient/Observation.rs patient/Condition.rs patient/Patient.rs";

/// Exchange `subject` (as the public app `growth`) for a token for `audience`.
async fn exchange_for(server: &TestServer, subject: &str, audience: &str, scope: Option<&str>) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", GRANT_TYPE),
        ("client_id", "growth"),
        ("subject_token", subject),
        ("subject_token_type", ACCESS_TOKEN),
        ("audience", audience),
    ];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    let (status, _, body) = token(server, &form).await;
    (status, body)
}

/// A confidential service registered for `scopes`; returns its secret.
async fn service(server: &TestServer, id: &str, scopes: &str) -> String {
    register(server, id, ClientType::ConfidentialSymmetric, vec![], scopes).await.client_secret.unwrap()
}

async fn connect(server: &TestServer, browser: &Browser) -> Value {
    server
        .seed(vec![
            serde_json::json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "Glucose"}, "subject": {"reference": "Patient/p1"}}),
            serde_json::json!({"resourceType": "Observation", "id": "o3", "status": "final", "code": {"text": "Glucose"}, "subject": {"reference": "Patient/p3"}}),
            serde_json::json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}, "code": {"text": "Asthma"}}),
        ])
        .await;
    let back = approve(server, browser, APP_SCOPE, Some("p1"), &[]).await;
    let (status, tokens) = exchange(server, &param(&back, "code").unwrap()).await;
    assert_eq!(status, 200, "{tokens}");
    tokens
}

async fn narrower_token_for_a_service(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    service(&server, "cds", "patient/Observation.rs patient/Condition.rs").await;
    let browser = Browser::new();
    let app = connect(&server, &browser).await;
    let subject = app["access_token"].as_str().unwrap();

    // Discovery says the grant type is there.
    let (_, smart) = server.get(".well-known/smart-configuration").await;
    assert!(smart["grant_types_supported"].as_array().unwrap().iter().any(|g| g == GRANT_TYPE), "{smart}");

    let (status, child) = exchange_for(&server, subject, "cds", Some("patient/Observation.rs")).await;
    assert_eq!(status, 200, "{child}");
    assert_eq!(child["issued_token_type"], ACCESS_TOKEN);
    assert_eq!(child["token_type"], "Bearer");
    assert_eq!(child["scope"], "patient/Observation.rs");
    assert_eq!(child["patient"], "p1");
    assert!(child.get("refresh_token").is_none(), "no long-lived access for this service: {child}");
    assert!(child["expires_in"].as_i64().unwrap() <= app["expires_in"].as_i64().unwrap());
    let narrow = child["access_token"].as_str().unwrap();

    // What it was narrowed to works; nothing else does.
    let (s, bundle) = fhir_get(&server, narrow, "Observation?patient=p1").await;
    assert_eq!(s, 200, "{bundle}");
    assert_eq!(bundle["entry"].as_array().map_or(0, Vec::len), 1);
    assert_eq!(fhir_get(&server, narrow, "Observation/o1").await.0, 200);
    assert_eq!(fhir_get(&server, narrow, "Observation/o3").await.0, 404, "another patient's record");
    assert_eq!(fhir_get(&server, narrow, "Condition/c1").await.0, 403, "not in the exchanged scopes");
    assert_eq!(fhir_get(&server, narrow, "Patient/p1").await.0, 403);
    // Introspection names the service as the client.
    let r = server
        .client
        .post(format!("{}/auth/introspect", server.origin))
        .bearer_auth(narrow)
        .form(&[("token", narrow)])
        .send()
        .await
        .unwrap();
    let info: Value = r.json().await.unwrap();
    assert_eq!((info["active"].as_bool(), info["client_id"].as_str()), (Some(true), Some("cds")), "{info}");

    // Without `scope`: what the subject token and the service's registration both allow.
    let (status, both) = exchange_for(&server, subject, "cds", None).await;
    assert_eq!(status, 200, "{both}");
    assert_eq!(both["scope"], "patient/Condition.rs patient/Observation.rs");

    // The audit trail records who shared what with whom.
    server.audit.flush().await;
    let records = server.store.audit_events(&store::AuditQuery { limit: 100, ..Default::default() }).await.unwrap();
    let shared = records.iter().find(|r| r.interaction == "token-exchange").expect("an audit entry");
    assert_eq!(shared.client_id.as_deref(), Some("cds"));
    assert_eq!(shared.patient_id.as_deref(), Some("p1"));
    assert!(shared.detail.as_deref().unwrap().contains("App growth shared access with App cds"), "{shared:?}");

    // A subscription made with the app's token is listed under the app too.
    let sub = serde_json::json!({
        "resourceType": "Subscription", "status": "requested", "reason": "labs",
        "criteria": "https://portico.dev/fhir/SubscriptionTopic/lab-result-added",
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook", "payload": "application/fhir+json"}
    });
    let r = server.client.post(server.url("Subscription")).bearer_auth(subject).json(&sub).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let sub_id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    // Connected apps shows it under the app that shared it, and the parent's revocation ends it.
    let page = browser.get(&format!("{}/account/apps", server.origin)).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Sends updates: A laboratory result added — to 127.0.0.1:9"), "{}", page.body);
    assert!(page.body.contains("Shared by App growth with App cds"), "{}", page.body);
    assert_eq!(page.body.matches("<section class=\"grant\"").count(), 1, "children are not separate apps");
    let r = server
        .client
        .post(format!("{}/auth/revoke", server.origin))
        .form(&[("token", subject), ("client_id", "growth")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(fhir_get(&server, narrow, "Observation/o1").await.0, 401, "the child dies with its parent");
    let off = server.store.subscription(&sub_id).await.unwrap().unwrap();
    assert_eq!(off.status, store::subscriptions::SubscriptionStatus::Off, "subscriptions end with the grant");
    assert_eq!(fhir_get(&server, both["access_token"].as_str().unwrap(), "Observation/o1").await.0, 401);
    let (status, dead) = exchange_for(&server, subject, "cds", None).await;
    assert_eq!((status, dead["error"].as_str()), (400, Some("invalid_request")), "{dead}");
}

async fn broadening_and_foreign_tokens_are_refused(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    service(&server, "cds", "patient/*.rs").await;
    register(&server, "other", ClientType::Public, vec![REDIRECT.into()], DEFAULT_APP_SCOPES).await;
    let browser = Browser::new();
    let app = connect(&server, &browser).await;
    let subject = app["access_token"].as_str().unwrap();
    let refused = |status: u16, body: &Value| (status, body["error"].as_str().unwrap_or_default().to_owned());

    // Broader than the subject token, or a scope it never had.
    let (s, v) = exchange_for(&server, subject, "cds", Some("patient/*.rs")).await;
    assert_eq!(refused(s, &v), (400, "invalid_scope".into()), "{v}");
    let (s, v) = exchange_for(&server, subject, "cds", Some("patient/Observation.cruds")).await;
    assert_eq!(refused(s, &v), (400, "invalid_scope".into()), "{v}");
    let (s, v) = exchange_for(&server, subject, "cds", Some("patient/Encounter.rs")).await;
    assert_eq!(refused(s, &v), (400, "invalid_scope".into()), "{v}");
    // Long-lived access for a service that is not registered for it.
    let (s, v) = exchange_for(&server, subject, "cds", Some("offline_access patient/Observation.rs")).await;
    assert_eq!(refused(s, &v), (400, "invalid_scope".into()), "{v}");
    // Unknown or missing audience.
    let (s, v) = exchange_for(&server, subject, "nobody", Some("patient/Observation.rs")).await;
    assert_eq!(refused(s, &v), (400, "invalid_target".into()), "{v}");
    let (s, _, v) = token(
        &server,
        &[
            ("grant_type", GRANT_TYPE),
            ("client_id", "growth"),
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
        ],
    )
    .await;
    assert_eq!(refused(s, &v), (400, "invalid_target".into()), "{v}");
    // Subject token problems: garbage, wrong type, missing type, another client's token.
    let (s, v) = exchange_for(&server, "not-a-token", "cds", None).await;
    assert_eq!(refused(s, &v), (400, "invalid_request".into()), "{v}");
    let (s, _, v) = token(
        &server,
        &[
            ("grant_type", GRANT_TYPE),
            ("client_id", "growth"),
            ("subject_token", subject),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:id_token"),
            ("audience", "cds"),
        ],
    )
    .await;
    assert_eq!(refused(s, &v), (400, "invalid_request".into()), "{v}");
    let (s, _, v) = token(
        &server,
        &[("grant_type", GRANT_TYPE), ("client_id", "growth"), ("subject_token", subject), ("audience", "cds")],
    )
    .await;
    assert_eq!(refused(s, &v), (400, "invalid_request".into()), "{v}");
    let (s, _, v) = token(
        &server,
        &[
            ("grant_type", GRANT_TYPE),
            ("client_id", "other"),
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", "cds"),
        ],
    )
    .await;
    assert_eq!(refused(s, &v), (400, "invalid_request".into()), "{v}");
    assert!(v["error_description"].as_str().unwrap().contains("another client"), "{v}");
    // Without any client identification.
    let (s, _, v) = token(
        &server,
        &[
            ("grant_type", GRANT_TYPE),
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("audience", "cds"),
        ],
    )
    .await;
    assert_eq!(refused(s, &v), (401, "invalid_client".into()), "{v}");
    // A requested token type other than an access token.
    let (s, _, v) = token(
        &server,
        &[
            ("grant_type", GRANT_TYPE),
            ("client_id", "growth"),
            ("subject_token", subject),
            ("subject_token_type", ACCESS_TOKEN),
            ("requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token"),
            ("audience", "cds"),
        ],
    )
    .await;
    assert_eq!(refused(s, &v), (400, "invalid_request".into()), "{v}");
    // An exchanged token cannot be broadened by exchanging it again either (it is the service's,
    // and its scopes bound any further exchange).
    let (s, child) = exchange_for(&server, subject, "cds", Some("patient/Observation.rs")).await;
    assert_eq!(s, 200, "{child}");
    let (s, v) = exchange_for(&server, child["access_token"].as_str().unwrap(), "cds", None).await;
    assert_eq!(refused(s, &v), (400, "invalid_request".into()), "issued to cds, presented by growth: {v}");
    // A refused exchange leaves the subject token working.
    assert_eq!(fhir_get(&server, subject, "Condition/c1").await.0, 200);
}

async fn long_lived_service_access_ends_with_the_parent(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let secret = service(&server, "watcher", "offline_access patient/Observation.rs").await;
    let browser = Browser::new();
    let app = connect(&server, &browser).await;
    let subject = app["access_token"].as_str().unwrap();
    let (s, child) = exchange_for(&server, subject, "watcher", None).await;
    assert_eq!(s, 200, "{child}");
    assert_eq!(child["scope"], "offline_access patient/Observation.rs");
    let refresh = child["refresh_token"].as_str().expect("long-lived access: a refresh token").to_owned();
    // The service refreshes with its own credentials; the new token keeps the narrow scope.
    let refresh_as_service = |rt: String| {
        let server = &server;
        let secret = secret.clone();
        async move {
            let r = server
                .client
                .post(format!("{}/auth/token", server.origin))
                .basic_auth("watcher", Some(secret))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", rt.as_str())])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, renewed) = refresh_as_service(refresh).await;
    assert_eq!(s, 200, "{renewed}");
    assert_eq!(renewed["scope"], "offline_access patient/Observation.rs");
    let renewed_at = renewed["access_token"].as_str().unwrap();
    assert_eq!(fhir_get(&server, renewed_at, "Observation/o1").await.0, 200);
    assert_eq!(fhir_get(&server, renewed_at, "Condition/c1").await.0, 403);

    // The person revokes the app on Connected apps: the service's access ends too.
    let page = browser.get(&format!("{}/account/apps", server.origin)).await;
    assert!(page.body.contains("Shared by App growth with App watcher"), "{}", page.body);
    let grant = crate::smart::hidden(&page.body, "grant");
    let csrf = crate::smart::hidden(&page.body, "csrf");
    let done =
        browser.post(&format!("{}/account/apps/revoke", server.origin), &[("csrf", &csrf), ("grant", &grant)]).await;
    assert_eq!(done.status, 303);
    assert_eq!(fhir_get(&server, renewed_at, "Observation/o1").await.0, 401);
    let (s, v) = refresh_as_service(renewed["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")), "{v}");
    let after = browser.get(&format!("{}/account/apps", server.origin)).await;
    assert!(after.body.contains("Shared by App growth with App watcher") && after.body.contains("Revoked"));
}

both_backends!(
    narrower_token_for_a_service,
    broadening_and_foreign_tokens_are_refused,
    long_lived_service_access_ends_with_the_parent,
);
