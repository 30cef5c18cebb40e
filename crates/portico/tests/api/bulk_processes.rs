//! Export jobs across process deaths: a `portico serve` killed with SIGKILL mid-export, and a
//! restart that finishes the job from its last file, with no line lost or written twice. Also
//! the polling limit and `portico group import`, on real processes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::both_backends;
use crate::harness::{cli_import, free_port, fresh_database, Backend, ServeProcess};

both_backends!(an_export_survives_kill_9);

async fn an_export_survives_kill_9(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((url, pg_name)) = fresh_database(backend, &dir).await else { return };
    let data = demo::generate(&demo::DemoConfig { seed: 11, patients: 8 });
    let mut files = Vec::new();
    for (i, bundle) in data.bundles.iter().enumerate() {
        let path = dir.path().join(format!("bundle-{i}.json"));
        std::fs::write(&path, bundle.to_string()).unwrap();
        files.push(path);
    }
    let out = cli_import(&url, &files);
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    let expected: BTreeSet<String> = data
        .resources()
        .map(|r| format!("{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap()))
        .collect();
    assert!(expected.len() > 1000, "enough data to stop half-way ({})", expected.len());

    // Slow on purpose (a rate limit), so the kill lands mid-export; a short lease, so the
    // restarted process takes the job over soon.
    let config = dir.path().join("portico.toml");
    let storage = dir.path().join("bulk");
    std::fs::write(
        &config,
        format!(
            "[bulk]\nstorage = {:?}\nresources_per_file = 100\npage_size = 25\nmax_resources_per_second = 500\n\
             lease_ms = 1000\nmin_poll_interval_ms = 300\n",
            storage.to_string_lossy()
        ),
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let port = free_port();
    let args = ["--database-url", url.as_str(), "--config", config.as_str(), "--dev-open-access"];
    let base = format!("http://127.0.0.1:{port}/fhir");
    let client = reqwest::Client::new();

    let server = ServeProcess::start(&args, port).await;
    let r = client.get(format!("{base}/$export")).header("prefer", "respond-async").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let status_url = r.headers()["content-location"].to_str().unwrap().to_owned();
    // Polled at once twice: the second is too soon.
    assert_eq!(client.get(&status_url).send().await.unwrap().status().as_u16(), 202);
    let r = client.get(&status_url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());

    // Wait until some files are written, then SIGKILL.
    let mut exported_before = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(350)).await;
        let r = client.get(&status_url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 202, "the export finished before it could be interrupted");
        let progress = r.headers()["x-progress"].to_str().unwrap().to_owned();
        exported_before = progress.split(' ').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
        if exported_before >= 300 {
            break;
        }
    }
    assert!(exported_before >= 300, "no progress before the kill");
    server.kill_9();

    let _server = ServeProcess::start(&args, port).await;
    let mut manifest = Value::Null;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(350)).await;
        let r = client.get(&status_url).send().await.unwrap();
        match r.status().as_u16() {
            202 => continue,
            200 => {
                manifest = r.json().await.unwrap();
                break;
            }
            other => panic!("status {other}: {}", r.text().await.unwrap()),
        }
    }
    assert!(manifest.is_object(), "the export did not finish after the restart");
    let mut exported = Vec::new();
    for file in manifest["output"].as_array().unwrap() {
        let text = client.get(file["url"].as_str().unwrap()).send().await.unwrap().text().await.unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as i64, file["count"].as_i64().unwrap());
        for line in lines {
            let r: Value = serde_json::from_str(line).unwrap();
            exported.push(format!("{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap()));
        }
    }
    let set: BTreeSet<String> = exported.iter().cloned().collect();
    assert_eq!(set.len(), exported.len(), "a line was written twice across the restart");
    assert_eq!(set, expected, "resources lost across the restart");

    // `portico group import`: a list with one unknown entry is refused whole; a good one is a
    // Group whose export holds those patients only.
    let patients: Vec<String> = data
        .resources()
        .filter(|r| r["resourceType"] == "Patient")
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .take(2)
        .collect();
    let list = dir.path().join("members.csv");
    std::fs::write(&list, format!("patient\n{}\nno-such-patient\n", patients[0])).unwrap();
    let group = |list: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_portico"))
            .args(["group", "import", "--database-url", url.as_str(), "--name", "Attributed", "--id", "attributed"])
            .arg(list)
            .output()
            .unwrap()
    };
    let out = group(&list);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no-such-patient"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&list, format!("patient\n{}\nPatient/{}\n", patients[0], patients[1])).unwrap();
    let out = group(&list);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = client
        .get(format!("{base}/Group/attributed/$export?_type=Patient"))
        .header("prefer", "respond-async")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let status_url = r.headers()["content-location"].to_str().unwrap().to_owned();
    let mut manifest = Value::Null;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(350)).await;
        let r = client.get(&status_url).send().await.unwrap();
        if r.status().as_u16() == 200 {
            manifest = r.json().await.unwrap();
            break;
        }
    }
    let file = manifest["output"][0]["url"].as_str().expect("a Patient file").to_owned();
    let text = client.get(file).send().await.unwrap().text().await.unwrap();
    let ids: BTreeSet<String> =
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids, patients.iter().cloned().collect::<BTreeSet<_>>());
    drop(_server);
    if let Some(name) = pg_name {
        crate::harness::drop_database(&name).await.unwrap();
    }
}

both_backends!(two_processes_run_each_export_once);

/// Two `portico serve` processes on one database: exports kicked off at either are each run by
/// one worker once (one claim each), and either process answers their status.
async fn two_processes_run_each_export_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some((url, pg_name)) = fresh_database(backend, &dir).await else { return };
    let data = demo::generate(&demo::DemoConfig { seed: 5, patients: 3 });
    let mut files = Vec::new();
    for (i, b) in data.bundles.iter().enumerate() {
        let path = dir.path().join(format!("bundle-{i}.json"));
        std::fs::write(&path, b.to_string()).unwrap();
        files.push(path);
    }
    let out = cli_import(&url, &files);
    assert!(out.status.success(), "import: {}", String::from_utf8_lossy(&out.stderr));
    let expected =
        data.resources().map(|r| format!("{}/{}", r["resourceType"], r["id"])).collect::<BTreeSet<_>>().len();
    let config = dir.path().join("portico.toml");
    std::fs::write(
        &config,
        format!(
            "[bulk]\nstorage = {:?}\nmax_resources_per_second = 2000\nlease_ms = 15000\nmin_poll_interval_ms = 0\n",
            dir.path().join("bulk").to_string_lossy()
        ),
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let (pa, pb) = (free_port(), free_port());
    let args = ["--database-url", url.as_str(), "--config", config.as_str(), "--dev-open-access"];
    let _a = ServeProcess::start(&args, pa).await;
    let _b = ServeProcess::start(&args, pb).await;
    let client = reqwest::Client::new();
    let mut jobs = Vec::new();
    for i in 0..4 {
        let port = if i % 2 == 0 { pa } else { pb };
        let r = client
            .get(format!("http://127.0.0.1:{port}/fhir/$export"))
            .header("prefer", "respond-async")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        jobs.push(r.headers()["content-location"].to_str().unwrap().to_owned());
    }
    for job in &jobs {
        // Asked at the other process's port: the status is the database's, not a process's.
        let other = if job.contains(&format!(":{pa}/")) { pb } else { pa };
        let url =
            job.replace(&format!(":{pa}/"), &format!(":{other}/")).replace(&format!(":{pb}/"), &format!(":{other}/"));
        let mut manifest = Value::Null;
        for _ in 0..200 {
            let r = client.get(&url).send().await.unwrap();
            if r.status().as_u16() == 200 {
                manifest = r.json().await.unwrap();
                break;
            }
            assert_eq!(r.status().as_u16(), 202);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let total: i64 =
            manifest["output"].as_array().expect("finished").iter().map(|f| f["count"].as_i64().unwrap()).sum();
        assert_eq!(total as usize, expected, "every resource once in {job}");
    }
    let store =
        store::Store::connect(&url, store::StoreOptions::default(), Arc::new(store::SystemClock)).await.unwrap();
    for job in &jobs {
        let id = job.rsplit('/').next().unwrap();
        let record = store.job(id).await.unwrap().unwrap();
        assert_eq!(record.attempts, 1, "job {id} was claimed {} times", record.attempts);
    }
    drop(store);
    drop((_a, _b));
    if let Some(name) = pg_name {
        crate::harness::drop_database(&name).await.unwrap();
    }
}
