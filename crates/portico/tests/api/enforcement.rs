//! Every FHIR request enforced: scopes (v1, v2, granular), the patient compartment, `user/`
//! scopes intersected with the person's own access (members, proxies, practitioners with
//! overlapping patient lists, administrators), withheld sensitive categories in every response
//! shape, revocation, and the audit trail.
//!
//! The scope matrix runs over imported Synthea data; the people tests over Portico's demo data
//! (its care teams give two practitioners overlapping patient lists). Expected results come from
//! the same searches made without any restriction and filtered by what the rules say, so a rule
//! that leaks or hides too much shows up as a difference.

use std::collections::BTreeSet;

use auth::{ScopeSet, SensitiveCategory};
use serde_json::{json, Value};
use store::auth::{ClientType, NewGrant, NewUser, Role};
use store::Restriction;

use crate::both_backends;
use crate::fixtures::import_ok;
use crate::harness::{synthea_dir, synthea_files, Backend, TestServer};
use crate::smart::{backend_keys, register, register_with, REDIRECT};

const OBS_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

/// Register the apps the tests' grants belong to.
pub(crate) async fn apps(server: &TestServer) {
    register(
        server,
        "app",
        ClientType::Public,
        vec![REDIRECT.into()],
        "openid fhirUser launch/patient patient/*.cruds user/*.cruds",
    )
    .await;
    let (jwks, _, _) = backend_keys();
    register_with(server, "svc", ClientType::ConfidentialAsymmetric, vec![], "system/*.cruds", Some(jwks), false).await;
}

pub(crate) async fn user(
    server: &TestServer,
    username: &str,
    role: Role,
    fhir_user: Option<String>,
    patients: &[&str],
) {
    server
        .store
        .create_user(NewUser {
            username: username.into(),
            // Never used to sign in here.
            password_hash:
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g".into(),
            role,
            fhir_user,
            patients: patients.iter().map(|p| p.parse().unwrap()).collect(),
        })
        .await
        .unwrap();
}

/// An access token for a grant made directly (the OAuth flows are tested in `smart`).
pub(crate) async fn token(
    server: &TestServer,
    username: Option<&str>,
    scopes: &str,
    patient: Option<&str>,
    withheld: &[SensitiveCategory],
) -> String {
    let user_id = match username {
        Some(u) => Some(server.store.user_by_username(u).await.unwrap().unwrap().user_id),
        None => None,
    };
    let client = if username.is_some() { "app" } else { "svc" };
    let grant = server
        .store
        .create_grant(NewGrant {
            user_id,
            patient_id: patient.map(|p| p.parse().unwrap()),
            withheld: withheld.to_vec(),
            lifetime_seconds: Some(3600),
            ..NewGrant::new(client.parse().unwrap(), ScopeSet::parse(scopes).0)
        })
        .await
        .unwrap();
    server.auth.access_token_for(&grant).await.unwrap().access_token
}

async fn call(
    server: &TestServer,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = server.client.request(method, server.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.header("content-type", "application/fhir+json").body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(server: &TestServer, token: &str, path: &str) -> (u16, Value) {
    call(server, token, reqwest::Method::GET, path, None).await
}

/// `(type/id)` of a bundle's entries with the given search mode (history bundles have none).
fn entries(bundle: &Value, mode: Option<&str>) -> BTreeSet<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| mode.is_none_or(|m| e["search"]["mode"] == m))
        .filter_map(|e| {
            let r = &e["resource"];
            Some(format!("{}/{}", r["resourceType"].as_str()?, r["id"].as_str()?))
        })
        .collect()
}

/// Every match of a search made without restriction (the reference), following paging.
async fn reference(server: &TestServer, rtype: &str, query: &str) -> BTreeSet<String> {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let mut pairs = pairs;
    pairs.push(("_count".into(), "1000".into()));
    let request = fhir::search::parse(fhir::Registry::r4(), rtype, &pairs, fhir::search::Handling::Strict).unwrap();
    let page = server.store.search(&request, &Restriction::default()).await.unwrap();
    assert!(page.next_cursor.is_none(), "reference search {rtype}?{query} needs paging");
    page.matches.iter().map(|m| format!("{}/{}", m.resource_type, m.id)).collect()
}

/// Every match of a search through HTTP with a token, following `next` links.
async fn all_matches(server: &TestServer, token: &str, path: &str) -> (u16, BTreeSet<String>) {
    let mut found = BTreeSet::new();
    let mut url = server.url(path);
    loop {
        let r = server.client.get(&url).bearer_auth(token).send().await.unwrap();
        let status = r.status().as_u16();
        if status != 200 {
            return (status, found);
        }
        let bundle: Value = r.json().await.unwrap();
        found.extend(entries(&bundle, Some("match")));
        match bundle["link"].as_array().into_iter().flatten().find(|l| l["relation"] == "next") {
            Some(l) => url = l["url"].as_str().unwrap().to_owned(),
            None => return (status, found),
        }
    }
}

struct Synthea {
    a: String,
    b: String,
    a_obs: Vec<String>,
    a_lab: String,
    a_vital: String,
    b_obs: String,
}

async fn synthea(server: &TestServer) -> Option<Synthea> {
    let dir = synthea_dir()?;
    import_ok(server, &synthea_files(&dir, 3)).await;
    let patients: Vec<String> = reference(server, "Patient", "").await.into_iter().collect();
    let id = |s: &String| s.split('/').nth(1).unwrap().to_owned();
    let (a, b) = (id(&patients[0]), id(&patients[1]));
    let a_obs: Vec<String> =
        reference(server, "Observation", &format!("patient={a}")).await.into_iter().map(|s| id(&s)).collect();
    let lab = reference(server, "Observation", &format!("patient={a}&category={OBS_CATEGORY}|laboratory")).await;
    let vital = reference(server, "Observation", &format!("patient={a}&category={OBS_CATEGORY}|vital-signs")).await;
    let b_obs = reference(server, "Observation", &format!("patient={b}")).await;
    Some(Synthea {
        a_lab: id(lab.iter().next().expect("patient A has lab results")),
        a_vital: id(vital.iter().next().expect("patient A has vital signs")),
        b_obs: id(b_obs.iter().next().expect("patient B has observations")),
        a,
        b,
        a_obs,
    })
}

/// Who holds the token in a matrix row.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// Patient A's own account, with patient A in context.
    PatientA,
    /// Patient A's account, `user/` scopes (their own compartment).
    UserA,
    /// A backend service.
    System,
}

/// What a search row's answer must equal: the reference search, or nothing.
#[derive(Debug, Clone, Copy)]
enum Want {
    Status,
    Same(&'static str, &'static str),
    Nothing,
}

async fn scope_matrix(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    apps(&server).await;
    let Some(s) = synthea(&server).await else { return };
    user(&server, "patient-a", Role::Patient, Some(format!("Patient/{}", s.a)), &[&s.a]).await;
    let lab_scope = format!("patient/Observation.rs?category={OBS_CATEGORY}|laboratory");
    // (scope, who, method, path, expected status, result rule). Paths use A, B, A_OBS, A_LAB,
    // A_VITAL and B_OBS for the ids found above.
    let rows: Vec<(&str, Who, &str, &str, u16, Want)> = vec![
        // v1 and v2 read/search in the patient's compartment.
        ("patient/*.read", Who::PatientA, "GET", "Observation/A_OBS", 200, Want::Status),
        ("patient/*.rs", Who::PatientA, "GET", "Observation/A_OBS", 200, Want::Status),
        ("patient/*.rs", Who::PatientA, "GET", "Observation/A_OBS/_history/1", 200, Want::Status),
        ("patient/*.rs", Who::PatientA, "GET", "Observation/B_OBS", 404, Want::Status),
        ("patient/*.rs", Who::PatientA, "GET", "Observation/B_OBS/_history/1", 404, Want::Status),
        ("patient/*.rs", Who::PatientA, "GET", "Patient/B", 404, Want::Status),
        ("patient/*.rs", Who::PatientA, "GET", "Observation?patient=A", 200, Want::Same("Observation", "patient=A")),
        ("patient/*.read", Who::PatientA, "GET", "Observation", 200, Want::Same("Observation", "patient=A")),
        ("patient/*.rs", Who::PatientA, "GET", "Observation?patient=B", 200, Want::Nothing),
        ("patient/*.rs", Who::PatientA, "GET", "Patient", 200, Want::Same("Patient", "_id=A")),
        // Typed scopes: other types are refused.
        ("patient/Observation.rs", Who::PatientA, "GET", "Observation/A_OBS", 200, Want::Status),
        ("patient/Observation.rs", Who::PatientA, "GET", "Condition?patient=A", 403, Want::Status),
        ("patient/Observation.rs", Who::PatientA, "GET", "Patient/A", 403, Want::Status),
        // v2 distinguishes read from search.
        ("patient/Observation.r", Who::PatientA, "GET", "Observation/A_OBS", 200, Want::Status),
        ("patient/Observation.r", Who::PatientA, "GET", "Observation?patient=A", 403, Want::Status),
        ("patient/Observation.s", Who::PatientA, "GET", "Observation/A_OBS", 403, Want::Status),
        (
            "patient/Observation.s",
            Who::PatientA,
            "GET",
            "Observation?patient=A",
            200,
            Want::Same("Observation", "patient=A"),
        ),
        // Granular: laboratory results only.
        (
            "LAB",
            Who::PatientA,
            "GET",
            "Observation?patient=A",
            200,
            Want::Same(
                "Observation",
                "patient=A&category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            ),
        ),
        ("LAB", Who::PatientA, "GET", "Observation/A_LAB", 200, Want::Status),
        ("LAB", Who::PatientA, "GET", "Observation/A_VITAL", 403, Want::Status),
        (
            "LAB",
            Who::PatientA,
            "GET",
            "Observation?patient=A&category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs",
            200,
            Want::Nothing,
        ),
        // History: the compartment only.
        (
            "patient/*.rs",
            Who::PatientA,
            "GET",
            "Observation/_history?_count=1000",
            200,
            Want::Same("Observation", "patient=A"),
        ),
        ("patient/*.rs", Who::PatientA, "GET", "Observation/B_OBS/_history", 404, Want::Status),
        ("patient/*.rs", Who::PatientA, "GET", "_history?_count=1000", 200, Want::Status),
        // $everything: own only.
        ("patient/*.rs", Who::PatientA, "GET", "Patient/A/$everything?_count=1000", 200, Want::Status),
        ("patient/*.rs", Who::PatientA, "GET", "Patient/B/$everything", 404, Want::Status),
        ("patient/Patient.r", Who::PatientA, "GET", "Patient/A/$everything", 403, Want::Status),
        // _include and _revinclude respect the scopes of the included type.
        (
            "patient/Observation.rs",
            Who::PatientA,
            "GET",
            "Observation?patient=A&_include=Observation:patient&_count=5",
            200,
            Want::Same("Observation", "patient=A"),
        ),
        (
            "patient/Patient.rs",
            Who::PatientA,
            "GET",
            "Patient?_id=A&_revinclude=Observation:patient",
            200,
            Want::Same("Patient", "_id=A"),
        ),
        ("patient/*.rs", Who::PatientA, "GET", "Patient?_id=B&_revinclude=Observation:patient", 200, Want::Nothing),
        // Writes: only with write permissions, only in the compartment.
        ("patient/*.rs", Who::PatientA, "POST", "Observation SUBJECT=A", 403, Want::Status),
        ("patient/*.cruds", Who::PatientA, "POST", "Observation SUBJECT=A", 201, Want::Status),
        ("patient/*.write", Who::PatientA, "POST", "Observation SUBJECT=A", 201, Want::Status),
        ("patient/*.cruds", Who::PatientA, "POST", "Observation SUBJECT=B", 403, Want::Status),
        ("patient/*.cruds", Who::PatientA, "POST", "Practitioner", 403, Want::Status),
        ("patient/*.cruds", Who::PatientA, "PUT", "Observation/B_OBS SUBJECT=A", 404, Want::Status),
        ("patient/*.cruds", Who::PatientA, "DELETE", "Observation/B_OBS", 404, Want::Status),
        ("patient/*.rs", Who::PatientA, "DELETE", "Observation/A_OBS", 403, Want::Status),
        // user/ scopes of a patient account: the same compartment.
        ("user/*.rs", Who::UserA, "GET", "Observation", 200, Want::Same("Observation", "patient=A")),
        ("user/*.rs", Who::UserA, "GET", "Observation/B_OBS", 404, Want::Status),
        ("user/Observation.rs", Who::UserA, "GET", "Patient/A", 403, Want::Status),
        // system/ scopes: every patient, within the scopes.
        ("system/*.rs", Who::System, "GET", "Observation/B_OBS", 200, Want::Status),
        ("system/*.rs", Who::System, "GET", "Observation?patient=B", 200, Want::Same("Observation", "patient=B")),
        ("system/Patient.rs", Who::System, "GET", "Observation/B_OBS", 403, Want::Status),
        ("system/*.rs", Who::System, "POST", "Observation SUBJECT=B", 403, Want::Status),
        ("system/*.cruds", Who::System, "POST", "Observation SUBJECT=B", 201, Want::Status),
    ];
    let a_obs_in_compartment: BTreeSet<String> = s.a_obs.iter().map(|id| format!("Observation/{id}")).collect();
    let subst = |text: &str| {
        text.replace("A_OBS", &s.a_obs[0])
            .replace("A_LAB", &s.a_lab)
            .replace("A_VITAL", &s.a_vital)
            .replace("B_OBS", &s.b_obs)
            .replace("=A", &format!("={}", s.a))
            .replace("=B", &format!("={}", s.b))
            .replace("Patient/A", &format!("Patient/{}", s.a))
            .replace("Patient/B", &format!("Patient/{}", s.b))
    };
    let mut failures = Vec::new();
    for (scope, who, method, path, status, want) in &rows {
        let scope = if *scope == "LAB" { lab_scope.as_str() } else { scope };
        let t = match who {
            Who::PatientA => token(&server, Some("patient-a"), scope, Some(&s.a), &[]).await,
            Who::UserA => token(&server, Some("patient-a"), scope, None, &[]).await,
            Who::System => token(&server, None, scope, None, &[]).await,
        };
        let (path, subject) = match path.split_once(" SUBJECT=") {
            Some((p, who)) => (subst(p), Some(if who == "A" { s.a.clone() } else { s.b.clone() })),
            None => (subst(path), None),
        };
        let body = match (&subject, path.split('/').next()) {
            (_, Some("Practitioner")) => Some(json!({"resourceType": "Practitioner", "name": [{"family": "Written"}]})),
            (Some(p), _) => {
                let mut o = json!({"resourceType": "Observation", "status": "final", "code": {"text": "matrix"}, "subject": {"reference": format!("Patient/{p}")}});
                if let Some(id) = path.split('/').nth(1) {
                    o["id"] = json!(id);
                }
                Some(o)
            }
            _ => None,
        };
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let label = format!("{scope} {who:?} {method} {path}");
        let (got, bundle) = call(&server, &t, m, &path, body.as_ref()).await;
        if got != *status {
            failures.push(format!("{label}: status {got}, expected {status}"));
            continue;
        }
        let listed = |b: &Value| if b["type"] == "history" { entries(b, None) } else { entries(b, Some("match")) };
        match want {
            Want::Status => {}
            Want::Nothing => {
                if !listed(&bundle).is_empty() || bundle["entry"].as_array().is_some_and(|e| !e.is_empty()) {
                    failures.push(format!("{label}: expected no entries, got {}", bundle["entry"]));
                }
            }
            Want::Same(rtype, query) => {
                let expected = reference(&server, rtype, &subst(query)).await;
                let (st, got_set) = if path.contains("_history") {
                    (200, listed(&bundle))
                } else {
                    all_matches(&server, &t, &path).await
                };
                if st != 200 || got_set != expected {
                    failures.push(format!(
                        "{label}: {} results, expected {} (extra {:?}, missing {:?})",
                        got_set.len(),
                        expected.len(),
                        got_set.difference(&expected).take(3).collect::<Vec<_>>(),
                        expected.difference(&got_set).take(3).collect::<Vec<_>>()
                    ));
                }
                // Nothing else rides along: includes of hidden types are dropped too.
                let included = entries(&bundle, Some("include"));
                if path.contains("_revinclude=Observation") && !included.is_empty() && !scope.contains('*') {
                    failures.push(format!("{label}: included {included:?} the scope does not reach"));
                }
            }
        }
        // Rows that list resources of many types: every one in A's compartment or shared.
        if path.contains("$everything") || path.starts_with("_history") {
            for key in listed(&bundle) {
                let (t, id) = key.split_once('/').unwrap();
                if t == "Observation" && !a_obs_in_compartment.contains(&key) && !id.is_empty() {
                    failures.push(format!("{label}: {key} is not patient A's"));
                }
                if t == "Patient" && id != s.a {
                    failures.push(format!("{label}: lists {key}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n  {}", failures.len(), rows.len(), failures.join("\n  "));
}

/// Demo data: two practitioners whose care-team patient lists overlap, a parent who is proxy
/// for two children, and a member with behavioral-health and substance-use records.
pub(crate) struct Demo {
    pub(crate) data: demo::DemoData,
}

impl Demo {
    pub(crate) async fn load(server: &TestServer) -> Demo {
        let data = demo::generate(&demo::DemoConfig { seed: 7, patients: 10 });
        let mut resources = Vec::new();
        for bundle in &data.bundles {
            for e in bundle["entry"].as_array().unwrap() {
                resources.push(e["resource"].clone());
            }
        }
        server.seed(resources).await;
        Demo { data }
    }

    /// Patients whose care team includes `practitioner` or whose general practitioner they are,
    /// read from the generated JSON.
    fn patients_of(&self, practitioner: &str) -> BTreeSet<String> {
        let reference = format!("Practitioner/{practitioner}");
        let mut out = BTreeSet::new();
        for r in self.data.resources() {
            match r["resourceType"].as_str() {
                Some("CareTeam")
                    if r["participant"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["member"]["reference"] == reference.as_str()) =>
                {
                    out.insert(r["subject"]["reference"].as_str().unwrap().trim_start_matches("Patient/").to_owned());
                }
                Some("Patient")
                    if r["generalPractitioner"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|g| g["reference"] == reference.as_str()) =>
                {
                    out.insert(r["id"].as_str().unwrap().to_owned());
                }
                _ => {}
            }
        }
        out
    }
}

async fn practitioners_see_exactly_their_patients(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    apps(&server).await;
    let demo = Demo::load(&server).await;
    let accounts = demo.data.accounts.clone();
    let (pa, pb) = (&accounts.practitioner_ids[0], &accounts.practitioner_ids[1]);
    user(&server, "dr-a", Role::Practitioner, Some(format!("Practitioner/{pa}")), &[]).await;
    user(&server, "dr-b", Role::Practitioner, Some(format!("Practitioner/{pb}")), &[]).await;
    let (list_a, list_b) = (demo.patients_of(pa), demo.patients_of(pb));
    assert!(!list_a.is_disjoint(&list_b), "the demo's lists overlap");
    assert!(list_a != list_b);
    for (username, expected) in [("dr-a", &list_a), ("dr-b", &list_b)] {
        let t = token(&server, Some(username), "user/*.rs", None, &[]).await;
        let (status, patients) = all_matches(&server, &t, "Patient?_count=3").await;
        assert_eq!(status, 200);
        let got: BTreeSet<String> = patients.iter().map(|p| p.trim_start_matches("Patient/").to_owned()).collect();
        assert_eq!(&got, expected, "{username}'s Patient search");
        // user/*.rs searches of other types: only their patients' data.
        let (_, observations) = all_matches(&server, &t, "Observation?_count=500&category=laboratory").await;
        let mut expected_obs = BTreeSet::new();
        for p in expected {
            expected_obs.extend(reference(&server, "Observation", &format!("patient={p}&category=laboratory")).await);
        }
        assert_eq!(observations, expected_obs, "{username}'s lab search");
        // Someone else's patient reads as unknown.
        let all = reference(&server, "Patient", "").await;
        let stranger = all.iter().map(|p| p.trim_start_matches("Patient/")).find(|p| !expected.contains(*p)).unwrap();
        assert_eq!(get(&server, &t, &format!("Patient/{stranger}")).await.0, 404, "{username} reads a stranger");
        assert_eq!(get(&server, &t, &format!("Patient/{stranger}/$everything")).await.0, 404);
    }
    // An administrator's assignment adds a patient; an organization assignment too.
    let stranger: String = reference(&server, "Patient", "")
        .await
        .iter()
        .map(|p| p.trim_start_matches("Patient/").to_owned())
        .find(|p| !list_a.contains(p))
        .unwrap();
    let dr_a = server.store.user_by_username("dr-a").await.unwrap().unwrap();
    server.store.add_user_patient(&dr_a.user_id, &stranger.parse().unwrap()).await.unwrap();
    server.auth.forget_people();
    let t = token(&server, Some("dr-a"), "user/*.rs", None, &[]).await;
    assert_eq!(get(&server, &t, &format!("Patient/{stranger}")).await.0, 200, "assigned to dr-a");
    let (_, seen) = all_matches(&server, &t, "Patient?_count=100").await;
    assert_eq!(seen.len(), list_a.len() + 1);
    // Administrators are not limited to a list.
    user(&server, "root", Role::Admin, None, &[]).await;
    let t = token(&server, Some("root"), "user/*.rs", None, &[]).await;
    let (_, everyone) = all_matches(&server, &t, "Patient?_count=100").await;
    assert_eq!(everyone.len(), 10);
}

async fn proxy_and_patient_context(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    apps(&server).await;
    let demo = Demo::load(&server).await;
    let a = &demo.data.accounts;
    let parent = a.proxy_parent_patient_id.clone();
    let kids = a.proxy_patient_ids.clone();
    user(&server, "parent", Role::Patient, Some(format!("Patient/{parent}")), &[&parent, &kids[0], &kids[1]]).await;
    // user/ scopes: the whole family.
    let t = token(&server, Some("parent"), "user/*.rs", None, &[]).await;
    let (_, family) = all_matches(&server, &t, "Patient").await;
    let expected: BTreeSet<String> = [&parent, &kids[0], &kids[1]].iter().map(|p| format!("Patient/{p}")).collect();
    assert_eq!(family, expected);
    // patient/ scopes: the one chosen.
    let t = token(&server, Some("parent"), "patient/*.rs", Some(&kids[1]), &[]).await;
    let (_, one) = all_matches(&server, &t, "Patient").await;
    assert_eq!(one, BTreeSet::from([format!("Patient/{}", kids[1])]));
    assert_eq!(get(&server, &t, &format!("Patient/{}", kids[0])).await.0, 404);
    assert_eq!(get(&server, &t, &format!("Condition?patient={}", kids[0])).await.1["entry"], Value::Null);
    // The member is nobody's proxy.
    assert_eq!(get(&server, &t, &format!("Patient/{}", a.member_patient_id)).await.0, 404);
}

async fn withheld_categories_are_absent_everywhere(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    apps(&server).await;
    let demo = Demo::load(&server).await;
    let member = demo.data.accounts.member_patient_id.clone();
    user(&server, "member", Role::Patient, Some(format!("Patient/{member}")), &[&member]).await;
    // The labeler marked the member's behavioral-health and substance-use records on import.
    let psy = reference(
        &server,
        "Condition",
        &format!("patient={member}&_security=http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY"),
    )
    .await;
    let eth = reference(
        &server,
        "Condition",
        &format!("patient={member}&_security=http://terminology.hl7.org/CodeSystem/v3-ActCode|ETH"),
    )
    .await;
    assert!(!psy.is_empty() && !eth.is_empty(), "labels: PSY {psy:?} ETH {eth:?}");
    let labeled_any: BTreeSet<String> = {
        let mut s = BTreeSet::new();
        for code in ["PSY", "ETH"] {
            for t in [
                "Condition",
                "Encounter",
                "MedicationRequest",
                "Observation",
                "Procedure",
                "Claim",
                "ExplanationOfBenefit",
                "CarePlan",
            ] {
                s.extend(
                    reference(
                        &server,
                        t,
                        &format!("patient={member}&_security=http://terminology.hl7.org/CodeSystem/v3-ActCode|{code}"),
                    )
                    .await,
                );
            }
        }
        s
    };
    let withheld = [SensitiveCategory::BehavioralHealth, SensitiveCategory::SubstanceUse];
    let t = token(&server, Some("member"), "patient/*.rs", Some(&member), &withheld).await;
    let psy_id = psy.iter().next().unwrap().trim_start_matches("Condition/").to_owned();
    let leaks = |what: &str, found: &BTreeSet<String>| {
        let leaked: Vec<&String> = found.intersection(&labeled_any).collect();
        assert!(leaked.is_empty(), "{what} shows withheld records: {leaked:?}");
    };
    // Search, count, includes, history, $everything, read, vread.
    let (_, conditions) = all_matches(&server, &t, "Condition?_count=7").await;
    leaks("Condition search", &conditions);
    let all_conditions = reference(&server, "Condition", &format!("patient={member}")).await;
    assert_eq!(conditions.len(), all_conditions.difference(&psy).filter(|c| !eth.contains(*c)).count());
    let (_, count) = get(&server, &t, "Condition?_summary=count").await;
    assert_eq!(count["total"].as_u64(), Some(conditions.len() as u64));
    let (_, with_inc) = get(&server, &t, "Encounter?_revinclude=Condition:encounter&_count=200").await;
    leaks("_revinclude", &entries(&with_inc, None));
    let (_, hist) = get(&server, &t, "Condition/_history?_count=1000").await;
    leaks("type history", &entries(&hist, None));
    let (_, system_hist) = get(&server, &t, "_history?_count=1000").await;
    leaks("system history", &entries(&system_hist, None));
    let (_, everything) = get(&server, &t, &format!("Patient/{member}/$everything?_count=1000")).await;
    leaks("$everything", &entries(&everything, None));
    assert!(!entries(&everything, None).is_empty());
    assert_eq!(get(&server, &t, &format!("Condition/{psy_id}")).await.0, 404);
    assert_eq!(get(&server, &t, &format!("Condition/{psy_id}/_history/1")).await.0, 404);
    assert_eq!(get(&server, &t, &format!("Condition/{psy_id}/_history")).await.0, 404);
    // A later grant without the restriction sees them.
    let open = token(&server, Some("member"), "patient/*.rs", Some(&member), &[]).await;
    let (_, all) = all_matches(&server, &open, "Condition").await;
    assert_eq!(all, all_conditions);
    assert_eq!(get(&server, &open, &format!("Condition/{psy_id}")).await.0, 200);
}

async fn tokens_die_with_their_grant_and_requests_are_audited(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    apps(&server).await;
    let demo = Demo::load(&server).await;
    let member = demo.data.accounts.member_patient_id.clone();
    user(&server, "member", Role::Patient, Some(format!("Patient/{member}")), &[&member]).await;
    user(&server, "root", Role::Admin, Some("Practitioner/admin".into()), &[]).await;
    // No token, a garbage token: 401 with the RFC 6750 challenge.
    let r = server.client.get(server.url("Patient")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let t = token(&server, Some("member"), "patient/*.rs", Some(&member), &[]).await;
    assert_eq!(get(&server, &t, &format!("Patient/{member}")).await.0, 200);
    assert_eq!(get(&server, &t, "Practitioner?_count=1").await.0, 200, "shared directory types are readable");
    assert_eq!(call(&server, &t, reqwest::Method::DELETE, &format!("Patient/{member}"), None).await.0, 403);
    // Revoking the grant stops the token at once.
    let claims: Value = serde_json::from_slice(&base64_payload(&t)).unwrap();
    let grant: auth::GrantId = claims["grant"].as_str().unwrap().parse().unwrap();
    server.auth.revoke_grant(&grant, "admin:test").await.unwrap();
    let r = server.client.get(server.url(&format!("Patient/{member}"))).bearer_auth(&t).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));

    // The audit trail, readable by administrators only.
    server.audit.flush().await;
    let admin = token(&server, Some("root"), "user/*.rs", None, &[]).await;
    let (status, events) = get(&server, &admin, &format!("AuditEvent?patient={member}&_count=50")).await;
    assert_eq!(status, 200, "{events}");
    let list = events["entry"].as_array().unwrap();
    let codes: Vec<(String, String)> = list
        .iter()
        .map(|e| {
            (
                e["resource"]["subtype"][0]["code"].as_str().unwrap().to_owned(),
                e["resource"]["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(codes.contains(&("read".into(), "0".into())), "{codes:?}");
    assert!(codes.contains(&("delete".into(), "4".into())), "the refused delete is recorded: {codes:?}");
    assert!(
        codes.iter().filter(|(c, o)| c == "read" && o == "4").count() >= 1,
        "the read with a revoked token: {codes:?}"
    );
    let read =
        list.iter().find(|e| e["resource"]["subtype"][0]["code"] == "read" && e["resource"]["outcome"] == "0").unwrap();
    assert_eq!(read["resource"]["agent"][0]["who"]["reference"], format!("Patient/{member}"));
    assert_eq!(read["resource"]["agent"][1]["who"]["identifier"]["value"], "app");
    assert_eq!(read["resource"]["entity"][0]["what"]["reference"], format!("Patient/{member}"));
    let id = read["resource"]["id"].as_str().unwrap();
    assert_eq!(get(&server, &admin, &format!("AuditEvent/{id}")).await.0, 200);
    // Not for the member, and never writable.
    let t = token(&server, Some("member"), "patient/*.rs", Some(&member), &[]).await;
    assert_eq!(get(&server, &t, "AuditEvent").await.0, 403);
    let (status, _) =
        call(&server, &admin, reqwest::Method::POST, "AuditEvent", Some(&json!({"resourceType": "AuditEvent"}))).await;
    assert_eq!(status, 403);
}

async fn account_pages_list_and_revoke_apps(backend: Backend) {
    let Some(server) = TestServer::start_enforcing(backend).await else { return };
    crate::smart::setup(&server).await;
    let browser = crate::smart::Browser::new();
    // Connect the app through the real flow, withholding everything sensitive (the default).
    let back =
        crate::smart::approve(&server, &browser, "launch/patient offline_access patient/*.rs", Some("p2"), &[]).await;
    let (_, t) = crate::smart::exchange(&server, &crate::smart::param(&back, "code").unwrap()).await;
    let access = t["access_token"].as_str().unwrap();
    assert_eq!(crate::smart::fhir_get(&server, access, "Patient/p2").await.0, 200);
    // The same browser is signed in: Connected apps lists the grant.
    let page = browser.get(&format!("{}/account/apps", server.origin)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    for text in [
        "App growth",
        "Independent developer",
        "Bobby Member",
        "Read and search all of your health records",
        "Keep access when you are not using the app",
        "Behavioral health, Substance use, Sexual and reproductive health, HIV",
        "Revoke access",
    ] {
        assert!(page.body.contains(text), "Connected apps page lacks {text:?}:\n{}", page.body);
    }
    // Access history shows the read.
    let history = browser.get(&format!("{}/account/history", server.origin)).await;
    assert!(history.body.contains("Read demographics") && history.body.contains("App growth"), "{}", history.body);
    // A forged revoke is refused; the real one works and the app's next call fails.
    let grant = crate::smart::hidden(&page.body, "grant");
    let forged =
        browser.post(&format!("{}/account/apps/revoke", server.origin), &[("csrf", "nope"), ("grant", &grant)]).await;
    assert_eq!(forged.status, 400);
    let csrf = crate::smart::hidden(&page.body, "csrf");
    let done =
        browser.post(&format!("{}/account/apps/revoke", server.origin), &[("csrf", &csrf), ("grant", &grant)]).await;
    assert_eq!(done.status, 303);
    assert_eq!(crate::smart::fhir_get(&server, access, "Patient/p2").await.0, 401);
    let (_, _, refreshed) = crate::smart::token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
            ("client_id", "growth"),
        ],
    )
    .await;
    assert_eq!(refreshed["error"], "invalid_grant");
    let after = browser.get(&format!("{}/account/apps", server.origin)).await;
    assert!(
        after.body.contains("can no longer reach your records") || after.body.contains("Revoked"),
        "{}",
        after.body
    );
    // Someone else's session cannot see or revoke it; signed out, the pages ask to sign in.
    let stranger = crate::smart::Browser::new();
    let bounce = stranger.get(&format!("{}/account/apps", server.origin)).await;
    assert_eq!((bounce.status, bounce.location.as_deref()), (303, Some("/account/signin")));
    let out = browser.post(&format!("{}/account/signout", server.origin), &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    let bounce = browser.get(&format!("{}/account/apps", server.origin)).await;
    assert_eq!(bounce.status, 303);
}

async fn dev_open_access_is_explicit(backend: Backend) {
    let Some(open) = TestServer::start(backend).await else { return };
    let r = open.client.get(format!("{}/readyz", open.origin)).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("WARNING"), "readyz says the API is open");
    let r = open.client.get(open.url("Patient")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store", "health records are never cached by browsers or proxies");
    let Some(closed) = TestServer::start_enforcing(backend).await else { return };
    let r = closed.client.get(format!("{}/readyz", closed.origin)).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ready");
    assert_eq!(closed.get("Patient").await.0, 401);
    // Discovery and the CapabilityStatement stay public.
    assert_eq!(closed.get("metadata").await.0, 200);
    assert_eq!(closed.get(".well-known/smart-configuration").await.0, 200);
}

fn base64_payload(jwt: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(jwt.split('.').nth(1).unwrap()).unwrap()
}

both_backends!(
    scope_matrix,
    practitioners_see_exactly_their_patients,
    proxy_and_patient_context,
    withheld_categories_are_absent_everywhere,
    tokens_die_with_their_grant_and_requests_are_audited,
    account_pages_list_and_revoke_apps,
    dev_open_access_is_explicit,
    reads_without_a_patient_context_are_audited_under_the_resources_patient,
);

/// An administrator's read of an Observation names the patient it is about in the trail (taken
/// from the resource's `subject`), so the patient's Access history shows it.
async fn reads_without_a_patient_context_are_audited_under_the_resources_patient(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    s.seed(vec![
        json!({"resourceType": "Patient", "id": "audited-pt"}),
        json!({"resourceType": "Observation", "id": "audited-obs", "status": "final",
               "code": {"text": "pulse"}, "subject": {"reference": "Patient/audited-pt"}}),
        json!({"resourceType": "Coverage", "id": "audited-cov", "status": "active",
               "beneficiary": {"reference": "Patient/audited-pt"}, "payor": [{"display": "Plan"}]}),
    ])
    .await;
    assert_eq!(s.get("Observation/audited-obs").await.0, 200);
    assert_eq!(s.get("Coverage/audited-cov").await.0, 200);
    let (status, trail) = s.get("AuditEvent?patient=audited-pt").await;
    assert_eq!(status, 200);
    let read: Vec<String> = trail["entry"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| e["resource"]["entity"].as_array().cloned().unwrap_or_default())
        .filter_map(|en| en["what"]["reference"].as_str().map(str::to_owned))
        .collect();
    for what in ["Observation/audited-obs", "Coverage/audited-cov"] {
        assert!(read.iter().any(|r| r.ends_with(what)), "{what} missing from the patient's trail: {read:?}");
    }
}
