//! The `portico demo` command as a newcomer runs it: generate, load, serve, print URLs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_generates_serves_and_prints_urls() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_portico"))
        .args(["demo", "--patients", "6", "--listen", "127.0.0.1:0", "--database-url"])
        .arg(&db)
        .env("PORTICO_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
