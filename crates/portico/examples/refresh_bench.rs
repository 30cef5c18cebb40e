//! Refresh-token exchanges per second against a running Portico: one task per refresh token,
//! each exchanging its token for the next (rotation means every chain is sequential) for a fixed
//! time. Used by `bench/auth`.
//!
//! Usage: refresh_bench TOKEN_ENDPOINT CLIENT_ID TOKENS_FILE SECONDS
//! (TOKENS_FILE: one refresh token per line.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failing loudly is the point

use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, client_id, file, seconds] = args.as_slice() else {
        eprintln!("usage: refresh_bench TOKEN_ENDPOINT CLIENT_ID TOKENS_FILE SECONDS");
        std::process::exit(2);
    };
    let tokens: Vec<String> = std::fs::read_to_string(file)
        .expect("read tokens")
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let duration = Duration::from_secs(seconds.parse().expect("seconds"));
    let client = reqwest::Client::new();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for token in tokens {
        let (client, endpoint, client_id) = (client.clone(), endpoint.clone(), client_id.clone());
        tasks.push(tokio::spawn(async move {
            let mut token = token;
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while start.elapsed() < duration {
                let t0 = Instant::now();
                let r = client
                    .post(&endpoint)
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", token.as_str()),
                        ("client_id", client_id.as_str()),
                    ])
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value = r.json().await.expect("json");
                        token = v["refresh_token"].as_str().expect("rotated token").to_owned();
                        latencies.push(t0.elapsed());
                    }
                    _ => {
                        errors += 1;
                        break;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{{\"exchanges\": {}, \"seconds\": {elapsed:.2}, \"per_second\": {:.1}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \"errors\": {errors}}}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
}
