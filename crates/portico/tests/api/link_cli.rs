//! `portico link …` as an operator runs it: apps, endpoints (add, list, check), directory
//! imports, and vault key rotation with a key file.

use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{fresh_database, Backend};
use crate::link_harness::{FakePortal, Mode, CLIENT_URL};

crate::both_backends!(operators_administer_link_from_the_command_line);

struct Cli {
    url: String,
    dir: tempfile::TempDir,
}

impl Cli {
    fn run(&self, args: &[&str]) -> (bool, Value, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_portico"))
            .arg("link")
            .args(args)
            .args(["--database-url", &self.url])
            .arg("--key-file")
            .arg(self.dir.path().join("link.keys"))
            .env_remove("PORTICO_LINK_KEY")
            .env("PORTICO_LOG", "warn")
            .output()
            .expect("run portico link");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.success(),
            serde_json::from_str(&stdout).unwrap_or(Value::Null),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> Value {
        let (ok, value, stderr) = self.run(args);
        assert!(ok, "portico link {args:?} failed: {stderr}");
        value
    }
}

async fn operators_administer_link_from_the_command_line(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let (url, pg) = match backend {
        Backend::Sqlite => (dir.path().join("link.db").display().to_string(), None),
        Backend::Postgres => match fresh_database(backend, &dir).await {
            Some(d) => d,
            None => return,
        },
    };
    let cli = Cli { url, dir };
    let fake = FakePortal::start(Mode::Healthy).await;

    // Apps: the key is shown once; the list never shows it.
    let created = cli.ok(&[
        "app",
        "add",
        "--name",
        "Acme",
        "--client-url",
        CLIENT_URL,
        "--webhook-url",
        "https://acme.example/hooks",
    ]);
    let key = created["secretKey"].as_str().unwrap();
    assert!(key.starts_with("lk_"));
    assert!(created["webhookSecret"].as_str().unwrap().starts_with("whsec_"));
    let apps = cli.ok(&["app", "list"]);
    assert_eq!(apps[0]["appId"], created["appId"]);
    assert_eq!(apps[0]["clientUrls"], json!([CLIENT_URL]));
    assert!(!apps.to_string().contains(key), "the key is not listed");
    let (ok, _, stderr) = cli.run(&["app", "add", "--name", "Bad", "--client-url", "javascript:alert(1)"]);
    assert!(!ok && stderr.contains("http"), "{stderr}");

    // Endpoints: added with discovery; a secret is sealed, never printed.
    let added = cli.ok(&[
        "endpoint",
        "add",
        "--name",
        "Fake Clinic",
        "--category",
        "clinical",
        "--fhir-base",
        &fake.base,
        "--client-id",
        "link",
        "--client-secret",
        "s3cret-value",
        "--city",
        "Springfield",
        "--state",
        "MA",
        "--zip",
        "01103",
        "--latitude",
        "42.1",
        "--longitude",
        "-72.6",
    ]);
    assert_eq!(added["created"], true);
    let endpoint = &added["endpoint"];
    assert_eq!(endpoint["connectable"], true, "{added}");
    assert_eq!(endpoint["fhirVersion"], "4.0.1");
    assert_eq!(endpoint["longitude"], -72.6);
    assert!(!added.to_string().contains("s3cret-value"));
    let id = endpoint["id"].as_str().unwrap().to_owned();
    let again = cli.ok(&[
        "endpoint",
        "add",
        "--name",
        "Fake Clinic (renamed)",
        "--category",
        "clinical",
        "--fhir-base",
        &format!("{}/", fake.base),
        "--client-id",
        "link",
    ]);
    assert_eq!(
        (again["created"].as_bool(), again["endpoint"]["id"].as_str()),
        (Some(false), Some(id.as_str())),
        "the same FHIR base updates"
    );
    let (ok, _, stderr) = cli.run(&[
        "endpoint",
        "add",
        "--name",
        "X",
        "--category",
        "hospital",
        "--fhir-base",
        "https://x.example/fhir",
        "--client-id",
        "c",
    ]);
    assert!(!ok && stderr.contains("clinical or payer"), "{stderr}");

    // A Brands bundle import, then the list and a check.
    let brands = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "https://b.example/Organization/o", "resource": {"resourceType": "Organization", "id": "o", "name": "Brand Plan",
            "type": [{"coding": [{"code": "pay"}]}], "endpoint": [{"reference": "Endpoint/e"}]}},
        {"fullUrl": "https://b.example/Endpoint/e", "resource": {"resourceType": "Endpoint", "id": "e", "status": "active",
            "address": "https://brand-plan.example/fhir", "connectionType": {"code": "hl7-fhir-rest"}}}]});
    let file = cli.dir.path().join("brands.json");
    std::fs::write(&file, brands.to_string()).unwrap();
    let report = cli.ok(&["directory", "import", file.to_str().unwrap()]);
    assert_eq!((report["added"].as_u64(), report["updated"].as_u64()), (Some(1), Some(0)), "{report}");
    let list = cli.ok(&["endpoint", "list"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["Brand Plan", "Fake Clinic (renamed)"]);
    let plan = list.as_array().unwrap().iter().find(|e| e["name"] == "Brand Plan").unwrap();
    assert_eq!(
        (plan["category"].as_str(), plan["connectable"].as_bool()),
        (Some("payer"), Some(false)),
        "no registration there yet"
    );
    let checked = cli.ok(&["endpoint", "check", &id]);
    assert_eq!(checked["discovery"], "ok");
    assert!(checked["endpoint"]["health"]["lastSuccess"].is_string(), "{checked}");
    fake.stop().await;
    let checked = cli.ok(&["endpoint", "check", &id]);
    assert_eq!(checked["discovery"], "failed");
    assert!(checked["endpoint"]["health"]["lastFailure"].is_string(), "{checked}");
    let (ok, _, _) = cli.run(&["endpoint", "check", "ep_nope"]);
    assert!(!ok);

    // Key rotation with a key file: everything re-encrypted under a new key, the old one dropped.
    let before = cli.ok(&["keys", "list"]);
    let old_kids: Vec<String> = before["sealedByKey"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(old_kids.len(), 1, "{before}");
    let old_file = std::fs::read_to_string(cli.dir.path().join("link.keys")).unwrap();
    let rotated = cli.ok(&["keys", "rotate"]);
    let new_kid = rotated["activeKey"].as_str().unwrap();
    assert_ne!(new_kid, old_kids[0]);
    assert_eq!(rotated["reencrypted"], before["sealedByKey"][&old_kids[0]]);
    assert_eq!(rotated["sealedByKey"].as_object().unwrap().keys().collect::<Vec<_>>(), vec![new_kid]);
    let new_file = std::fs::read_to_string(cli.dir.path().join("link.keys")).unwrap();
    let old_key_line = old_file.lines().find(|l| !l.starts_with('#')).unwrap();
    assert!(!new_file.contains(old_key_line), "the old key is gone from the file");
    // Everything still opens: the secret endpoint's credentials and the app's webhook secret.
    let after = cli.ok(&["keys", "list"]);
    assert_eq!(after["sealedByKey"], rotated["sealedByKey"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(cli.dir.path().join("link.keys")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key file is private to its owner");
    }
    if let Some(name) = pg {
        let _ = crate::harness::drop_database(&name).await;
    }
}
