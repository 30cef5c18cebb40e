//! Single-task action links: `POST Task/{id}/$action-link` mints a link for one prior
//! authorization; the person opens `/act/{secret}` and approves or declines behind the link's
//! policy (click-through, PIN, sign-in); the Task and its Claim record the decision, the link
//! dies, and it never reads or writes anything else.

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{Backend, TestServer};
use crate::smart::{approve, backend_token, exchange, fhir_get, hidden, param, setup, Browser, Page, PASSWORD};

const STAFF_SCOPES: &str = "system/Task.rus system/Claim.rus";

fn prior_auth(task: &str, claim: &str, patient: &str) -> Vec<Value> {
    vec![
        json!({"resourceType": "Claim", "id": claim, "status": "draft", "use": "preauthorization",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
            "patient": {"reference": format!("Patient/{patient}")}, "created": "2026-11-30",
            "provider": {"reference": "Practitioner/dr"}, "insurer": {"reference": "Organization/plan"},
            "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
            "insurance": [{"sequence": 1, "focal": true, "coverage": {"display": "Acme Gold"}}],
            "item": [{"sequence": 1, "productOrService": {"text": "MRI of the left knee"}}],
            "total": {"value": 1250.0, "currency": "USD"}}),
        json!({"resourceType": "Task", "id": task, "status": "requested", "intent": "order",
            "for": {"reference": format!("Patient/{patient}")}, "focus": {"reference": format!("Claim/{claim}")},
            "requester": {"reference": "Practitioner/dr"},
            "description": "Your knee MRI needs your health plan's approval first."}),
    ]
}

async fn seed(server: &TestServer) {
    setup(server).await;
    let mut resources = vec![
        json!({"resourceType": "Practitioner", "id": "dr", "name": [{"prefix": ["Dr."], "given": ["Jane"], "family": "Smith"}]}),
        json!({"resourceType": "Organization", "id": "plan", "name": "Acme Health Plan"}),
        json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "Glucose tolerance"},
            "subject": {"reference": "Patient/p1"}}),
    ];
    resources.extend(prior_auth("t1", "c1", "p1"));
    resources.extend(prior_auth("t2", "c2", "p2"));
    resources.push(json!({"resourceType": "Task", "id": "t-obs", "status": "requested", "intent": "order",
        "for": {"reference": "Patient/p1"}, "focus": {"reference": "Observation/o1"}}));
    server.seed(resources).await;
}

async fn mint(server: &TestServer, bearer: &str, task: &str, params: Value) -> (u16, Value) {
    let body = json!({"resourceType": "Parameters", "parameter": params});
    let r = server
        .client
        .post(server.url(&format!("Task/{task}/$action-link")))
        .bearer_auth(bearer)
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn out<'a>(parameters: &'a Value, name: &str) -> Option<&'a Value> {
    parameters["parameter"].as_array()?.iter().find(|p| p["name"] == name)
}

/// Mint with `policy`; returns (url, pin).
async fn link(server: &TestServer, bearer: &str, task: &str, policy: &str) -> (String, Option<String>) {
    let (status, body) = mint(server, bearer, task, json!([{"name": "policy", "valueCode": policy}])).await;
    assert_eq!(status, 200, "{body}");
    let url = out(&body, "url").unwrap()["valueUrl"].as_str().unwrap().to_owned();
    let pin = out(&body, "pin").map(|p| p["valueString"].as_str().unwrap().to_owned());
    (url, pin)
}

async fn read(server: &TestServer, path: &str) -> Value {
    let (status, body) = server.get(path).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn output_code(task: &Value, code: &str) -> Value {
    task["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["type"]["coding"][0]["code"] == code)
        .cloned()
        .unwrap_or(Value::Null)
}

async fn decide(browser: &Browser, url: &str, page: &Page, decision: &str, pin: Option<&str>) -> Page {
    let csrf = hidden(&page.body, "csrf");
    let mut form = vec![("csrf", csrf.as_str()), ("step", "decide"), ("decision", decision)];
    if let Some(pin) = pin {
        form.push(("pin", pin));
    }
    browser.post(url, &form).await
}

async fn click_through_link_decides_one_prior_authorization(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    seed(&server).await;
    let staff = backend_token(&server, "pa-desk", STAFF_SCOPES).await;
    let (status, minted) = mint(&server, &staff, "t1", json!([{"name": "policy", "valueCode": "click-through"}])).await;
    assert_eq!(status, 200, "{minted}");
    let url = out(&minted, "url").unwrap()["valueUrl"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("{}/act/", server.origin)), "{url}");
    assert!(out(&minted, "pin").is_none());
    assert!(out(&minted, "expires").unwrap()["valueInstant"].as_str().unwrap().ends_with('Z'));

    // The patient's app finds the open to-do, with its link, by an ordinary search.
    let browser = Browser::new();
    let back = approve(&server, &browser, "launch/patient patient/Task.rs", Some("p1"), &[]).await;
    let (_, tokens) = exchange(&server, &param(&back, "code").unwrap()).await;
    let app = tokens["access_token"].as_str().unwrap();
    let (status, found) = fhir_get(&server, app, "Task?patient=p1&status=requested").await;
    assert_eq!(status, 200, "{found}");
    let tasks: Vec<&Value> = found["entry"].as_array().unwrap().iter().map(|e| &e["resource"]).collect();
    let t1 = tasks.iter().find(|t| t["id"] == "t1").expect("t1 is listed");
    let input = &t1["input"][0];
    assert_eq!(input["type"]["coding"][0]["system"], tasks::IO_SYSTEM);
    assert_eq!(input["type"]["coding"][0]["code"], "action-link");
    assert_eq!(input["valueUrl"], url.as_str());
    assert_eq!(input["extension"][0]["valueCode"], "click-through");

    // The page shows that one request in plain words, and nothing else from the record.
    let person = Browser::new();
    let page = person.get(&url).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for words in [
        "Approve a prior authorization request",
        "MRI of the left knee",
        "Acme Health Plan",
        "Dr. Jane Smith",
        "Alice Member",
        "1250.00 USD",
    ] {
        assert!(page.body.contains(words), "missing {words}:\n{}", page.body);
    }
    assert!(!page.body.contains("Glucose"), "the page shows only the request");
    // The link's secret is no token for the API.
    let secret = url.rsplit('/').next().unwrap();
    assert_eq!(fhir_get(&server, secret, "Observation/o1").await.0, 401);
    assert_eq!(fhir_get(&server, secret, "Task/t1").await.0, 401);
    // A form from elsewhere (no cookie, no CSRF value) changes nothing.
    let forged = Browser::new().post(&url, &[("step", "decide"), ("decision", "approve"), ("csrf", "x")]).await;
    assert_eq!(forged.status, 400);
    assert_eq!(read(&server, "Task/t1").await["status"], "requested");

    let done = decide(&person, &url, &page, "approve", None).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("Your answer was recorded"), "{}", done.body);

    let task = read(&server, "Task/t1").await;
    assert_eq!(task["status"], "completed");
    assert_eq!(output_code(&task, "decision")["valueCodeableConcept"]["coding"][0]["code"], "approved");
    assert_eq!(output_code(&task, "decided-by")["valueReference"]["display"], "The holder of the link");
    assert!(output_code(&task, "decided-at")["valueDateTime"].is_string());
    assert!(task["lastModified"].is_string());
    assert_eq!(read(&server, "Claim/c1").await["status"], "active");
    // Nothing else changed: the other request is still open.
    assert_eq!(read(&server, "Task/t2").await["status"], "requested");
    assert_eq!(read(&server, "Claim/c2").await["status"], "draft");

    // The link is spent.
    let again = person.get(&url).await;
    assert_eq!(again.status, 410);
    assert!(again.body.contains("This link has been used") && again.body.contains("approved"), "{}", again.body);
    let replay = decide(&person, &url, &page, "decline", None).await;
    assert_eq!(replay.status, 410);
    assert_eq!(read(&server, "Claim/c1").await["status"], "active");
    // No longer among the open to-dos.
    let (_, found) = fhir_get(&server, app, "Task?patient=p1&status=requested").await;
    assert!(!found["entry"].as_array().map(|e| e.iter().any(|e| e["resource"]["id"] == "t1")).unwrap_or(false));
    // A link nobody minted.
    assert_eq!(person.get(&format!("{}/act/not-a-link", server.origin)).await.status, 404);

    // Audited: the minting (an operation by the desk's client) and the decision.
    server.audit.flush().await;
    let trail = server
        .store
        .audit_events(&store::AuditQuery { patients: Some(vec!["p1".into()]), limit: 100, ..Default::default() })
        .await
        .unwrap();
    let decision = trail.iter().find(|r| r.interaction == "action-link").expect("the decision is audited");
    assert_eq!(decision.resource_id.as_deref(), Some("t1"));
    assert!(decision.detail.as_deref().unwrap().starts_with("approved Task/t1"), "{decision:?}");
    assert!(trail
        .iter()
        .any(|r| r.detail.as_deref() == Some("$action-link") && r.client_id.as_deref() == Some("pa-desk")));
}

async fn pin_link_counts_wrong_pins_and_locks(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    seed(&server).await;
    let staff = backend_token(&server, "pa-desk", STAFF_SCOPES).await;
    let (url, pin) = link(&server, &staff, "t1", "pin").await;
    let pin = pin.expect("a pin link comes with its PIN");
    assert!(pin.len() == 6 && pin.bytes().all(|b| b.is_ascii_digit()), "{pin}");
    let wrong = if pin == "000000" { "111111" } else { "000000" };

    let person = Browser::new();
    let page = person.get(&url).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Enter your PIN"));
    assert!(!page.body.contains("MRI"), "nothing is shown before the PIN");
    let csrf = hidden(&page.body, "csrf");
    let bad = person.post(&url, &[("csrf", &csrf), ("step", "pin"), ("pin", wrong)]).await;
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("4 attempts left"), "{}", bad.body);
    // Deciding with a wrong PIN counts too, and decides nothing.
    let bad = person.post(&url, &[("csrf", &csrf), ("step", "decide"), ("decision", "approve"), ("pin", wrong)]).await;
    assert_eq!(bad.status, 401);
    assert_eq!(read(&server, "Task/t1").await["status"], "requested");
    let shown = person.post(&url, &[("csrf", &csrf), ("step", "pin"), ("pin", &pin)]).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert!(shown.body.contains("MRI of the left knee"));
    let done = decide(&person, &url, &shown, "decline", Some(&pin)).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let task = read(&server, "Task/t1").await;
    assert_eq!(task["status"], "rejected");
    assert_eq!(output_code(&task, "decision")["valueCodeableConcept"]["coding"][0]["code"], "declined");
    assert_eq!(output_code(&task, "decided-by")["valueReference"]["display"], "The holder of the link and its PIN");
    assert_eq!(read(&server, "Claim/c1").await["status"], "cancelled");

    // Five wrong PINs lock a link for good, even against the right one.
    let (url, pin) = link(&server, &staff, "t2", "pin").await;
    let pin = pin.unwrap();
    let wrong = if pin == "000000" { "111111" } else { "000000" };
    let page = person.get(&url).await;
    let csrf = hidden(&page.body, "csrf");
    for attempt in 1..=5 {
        let r = person.post(&url, &[("csrf", &csrf), ("step", "pin"), ("pin", wrong)]).await;
        if attempt < 5 {
            assert_eq!(r.status, 401, "attempt {attempt}");
        } else {
            assert_eq!(r.status, 410, "attempt {attempt}: {}", r.body);
            assert!(r.body.contains("This link is locked"));
        }
    }
    let r = person.post(&url, &[("csrf", &csrf), ("step", "pin"), ("pin", &pin)]).await;
    assert_eq!(r.status, 410);
    assert_eq!(read(&server, "Task/t2").await["status"], "requested");
    server.audit.flush().await;
    let trail = server
        .store
        .audit_events(&store::AuditQuery { patients: Some(vec!["p2".into()]), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(trail.iter().filter(|r| r.interaction == "action-link" && r.outcome == 4).count(), 5);
}

async fn sign_in_link_is_for_the_patient_or_their_proxy(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    seed(&server).await;
    let staff = backend_token(&server, "pa-desk", STAFF_SCOPES).await;
    // t2 is for p2, whom alice acts for.
    let (url, _) = link(&server, &staff, "t2", "sign-in").await;
    let person = Browser::new();
    let page = person.get(&url).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Sign in to continue") && !page.body.contains("MRI"));
    let csrf = hidden(&page.body, "csrf");
    let wrong_password =
        person.post(&url, &[("csrf", &csrf), ("step", "signin"), ("username", "carol"), ("password", "nope")]).await;
    assert_eq!(wrong_password.status, 401);
    // Carol is a patient, but not this one.
    let signed =
        person.post(&url, &[("csrf", &csrf), ("step", "signin"), ("username", "carol"), ("password", PASSWORD)]).await;
    assert_eq!(signed.status, 303);
    let other = person.get(&url).await;
    assert_eq!(other.status, 403);
    assert!(other.body.contains("for someone else") && !other.body.contains("MRI"), "{}", other.body);
    let refused = person.post(&url, &[("csrf", &csrf), ("step", "decide"), ("decision", "approve")]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(read(&server, "Task/t2").await["status"], "requested");
    let out = person.post(&url, &[("csrf", &csrf), ("step", "signout")]).await;
    assert_eq!(out.status, 303);
    assert!(person.get(&url).await.body.contains("Sign in to continue"));

    // Alice acts for p2: she sees and decides it, recorded as herself.
    let signed =
        person.post(&url, &[("csrf", &csrf), ("step", "signin"), ("username", "alice"), ("password", PASSWORD)]).await;
    assert_eq!(signed.status, 303);
    let shown = person.get(&url).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert!(shown.body.contains("Bobby Member"), "{}", shown.body);
    let done = decide(&person, &url, &shown, "approve", None).await;
    assert_eq!(done.status, 200, "{}", done.body);
    let task = read(&server, "Task/t2").await;
    assert_eq!(task["status"], "completed");
    assert_eq!(output_code(&task, "decided-by")["valueReference"]["reference"], "Patient/p1");
    assert_eq!(output_code(&task, "decided-by")["valueReference"]["display"], "Alice Member");
    assert_eq!(read(&server, "Claim/c2").await["status"], "active");
    server.audit.flush().await;
    let trail = server
        .store
        .audit_events(&store::AuditQuery { patients: Some(vec!["p2".into()]), limit: 100, ..Default::default() })
        .await
        .unwrap();
    let decision = trail.iter().find(|r| r.interaction == "action-link" && r.outcome == 0).unwrap();
    assert_eq!(decision.fhir_user.as_deref(), Some("Patient/p1"));
}

async fn links_expire_are_replaced_and_end_with_their_grant(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else { return };
    seed(&server).await;
    let staff = backend_token(&server, "pa-desk", STAFF_SCOPES).await;
    let person = Browser::new();

    // Bad requests: clear errors, nothing minted.
    let now = server.auth.now();
    let at = |secs: i64| tasks::fhir_instant(now + secs);
    for (task, params, want) in [
        ("t1", json!([{"name": "policy", "valueCode": "magic"}]), 422),
        ("t1", json!([]), 422),
        ("t1", json!([{"name": "policy", "valueCode": "pin"}, {"name": "expires", "valueDateTime": at(-60)}]), 422),
        (
            "t1",
            json!([{"name": "policy", "valueCode": "pin"}, {"name": "expires", "valueDateTime": at(90 * 86_400)}]),
            422,
        ),
        ("t1", json!([{"name": "policy", "valueCode": "pin"}, {"name": "expires", "valueDateTime": "soon"}]), 422),
        ("t-obs", json!([{"name": "policy", "valueCode": "pin"}]), 422),
        ("nosuch", json!([{"name": "policy", "valueCode": "pin"}]), 404),
    ] {
        let (status, body) = mint(&server, &staff, task, params.clone()).await;
        assert_eq!(status, want, "{task} {params}: {body}");
        assert_eq!(body["resourceType"], "OperationOutcome");
    }
    assert!(read(&server, "Task/t1").await.get("input").is_none());
    // Reading Tasks is not enough to mint; nor is a patient's app.
    let reader = backend_token(&server, "reader", "system/Task.rs system/Claim.rs").await;
    assert_eq!(mint(&server, &reader, "t1", json!([{"name": "policy", "valueCode": "pin"}])).await.0, 403);
    let browser = Browser::new();
    let back = approve(&server, &browser, "launch/patient patient/Task.rus patient/Claim.rus", Some("p1"), &[]).await;
    let (_, tokens) = exchange(&server, &param(&back, "code").unwrap()).await;
    let app = tokens["access_token"].as_str().unwrap();
    assert_eq!(mint(&server, app, "t1", json!([{"name": "policy", "valueCode": "pin"}])).await.0, 403);

    // Expiry.
    let (status, minted) = mint(
        &server,
        &staff,
        "t1",
        json!([{"name": "policy", "valueCode": "click-through"}, {"name": "expires", "valueDateTime": at(600)}]),
    )
    .await;
    assert_eq!(status, 200, "{minted}");
    let url = out(&minted, "url").unwrap()["valueUrl"].as_str().unwrap().to_owned();
    assert_eq!(person.get(&url).await.status, 200);
    server.clock.advance(601);
    let expired = person.get(&url).await;
    assert_eq!(expired.status, 410);
    assert!(expired.body.contains("This link has expired"));
    // (The desk's token expired too: backend tokens are short-lived.)
    let staff = backend_token(&server, "pa-desk-2", STAFF_SCOPES).await;

    // A new link replaces the old one: one live link, one input on the Task.
    let (first, _) = link(&server, &staff, "t1", "click-through").await;
    let (second, _) = link(&server, &staff, "t1", "click-through").await;
    let withdrawn = person.get(&first).await;
    assert_eq!(withdrawn.status, 410);
    assert!(withdrawn.body.contains("withdrawn"));
    assert_eq!(person.get(&second).await.status, 200);
    let task = read(&server, "Task/t1").await;
    let links: Vec<&Value> =
        task["input"].as_array().unwrap().iter().filter(|i| i["type"]["coding"][0]["code"] == "action-link").collect();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["valueUrl"], second.as_str());

    // A Task changed by staff after the link was made: the link says so and changes nothing.
    let page = person.get(&second).await;
    let mut cancelled = read(&server, "Task/t1").await;
    cancelled["status"] = json!("cancelled");
    assert_eq!(server.put("Task/t1", &cancelled).await.0, 200);
    let changed = decide(&person, &second, &page, "approve", None).await;
    assert_eq!(changed.status, 409, "{}", changed.body);
    assert_eq!(read(&server, "Claim/c1").await["status"], "draft");

    // Revoking the grant that minted a link ends the link.
    let (url, _) = link(&server, &staff, "t2", "click-through").await;
    let grant = server.store.action_links_for_task("t2").await.unwrap()[0].grant_id.clone().unwrap();
    server.store.revoke_grant(&grant.parse().unwrap(), "admin").await.unwrap();
    let gone = person.get(&url).await;
    assert_eq!(gone.status, 410, "{}", gone.body);
    assert!(gone.body.contains("withdrawn"));
}

both_backends!(
    click_through_link_decides_one_prior_authorization,
    pin_link_counts_wrong_pins_and_locks,
    sign_in_link_is_for_the_patient_or_their_proxy,
    links_expire_are_replaced_and_end_with_their_grant,
);
