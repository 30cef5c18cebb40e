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
    let everything = url_of("A member's record").expect("member URL printed");
    let labs = url_of("Their lab results").expect("labs URL printed");
    let client = reqwest::Client::new();
    let bundle: Value = client.get(&everything).send().await.unwrap().json().await.unwrap();
    let types: Vec<&str> =
        bundle["entry"].as_array().unwrap().iter().map(|e| e["resource"]["resourceType"].as_str().unwrap()).collect();
    for expected in ["Patient", "Encounter", "Observation", "Condition", "Coverage", "Claim", "ExplanationOfBenefit"] {
        assert!(types.contains(&expected), "{expected} missing from the member's $everything");
    }
    let labs: Value = client.get(&labs).send().await.unwrap().json().await.unwrap();
    assert!(labs["total"].as_i64().unwrap() > 0, "the member has lab results");
    let count: Value = client.get(format!("{base}/Patient?_summary=count")).send().await.unwrap().json().await.unwrap();
    assert_eq!(count["total"], 6);
    child.kill().unwrap();
    child.wait().unwrap();
}
