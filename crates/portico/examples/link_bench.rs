//! Link's fan-out benchmark (`bench/link`): N local Portico portals with one generated patient
//! each, all connected for one person through a `portico link serve` process; then
//!   * each portal's whole record fetched alone (synchronous fetch, median of R runs);
//!   * all N at once through the person's N connections (median of R runs), against the slowest
//!     portal alone;
//!   * Link's resident memory (VmRSS, sampled every 5 ms) during the fan-out.
//!
//! Prints one JSON document.
//!
//! Usage: link_bench PORTICO_BIN [PORTALS] [RUNS]
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failing loudly is the point

use std::io::BufRead as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PASSWORD: &str = "bench-password";

struct Portal {
    base: String,
    origin: String,
    patient: String,
    resources: usize,
    state: server::AppState,
}

fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker).unwrap_or_else(|| panic!("no {name} in page")) + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&#x3a;", ":")
        .replace("&#124;", "|")
        .replace("&amp;", "&")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
}

async fn portal(bundles: &[Value], dir: &std::path::Path, n: usize) -> Portal {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let base = format!("{origin}/fhir");
    let options = store::StoreOptions { base_url: base.clone(), ..store::StoreOptions::default() };
    let db = dir.join(format!("portal-{n}.db")).display().to_string();
    let store = store::Store::connect(&db, options, Arc::new(store::SystemClock)).await.unwrap();
    let mut resources = Vec::new();
    for b in bundles {
        for e in b["entry"].as_array().unwrap() {
            resources.push(e["resource"].clone());
        }
    }
    let patient = resources.iter().find(|r| r["resourceType"] == "Patient").unwrap()["id"].as_str().unwrap().to_owned();
    let count = resources.len();
    store.import(resources).await.unwrap();
    let config = server::ServerConfig { base_url: base.clone(), ..server::ServerConfig::default() };
    let state = server::AppState::new(store, config).await.unwrap();
    let hash = auth::password::hash_secret(PASSWORD).unwrap();
    state
        .auth
        .store()
        .create_user(store::auth::NewUser {
            username: "member".into(),
            password_hash: hash,
            role: store::auth::Role::Patient,
            fhir_user: Some(format!("Patient/{patient}")),
            patients: vec![patient.parse().unwrap()],
        })
        .await
        .unwrap();
    let serving = state.clone();
    tokio::spawn(async move { server::serve(listener, serving).await });
    Portal { base, origin, patient, resources: count, state }
}

async fn register_link(portal: &Portal, callback: &str) {
    portal
        .state
        .auth
        .register_client(oauth::register::ClientSpec {
            client_id: Some("link".into()),
            name: "Link bench".into(),
            owner_type: store::auth::OwnerType::IndependentDeveloper,
            client_type: store::auth::ClientType::Public,
            redirect_uris: vec![callback.to_owned()],
            scopes: oauth::register::DEFAULT_APP_SCOPES.into(),
            jwks: None,
            jwks_uri: None,
            logo_uri: None,
            policy_uri: None,
            tos_uri: None,
            ehr_launcher: false,
            source: store::auth::RegistrationSource::Cli,
        })
        .await
        .unwrap();
}

fn cli(bin: &str, dir: &std::path::Path, args: &[&str]) -> Value {
    let out = std::process::Command::new(bin)
        .arg("link")
        .args(args)
        .arg("--database-url")
        .arg(dir.join("link.db"))
        .arg("--key-file")
        .arg(dir.join("link.keys"))
        .env_remove("PORTICO_LINK_KEY")
        .env("PORTICO_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A person's login at a portal through Link; returns the code for the app.
async fn login(connect: &str, portal: &Portal) -> String {
    let http =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let loc = |r: &reqwest::Response| r.headers()["location"].to_str().unwrap().to_owned();
    let r = http.get(connect).send().await.unwrap();
    let r = http.get(loc(&r)).send().await.unwrap();
    let page = http.get(format!("{}{}", portal.origin, loc(&r))).send().await.unwrap().text().await.unwrap();
    let form = [
        ("req", hidden(&page, "req")),
        ("csrf", hidden(&page, "csrf")),
        ("username", "member".into()),
        ("password", PASSWORD.into()),
    ];
    let r = http.post(format!("{}/auth/signin", portal.origin)).form(&form).send().await.unwrap();
    let page = http.get(format!("{}{}", portal.origin, loc(&r))).send().await.unwrap().text().await.unwrap();
    let mut form = vec![
        ("req".to_owned(), hidden(&page, "req")),
        ("csrf".to_owned(), hidden(&page, "csrf")),
        ("decision".to_owned(), "allow".to_owned()),
    ];
    for chunk in page.split("<input type=\"checkbox\"").skip(1) {
        if !chunk.split('>').next().unwrap().contains("checked") {
            continue;
        }
        let name = chunk.split("name=\"").nth(1).unwrap().split('"').next().unwrap();
        let value = chunk.split("value=\"").nth(1).unwrap().split('"').next().unwrap();
        form.push((unescape(name), unescape(value)));
    }
    let r = http.post(format!("{}/auth/consent", portal.origin)).form(&form).send().await.unwrap();
    let r = http.get(loc(&r)).send().await.unwrap();
    let back = loc(&r);
    let query = back.split_once('?').unwrap().1;
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "code").map(|(_, v)| v.into_owned()).expect("a code")
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bin = args.get(1).cloned().expect("usage: link_bench PORTICO_BIN [PORTALS] [RUNS]");
    let n: usize = args.get(2).map_or(20, |v| v.parse().unwrap());
    let runs: usize = args.get(3).map_or(5, |v| v.parse().unwrap());
    let dir = tempfile::tempdir().unwrap();

    // The patients: the generator's single-patient bundles, one per portal, with the shared
    // directory bundle (organizations, practitioners) at every portal.
    let data = demo::generate(&demo::DemoConfig { seed: 7, patients: n + 4 });
    let shared = data.bundles[0].clone();
    let singles: Vec<Value> = data.bundles[1..]
        .iter()
        .filter(|b| {
            b["entry"].as_array().unwrap().iter().filter(|e| e["resource"]["resourceType"] == "Patient").count() == 1
        })
        .take(n)
        .cloned()
        .collect();
    assert_eq!(singles.len(), n, "enough single-patient bundles");
    let mut portals = Vec::new();
    for (i, b) in singles.iter().enumerate() {
        portals.push(portal(&[shared.clone(), b.clone()], dir.path(), i).await);
    }

    // Link as its own process.
    // Link's own defaults but for the app's fetch rate; LINK_BENCH_RPS overrides the per-portal
    // request rate (default 20/s; 0 = unpaced).
    let mut config = String::from("app_fetches_per_minute = 100000\ndiscovery_interval_seconds = 0\n");
    if let Ok(rps) = std::env::var("LINK_BENCH_RPS") {
        config
            .push_str(&format!("[portal]\nrequests_per_second = {:?}\n", rps.parse::<f64>().expect("LINK_BENCH_RPS")));
    }
    std::fs::write(dir.path().join("link.toml"), config).unwrap();
    let mut child = std::process::Command::new(&bin)
        .args(["link", "serve", "--listen", "127.0.0.1:0"])
        .arg("--database-url")
        .arg(dir.path().join("link.db"))
        .arg("--key-file")
        .arg(dir.path().join("link.keys"))
        .arg("--config")
        .arg(dir.path().join("link.toml"))
        .env_remove("PORTICO_LINK_KEY")
        .env("PORTICO_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let link = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    let pid = child.id();
    let callback = format!("{link}/link/v1/callback");
    let client_url = "https://bench.example/back";
    let app = cli(&bin, dir.path(), &["app", "add", "--name", "Bench", "--client-url", client_url]);
    let key = app["secretKey"].as_str().unwrap().to_owned();
    let app_id = app["appId"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let mut connections = Vec::new();
    for (i, p) in portals.iter().enumerate() {
        register_link(p, &callback).await;
        let added = cli(
            &bin,
            dir.path(),
            &[
                "endpoint",
                "add",
                "--name",
                &format!("Portal {i}"),
                "--category",
                "clinical",
                "--fhir-base",
                &p.base,
                "--client-id",
                "link",
            ],
        );
        let ep = added["endpoint"]["id"].as_str().unwrap().to_owned();
        let connect = format!(
            "{link}/link/v1/connect/{ep}?app={app_id}&clientURL={}&state=s&person=bench",
            form_urlencoded::byte_serialize(client_url.as_bytes()).collect::<String>()
        );
        let code = login(&connect, p).await;
        let c: Value = http
            .post(format!("{link}/link/v1/token"))
            .bearer_auth(&key)
            .json(&json!({"code": code}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        connections.push(c["connectionId"].as_str().unwrap().to_owned());
        assert_eq!(c["patientId"], p.patient.as_str());
    }

    let fetch = |path: String| {
        let (http, key, link) = (http.clone(), key.clone(), link.clone());
        async move {
            let t0 = Instant::now();
            let r = http.post(format!("{link}{path}")).bearer_auth(&key).json(&json!({})).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{path}");
            // Read the whole answer, count its entries without building them (the client's
            // parsing is not what is measured, and it shares the cores with Link).
            #[derive(serde::Deserialize)]
            struct Counted {
                entry: Vec<serde::de::IgnoredAny>,
            }
            let body = r.bytes().await.unwrap();
            let elapsed = t0.elapsed().as_secs_f64();
            let counted: Counted = serde_json::from_slice(&body).unwrap();
            (elapsed, counted.entry.len())
        }
    };
    // Warm-up: one fetch per connection (discovery, first tokens, page caches).
    for c in &connections {
        fetch(format!("/link/v1/connections/{c}/fetch")).await;
    }
    let mut alone = Vec::new();
    let mut returned = Vec::new();
    for c in &connections {
        let mut times = Vec::new();
        let mut count = 0;
        for _ in 0..runs {
            let (t, n) = fetch(format!("/link/v1/connections/{c}/fetch")).await;
            times.push(t);
            count = n;
        }
        alone.push(median(times));
        returned.push(count);
    }
    let slowest = alone.iter().cloned().fold(0.0, f64::max);
    let rss_before = rss_kib(pid);
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut fanout = Vec::new();
    let mut fanout_resources = 0;
    // LINK_BENCH_PERF=FILE: profile Link (perf, software clock) during the fan-out runs.
    let perf = std::env::var("LINK_BENCH_PERF").ok().map(|out| {
        let child = std::process::Command::new("perf")
            .args(["record", "-e", "cpu-clock", "-F", "1999", "-g", "-o", &out, "-p", &pid.to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf");
        std::thread::sleep(Duration::from_millis(500));
        child
    });
    let (link_cpu0, portals_cpu0) = (cpu_seconds(&pid.to_string()), cpu_seconds("self"));
    for _ in 0..runs {
        let (t, n) = fetch("/link/v1/persons/bench/fetch".to_owned()).await;
        fanout.push(t);
        fanout_resources = n;
    }
    let (link_cpu, portals_cpu) =
        ((cpu_seconds(&pid.to_string()) - link_cpu0) / runs as f64, (cpu_seconds("self") - portals_cpu0) / runs as f64);
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    sampler.join().unwrap();
    if let Some(mut p) = perf {
        let _ = std::process::Command::new("kill").args(["-INT", &p.id().to_string()]).status();
        let _ = p.wait();
    }
    let fanout_median = median(fanout.clone());
    let biggest = returned.iter().enumerate().max_by_key(|(_, n)| **n).map(|(i, _)| i).unwrap();
    let report = json!({
        "portals": n,
        "portalRequestsPerSecond": std::env::var("LINK_BENCH_RPS").unwrap_or_else(|_| "20 (default)".into()),
        "runs": runs,
        "portalResources": portals.iter().map(|p| p.resources).collect::<Vec<_>>(),
        "returnedPerConnection": returned,
        "aloneSecondsMedian": alone,
        "slowestAloneSeconds": slowest,
        "largestRecord": {"resources": returned[biggest], "seconds": alone[biggest]},
        "fanoutSeconds": fanout,
        "fanoutSecondsMedian": fanout_median,
        "fanoutResources": fanout_resources,
        "fanoutOverSlowest": fanout_median / slowest,
        "cpuSecondsPerFanout": {"link": link_cpu, "portalsAndBench": portals_cpu},
        "linkRssKiBBefore": rss_before,
        "linkRssKiBPeakDuringFanout": peak.load(std::sync::atomic::Ordering::SeqCst),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    child.kill().unwrap();
    child.wait().unwrap();
}
