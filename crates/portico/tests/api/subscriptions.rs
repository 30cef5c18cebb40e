//! Topic-based subscriptions (R5 Backport IG for R4) over HTTP, with a receiver inside the test:
//! topics and payload shapes, handshake and heartbeat, `$status` and `$events`, the grant's
//! bounds (end clamped, revocation, compartment, withheld and out-of-scope records), a
//! practitioner losing a patient, and retries in order after the receiver was down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use auth::{ScopeSet, SensitiveCategory};
use serde_json::{json, Value};
use store::auth::{ClientType, NewGrant, NewUser, Role};
use store::subscriptions::SubscriptionStatus;

use crate::both_backends;
use crate::harness::{Backend, TestServer};
use crate::smart::{register, REDIRECT};

const TOPIC: &str = "https://portico.dev/fhir/SubscriptionTopic/";
const BP: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

/// What the receiver got: (the Authorization header, the Bundle).
pub(crate) type Received = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// A rest-hook endpoint inside the test: records every notification; `down` makes it answer 500.
pub(crate) struct Receiver {
    pub(crate) url: String,
    got: Received,
    pub(crate) down: Arc<std::sync::atomic::AtomicBool>,
    arrived: Arc<tokio::sync::Notify>,
}

impl Receiver {
    pub(crate) async fn start() -> Receiver {
        let got: Received = Arc::default();
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let (g, d, a) = (got.clone(), down.clone(), arrived.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (g, d, a) = (g.clone(), d.clone(), a.clone());
                async move {
                    if d.load(std::sync::atomic::Ordering::SeqCst) {
                        a.notify_waiters();
                        return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
                    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    g.lock().unwrap().push((auth, value));
                    a.notify_waiters();
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, got, down, arrived }
    }

    /// Notifications for `sub` of `kind` received so far.
    pub(crate) fn of(&self, sub: &str, kind: &str) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b.clone())
            .filter(|b| {
                status_param(b, "subscription")["valueReference"]["reference"]
                    .as_str()
                    .is_some_and(|r| r.ends_with(&format!("/Subscription/{sub}")))
            })
            .filter(|b| status_param(b, "type")["valueCode"] == kind)
            .collect()
    }

    /// Wait (up to 15 s, woken by each arrival) until `sub` has `n` notifications of `kind`
    /// (for event notifications: `n` events, however they were batched).
    pub(crate) async fn wait_for(&self, sub: &str, kind: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let arrived = self.arrived.notified();
            let got = self.of(sub, kind);
            let count =
                if kind == "event-notification" { got.iter().map(|b| events_of(b).len()).sum() } else { got.len() };
            if count >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("waited 15 s for {n} {kind} notifications of {sub}; got {}", got.len());
            }
        }
    }
}

pub(crate) fn status_param<'a>(bundle: &'a Value, name: &str) -> &'a Value {
    bundle["entry"][0]["resource"]["parameter"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .unwrap_or(&Value::Null)
}

/// The event numbers and focus references of a notification.
pub(crate) fn events_of(bundle: &Value) -> Vec<(String, Option<String>)> {
    bundle["entry"][0]["resource"]["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "notification-event")
        .map(|p| {
            let part = |n: &str| p["part"].as_array().unwrap().iter().find(|x| x["name"] == n).cloned();
            let number = part("event-number").unwrap()["valueString"].as_str().unwrap().to_owned();
            let focus = part("focus").and_then(|f| f["valueReference"]["reference"].as_str().map(str::to_owned));
            (number, focus)
        })
        .collect()
}

async fn patient_user(server: &TestServer, username: &str, patients: &[&str]) {
    server
        .store
        .create_user(NewUser {
            username: username.into(),
            password_hash:
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g".into(),
            role: if username.starts_with("dr") { Role::Practitioner } else { Role::Patient },
            fhir_user: Some(if username.starts_with("dr") {
                "Practitioner/dr1".into()
            } else {
                format!("Patient/{}", patients[0])
            }),
            patients: patients.iter().map(|p| p.parse().unwrap()).collect(),
        })
        .await
        .unwrap();
}

/// A grant made directly and a token for it (the OAuth flows are tested in `smart`).
async fn token_for(
    server: &TestServer,
    username: &str,
    scopes: &str,
    patient: Option<&str>,
    withheld: &[SensitiveCategory],
    lifetime: Option<i64>,
) -> (String, store::auth::Grant) {
    let user_id = server.store.user_by_username(username).await.unwrap().unwrap().user_id;
    let grant = server
        .store
        .create_grant(NewGrant {
            user_id: Some(user_id),
            patient_id: patient.map(|p| p.parse().unwrap()),
            withheld: withheld.to_vec(),
            lifetime_seconds: lifetime,
            ..NewGrant::new("app".parse().unwrap(), ScopeSet::parse(scopes).0)
        })
        .await
        .unwrap();
    (server.auth.access_token_for(&grant).await.unwrap().access_token, grant)
}

async fn setup(server: &TestServer) {
    register(
        server,
        "app",
        ClientType::Public,
        vec![REDIRECT.into()],
        "launch/patient offline_access patient/*.rs user/*.rs",
    )
    .await;
    server
        .seed(vec![
            json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "One"}], "generalPractitioner": [{"reference": "Practitioner/dr1"}]}),
            json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "Two"}], "generalPractitioner": [{"reference": "Practitioner/dr1"}]}),
            json!({"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Doctor"}]}),
        ])
        .await;
    patient_user(server, "alice", &["p1"]).await;
}

pub(crate) fn subscription(
    topic: &str,
    filter: Option<&str>,
    endpoint: &str,
    payload: &str,
    extra_channel: Vec<Value>,
) -> Value {
    let mut s = json!({
        "resourceType": "Subscription",
        "meta": {"profile": [format!("{BP}backport-subscription")]},
        "status": "requested",
        "reason": "test",
        "criteria": format!("{TOPIC}{topic}"),
        "channel": {
            "type": "rest-hook",
            "endpoint": endpoint,
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": format!("{BP}backport-payload-content"), "valueCode": payload}]},
            "header": ["Authorization: Bearer receiver-secret"],
            "extension": extra_channel,
        }
    });
    if let Some(f) = filter {
        s["_criteria"] = json!({"extension": [{"url": format!("{BP}backport-filter-criteria"), "valueString": f}]});
    }
    s
}

async fn post(server: &TestServer, token: &str, body: &Value) -> (u16, Value) {
    let r = server.client.post(server.url("Subscription")).bearer_auth(token).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn get(server: &TestServer, token: &str, path: &str) -> (u16, Value) {
    let r = server.client.get(server.url(path)).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

pub(crate) fn lab(id: &str, patient: &str, code: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"system": LAB, "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")}})
}

async fn create_active(server: &TestServer, receiver: &Receiver, token: &str, body: &Value) -> String {
    let (status, created) = post(server, token, body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["status"], "requested");
    let id = created["id"].as_str().unwrap().to_owned();
    let handshake = receiver.wait_for(&id, "handshake", 1).await;
    assert_eq!(status_param(&handshake[0], "status")["valueCode"], "requested");
    assert_eq!(handshake[0]["type"], "history");
    // The receiver answered; the subscription turns active right after.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, now) = get(server, token, &format!("Subscription/{id}")).await;
        if now["status"] == "active" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still not active: {now}");
        tokio::task::yield_now().await;
    }
    id
}

async fn topics_payloads_status_and_events(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let receiver = Receiver::start().await;
    // Discovery: every topic in the CapabilityStatement and as an R4 Basic.
    let (token, _) = token_for(&server, "alice", "patient/*.rs", Some("p1"), &[SensitiveCategory::Hiv], None).await;
    let (_, cs) = server.get("metadata").await;
    let sub =
        cs["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Subscription").unwrap().clone();
    let canonicals: Vec<&str> =
        sub["extension"].as_array().unwrap().iter().filter_map(|e| e["valueCanonical"].as_str()).collect();
    assert_eq!(canonicals.len(), 6, "{sub}");
    let (s, basic) = get(&server, &token, "Basic/topic-lab-result-added").await;
    assert_eq!(s, 200);
    assert_eq!(basic["code"]["coding"][0]["code"], "SubscriptionTopic");

    let labs = create_active(
        &server,
        &receiver,
        &token,
        &subscription("lab-result-added", None, &receiver.url, "full-resource", vec![]),
    )
    .await;
    let handshake = &receiver.of(&labs, "handshake")[0];
    assert_eq!(status_param(handshake, "topic")["valueCanonical"], format!("{TOPIC}lab-result-added"));
    assert_eq!(status_param(handshake, "events-since-subscription-start")["valueString"], "0");
    assert_eq!(
        receiver.got.lock().unwrap()[0].0.as_deref(),
        Some("Bearer receiver-secret"),
        "channel headers are sent"
    );

    // A lab result for p1 is notified with the resource; a vital sign, another patient's lab and
    // a withheld (HIV) lab are not, and leave no gap in the event numbers.
    server.seed(vec![lab("lab1", "p1", "2345-7")]).await;
    let got = receiver.wait_for(&labs, "event-notification", 1).await;
    assert_eq!(events_of(&got[0]), vec![("1".into(), Some(format!("{}/Observation/lab1/_history/1", server.base)))]);
    assert_eq!(got[0]["entry"][1]["resource"]["id"], "lab1");
    let mut vital = lab("vital1", "p1", "8867-4");
    vital["category"][0]["coding"][0]["code"] = json!("vital-signs");
    server.seed(vec![vital, lab("lab-p2", "p2", "2345-7"), lab("hiv1", "p1", "7917-8")]).await;
    server.seed(vec![lab("lab2", "p1", "2951-2")]).await;
    let got = receiver.wait_for(&labs, "event-notification", 2).await;
    let events: Vec<(String, Option<String>)> = got.iter().flat_map(events_of).collect();
    assert_eq!(events.len(), 2, "withheld, other patients' and non-lab observations send nothing: {got:?}");
    assert_eq!(events[1].0, "2");
    assert!(events[1].1.as_deref().unwrap().contains("/Observation/lab2/"));
    // An update of a lab is not "added".
    let mut changed = lab("lab1", "p1", "2345-7");
    changed["status"] = json!("amended");
    server.seed(vec![changed]).await;

    // $status and $events.
    let (s, status) = get(&server, &token, &format!("Subscription/{labs}/$status")).await;
    assert_eq!(s, 200, "{status}");
    let params = &status["entry"][0]["resource"];
    let p = |n: &str| params["parameter"].as_array().unwrap().iter().find(|x| x["name"] == n).unwrap().clone();
    assert_eq!(p("type")["valueCode"], "query-status");
    assert_eq!(p("events-since-subscription-start")["valueString"], "2");
    assert_eq!(p("status")["valueCode"], "active");
    let (s, replay) =
        get(&server, &token, &format!("Subscription/{labs}/$events?eventsSinceNumber=1&content=full-resource")).await;
    assert_eq!(s, 200, "{replay}");
    assert_eq!(status_param(&replay, "type")["valueCode"], "query-event");
    assert_eq!(events_of(&replay).iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), vec!["1", "2"]);
    assert_eq!(replay["entry"].as_array().unwrap().len(), 3);
    let (s, _) = get(&server, &token, &format!("Subscription/{labs}/$events?eventsSinceNumber=x")).await;
    assert_eq!(s, 400);

    // id-only and empty payloads; the other topics.
    let cond = create_active(
        &server,
        &receiver,
        &token,
        &subscription("condition-changed", Some("Condition?patient=Patient/p1"), &receiver.url, "id-only", vec![]),
    )
    .await;
    let enc = create_active(
        &server,
        &receiver,
        &token,
        &subscription("encounter-start-end", None, &receiver.url, "empty", vec![]),
    )
    .await;
    let meds = create_active(
        &server,
        &receiver,
        &token,
        &subscription("medication-request-changed", None, &receiver.url, "id-only", vec![]),
    )
    .await;
    let claims =
        create_active(&server, &receiver, &token, &subscription("claim-added", None, &receiver.url, "id-only", vec![]))
            .await;
    let eobs =
        create_active(&server, &receiver, &token, &subscription("eob-added", None, &receiver.url, "id-only", vec![]))
            .await;
    let subject = json!({"reference": "Patient/p1"});
    server
        .seed(vec![json!({"resourceType": "Condition", "id": "c1", "subject": subject, "code": {"text": "Asthma"}})])
        .await;
    server
        .seed(vec![
            json!({"resourceType": "Condition", "id": "c1", "subject": subject, "code": {"text": "Asthma, better"}}),
        ])
        .await;
    let got = receiver.wait_for(&cond, "event-notification", 2).await;
    assert_eq!(
        got[0]["entry"].as_array().unwrap().len(),
        1 + events_of(&got[0]).len(),
        "id-only: the status and a reference entry per event"
    );
    assert!(got[0]["entry"][1].get("resource").is_none());
    assert_eq!(got[0]["entry"][1]["fullUrl"], format!("{}/Condition/c1", server.base));
    let e = |status: &str| json!({"resourceType": "Encounter", "id": "e1", "status": status, "class": {"code": "AMB"}, "subject": subject});
    for status in ["planned", "in-progress", "in-progress", "finished"] {
        server.seed(vec![e(status)]).await;
    }
    let got = receiver.wait_for(&enc, "event-notification", 2).await;
    assert_eq!(got.iter().map(|n| events_of(n).len()).sum::<usize>(), 2, "planned and a repeated status send nothing");
    for note in &got {
        assert_eq!(note["entry"].as_array().unwrap().len(), 1, "empty: only the status");
        assert!(events_of(note).iter().all(|e| e.1.is_none()), "empty: no focus");
    }
    server
        .seed(vec![
            json!({"resourceType": "MedicationRequest", "id": "m1", "status": "active", "intent": "order", "subject": subject, "medicationCodeableConcept": {"text": "x"}}),
            json!({"resourceType": "Claim", "id": "cl1", "status": "active", "use": "claim", "patient": subject, "type": {"text": "x"}, "created": "2026-01-01", "provider": {"display": "x"}, "priority": {"text": "normal"}, "insurance": [{"sequence": 1, "focal": true, "coverage": {"display": "x"}}]}),
            json!({"resourceType": "ExplanationOfBenefit", "id": "eob1", "status": "active", "use": "claim", "patient": subject, "type": {"text": "x"}, "created": "2026-01-01", "insurer": {"display": "x"}, "provider": {"display": "x"}, "outcome": "complete", "insurance": [{"focal": true, "coverage": {"display": "x"}}]}),
        ])
        .await;
    for (sub, focus) in [(&meds, "MedicationRequest/m1"), (&claims, "Claim/cl1"), (&eobs, "ExplanationOfBenefit/eob1")]
    {
        let got = receiver.wait_for(sub, "event-notification", 1).await;
        assert!(events_of(&got[0])[0].1.as_deref().unwrap().contains(focus), "{focus}: {got:?}");
    }
    // Only the creating grant sees its subscriptions.
    let (s, list) = get(&server, &token, "Subscription").await;
    assert_eq!((s, list["total"].as_u64()), (200, Some(6)));
    patient_user(&server, "bob", &["p2"]).await;
    let (other, _) = token_for(&server, "bob", "patient/*.rs", Some("p2"), &[], None).await;
    assert_eq!(get(&server, &other, &format!("Subscription/{labs}")).await.0, 404);
    assert_eq!(get(&server, &other, &format!("Subscription/{labs}/$status")).await.0, 404);
    // Delete turns it off.
    let r = server.client.delete(server.url(&format!("Subscription/{labs}"))).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(get(&server, &token, &format!("Subscription/{labs}")).await.1["status"], "off");
}

async fn bounded_by_the_grant(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    let receiver = Receiver::start().await;
    let (token, grant) = token_for(&server, "alice", "patient/*.rs", Some("p1"), &[], Some(3600)).await;
    // The end is clamped to the grant's expiry, and the answer says so.
    let mut body = subscription("lab-result-added", None, &receiver.url, "id-only", vec![]);
    body["end"] = json!("2099-01-01T00:00:00Z");
    let (s, created) = post(&server, &token, &body).await;
    assert_eq!(s, 201, "{created}");
    let end =
        time::OffsetDateTime::parse(created["end"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(end.unix_timestamp(), grant.expires_at.unwrap());
    assert!(created["_end"]["extension"][0]["url"].as_str().unwrap().contains("end-clamped-to-grant"), "{created}");
    let sub = created["id"].as_str().unwrap().to_owned();
    receiver.wait_for(&sub, "handshake", 1).await;

    // Refusals: another patient, a filter the topic lacks, an unknown topic, plain http
    // elsewhere than loopback, a type outside the token's scopes, no token's grant.
    let (s, v) = post(
        &server,
        &token,
        &subscription("lab-result-added", Some("Observation?patient=Patient/p2"), &receiver.url, "id-only", vec![]),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = post(
        &server,
        &token,
        &subscription("lab-result-added", Some("Observation?value-quantity=5"), &receiver.url, "id-only", vec![]),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    let (s, v) = post(&server, &token, &subscription("no-such-topic", None, &receiver.url, "id-only", vec![])).await;
    assert_eq!(s, 422, "{v}");
    let (s, v) =
        post(&server, &token, &subscription("lab-result-added", None, "http://example.org/hook", "id-only", vec![]))
            .await;
    assert_eq!(s, 422, "{v}");
    let (s, v) =
        post(&server, &token, &subscription("lab-result-added", None, &receiver.url, "everything", vec![])).await;
    assert_eq!(s, 422, "{v}");
    let (narrow, _) = token_for(&server, "alice", "patient/Condition.rs", Some("p1"), &[], None).await;
    let (s, v) =
        post(&server, &narrow, &subscription("lab-result-added", None, &receiver.url, "id-only", vec![])).await;
    assert_eq!(s, 403, "{v}");
    let r = server.client.post(server.url("Subscription")).json(&body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let (s, _) = post(&server, &token, &json!({"resourceType": "Subscription"})).await;
    assert_eq!(s, 422);
    let r = server
        .client
        .put(server.url(&format!("Subscription/{sub}")))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);

    // A second subscription under another grant stays on, so its delivery proves the first
    // one's silence (changes are matched in commit order).
    let (witness_token, _) = token_for(&server, "alice", "patient/*.rs", Some("p1"), &[], None).await;
    let witness = create_active(
        &server,
        &receiver,
        &witness_token,
        &subscription("lab-result-added", None, &receiver.url, "id-only", vec![]),
    )
    .await;
    server.seed(vec![lab("before", "p1", "2345-7")]).await;
    receiver.wait_for(&sub, "event-notification", 1).await;
    receiver.wait_for(&witness, "event-notification", 1).await;
    // Revoking the grant (here through /auth/revoke) turns the subscription off at once.
    let r = server
        .client
        .post(format!("{}/auth/revoke", server.origin))
        .form(&[("token", token.as_str()), ("client_id", "app")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let record = server.store.subscription(&sub).await.unwrap().unwrap();
    assert_eq!(record.status, SubscriptionStatus::Off);
    server.seed(vec![lab("after", "p1", "2345-7")]).await;
    receiver.wait_for(&witness, "event-notification", 2).await;
    assert_eq!(receiver.of(&sub, "event-notification").len(), 1, "nothing after the revocation");
    assert_eq!(get(&server, &token, &format!("Subscription/{sub}")).await.0, 401);
}

async fn a_practitioner_follows_their_patient_list(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    setup(&server).await;
    patient_user(&server, "dr-one", &[]).await;
    let receiver = Receiver::start().await;
    let (token, _) = token_for(&server, "dr-one", "user/*.rs", None, &[], None).await;
    let sub = create_active(
        &server,
        &receiver,
        &token,
        &subscription("lab-result-added", None, &receiver.url, "id-only", vec![]),
    )
    .await;
    server.seed(vec![lab("a1", "p1", "2345-7"), lab("b1", "p2", "2345-7")]).await;
    receiver.wait_for(&sub, "event-notification", 2).await;
    // p2 is no longer theirs (the general practitioner changed): p2's labs stop, p1's go on.
    server.seed(vec![json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "Two"}]})]).await;
    server.seed(vec![lab("b2", "p2", "2345-7")]).await;
    server.seed(vec![lab("a2", "p1", "2345-7")]).await;
    receiver.wait_for(&sub, "event-notification", 3).await;
    let foci: Vec<String> =
        receiver.of(&sub, "event-notification").iter().flat_map(events_of).filter_map(|e| e.1).collect();
    assert!(foci.iter().any(|f| f.contains("/Observation/a2/")), "{foci:?}");
    assert!(!foci.iter().any(|f| f.contains("/Observation/b2/")), "p2 left the list: {foci:?}");
}

async fn retried_in_order_after_the_receiver_was_down(backend: Backend) {
    let Some(server) = TestServer::start_with(backend, |c| {
        c.subscriptions.max_backoff_ms = 400;
        c.subscriptions.failures_before_error = 2;
    })
    .await
    else {
        return;
    };
    setup(&server).await;
    let receiver = Receiver::start().await;
    let (token, _) = token_for(&server, "alice", "patient/*.rs", Some("p1"), &[], None).await;
    let heartbeat = json!({"url": format!("{BP}backport-heartbeat-period"), "valueUnsignedInt": 1});
    let max = json!({"url": format!("{BP}backport-max-count"), "valuePositiveInt": 2});
    let sub = create_active(
        &server,
        &receiver,
        &token,
        &subscription("lab-result-added", None, &receiver.url, "id-only", vec![heartbeat, max]),
    )
    .await;
    // Idle: heartbeats.
    receiver.wait_for(&sub, "heartbeat", 1).await;
    receiver.down.store(true, std::sync::atomic::Ordering::SeqCst);
    for i in 1..=5 {
        server.seed(vec![lab(&format!("r{i}"), "p1", "2345-7")]).await;
    }
    // Repeated failures: status error.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = server.store.subscription(&sub).await.unwrap().unwrap();
        if r.status == SubscriptionStatus::Error {
            assert!(r.error.as_deref().unwrap().contains("500"), "{r:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "expected status error, have {:?}", r.status);
        let _ = tokio::time::timeout(Duration::from_millis(200), receiver.arrived.notified()).await;
    }
    let (_, status) = get(&server, &token, &format!("Subscription/{sub}/$status")).await;
    assert_eq!(status["entry"][0]["resource"]["parameter"][2]["valueCode"], "error");
    // Back up: everything arrives, in order, at most two per notification, once each; active again.
    receiver.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let got = receiver.wait_for(&sub, "event-notification", 5).await;
    let numbers: Vec<String> = got.iter().flat_map(events_of).map(|e| e.0).collect();
    assert_eq!(numbers, vec!["1", "2", "3", "4", "5"], "in order, none lost or repeated");
    assert!(got.iter().all(|n| events_of(n).len() <= 2), "max-count");
    let r = server.store.subscription(&sub).await.unwrap().unwrap();
    assert_eq!(r.status, SubscriptionStatus::Active);
}

both_backends!(
    topics_payloads_status_and_events,
    bounded_by_the_grant,
    a_practitioner_follows_their_patient_list,
    retried_in_order_after_the_receiver_was_down,
);
