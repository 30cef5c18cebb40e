//! The `portico demo` command as a newcomer runs it: generate, load, serve, print URLs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_generates_serves_and_prints_urls() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let log = dir.path().join("demo.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["demo", "--patients", "6", "--listen", "127.0.0.1:0", "--database-url"])
        .arg(&db)
        .env("PORTICO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("Ctrl-C");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let lines = tokio::time::timeout(Duration::from_secs(60), lines).await.expect("demo printed its URLs").unwrap();
    // A demo that stopped before it served says why on stderr.
    if let Ok(Some(status)) = child.try_wait() {
        panic!("the demo exited ({status}): {lines:?}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    assert!(
        lines.last().is_some_and(|l| l.contains("Ctrl-C")),
        "the demo stopped printing before it served: {lines:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let url_of = |label: &str| {
        lines
            .iter()
            .find(|l| l.trim_start().starts_with(label))
            .map(|l| l.split_whitespace().last().unwrap().to_string())
    };
    let base = url_of("FHIR base URL").expect("base URL printed");
    let app = url_of("Try the sample app").expect("sample app printed");
    let origin = app.trim_end_matches("/demo-app/").to_string();
    assert!(lines.iter().any(|l| l.trim_start().starts_with("member ")), "member login printed: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("password for all: portico-demo")));
    let client = reqwest::Client::new();
    let page = client.get(&app).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Connect to Portico"));
    let script = client.get(format!("{origin}/demo-app/app.js")).send().await.unwrap().text().await.unwrap();
    assert!(script.contains("code_challenge_method"));

    // The member signs in through the sample app's registration and allows what it asks.
    let member = demo_token(&origin, &base, "member", "launch/patient openid fhirUser patient/*.rs").await;
    let patient = member["patient"].as_str().expect("patient in context").to_string();
    let get = |url: String, token: String| {
        let client = client.clone();
        async move { client.get(url).bearer_auth(token).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let at = member["access_token"].as_str().unwrap().to_string();
    let bundle = get(format!("{base}/Patient/{patient}/$everything"), at.clone()).await;
    let types: Vec<&str> =
        bundle["entry"].as_array().unwrap().iter().map(|e| e["resource"]["resourceType"].as_str().unwrap()).collect();
    for expected in ["Patient", "Encounter", "Observation", "Condition", "Coverage", "Claim", "ExplanationOfBenefit"] {
        assert!(types.contains(&expected), "{expected} missing from the member's $everything");
    }
    let labs = get(format!("{base}/Observation?patient={patient}&category=laboratory"), at).await;
    assert!(labs["total"].as_i64().unwrap() > 0, "the member has lab results");
    // The administrator sees every patient.
    let admin = demo_token(&origin, &base, "admin", "openid fhirUser user/*.rs").await;
    let count =
        get(format!("{base}/Patient?_summary=count"), admin["access_token"].as_str().unwrap().to_string()).await;
    assert_eq!(count["total"], 6);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Sign in to the demo as `username` through the sample app's client and allow everything asked.
async fn demo_token(origin: &str, base: &str, username: &str, scope: &str) -> Value {
    use crate::smart::{hidden, param, Browser, VERIFIER};
    let redirect = format!("{origin}/demo-app/");
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", "portico-demo-app"),
            ("redirect_uri", redirect.as_str()),
            ("scope", scope),
            ("state", "demo"),
            ("aud", base),
            ("code_challenge", auth::pkce::s256_challenge(VERIFIER).as_str()),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    let browser = Browser::new();
    let start = browser.get(&format!("{origin}/auth/authorize?{query}")).await;
    let signin = browser.get(&format!("{origin}{}", start.location.unwrap())).await;
    let form = [
        ("req", hidden(&signin.body, "req")),
        ("csrf", hidden(&signin.body, "csrf")),
        ("username", username.to_string()),
        ("password", "portico-demo".to_string()),
    ];
    let signed = browser
        .post(&format!("{origin}/auth/signin"), &form.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())
        .await;
    assert_eq!(signed.status, 303, "{username} signs in: {}", signed.body);
    let consent = browser.get(&format!("{origin}{}", signed.location.unwrap())).await;
    assert!(consent.body.contains("Allow"), "{}", consent.body);
    let mut form: Vec<(&str, String)> = vec![
        ("req", hidden(&consent.body, "req")),
        ("csrf", hidden(&consent.body, "csrf")),
        ("decision", "allow".into()),
        ("scope", "identity".into()),
    ];
    for s in scope.split(' ').filter(|s| s.contains('/') && !s.starts_with("launch")) {
        form.push(("scope", s.to_string()));
    }
    let done = browser
        .post(&format!("{origin}/auth/consent"), &form.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>())
        .await;
    let code = param(&done.location.unwrap(), "code").unwrap();
    let token: Value = reqwest::Client::new()
        .post(format!("{origin}/auth/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("client_id", "portico-demo-app"),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(token["access_token"].is_string(), "{token}");
    token
}

/// Run `portico ARGS…` against a database; the parsed JSON it prints.
fn portico(db: &std::path::Path, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(args)
        .arg("--database-url")
        .arg(db)
        .env("PORTICO_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "portico {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("portico {args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// The administration commands an operator uses: apps, accounts, assignments, tokens, grants,
/// keys, launch contexts, and the labeler switch of the config file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administration_commands() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("admin.db");
    let seed = dir.path().join("seed.json");
    std::fs::write(
        &seed,
        serde_json::json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": {"resourceType": "Patient", "id": "pat-1"}},
            {"resource": {"resourceType": "Patient", "id": "pat-2"}},
            {"resource": {"resourceType": "Condition", "id": "c-1", "subject": {"reference": "Patient/pat-1"},
              "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F32.9"}]}}}
        ]})
        .to_string(),
    )
    .unwrap();
    let import = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["import", "--quiet", "--database-url"])
        .arg(&db)
        .arg(&seed)
        .output()
        .unwrap();
    assert!(import.status.success());

    let app = portico(
        &db,
        &[
            "client",
            "add",
            "--name",
            "Ops App",
            "--confidential",
            "--redirect-uri",
            "https://ops.example/cb",
            "--client-id",
            "ops",
        ],
    );
    assert_eq!(app["client_id"], "ops");
    assert_eq!(app["token_endpoint_auth_method"], "client_secret_basic");
    assert!(app["client_secret"].as_str().is_some_and(|s| s.len() >= 32));
    let user = portico(
        &db,
        &["user", "add", "--username", "dr.x", "--password", "long enough pw", "--practitioner", "prac-x"],
    );
    assert_eq!(user["role"], "practitioner");
    assert_eq!(user["fhirUser"], "Practitioner/prac-x");
    let assigned = portico(&db, &["assign", "--username", "dr.x", "--patient", "pat-2"]);
    assert_eq!(assigned["assigned"], true);
    let list = portico(&db, &["client", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let before: Vec<Value> = portico(&db, &["keys", "list"])["keys"].as_array().unwrap().clone();
    assert_eq!(before.len(), 2, "an RS256 key for ID tokens and an ES256 key for access tokens");
    let rotated = portico(&db, &["keys", "rotate"]);
    assert_eq!(rotated["rotated"].as_array().unwrap().len(), 2);
    let published = rotated["jwks"]["keys"].as_array().unwrap();
    assert_eq!(published.len(), 4, "the old keys stay published until their tokens expire");
    for old in &before {
        assert!(published.contains(old));
    }
    let launch = portico(&db, &["launch", "create", "--patient", "pat-1", "--no-patient-banner"]);
    assert!(launch["launch"].as_str().is_some_and(|l| !l.is_empty()));

    // The token works against a server on that database: the practitioner sees the assigned
    // patient only, and the F32.9 condition was labeled on import.
    let server =
        crate::harness::TestServer::serve(db.display().to_string(), None, tempfile::tempdir().unwrap(), |_| {}).await;
    // Tokens are for one FHIR base (their audience).
    let tokens = portico(
        &db,
        &[
            "token",
            "issue",
            "--client",
            "ops",
            "--username",
            "dr.x",
            "--scopes",
            "user/*.rs offline_access",
            "--base-url",
            &server.base,
        ],
    );
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert!(tokens["refresh_token"].is_string());
    let get = |path: &str| {
        let (client, url, access) = (server.client.clone(), server.url(path), access.clone());
        async move {
            let r = client.get(url).bearer_auth(access).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(get("Patient/pat-2").await.0, 200);
    assert_eq!(get("Patient/pat-1").await.0, 404);
    let condition = server.store.read("Condition", "c-1").await.unwrap();
    let store::ReadOutcome::Found(condition) = condition else { panic!("c-1 stored") };
    assert!(condition.body.contains("\"PSY\""), "labeled: {}", condition.body);
    // Revoking the grant from the command line reaches the server.
    let grants = portico(&db, &["grant", "list", "--username", "dr.x"]);
    let grant = grants[0]["grant"].as_str().unwrap().to_owned();
    assert_eq!(grants[0]["live"], true);
    portico(&db, &["grant", "revoke", &grant]);
    let mut status = 0;
    for _ in 0..50 {
        status = get("Patient/pat-2").await.0;
        if status == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 401, "revoked by the CLI within the liveness cache's lifetime");

    // Labeling can be switched off in the config file.
    let config = dir.path().join("portico.toml");
    std::fs::write(&config, "[labels]\nenabled = false\n").unwrap();
    let unlabeled = dir.path().join("unlabeled.db");
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["import", "--quiet", "--config"])
        .arg(&config)
        .arg("--database-url")
        .arg(&unlabeled)
        .arg(&seed)
        .output()
        .unwrap();
    assert!(out.status.success());
    let other =
        crate::harness::TestServer::serve(unlabeled.display().to_string(), None, tempfile::tempdir().unwrap(), |c| {
            c.dev_open_access = true
        })
        .await;
    let (_, c) = other.get("Condition/c-1").await;
    assert!(c["meta"].get("security").is_none(), "{c}");
    // A typo in the config file is an error, not silently ignored.
    std::fs::write(&config, "[labels]\nenabeld = false\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["import", "--quiet", "--config"])
        .arg(&config)
        .arg("--database-url")
        .arg(&unlabeled)
        .arg(&seed)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"));
}
