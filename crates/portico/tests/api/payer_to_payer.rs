//! Payer-to-payer (Da Vinci PDex / HRex): the old plan answers `$member-match` for a new plan's
//! backend client; the member connects the old plan through the new plan's Link (withholding
//! behavioral health); `portico link import` loads the history into the new plan's store with
//! Provenance naming the old plan, and running it again writes nothing.

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{Backend, TestServer};
use crate::link_harness::*;
use crate::smart::backend_token;

both_backends!(member_match_finds_exactly_one_member, a_members_history_moves_to_the_new_plan);

const POLICY_REGULAR: &str = "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition-hrex-consent.html#regular";

fn plan_members() -> Vec<Value> {
    let patient = |id: &str, family: &str, given: &str, birth: &str, member: Option<&str>| {
        let mut p = json!({"resourceType": "Patient", "id": id, "name": [{"family": family, "given": [given]}],
            "gender": "female", "birthDate": birth});
        if let Some(m) = member {
            p["identifier"] = json!([{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]},
                "system": "https://old-plan.example/member", "value": m}]);
        }
        p
    };
    let coverage = |id: &str, patient: &str, subscriber: &str| {
        json!({"resourceType": "Coverage", "id": id, "status": "active", "subscriberId": subscriber,
            "beneficiary": {"reference": format!("Patient/{patient}")}, "payor": [{"display": "Old Plan"}]})
    };
    vec![
        patient("m1", "Member", "Alice", "1980-02-03", Some("M-100")),
        coverage("c1", "m1", "OLD-123"),
        // Someone with the same name and birth date but another coverage.
        patient("m2", "Member", "Alice", "1980-02-03", None),
        coverage("c2", "m2", "OLD-999"),
        // Two records alike in everything: no unique match.
        patient("t1", "Twin", "Sam", "1990-01-01", None),
        coverage("ct1", "t1", "DUP-1"),
        patient("t2", "Twin", "Sam", "1990-01-01", None),
        coverage("ct2", "t2", "DUP-1"),
    ]
}

fn member_match_body(family: &str, given: &str, birth: &str, subscriber: &str, consent: Option<Value>) -> Value {
    let mut parameter = vec![
        json!({"name": "MemberPatient", "resource": {"resourceType": "Patient", "name": [{"family": family, "given": [given]}],
            "gender": "female", "birthDate": birth}}),
        json!({"name": "CoverageToMatch", "resource": {"resourceType": "Coverage", "status": "active", "subscriberId": subscriber,
            "beneficiary": {"reference": "Patient/1"}, "payor": [{"display": "Old Plan"}]}}),
        json!({"name": "CoverageToLink", "resource": {"resourceType": "Coverage", "status": "active", "subscriberId": "NEW-1",
            "beneficiary": {"reference": "Patient/1"}, "payor": [{"display": "New Plan"}]}}),
    ];
    if let Some(c) = consent {
        parameter.push(json!({"name": "Consent", "resource": c}));
    }
    json!({"resourceType": "Parameters", "parameter": parameter})
}

fn consent(status: &str) -> Value {
    json!({"resourceType": "Consent", "status": status, "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "64292-6"}]}], "patient": {"reference": "Patient/1"},
        "policy": [{"uri": POLICY_REGULAR}]})
}

async fn member_match(server: &TestServer, bearer: Option<&str>, body: &Value) -> (u16, Value) {
    let mut request = server
        .client
        .post(server.url("Patient/$member-match"))
        .header("content-type", "application/fhir+json")
        .body(body.to_string());
    if let Some(b) = bearer {
        request = request.bearer_auth(b);
    }
    let r = request.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn member_match_finds_exactly_one_member(backend: Backend) {
    let Some(old_plan) = TestServer::start_enforcing(backend).await else { return };
    old_plan.seed(plan_members()).await;
    let bearer = backend_token(&old_plan, "new-plan", "system/Patient.rs system/Coverage.rs").await;

    // The member, by demographics and the coverage on their old card, with their consent.
    let (status, answer) = member_match(
        &old_plan,
        Some(&bearer),
        &member_match_body("Member", "Alice", "1980-02-03", "OLD-123", Some(consent("active"))),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["resourceType"], "Parameters");
    assert_eq!(answer["parameter"][0]["name"], "MemberIdentifier");
    let identifier = &answer["parameter"][0]["valueIdentifier"];
    assert_eq!(identifier["value"], "M-100");
    assert_eq!(identifier["system"], "https://old-plan.example/member");
    assert_eq!(identifier["type"]["coding"][0]["code"], "MB");
    // The same demographics with the other member's coverage: that member (no member number:
    // their id at the old plan).
    let (status, answer) =
        member_match(&old_plan, Some(&bearer), &member_match_body("member", "alice", "1980-02-03", "OLD-999", None))
            .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["parameter"][0]["valueIdentifier"]["value"], "m2");
    assert_eq!(answer["parameter"][0]["valueIdentifier"]["system"], format!("{}/Patient", old_plan.base));

    // No match, more than one, a consent not to act on: 422 with an OperationOutcome.
    for (body, code) in [
        (member_match_body("Member", "Alice", "1980-02-03", "OLD-000", None), "not-found"),
        (member_match_body("Member", "Alice", "1980-02-04", "OLD-123", None), "not-found"),
        (member_match_body("Twin", "Sam", "1990-01-01", "DUP-1", None), "multiple-matches"),
        (member_match_body("Member", "Alice", "1980-02-03", "OLD-123", Some(consent("rejected"))), "business-rule"),
    ] {
        let (status, outcome) = member_match(&old_plan, Some(&bearer), &body).await;
        assert_eq!(status, 422, "{outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["code"], code, "{outcome}");
        assert!(!outcome.to_string().contains("M-100"), "nothing about a member leaks");
    }
    // Bad requests: 400 saying what is wrong.
    let mut no_coverage = member_match_body("Member", "Alice", "1980-02-03", "OLD-123", None);
    no_coverage["parameter"].as_array_mut().unwrap().remove(1);
    for (body, says) in [
        (json!({"resourceType": "Patient"}), "Parameters"),
        (no_coverage, "CoverageToMatch"),
        (member_match_body("Member", "Alice", "someday", "OLD-123", None), "birthDate"),
    ] {
        let (status, outcome) = member_match(&old_plan, Some(&bearer), &body).await;
        assert_eq!(status, 400, "{outcome}");
        assert!(outcome["issue"][0]["diagnostics"].as_str().unwrap().contains(says), "{outcome}");
    }
    let r = old_plan
        .client
        .post(old_plan.url("Patient/$member-match"))
        .bearer_auth(&bearer)
        .header("content-type", "application/fhir+json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);

    // Who may ask: no token 401; a backend client without the Coverage scope 403.
    let body = member_match_body("Member", "Alice", "1980-02-03", "OLD-123", None);
    assert_eq!(member_match(&old_plan, None, &body).await.0, 401);
    let narrow = backend_token(&old_plan, "narrow", "system/Patient.rs").await;
    let (status, outcome) = member_match(&old_plan, Some(&narrow), &body).await;
    assert_eq!(status, 403, "{outcome}");

    // The CapabilityStatement lists the operation.
    let (_, metadata) = old_plan.get("metadata").await;
    let patient = metadata["rest"][0]["resource"].as_array().unwrap().iter().find(|r| r["type"] == "Patient").unwrap();
    assert!(patient["operation"].as_array().unwrap().iter().any(|o| o["name"] == "member-match"));
}

fn import_cli(link: &LinkServer, args: &[&str]) -> (bool, Value, String) {
    use base64::Engine as _;
    // The portals answering the CLI run on this runtime: wait for it off its worker threads.
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["link", "import"])
            .args(args)
            .args(["--link-database-url", &link.database_url])
            .env("PORTICO_LINK_KEY", base64::engine::general_purpose::STANDARD.encode(link.key))
            .env("PORTICO_LOG", "warn")
            .output()
            .expect("run portico link import")
    });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status.success(),
        serde_json::from_str(&stdout).unwrap_or(Value::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn a_members_history_moves_to_the_new_plan(backend: Backend) {
    let Some(link) = LinkServer::start(backend, |_| {}).await else { return };
    // The old plan: the member's records, a behavioral-health condition among them.
    let Some(old_plan) = portico_portal(backend, &link, "old", |_| {}).await else { return };
    let Some(new_plan) = TestServer::start(backend).await else { return };
    new_plan
        .seed(vec![
            json!({"resourceType": "Patient", "id": "new-alice", "name": [{"family": "Member", "given": ["Alice"]}],
            "birthDate": "1980-02-03", "gender": "female"}),
        ])
        .await;
    let app = link.app(None).await;
    let key = app.secret_key.as_str();
    let ep = link.add_endpoint("Old Health Plan", link::directory::Category::Payer, &old_plan.base, "link").await;
    // The member signs in at the old plan through Link and leaves behavioral health unshared.
    let connection = connect_portico(&link, key, &app.app.app_id, &ep, &old_plan, "alice").await;
    let connection_id = connection["connectionId"].as_str().unwrap().to_owned();

    let (ok, summary, stderr) = import_cli(
        &link,
        &["--connection", &connection_id, "--patient", "new-alice", "--database-url", &new_plan.database_url],
    );
    assert!(ok, "{stderr}");
    assert_eq!(summary["patient"], "new-alice");
    let written = summary["written"].as_u64().unwrap();
    assert!(written >= 9, "{summary}");
    assert_eq!(summary["unchanged"], 0);
    assert_eq!(summary["byType"]["Provenance"], 1);
    assert!(summary["byType"].get("Patient").is_none(), "the member's Patient here is kept as it is: {summary}");

    // Again: nothing new.
    let (ok, again, stderr) = import_cli(
        &link,
        &["--connection", &connection_id, "--patient", "new-alice", "--database-url", &new_plan.database_url],
    );
    assert!(ok, "{stderr}");
    assert_eq!(again["written"], 0, "{again}");
    assert_eq!(again["unchanged"].as_u64().unwrap(), written);

    // What the new plan holds now (a fresh server on its database: the import ran elsewhere).
    let reader = TestServer::serve(new_plan.database_url.clone(), None, tempfile::tempdir().unwrap(), |c| {
        c.dev_open_access = true
    })
    .await;
    let conditions = reader.search_ids("Condition?patient=new-alice").await;
    assert_eq!(conditions.len(), 1, "the diabetes diagnosis, not the withheld depression: {conditions:?}");
    let (_, found) = reader.get("Condition?patient=new-alice").await;
    assert!(!found.to_string().contains("35489007"), "no behavioral-health record was imported");
    assert!(reader.search_ids("Observation?patient=new-alice").await.len() >= 4);
    assert_eq!(reader.search_ids("Coverage?beneficiary=Patient/new-alice").await.len(), 1);
    // References follow: the labs' performer is the imported practitioner.
    let (_, labs) =
        reader.get("Observation?patient=new-alice&category=laboratory&_include=Observation:performer").await;
    let entries = labs["entry"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["resource"]["resourceType"] == "Practitioner"), "{labs}");
    // One Provenance names the old plan as the source of all of it.
    let (_, provenance) = reader.get("Provenance?target=Patient/new-alice").await;
    let provenance = &provenance["entry"][0]["resource"];
    assert_eq!(provenance["agent"][0]["who"]["display"], "Old Health Plan");
    assert_eq!(provenance["entity"][0]["what"]["identifier"]["value"], old_plan.base.as_str());
    let targets = provenance["target"].as_array().unwrap();
    assert_eq!(targets.len() as u64, written, "every record imported and the member: {provenance}");
    assert!(targets.iter().any(|t| t["reference"] == "Patient/new-alice"));
    for c in &conditions {
        assert!(targets.iter().any(|t| t["reference"] == format!("Condition/{c}")));
    }
    let (_, obs) = reader.get(&format!("Condition/{}", conditions[0])).await;
    assert_eq!(obs["subject"]["reference"], "Patient/new-alice");
    assert_eq!(obs["meta"]["source"], old_plan.base.as_str());

    // A connection that does not exist, a target patient that does not: clear errors, nothing written.
    let (ok, _, stderr) = import_cli(
        &link,
        &["--connection", "con_00000000000000000000000000000000", "--database-url", &new_plan.database_url],
    );
    assert!(!ok && stderr.contains("connection"), "{stderr}");
    let (ok, _, stderr) = import_cli(
        &link,
        &["--connection", &connection_id, "--patient", "nobody", "--database-url", &new_plan.database_url],
    );
    assert!(!ok && stderr.contains("Patient/nobody"), "{stderr}");
}
