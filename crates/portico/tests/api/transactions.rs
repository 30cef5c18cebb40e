//! transaction and batch Bundles.

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{Backend, TestServer};

both_backends!(
    transaction_rewrites_urn_references,
    transaction_is_atomic,
    batch_entries_are_independent,
    revinclude_cap_is_reported,
    entries_follow_the_rules_of_plain_interactions,
    batch_permissions_are_per_entry
);

fn tx(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

async fn transaction_rewrites_urn_references(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let bundle = tx(vec![
        json!({"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
               "resource": {"resourceType": "Patient", "name": [{"family": "Tx"}]},
               "request": {"method": "POST", "url": "Patient"}}),
        json!({"fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222",
               "resource": {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                            "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"}},
               "request": {"method": "POST", "url": "Observation"}}),
        json!({"resource": {"resourceType": "Patient", "id": "put-1", "name": [{"family": "Put"}]},
               "request": {"method": "PUT", "url": "Patient/put-1"}}),
    ]);
    let (status, _, response) = s.post("", &bundle).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["type"], "transaction-response");
    let entries = response["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[0]["response"]["status"], "201 Created");
    assert_eq!(entries[2]["response"]["status"], "201 Created");
    let patient_id = entries[0]["resource"]["id"].as_str().unwrap();
    assert_eq!(entries[1]["resource"]["subject"]["reference"], format!("Patient/{patient_id}"));
    assert!(entries[1]["response"]["location"].as_str().unwrap().contains("/Observation/"));
    // the reference is searchable and in the patient's compartment
    let ids = s.search_ids(&format!("Observation?patient={patient_id}")).await;
    assert_eq!(ids.len(), 1);
    let (_, everything) = s.get(&format!("Patient/{patient_id}/$everything")).await;
    assert_eq!(everything["entry"].as_array().unwrap().len(), 2);
}

async fn transaction_is_atomic(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let (_, _, existing) =
        s.put("Patient/keep", &json!({"resourceType": "Patient", "id": "keep", "gender": "female"})).await;
    assert_eq!(existing["meta"]["versionId"], "1");
    for failing in [
        // invalid resource in the last entry
        json!({"resource": {"resourceType": "Observation", "status": "final"}, "request": {"method": "POST", "url": "Observation"}}),
        // version conflict
        json!({"resource": {"resourceType": "Patient", "id": "keep", "gender": "male"}, "request": {"method": "PUT", "url": "Patient/keep", "ifMatch": "W/\"7\""}}),
        // unknown method
        json!({"resource": {"resourceType": "Patient"}, "request": {"method": "PATCH", "url": "Patient/keep"}}),
    ] {
        let bundle = tx(vec![
            json!({"resource": {"resourceType": "Patient", "name": [{"family": "Atomic"}]}, "request": {"method": "POST", "url": "Patient"}}),
            json!({"resource": {"resourceType": "Patient", "id": "keep", "gender": "other"}, "request": {"method": "PUT", "url": "Patient/keep"}}),
            json!({"request": {"method": "DELETE", "url": "Patient/keep"}}),
            failing,
        ]);
        let (status, _, outcome) = s.post("", &bundle).await;
        assert!(status == 400 || status == 412, "status {status}: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert!(outcome["issue"][0]["diagnostics"].as_str().unwrap().contains("Bundle.entry["), "{outcome}");
        assert!(s.search_ids("Patient?family=atomic").await.is_empty(), "no partial write");
        let (status, keep) = s.get("Patient/keep").await;
        assert_eq!(status, 200);
        assert_eq!(keep["meta"]["versionId"], "1");
        assert_eq!(keep["gender"], "female");
    }
    let (_, h) = s.get("_history").await;
    assert_eq!(h["entry"].as_array().unwrap().len(), 1, "history holds only the first PUT");
}

async fn batch_entries_are_independent(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "name": [{"family": "Batch"}]}, "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Patient", "bogus": true}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"request": {"url": "Patient"}}
    ]});
    let (status, _, response) = s.post("", &bundle).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["type"], "batch-response");
    let e = response["entry"].as_array().unwrap();
    assert_eq!(e[0]["response"]["status"], "201 Created");
    assert!(e[1]["response"]["status"].as_str().unwrap().starts_with("400"));
    assert_eq!(e[1]["response"]["outcome"]["resourceType"], "OperationOutcome");
    assert!(e[2]["response"]["status"].as_str().unwrap().starts_with("404"));
    assert!(e[3]["response"]["status"].as_str().unwrap().starts_with("400"));
    let id = e[0]["resource"]["id"].as_str().unwrap();
    let read = json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "GET", "url": format!("Patient/{id}")}}]});
    let (_, _, r) = s.post("", &read).await;
    assert_eq!(r["entry"][0]["resource"]["id"], id);
    // a document Bundle cannot be posted as a transaction
    let (status, _, _) = s.post("", &json!({"resourceType": "Bundle", "type": "document"})).await;
    assert_eq!(status, 400);
}

/// `_revinclude` adds at most 1000 resources to a page and says so when it stops there.
async fn revinclude_cap_is_reported(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let mut entries = vec![json!({"fullUrl": "urn:uuid:00000000-0000-0000-0000-000000000001",
        "resource": {"resourceType": "Patient", "name": [{"family": "Many"}]}, "request": {"method": "POST", "url": "Patient"}})];
    for i in 0..1001 {
        entries.push(json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": format!("n{i}")},
            "subject": {"reference": "urn:uuid:00000000-0000-0000-0000-000000000001"}}, "request": {"method": "POST", "url": "Observation"}}));
    }
    let (status, _, response) = s.post("", &tx(entries)).await;
    assert_eq!(status, 200);
    let patient = response["entry"][0]["resource"]["id"].as_str().unwrap().to_string();
    let (_, bundle) = s.get(&format!("Patient?_id={patient}&_revinclude=Observation:patient")).await;
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(entries.iter().filter(|e| e["search"]["mode"] == "include").count(), 1000);
    let outcome = entries.iter().find(|e| e["search"]["mode"] == "outcome").expect("a warning says the list was cut");
    assert_eq!(outcome["resource"]["issue"][0]["code"], "too-costly");
    // below the cap there is no warning
    let (_, small) = s.get(&format!("Observation?patient={patient}&_count=3&_include=Observation:patient")).await;
    assert!(small["entry"].as_array().unwrap().iter().all(|e| e["search"]["mode"] != "outcome"));
}

/// One rule checked three ways: the plain interaction, the same request as a transaction entry
/// (the whole Bundle refused, naming the entry, nothing written) and as a batch entry (only that
/// entry fails; its neighbour is written).
struct EntryRule {
    what: &'static str,
    method: &'static str,
    url: &'static str,
    resource: Option<Value>,
    if_match: Option<&'static str>,
    if_none_exist: Option<&'static str>,
    status: u16,
    says: &'static str,
}

fn entry_rules() -> Vec<EntryRule> {
    let patient = |id: Option<&str>| {
        let mut p = json!({"resourceType": "Patient", "gender": "male"});
        if let Some(id) = id {
            p["id"] = json!(id);
        }
        p
    };
    let rule = |what, method, url, resource: Option<Value>, status, says| EntryRule {
        what,
        method,
        url,
        resource,
        if_match: None,
        if_none_exist: None,
        status,
        says,
    };
    vec![
        rule(
            "body id differs from the URL",
            "PUT",
            "Patient/keep",
            Some(patient(Some("not-keep"))),
            400,
            "does not match the URL's id",
        ),
        rule("body without an id", "PUT", "Patient/keep", Some(patient(None)), 400, "must carry the resource id"),
        rule(
            "resource type differs from the URL (update)",
            "PUT",
            "Patient/keep",
            Some(json!({"resourceType": "Organization", "id": "keep"})),
            400,
            "does not match the URL's type",
        ),
        rule(
            "resource type differs from the URL (create)",
            "POST",
            "Patient",
            Some(json!({"resourceType": "Organization", "name": "X"})),
            400,
            "does not match the URL's type",
        ),
        rule(
            "unknown resource type",
            "PUT",
            "Nonsense/1",
            Some(json!({"resourceType": "Nonsense", "id": "1"})),
            404,
            "not a FHIR R4 resource type",
        ),
        rule(
            "conditional update whose body id is not the match",
            "PUT",
            "Patient?identifier=urn:test|keep",
            Some(
                json!({"resourceType": "Patient", "id": "someone-else", "identifier": [{"system": "urn:test", "value": "keep"}]}),
            ),
            400,
            "is not that of Patient/keep",
        ),
        EntryRule {
            if_match: Some("W/\"7\""),
            ..rule(
                "stale If-Match on an update",
                "PUT",
                "Patient/keep",
                Some(patient(Some("keep"))),
                412,
                "If-Match asked for 7",
            )
        },
        EntryRule {
            if_match: Some("W/\"7\""),
            ..rule("stale If-Match on a delete", "DELETE", "Patient/keep", None, 412, "If-Match asked for 7")
        },
        EntryRule {
            if_match: Some("W/\"1\""),
            ..rule(
                "If-Match on a create",
                "POST",
                "Patient",
                Some(patient(None)),
                400,
                "applies to an update or a delete",
            )
        },
        EntryRule {
            if_none_exist: Some("identifier=urn:test|keep"),
            ..rule(
                "If-None-Exist on an update",
                "PUT",
                "Patient/keep",
                Some(patient(Some("keep"))),
                400,
                "applies to a create",
            )
        },
        EntryRule {
            if_none_exist: Some("identifier=urn:test|keep"),
            ..rule("If-None-Exist on a delete", "DELETE", "Patient/keep", None, 400, "applies to a create")
        },
        rule("a body on a delete", "DELETE", "Patient/keep", Some(patient(Some("keep"))), 400, "carries no"),
        rule("a delete of an impossible id", "DELETE", "Patient/no$such$id", None, 404, "Patient/no$such$id"),
        rule(
            "AuditEvents are the server's",
            "POST",
            "AuditEvent",
            Some(json!({"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2024-01-01T00:00:00Z",
                         "agent": [{"requestor": true}], "source": {"observer": {"display": "x"}}})),
            403,
            "written by the server",
        ),
    ]
}

fn diagnostics(outcome: &Value) -> String {
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["diagnostics"].as_str())
        .collect::<Vec<_>>()
        .join(" | ")
}

async fn entries_follow_the_rules_of_plain_interactions(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let keep = json!({"resourceType": "Patient", "id": "keep", "gender": "female",
                      "identifier": [{"system": "urn:test", "value": "keep"}]});
    let (status, _, _) = s.put("Patient/keep", &keep).await;
    assert_eq!(status, 201);
    for (n, rule) in entry_rules().into_iter().enumerate() {
        let what = rule.what;
        // 1. The plain interaction.
        let mut plain = s.client.request(rule.method.parse().unwrap(), s.url(rule.url));
        if let Some(r) = &rule.resource {
            plain = plain.header("content-type", "application/fhir+json").body(r.to_string());
        }
        if let Some(m) = rule.if_match {
            plain = plain.header("if-match", m);
        }
        if let Some(c) = rule.if_none_exist {
            plain = plain.header("if-none-exist", c);
        }
        let r = plain.send().await.unwrap();
        let status = r.status().as_u16();
        let outcome: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, rule.status, "{what}, plain {} {}: {outcome}", rule.method, rule.url);
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{what}");
        assert!(diagnostics(&outcome).contains(rule.says), "{what}, plain: {outcome}");

        // 2. As the second entry of a transaction.
        let mut request = json!({"method": rule.method, "url": rule.url});
        if let Some(m) = rule.if_match {
            request["ifMatch"] = json!(m);
        }
        if let Some(c) = rule.if_none_exist {
            request["ifNoneExist"] = json!(c);
        }
        let mut entry = json!({"request": request});
        if let Some(r) = &rule.resource {
            entry["resource"] = r.clone();
        }
        let sibling = |family: String| json!({"resource": {"resourceType": "Patient", "name": [{"family": family}]}, "request": {"method": "POST", "url": "Patient"}});
        let tx_family = format!("txsibling{n}");
        let (status, _, outcome) = s.post("", &tx(vec![sibling(tx_family.clone()), entry.clone()])).await;
        assert_eq!(status, rule.status, "{what}, transaction: {outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome", "{what}");
        let text = diagnostics(&outcome);
        assert!(text.contains("Bundle.entry[1]") && text.contains(rule.says), "{what}, transaction: {outcome}");
        assert!(s.search_ids(&format!("Patient?family={tx_family}")).await.is_empty(), "{what}: nothing written");

        // 3. As the second entry of a batch.
        let batch_family = format!("batchsibling{n}");
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [sibling(batch_family.clone()), entry]});
        let (status, _, response) = s.post("", &batch).await;
        assert_eq!(status, 200, "{what}, batch: {response}");
        let e = &response["entry"];
        assert_eq!(e[0]["response"]["status"], "201 Created", "{what}, batch: {response}");
        let failed = e[1]["response"]["status"].as_str().unwrap_or_default();
        assert!(failed.starts_with(&rule.status.to_string()), "{what}, batch entry status {failed}: {response}");
        assert!(diagnostics(&e[1]["response"]["outcome"]).contains(rule.says), "{what}, batch: {response}");
        assert_eq!(
            s.search_ids(&format!("Patient?family={batch_family}")).await.len(),
            1,
            "{what}: the neighbour was written"
        );
    }
    // None of it touched Patient/keep, and nothing was stored as an AuditEvent resource.
    let (_, kept) = s.get("Patient/keep").await;
    assert_eq!((kept["meta"]["versionId"].as_str(), kept["gender"].as_str()), (Some("1"), Some("female")), "{kept}");
    let (status, _) = s.get("Patient/not-keep").await;
    assert_eq!(status, 404);
    let (status, _) = s.get("Patient/someone-else").await;
    assert_eq!(status, 404);

    // The same entries with their conditions met do what the plain interactions do.
    let ok = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "id": "keep", "gender": "other", "identifier": [{"system": "urn:test", "value": "keep"}]},
         "request": {"method": "PUT", "url": "Patient/keep", "ifMatch": "W/\"1\""}},
        {"resource": {"resourceType": "Patient", "id": "keep", "gender": "unknown"},
         "request": {"method": "PUT", "url": "Patient?identifier=urn:test|keep"}},
    ]});
    let (_, _, response) = s.post("", &ok).await;
    assert_eq!(response["entry"][0]["response"]["status"], "200 OK", "{response}");
    assert_eq!(response["entry"][1]["response"]["status"], "200 OK", "{response}");
    assert_eq!(response["entry"][1]["resource"]["meta"]["versionId"], "3", "{response}");
    let delete = tx(vec![json!({"request": {"method": "DELETE", "url": "Patient/keep", "ifMatch": "W/\"3\""}})]);
    let (status, _, response) = s.post("", &delete).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["entry"][0]["response"]["status"], "204 No Content", "{response}");
    let (status, _) = s.get("Patient/keep").await;
    assert_eq!(status, 410);
}

/// Permission is per entry too: a patient-scoped token's batch fails only the entry outside its
/// compartment; the same transaction is refused whole.
async fn batch_permissions_are_per_entry(backend: Backend) {
    let Some(s) = TestServer::start_enforcing(backend).await else { return };
    s.seed(vec![json!({"resourceType": "Patient", "id": "mine"}), json!({"resourceType": "Patient", "id": "theirs"})])
        .await;
    crate::smart::register(
        &s,
        "writer",
        store::auth::ClientType::Public,
        vec![crate::smart::REDIRECT.into()],
        "patient/*.cruds",
    )
    .await;
    let user = s
        .store
        .create_user(store::auth::NewUser {
            username: "writer".into(),
            // Never used to sign in here.
            password_hash:
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g".into(),
            role: store::auth::Role::Patient,
            fhir_user: Some("Patient/mine".into()),
            patients: vec!["mine".parse().unwrap()],
        })
        .await
        .unwrap();
    let grant = s
        .store
        .create_grant(store::auth::NewGrant {
            user_id: Some(user.user_id),
            patient_id: Some("mine".parse().unwrap()),
            lifetime_seconds: Some(3600),
            ..store::auth::NewGrant::new("writer".parse().unwrap(), auth::ScopeSet::parse("patient/*.cruds").0)
        })
        .await
        .unwrap();
    let token = s.auth.access_token_for(&grant).await.unwrap().access_token;
    let observation = |patient: &str, text: &str| {
        json!({"resource": {"resourceType": "Observation", "status": "final", "code": {"text": text},
                            "subject": {"reference": format!("Patient/{patient}")}},
               "request": {"method": "POST", "url": "Observation"}})
    };
    let post = |bundle: Value| {
        let s = &s;
        let token = token.clone();
        async move {
            let r = s
                .client
                .post(s.url(""))
                .bearer_auth(token)
                .header("content-type", "application/fhir+json")
                .body(bundle.to_string())
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let entries = vec![observation("mine", "in-batch"), observation("theirs", "in-batch-outside")];
    let (status, response) = post(json!({"resourceType": "Bundle", "type": "batch", "entry": entries})).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["entry"][0]["response"]["status"], "201 Created", "{response}");
    let refused = response["entry"][1]["response"]["status"].as_str().unwrap();
    assert!(refused.starts_with("403") || refused.starts_with("404"), "{response}");
    assert_eq!(response["entry"][1]["response"]["outcome"]["resourceType"], "OperationOutcome");

    let entries = vec![observation("mine", "in-transaction"), observation("theirs", "in-transaction-outside")];
    let (status, outcome) = post(tx(entries)).await;
    assert!(status == 403 || status == 404, "{status}: {outcome}");
    assert!(diagnostics(&outcome).contains("Bundle.entry[1]"), "{outcome}");
    let query = store::HistoryQuery {
        scope: store::HistoryScope::Type("Observation".into()),
        since_ms: None,
        count: 100,
        cursor: None,
    };
    let history = s.store.history(&query, &store::Restriction::default()).await.unwrap();
    let texts: Vec<String> = history
        .entries
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e.body.as_deref()?).ok())
        .filter_map(|r| r["code"]["text"].as_str().map(String::from))
        .collect();
    assert_eq!(texts, vec!["in-batch"], "only the batch's permitted entry was written");
}
