//! `portico sync`: the reference offline client. It keeps a local Portico database (SQLite) in
//! step with a server through `GET $sync` (pull) and `batch` Bundles with `If-Match` (push); the
//! local database is served by an ordinary `portico serve`, so an app works against localhost
//! while offline and its edits are pushed later.
//!
//! Its bookkeeping is a JSON file beside the local database (`<database>.sync.json`): the server,
//! the pull cursor, the tokens, and for every synced resource the server version it came from
//! and the local version that wrote it ("base"). A local version that differs from its base is a
//! pending edit; a server change to a resource with a pending edit, or a push refused with 412, is
//! a conflict kept with the server's version until `resolve` settles it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::{EverythingQuery, ReadOutcome, Restriction, Store, WriteRequest};

use crate::run::{open_store, RunError};
use crate::DbArgs;

const PULL_PAGE: usize = 500;

#[derive(Args)]
pub struct SyncArgs {
    /// The server's FHIR base URL (remembered after the first use).
    #[arg(long)]
    pub server: Option<String>,
    /// An access token (remembered).
    #[arg(long, env = "PORTICO_SYNC_TOKEN")]
    pub token: Option<String>,
    /// A refresh token (`offline_access`), used when the access token has expired (remembered).
    #[arg(long, env = "PORTICO_SYNC_REFRESH_TOKEN")]
    pub refresh_token: Option<String>,
    /// The app's client id, for signing in and refreshing (remembered).
    #[arg(long)]
    pub client_id: Option<String>,
    /// Sign in through a browser first (authorization code with PKCE; the app must be registered
    /// with `--redirect-uri`): prints the address to open and waits for the redirect.
    #[arg(long)]
    pub sign_in: bool,
    /// The loopback redirect URI registered for the app (for `--sign-in`).
    #[arg(long, default_value = "http://127.0.0.1:8765/callback")]
    pub redirect_uri: String,
    /// The scopes to ask for at sign-in.
    #[arg(long, default_value = "openid fhirUser offline_access user/*.cruds")]
    pub scope: String,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(subcommand)]
    pub command: SyncCommand,
}

#[derive(Subcommand)]
pub enum SyncCommand {
    /// Bring the server's changes into the local database.
    Pull,
    /// Send the local edits to the server (one batch; stale ones become conflicts).
    Push,
    /// Print the pending edits and the conflicts (JSON).
    Status,
    /// Settle a conflict: keep the local version (`mine`, pushed next), the server's (`theirs`),
    /// or a merged resource from a JSON file.
    Resolve {
        /// `Type/id`
        key: String,
        #[arg(long)]
        keep: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Base {
    server: i64,
    local: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Conflict {
    server_version: i64,
    /// The server's current resource (`None`: the server deleted it).
    resource: Option<Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    server: Option<String>,
    cursor: Option<String>,
    token: Option<String>,
    refresh_token: Option<String>,
    client_id: Option<String>,
    base: BTreeMap<String, Base>,
    conflicts: BTreeMap<String, Conflict>,
}

fn state_path(database_url: &str) -> PathBuf {
    let path = database_url.strip_prefix("sqlite://").unwrap_or(database_url);
    PathBuf::from(format!("{path}.sync.json"))
}

fn load(path: &Path) -> Result<State, RunError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| RunError::Config(format!("{} is not a sync state file: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(RunError::Config(format!("cannot read {}: {e}", path.display()))),
    }
}

/// Written to a temporary file and renamed, so a crash never leaves half a state.
fn save(path: &Path, state: &State) -> Result<(), RunError> {
    let text = serde_json::to_string_pretty(state).map_err(|e| RunError::Config(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| RunError::Config(format!("cannot write {}: {e}", path.display())))
}

fn key_of(resource_type: &str, id: &str) -> String {
    format!("{resource_type}/{id}")
}

fn version_of_etag(etag: &str) -> Option<i64> {
    etag.trim_start_matches("W/").trim_matches('"').parse().ok()
}

pub async fn run(args: SyncArgs) -> Result<(), RunError> {
    if store::db::is_postgres_url(&args.db.database_url) {
        return Err(RunError::Config("the local database of `portico sync` is a SQLite file".into()));
    }
    let path = state_path(&args.db.database_url);
    let mut state = load(&path)?;
    for (slot, given) in [
        (&mut state.server, &args.server),
        (&mut state.token, &args.token),
        (&mut state.refresh_token, &args.refresh_token),
        (&mut state.client_id, &args.client_id),
    ] {
        if given.is_some() {
            slot.clone_from(given);
        }
    }
    if args.sign_in {
        sign_in(&mut state, &args.redirect_uri, &args.scope).await?;
        save(&path, &state)?;
    }
    let store = open_store(&args.db, "http://localhost/fhir", 0).await?;
    let result = match &args.command {
        SyncCommand::Status => status(&store, &state).await,
        SyncCommand::Resolve { key, keep } => resolve(&store, &mut state, key, keep).await,
        SyncCommand::Pull | SyncCommand::Push => {
            let mut client = Client::new(&mut state)?;
            match args.command {
                SyncCommand::Pull => pull(&store, &mut client).await,
                _ => push(&store, &mut client).await,
            }
        }
    };
    save(&path, &state)?;
    result
}

/// The server connection: bearer token, refreshed once when the server answers 401.
struct Client<'a> {
    http: reqwest::Client,
    base: String,
    state: &'a mut State,
}

impl<'a> Client<'a> {
    fn new(state: &'a mut State) -> Result<Client<'a>, RunError> {
        let base = state
            .server
            .clone()
            .ok_or_else(|| RunError::Config("no server yet: give --server URL (and --token)".into()))?
            .trim_end_matches('/')
            .to_owned();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RunError::Config(e.to_string()))?;
        Ok(Client { http, base, state })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }

    async fn send(&mut self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Result<Value, RunError> {
        for attempt in 0..2 {
            let mut req = self.http.request(method.clone(), self.url(path)).header("accept", "application/fhir+json");
            if let Some(token) = &self.state.token {
                req = req.bearer_auth(token);
            }
            if let Some(b) = body {
                req = req.header("content-type", "application/fhir+json").body(b.to_string());
            }
            let resp = req.send().await.map_err(|e| RunError::Config(format!("the server did not answer: {e}")))?;
            let status = resp.status().as_u16();
            if status == 401 && attempt == 0 && self.refresh().await? {
                continue;
            }
            let value: Value = resp.json().await.unwrap_or(Value::Null);
            if !(200..300).contains(&status) {
                let why = value["issue"][0]["diagnostics"].as_str().unwrap_or("").to_owned();
                return Err(RunError::Config(format!("the server answered {status} to {path}: {why}")));
            }
            return Ok(value);
        }
        Err(RunError::Config("the server refused the token, also after a refresh".into()))
    }

    /// Exchange the refresh token for a new access token (the token endpoint from SMART discovery).
    async fn refresh(&mut self) -> Result<bool, RunError> {
        let (Some(refresh), Some(client_id)) = (self.state.refresh_token.clone(), self.state.client_id.clone()) else {
            return Ok(false);
        };
        let config: Value = self
            .http
            .get(self.url(".well-known/smart-configuration"))
            .send()
            .await
            .map_err(|e| RunError::Config(e.to_string()))?
            .json()
            .await
            .map_err(|e| RunError::Config(e.to_string()))?;
        let Some(endpoint) = config["token_endpoint"].as_str() else { return Ok(false) };
        let form =
            [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", client_id.as_str())];
        let resp = self.http.post(endpoint).form(&form).send().await.map_err(|e| RunError::Config(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(RunError::Config(
                "the refresh token was refused: the authorization has ended; sign in again".into(),
            ));
        }
        let tokens: Value = resp.json().await.map_err(|e| RunError::Config(e.to_string()))?;
        self.state.token = tokens["access_token"].as_str().map(str::to_owned);
        if let Some(r) = tokens["refresh_token"].as_str() {
            self.state.refresh_token = Some(r.to_owned());
        }
        Ok(self.state.token.is_some())
    }
}

/// Sign in through the person's browser: SMART discovery, an authorization request with PKCE
/// (S256) and a random state, the redirect caught on the loopback address, the code exchanged for
/// tokens (kept in the state file).
async fn sign_in(state: &mut State, redirect_uri: &str, scope: &str) -> Result<(), RunError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let fail = |what: String| RunError::Config(format!("sign-in: {what}"));
    let server = state.server.clone().ok_or_else(|| fail("give --server".into()))?;
    let client_id = state.client_id.clone().ok_or_else(|| fail("give --client-id (a registered app)".into()))?;
    let url = reqwest::Url::parse(redirect_uri).map_err(|e| fail(format!("--redirect-uri: {e}")))?;
    let host = url.host_str().unwrap_or_default().to_owned();
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]") {
        return Err(fail("the redirect URI must be a loopback address (http://127.0.0.1:PORT/…)".into()));
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let config: Value = http
        .get(format!("{}/.well-known/smart-configuration", server.trim_end_matches('/')))
        .send()
        .await
        .map_err(|e| fail(format!("discovery: {e}")))?
        .json()
        .await
        .map_err(|e| fail(format!("discovery: {e}")))?;
    let (Some(authorize), Some(token_endpoint)) =
        (config["authorization_endpoint"].as_str(), config["token_endpoint"].as_str())
    else {
        return Err(fail("the server's SMART configuration has no authorization or token endpoint".into()));
    };
    let verifier = auth::password::random_token(32);
    let expected_state = auth::password::random_token(16);
    let mut address = reqwest::Url::parse(authorize).map_err(|e| fail(e.to_string()))?;
    address
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", scope)
        .append_pair("state", &expected_state)
        .append_pair("aud", &server)
        .append_pair("code_challenge", &auth::pkce::s256_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| fail(format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
    eprintln!("Open this address in a browser and sign in:\n{address}");
    let code = tokio::time::timeout(std::time::Duration::from_secs(300), async {
        loop {
            let (mut conn, _) = listener.accept().await.map_err(|e| fail(e.to_string()))?;
            let mut buf = vec![0u8; 8192];
            let n = conn.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
            if path != url.path() {
                let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
                continue;
            }
            let params: BTreeMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
            let (status, page, outcome) = if params.get("state") != Some(&expected_state) {
                ("400 Bad Request", "This sign-in answer does not belong to this request.", None)
            } else if let Some(error) = params.get("error") {
                ("200 OK", "Sign-in was not completed; you can close this window.", Some(Err(error.clone())))
            } else if let Some(code) = params.get("code") {
                ("200 OK", "Signed in. You can close this window and go back to the terminal.", Some(Ok(code.clone())))
            } else {
                ("400 Bad Request", "No authorization code in this answer.", None)
            };
            let body = format!("<!doctype html><meta charset=utf-8><title>portico sync</title><p>{page}</p>");
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
            match outcome {
                Some(Ok(code)) => return Ok(code),
                Some(Err(error)) => return Err(fail(format!("the server answered {error}"))),
                None => continue,
            }
        }
    })
    .await
    .map_err(|_| fail("no answer from the browser within 5 minutes".into()))??;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri),
        ("client_id", client_id.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let resp = http.post(token_endpoint).form(&form).send().await.map_err(|e| fail(e.to_string()))?;
    let status = resp.status();
    let tokens: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(fail(format!("the token endpoint refused the code: {}", tokens["error_description"])));
    }
    state.token = tokens["access_token"].as_str().map(str::to_owned);
    state.refresh_token = tokens["refresh_token"].as_str().map(str::to_owned);
    eprintln!("Signed in (scopes: {}).", tokens["scope"].as_str().unwrap_or_default());
    Ok(())
}

/// The local version of `key` now: (version, deleted), or None if never stored.
async fn local_version(store: &Store, resource_type: &str, id: &str) -> Result<Option<(i64, bool)>, RunError> {
    Ok(match store.read(resource_type, id).await? {
        ReadOutcome::Found(r) => Some((r.version, false)),
        ReadOutcome::Deleted { version, .. } => Some((version, true)),
        ReadOutcome::NotFound => None,
    })
}

/// Has the local copy of `key` been edited since it was synced?
async fn has_local_edit(store: &Store, state: &State, resource_type: &str, id: &str) -> Result<bool, RunError> {
    let local = local_version(store, resource_type, id).await?;
    Ok(match (state.base.get(&key_of(resource_type, id)), local) {
        (Some(base), Some((v, _))) => v != base.local,
        (None, Some((_, deleted))) => !deleted,
        _ => false,
    })
}

fn strip_meta(mut resource: Value) -> Value {
    if let Some(obj) = resource.as_object_mut() {
        obj.remove("meta");
    }
    resource
}

/// Remove everything of a patient who left the list.
async fn purge_patient(store: &Store, state: &mut State, patient: &str) -> Result<usize, RunError> {
    let mut cursor = None;
    let mut doomed = Vec::new();
    loop {
        let q = EverythingQuery { patient_id: patient.into(), since_ms: None, types: None, count: 500, cursor };
        let page = store.everything(&q, &Restriction::default()).await?;
        doomed.extend(page.matches.iter().map(|m| (m.resource_type.clone(), m.id.clone())));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    for (t, id) in &doomed {
        store.write(vec![WriteRequest::Delete { resource_type: t.clone(), id: id.clone(), if_match: None }]).await?;
        state.base.remove(&key_of(t, id));
        state.conflicts.remove(&key_of(t, id));
    }
    Ok(doomed.len())
}

async fn pull(store: &Store, client: &mut Client<'_>) -> Result<(), RunError> {
    let (mut applied, mut purged, mut joined_n) = (0usize, 0usize, 0usize);
    loop {
        let mut path = format!("$sync?_count={PULL_PAGE}");
        if let Some(c) = &client.state.cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let bundle = client.send(reqwest::Method::GET, &path, None).await?;
        let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
        let mut changes: Vec<(String, String, i64, Option<Value>)> = Vec::new();
        for entry in &entries {
            let resource = &entry["resource"];
            if resource["resourceType"] == "Parameters" && entry["request"]["url"] == "$sync-patients" {
                for p in resource["parameter"].as_array().into_iter().flatten() {
                    let Some(patient) =
                        p["valueReference"]["reference"].as_str().and_then(|r| r.strip_prefix("Patient/"))
                    else {
                        continue;
                    };
                    if p["name"] == "left" {
                        purged += purge_patient(store, client.state, patient).await?;
                    } else if p["name"] == "joined" {
                        joined_n += fetch_everything(store, client, patient).await?;
                    }
                }
                continue;
            }
            let version = entry["response"]["etag"].as_str().and_then(version_of_etag).unwrap_or(0);
            if entry["request"]["method"] == "DELETE" {
                let url = entry["request"]["url"].as_str().unwrap_or_default();
                if let Some((t, id)) = url.split_once('/') {
                    changes.push((t.to_owned(), id.to_owned(), version, None));
                }
            } else if let (Some(t), Some(id)) = (resource["resourceType"].as_str(), resource["id"].as_str()) {
                changes.push((t.to_owned(), id.to_owned(), version, Some(resource.clone())));
            }
            applied += 1;
        }
        apply_page(store, client.state, changes).await?;
        let next = bundle["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .and_then(|u| u.split("cursor=").nth(1))
            .map(|c| c.split('&').next().unwrap_or(c).to_owned());
        if next.is_some() {
            client.state.cursor = next;
        }
        if entries.len() < PULL_PAGE {
            break;
        }
    }
    println!(
        "{}",
        json!({"pulled": applied, "joinedResources": joined_n, "purged": purged, "conflicts": client.state.conflicts.keys().collect::<Vec<_>>()})
    );
    Ok(())
}

/// Apply one page of server changes in one local transaction: the newest version of each
/// resource in the page, except those edited locally (conflicts) or already held.
async fn apply_page(
    store: &Store,
    state: &mut State,
    changes: Vec<(String, String, i64, Option<Value>)>,
) -> Result<(), RunError> {
    let mut newest: BTreeMap<String, (String, String, i64, Option<Value>)> = BTreeMap::new();
    for change in changes {
        newest.insert(key_of(&change.0, &change.1), change);
    }
    let mut writes = Vec::new();
    let mut keys = Vec::new();
    for (key, (t, id, version, resource)) in newest {
        if resource.is_some() && state.base.get(&key).is_some_and(|b| b.server >= version) {
            continue; // already held (often our own push coming back)
        }
        if has_local_edit(store, state, &t, &id).await? {
            state.conflicts.insert(key, Conflict { server_version: version, resource });
            continue;
        }
        keys.push((key, version, resource.is_some()));
        writes.push(match resource {
            Some(r) => WriteRequest::Update { resource_type: t, id, resource: strip_meta(r), if_match: None },
            None => WriteRequest::Delete { resource_type: t, id, if_match: None },
        });
    }
    if writes.is_empty() {
        return Ok(());
    }
    let outcomes = store.write(writes).await?;
    for ((key, version, live), outcome) in keys.into_iter().zip(outcomes) {
        state.conflicts.remove(&key);
        if live {
            state.base.insert(key, Base { server: version, local: outcome.version });
        } else {
            state.base.remove(&key);
        }
    }
    Ok(())
}

/// A patient who joined the list: their whole compartment, by `$everything` pages.
async fn fetch_everything(store: &Store, client: &mut Client<'_>, patient: &str) -> Result<usize, RunError> {
    let mut path = format!("Patient/{patient}/$everything?_count=500");
    let mut n = 0;
    loop {
        let bundle = client.send(reqwest::Method::GET, &path, None).await?;
        let mut changes = Vec::new();
        for entry in bundle["entry"].as_array().into_iter().flatten() {
            let resource = entry["resource"].clone();
            let version = resource["meta"]["versionId"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
            if let (Some(t), Some(id)) = (resource["resourceType"].as_str(), resource["id"].as_str()) {
                changes.push((t.to_owned(), id.to_owned(), version, Some(resource.clone())));
                n += 1;
            }
        }
        apply_page(store, client.state, changes).await?;
        match bundle["link"].as_array().into_iter().flatten().find(|l| l["relation"] == "next") {
            Some(l) => path = l["url"].as_str().unwrap_or_default().to_owned(),
            None => return Ok(n),
        }
    }
}

/// Local edits not yet on the server: (key, local version, deleted).
async fn pending(store: &Store, state: &State) -> Result<Vec<(String, String, String, bool)>, RunError> {
    let mut out = Vec::new();
    for row in store.current_versions().await? {
        let key = key_of(&row.resource_type, &row.id);
        let edited = match state.base.get(&key) {
            Some(base) => row.version != base.local,
            None => !row.deleted,
        };
        if edited {
            out.push((key, row.resource_type, row.id, row.deleted));
        }
    }
    Ok(out)
}

async fn push(store: &Store, client: &mut Client<'_>) -> Result<(), RunError> {
    let edits: Vec<_> = pending(store, client.state)
        .await?
        .into_iter()
        .filter(|(k, ..)| !client.state.conflicts.contains_key(k))
        .collect();
    if edits.is_empty() {
        println!("{}", json!({"pushed": 0, "conflicts": client.state.conflicts.keys().collect::<Vec<_>>()}));
        return Ok(());
    }
    let mut entries = Vec::new();
    for (key, t, id, deleted) in &edits {
        let if_match = client.state.base.get(key).map(|b| format!("W/\"{}\"", b.server));
        let mut request =
            if *deleted { json!({"method": "DELETE", "url": key}) } else { json!({"method": "PUT", "url": key}) };
        if let Some(m) = &if_match {
            request["ifMatch"] = json!(m);
        }
        let mut entry = json!({"request": request});
        if !*deleted {
            if let ReadOutcome::Found(r) = store.read(t, id).await? {
                let body: Value = serde_json::from_str(&r.body).map_err(|e| RunError::Config(e.to_string()))?;
                entry["resource"] = strip_meta(body);
            }
        }
        entries.push(entry);
    }
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": entries});
    let answer = client.send(reqwest::Method::POST, "", Some(&bundle)).await?;
    let (mut pushed, mut failed) = (0, Vec::new());
    for ((key, t, id, deleted), response) in edits.iter().zip(answer["entry"].as_array().into_iter().flatten()) {
        let status = response["response"]["status"].as_str().unwrap_or_default();
        let server_version = response["response"]["etag"].as_str().and_then(version_of_etag);
        if status.starts_with("20") {
            pushed += 1;
            if *deleted {
                client.state.base.remove(key);
            } else if let (Some(v), Some((local, _))) = (server_version, local_version(store, t, id).await?) {
                client.state.base.insert(key.clone(), Base { server: v, local });
            }
        } else if status.starts_with("412") {
            let resource = response.get("resource").cloned();
            client
                .state
                .conflicts
                .insert(key.clone(), Conflict { server_version: server_version.unwrap_or(0), resource });
        } else {
            let why = response["response"]["outcome"]["issue"][0]["diagnostics"].as_str().unwrap_or(status);
            failed.push(json!({"resource": key, "error": why}));
        }
    }
    println!(
        "{}",
        json!({"pushed": pushed, "failed": failed, "conflicts": client.state.conflicts.keys().collect::<Vec<_>>()})
    );
    Ok(())
}

async fn status(store: &Store, state: &State) -> Result<(), RunError> {
    let edits: Vec<Value> = pending(store, state)
        .await?
        .into_iter()
        .map(|(key, _, _, deleted)| json!({"resource": key, "change": if deleted { "delete" } else { "edit" }}))
        .collect();
    let conflicts: Vec<Value> = state
        .conflicts
        .iter()
        .map(|(k, c)| json!({"resource": k, "serverVersion": c.server_version, "serverDeleted": c.resource.is_none()}))
        .collect();
    println!(
        "{}",
        json!({"server": state.server, "pending": edits, "conflicts": conflicts, "synced": state.base.len()})
    );
    Ok(())
}

async fn resolve(store: &Store, state: &mut State, key: &str, keep: &str) -> Result<(), RunError> {
    let conflict =
        state.conflicts.remove(key).ok_or_else(|| RunError::Config(format!("{key} has no conflict to resolve")))?;
    let (t, id) = key.split_once('/').ok_or_else(|| RunError::Config(format!("'{key}' is not Type/id")))?;
    match keep {
        // The local edit stays pending, now based on the server's current version: the next push
        // overwrites it with If-Match on that version.
        "mine" => {
            state.base.insert(key.to_owned(), Base { server: conflict.server_version, local: -1 });
        }
        "theirs" => match conflict.resource {
            Some(resource) => {
                let written = store
                    .write(vec![WriteRequest::Update {
                        resource_type: t.into(),
                        id: id.into(),
                        resource: strip_meta(resource),
                        if_match: None,
                    }])
                    .await?;
                let local = written.first().map_or(0, |w| w.version);
                state.base.insert(key.to_owned(), Base { server: conflict.server_version, local });
            }
            None => {
                store
                    .write(vec![WriteRequest::Delete { resource_type: t.into(), id: id.into(), if_match: None }])
                    .await?;
                state.base.remove(key);
            }
        },
        file => {
            let text =
                std::fs::read_to_string(file).map_err(|e| RunError::Config(format!("cannot read {file}: {e}")))?;
            let merged: Value =
                serde_json::from_str(&text).map_err(|e| RunError::Config(format!("{file} is not JSON: {e}")))?;
            if merged["resourceType"].as_str() != Some(t) || merged["id"].as_str() != Some(id) {
                return Err(RunError::Config(format!("{file} is not {key}")));
            }
            store
                .write(vec![WriteRequest::Update {
                    resource_type: t.into(),
                    id: id.into(),
                    resource: merged,
                    if_match: None,
                }])
                .await?;
            // Pending (local differs from base), based on the server's current version.
            state.base.insert(key.to_owned(), Base { server: conflict.server_version, local: -1 });
        }
    }
    println!("{}", json!({"resolved": key, "kept": keep}));
    Ok(())
}
