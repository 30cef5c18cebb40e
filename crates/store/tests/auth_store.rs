//! The authorization-server store (`store::auth`) on both backends: every scenario runs once on a
//! temporary SQLite file and once on a throw-away PostgreSQL database
//! (`portico_authtest_<pid>_<n>`, dropped afterwards). PostgreSQL scenarios skip with a message
//! when no server answers on 127.0.0.1:5432, unless `PORTICO_REQUIRE_POSTGRES=1`.
//!
//! Time comes from a test clock the scenarios move, so expiry is tested without sleeping.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed expectation is the point

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use auth::pkce::s256_challenge;
use auth::{ClientId, GrantId, PatientId, PkceChallenge, ScopeSet, SensitiveCategory, UserId};
use serde_json::json;
use store::auth::{
    token_hash, AuthStoreError, ClientType, KeyAlg, LockoutPolicy, NewClient, NewCode, NewGrant, NewLaunch,
    NewSigningKey, NewUser, OwnerType, RegistrationSource, Role, GRANT_REVOKED_CHANNEL,
};
use store::{AuditQuery, AuditRecord, Clock, Store, StoreOptions};
use time::OffsetDateTime;

const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const START: i64 = 1_800_000_000;
const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObGc6r5lOQlvmw";

/// A clock the test moves by hand.
struct TestClock(AtomicI64);

impl TestClock {
    fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
    fn secs(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(self.secs()).expect("valid test time")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Ctx {
    store: Store,
    url: String,
    clock: Arc<TestClock>,
    _dir: tempfile::TempDir,
    pg_database: Option<String>,
}

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v == "1" || v == "true")
}

/// A new, empty database: a SQLite file in a temporary directory, or a throw-away PostgreSQL
/// database (`None` when PostgreSQL is not reachable and not required).
async fn fresh_database(backend: Backend) -> Option<(tempfile::TempDir, String, Option<String>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    match backend {
        Backend::Sqlite => {
            let url = dir.path().join("auth.db").display().to_string();
            Some((dir, url, None))
        }
        Backend::Postgres => {
            let admin = match sqlx::PgPool::connect(PG_ADMIN_URL).await {
                Ok(pool) => pool,
                Err(e) => {
                    assert!(!required("PORTICO_REQUIRE_POSTGRES"), "PostgreSQL required but unreachable: {e}");
                    eprintln!(
                        "SKIP: PostgreSQL not reachable on 127.0.0.1:5432 ({e}); \
                         set PORTICO_REQUIRE_POSTGRES=1 to fail instead"
                    );
                    return None;
                }
            };
            static COUNTER: AtomicU64 = AtomicU64::new(0);
            let name = format!("portico_authtest_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&admin).await.expect("drop old db");
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await.expect("create test database");
            admin.close().await;
            Some((dir, format!("postgres://postgres@127.0.0.1:5432/{name}"), Some(name)))
        }
    }
}

impl Ctx {
    async fn new(backend: Backend) -> Option<Ctx> {
        let (dir, url, pg_database) = fresh_database(backend).await?;
        Some(Ctx::connect(dir, url, pg_database).await)
    }

    async fn connect(dir: tempfile::TempDir, url: String, pg_database: Option<String>) -> Ctx {
        let clock = Arc::new(TestClock(AtomicI64::new(START)));
        let options = StoreOptions { max_connections: 4, cache_bytes: 0, ..StoreOptions::default() };
        let store = Store::connect(&url, options, clock.clone()).await.expect("connect store");
        Ctx { store, url, clock, _dir: dir, pg_database }
    }
}

impl Drop for Ctx {
    /// Drop the PostgreSQL database also when the scenario panicked (on a thread of its own, since
    /// this may run inside the test's runtime).
    fn drop(&mut self) {
        let Some(name) = self.pg_database.take() else { return };
        let store = self.store.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                store.close().await;
                if let Ok(admin) = sqlx::PgPool::connect(PG_ADMIN_URL).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await;
                    admin.close().await;
                }
            });
        });
        let _ = handle.join();
    }
}

/// Each scenario becomes `sqlite::<name>` and `postgres::<name>`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(ctx) = super::Ctx::new(super::Backend::Sqlite).await {
                        super::$name(&ctx).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(ctx) = super::Ctx::new(super::Backend::Postgres).await {
                        super::$name(&ctx).await;
                    }
                }
            )*
        }
    };
}

on_both_backends!(
    clients_are_stored_and_validated,
    users_and_duplicate_usernames,
    proxy_user_acts_for_two_patients,
    login_lockout,
    grant_liveness_revocation_and_expiry,
    grant_rules,
    revocation_cascades_to_child_grants,
    session_grants_are_revoked_together,
    codes_are_single_use,
    concurrent_redemption_has_one_winner,
    refresh_tokens_rotate_and_reuse_revokes,
    refresh_token_expiry,
    client_assertion_jti_replay,
    launch_contexts_are_single_use,
    signing_keys_retire,
    pruning,
    audit_queries_find_what_a_scan_finds,
    two_servers_write_one_audit_trail,
);

// ---- fixtures ----------------------------------------------------------------------------------

fn cid(s: &str) -> ClientId {
    s.parse().expect("client id")
}

fn pid(s: &str) -> PatientId {
    s.parse().expect("patient id")
}

fn scopes(s: &str) -> ScopeSet {
    let (set, dropped) = ScopeSet::parse(s);
    assert!(dropped.is_empty(), "{dropped:?}");
    set
}

fn public_client(id: &str) -> NewClient {
    NewClient {
        client_id: cid(id),
        name: format!("App {id}"),
        owner_type: OwnerType::IndependentDeveloper,
        client_type: ClientType::Public,
        secret_hash: None,
        jwks: None,
        jwks_uri: None,
        redirect_uris: vec!["https://app.example/cb".into(), "http://127.0.0.1:4000/cb".into()],
        allowed_scopes: scopes("openid fhirUser launch/patient offline_access patient/*.rs"),
        logo_uri: Some("https://app.example/logo.png".into()),
        policy_uri: None,
        tos_uri: Some("https://app.example/tos".into()),
        registration_source: RegistrationSource::Cli,
        ehr_launcher: false,
    }
}

fn new_user(username: &str, role: Role, fhir_user: Option<&str>, patients: &[&str]) -> NewUser {
    NewUser {
        username: username.into(),
        password_hash: PHC.into(),
        role,
        fhir_user: fhir_user.map(str::to_string),
        patients: patients.iter().map(|p| pid(p)).collect(),
    }
}

/// A client, a patient user and a live grant for patient `p1`.
async fn setup_grant(ctx: &Ctx) -> (ClientId, UserId, store::auth::Grant) {
    let client = match ctx.store.client(&cid("app")).await.expect("client") {
        Some(c) => c,
        None => ctx.store.create_client(public_client("app")).await.expect("create client"),
    };
    let user = match ctx.store.user_by_username("pat").await.expect("user") {
        Some(u) => u,
        None => ctx.store.create_user(new_user("pat", Role::Patient, Some("Patient/p1"), &[])).await.expect("user"),
    };
    let mut new = NewGrant::new(client.client_id.clone(), scopes("launch/patient patient/*.rs offline_access"));
    new.user_id = Some(user.user_id.clone());
    new.patient_id = Some(pid("p1"));
    let grant = ctx.store.create_grant(new).await.expect("grant");
    (client.client_id, user.user_id, grant)
}

fn challenge() -> (String, PkceChallenge) {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".to_string();
    let pkce = PkceChallenge::new(Some("S256"), &s256_challenge(&verifier)).expect("challenge");
    (verifier, pkce)
}

async fn is_live(ctx: &Ctx, grant: &GrantId) -> bool {
    ctx.store.live_grant(grant).await.expect("live_grant").is_some()
}

// ---- scenarios ---------------------------------------------------------------------------------

async fn clients_are_stored_and_validated(ctx: &Ctx) {
    let s = &ctx.store;
    let public = s.create_client(public_client("pub-app")).await.expect("public");
    assert_eq!(public.created_at, START);
    let read = s.client(&cid("pub-app")).await.expect("read").expect("found");
    assert_eq!(read, public);
    assert!(read.has_redirect_uri("https://app.example/cb"));
    assert!(!read.has_redirect_uri("https://app.example/cb/"));
    assert!(!read.is_confidential());

    let mut symmetric = public_client("sym-app");
    symmetric.client_type = ClientType::ConfidentialSymmetric;
    symmetric.owner_type = OwnerType::HealthPlan;
    symmetric.secret_hash = Some(PHC.into());
    let symmetric = s.create_client(symmetric).await.expect("symmetric");
    assert!(!format!("{symmetric:?}").contains("argon2id"), "secret hash stays out of Debug");

    let mut asymmetric = public_client("backend");
    asymmetric.client_type = ClientType::ConfidentialAsymmetric;
    asymmetric.owner_type = OwnerType::CoveredEntity;
    asymmetric.redirect_uris = vec![];
    asymmetric.allowed_scopes = scopes("system/*.rs");
    asymmetric.jwks = Some(json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "abc", "y": "def", "kid": "k1"}]}));
    asymmetric.registration_source = RegistrationSource::Dynamic;
    let asymmetric = s.create_client(asymmetric).await.expect("asymmetric");
    let read = s.client(&cid("backend")).await.expect("read").expect("found");
    assert_eq!(read, asymmetric);
    assert_eq!(read.allowed_scopes.to_string(), "system/*.rs");
    assert_eq!(read.jwks.as_ref().and_then(|j| j["keys"][0]["kid"].as_str()), Some("k1"));

    let all = s.list_clients().await.expect("list");
    let ids: Vec<&str> = all.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!(ids, ["backend", "pub-app", "sym-app"]);
    assert!(s.client(&cid("nobody")).await.expect("read").is_none());

    // Duplicate id, and the rules about secrets and keys.
    let dup = s.create_client(public_client("pub-app")).await;
    assert!(matches!(dup, Err(AuthStoreError::Conflict(_))), "{dup:?}");
    let mut no_secret = public_client("x1");
    no_secret.client_type = ClientType::ConfidentialSymmetric;
    assert!(matches!(s.create_client(no_secret).await, Err(AuthStoreError::Invalid(_))));
    let mut clear_secret = public_client("x2");
    clear_secret.client_type = ClientType::ConfidentialSymmetric;
    clear_secret.secret_hash = Some("hunter2".into());
    assert!(matches!(s.create_client(clear_secret).await, Err(AuthStoreError::Invalid(_))));
    let mut public_with_secret = public_client("x3");
    public_with_secret.secret_hash = Some(PHC.into());
    assert!(matches!(s.create_client(public_with_secret).await, Err(AuthStoreError::Invalid(_))));
    let mut keyless = public_client("x4");
    keyless.client_type = ClientType::ConfidentialAsymmetric;
    assert!(matches!(s.create_client(keyless).await, Err(AuthStoreError::Invalid(_))));
    assert_eq!(s.list_clients().await.expect("list").len(), 3);
}

async fn users_and_duplicate_usernames(ctx: &Ctx) {
    let s = &ctx.store;
    let admin = s.create_user(new_user("root", Role::Admin, None, &[])).await.expect("admin");
    let doc = s.create_user(new_user("Dr.Who", Role::Practitioner, Some("Practitioner/9"), &[])).await.expect("doc");
    assert_ne!(admin.user_id, doc.user_id);
    assert_eq!(doc.created_at, START);
    assert!(!format!("{doc:?}").contains("argon2id"), "password hash stays out of Debug");

    let by_id = s.user(&doc.user_id).await.expect("user").expect("found");
    assert_eq!(by_id, doc);
    // Usernames match ignoring ASCII case.
    let by_name = s.user_by_username("dr.who").await.expect("by name").expect("found");
    assert_eq!(by_name, doc);
    assert_eq!(by_name.username, "Dr.Who");
    assert!(s.user_by_username("nobody").await.expect("by name").is_none());
    assert!(s.user_patients(&doc.user_id).await.expect("patients").is_empty());

    for taken in ["Dr.Who", "DR.WHO", "root"] {
        let dup = s.create_user(new_user(taken, Role::Patient, None, &[])).await;
        assert!(matches!(dup, Err(AuthStoreError::Conflict(_))), "{taken}: {dup:?}");
    }
    // Clear-text passwords and malformed names are refused.
    let mut clear = new_user("eve", Role::Patient, None, &[]);
    clear.password_hash = "password".into();
    assert!(matches!(s.create_user(clear).await, Err(AuthStoreError::Invalid(_))));
    assert!(matches!(s.create_user(new_user(" eve", Role::Patient, None, &[])).await, Err(AuthStoreError::Invalid(_))));
    assert!(matches!(
        s.create_user(new_user("eve", Role::Patient, Some("123"), &[])).await,
        Err(AuthStoreError::Invalid(_))
    ));
}

async fn proxy_user_acts_for_two_patients(ctx: &Ctx) {
    let s = &ctx.store;
    // A parent who is a patient herself and acts for two children.
    let parent =
        s.create_user(new_user("mom", Role::Patient, Some("Patient/mom"), &["kid2", "kid1"])).await.expect("parent");
    let patients = s.user_patients(&parent.user_id).await.expect("patients");
    assert_eq!(patients, [pid("kid1"), pid("kid2"), pid("mom")]);
    // A pure proxy (no Patient record of their own).
    let proxy = s.create_user(new_user("aunt", Role::Patient, None, &["kid1", "kid1"])).await.expect("proxy");
    assert_eq!(s.user_patients(&proxy.user_id).await.expect("patients"), [pid("kid1")]);
    assert!(s.add_user_patient(&proxy.user_id, &pid("kid2")).await.expect("add"));
    assert!(!s.add_user_patient(&proxy.user_id, &pid("kid2")).await.expect("add again"));
    assert_eq!(s.user_patients(&proxy.user_id).await.expect("patients"), [pid("kid1"), pid("kid2")]);
    let ghost: UserId = "ghost".parse().expect("user id");
    assert!(matches!(s.add_user_patient(&ghost, &pid("kid1")).await, Err(AuthStoreError::NotFound { .. })));

    // The proxy may hold grants for each child, not for anybody else.
    s.create_client(public_client("app")).await.expect("client");
    for kid in ["kid1", "kid2"] {
        let mut g = NewGrant::new(cid("app"), scopes("patient/*.rs"));
        g.user_id = Some(proxy.user_id.clone());
        g.patient_id = Some(pid(kid));
        s.create_grant(g).await.expect("grant for child");
    }
    let mut g = NewGrant::new(cid("app"), scopes("patient/*.rs"));
    g.user_id = Some(proxy.user_id.clone());
    g.patient_id = Some(pid("mom"));
    assert!(matches!(s.create_grant(g).await, Err(AuthStoreError::Invalid(_))));
    let grants = s.grants_for_user(&proxy.user_id).await.expect("grants");
    let mut for_patients: Vec<String> =
        grants.iter().filter_map(|g| g.patient_id.as_ref()).map(|p| p.to_string()).collect();
    for_patients.sort();
    assert_eq!(for_patients, ["kid1", "kid2"]);
}

async fn login_lockout(ctx: &Ctx) {
    let s = &ctx.store;
    let user = s.create_user(new_user("bob", Role::Patient, Some("Patient/b"), &[])).await.expect("user");
    let policy = LockoutPolicy { max_failures: 3, lock_seconds: 600 };
    let first = s.record_failed_login(&user.user_id, &policy).await.expect("fail 1");
    assert_eq!((first.failed_logins, first.locked_until), (1, None));
    s.record_failed_login(&user.user_id, &policy).await.expect("fail 2");
    // A success in between starts the count again.
    s.reset_failed_logins(&user.user_id).await.expect("reset");
    assert_eq!(s.user(&user.user_id).await.expect("user").expect("found").failed_logins, 0);
    for n in 1..=2 {
        let f = s.record_failed_login(&user.user_id, &policy).await.expect("fail");
        assert_eq!(f.failed_logins, n);
    }
    let locked = s.record_failed_login(&user.user_id, &policy).await.expect("fail 3");
    assert_eq!(locked.locked_until, Some(START + 600));
    assert_eq!(locked.failed_logins, 0);
    let now = s.user(&user.user_id).await.expect("user").expect("found");
    assert!(now.is_locked(ctx.clock.secs()));
    ctx.clock.advance(599);
    assert!(now.is_locked(ctx.clock.secs()));
    ctx.clock.advance(1);
    assert!(!now.is_locked(ctx.clock.secs()));
    s.reset_failed_logins(&user.user_id).await.expect("reset");
    let after = s.user(&user.user_id).await.expect("user").expect("found");
    assert_eq!((after.failed_logins, after.locked_until), (0, None));
    let ghost: UserId = "ghost".parse().expect("user id");
    assert!(matches!(s.record_failed_login(&ghost, &policy).await, Err(AuthStoreError::NotFound { .. })));
}

async fn grant_liveness_revocation_and_expiry(ctx: &Ctx) {
    let s = &ctx.store;
    let (client, user, _) = setup_grant(ctx).await;
    let mut new = NewGrant::new(client.clone(), scopes("launch/patient patient/Observation.rs openid fhirUser"));
    new.user_id = Some(user.clone());
    new.patient_id = Some(pid("p1"));
    new.encounter_id = Some("enc-1".into());
    new.fhir_context = Some(json!([{"reference": "Encounter/enc-1"}]));
    new.withheld = vec![SensitiveCategory::Hiv, SensitiveCategory::BehavioralHealth, SensitiveCategory::Hiv];
    new.session_id = Some("sess-1".into());
    let grant = s.create_grant(new).await.expect("grant");
    assert_eq!(grant.withheld, [SensitiveCategory::BehavioralHealth, SensitiveCategory::Hiv]);
    assert_eq!(grant.created_at, START);
    assert_eq!(grant.expires_at, None);

    // Stored and read back exactly.
    assert_eq!(s.grant(&grant.grant_id).await.expect("grant").as_ref(), Some(&grant));
    assert_eq!(s.live_grant(&grant.grant_id).await.expect("live").as_ref(), Some(&grant));
    assert!(grant.is_live(ctx.clock.secs()));

    // last_used_at, written at most once a minute.
    ctx.clock.advance(10);
    s.touch_grant(&grant.grant_id).await.expect("touch");
    ctx.clock.advance(10);
    s.touch_grant(&grant.grant_id).await.expect("touch");
    assert_eq!(s.grant(&grant.grant_id).await.expect("grant").expect("found").last_used_at, Some(START + 10));
    ctx.clock.advance(60);
    s.touch_grant(&grant.grant_id).await.expect("touch");
    assert_eq!(s.grant(&grant.grant_id).await.expect("grant").expect("found").last_used_at, Some(START + 80));

    // Revocation.
    let revoked = s.revoke_grant(&grant.grant_id, "user:pat").await.expect("revoke");
    assert_eq!(revoked, std::slice::from_ref(&grant.grant_id));
    assert!(!is_live(ctx, &grant.grant_id).await);
    let stored = s.grant(&grant.grant_id).await.expect("grant").expect("still stored");
    assert_eq!(stored.revoked_at, Some(START + 80));
    assert_eq!(stored.revoked_by.as_deref(), Some("user:pat"));
    assert!(!stored.is_live(ctx.clock.secs()));
    // Revoking again changes nothing; unknown grants are no error.
    assert!(s.revoke_grant(&grant.grant_id, "someone-else").await.expect("revoke").is_empty());
    let again = s.grant(&grant.grant_id).await.expect("grant").expect("stored");
    assert_eq!(again.revoked_by.as_deref(), Some("user:pat"));
    assert!(s.revoke_grant(&GrantId::generate(), "x").await.expect("revoke unknown").is_empty());
    assert!(s.live_grant(&GrantId::generate()).await.expect("live").is_none());

    // Expiry: `expires_at` is the first dead second.
    let mut new = NewGrant::new(client.clone(), scopes("patient/*.rs"));
    new.user_id = Some(user.clone());
    new.patient_id = Some(pid("p1"));
    new.lifetime_seconds = Some(3600);
    let expiring = s.create_grant(new).await.expect("grant");
    assert_eq!(expiring.expires_at, Some(ctx.clock.secs() + 3600));
    ctx.clock.advance(3599);
    assert!(is_live(ctx, &expiring.grant_id).await);
    ctx.clock.advance(1);
    assert!(!is_live(ctx, &expiring.grant_id).await);
    assert!(s.grant(&expiring.grant_id).await.expect("grant").is_some());

    // The "Connected apps" list: newest first, states visible.
    let list = s.grants_for_user(&user).await.expect("list");
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].grant_id, expiring.grant_id);
    assert_eq!(list.iter().filter(|g| g.is_live(ctx.clock.secs())).count(), 1);
    assert!(list.iter().any(|g| g.grant_id == grant.grant_id && g.revoked_at.is_some()));
}

async fn grant_rules(ctx: &Ctx) {
    let s = &ctx.store;
    let (client, user, _) = setup_grant(ctx).await;
    // Unknown client or user.
    assert!(matches!(
        s.create_grant(NewGrant::new(cid("ghost"), scopes("patient/*.rs"))).await,
        Err(AuthStoreError::Invalid(_))
    ));
    let mut g = NewGrant::new(client.clone(), scopes("patient/*.rs"));
    g.user_id = Some("ghost".parse().expect("user id"));
    assert!(matches!(s.create_grant(g).await, Err(AuthStoreError::Invalid(_))));
    // A patient user cannot consent for a patient they do not act for.
    let mut g = NewGrant::new(client.clone(), scopes("patient/*.rs"));
    g.user_id = Some(user.clone());
    g.patient_id = Some(pid("p2"));
    assert!(matches!(s.create_grant(g).await, Err(AuthStoreError::Invalid(_))));
    // A practitioner may pick any patient; a backend grant has no user.
    let doc = s.create_user(new_user("doc", Role::Practitioner, Some("Practitioner/1"), &[])).await.expect("doc");
    let mut g = NewGrant::new(client.clone(), scopes("user/*.rs"));
    g.user_id = Some(doc.user_id.clone());
    g.patient_id = Some(pid("p2"));
    s.create_grant(g).await.expect("practitioner grant");
    let backend = s.create_grant(NewGrant::new(client.clone(), scopes("system/*.rs"))).await.expect("backend");
    assert_eq!(backend.user_id, None);
    assert!(is_live(ctx, &backend.grant_id).await);
}

async fn revocation_cascades_to_child_grants(ctx: &Ctx) {
    let s = &ctx.store;
    let (client, _, parent) = setup_grant(ctx).await;
    // Parent has offline refresh tokens and an unused code; children derive from it.
    let mut parent_new = NewGrant::new(client.clone(), scopes("patient/*.rs"));
    parent_new.lifetime_seconds = Some(1000);
    parent_new.patient_id = Some(pid("p1"));
    parent_new.withheld = vec![SensitiveCategory::SubstanceUse];
    let root = s.create_grant(parent_new).await.expect("root");

    let mut child_new = NewGrant::new(client.clone(), scopes("patient/Observation.rs"));
    child_new.parent_grant_id = Some(root.grant_id.clone());
    child_new.lifetime_seconds = Some(5000);
    child_new.withheld = vec![SensitiveCategory::Hiv];
    let child = s.create_grant(child_new).await.expect("child");
    // Inherited: patient, withheld categories; never outlives the parent.
    assert_eq!(child.patient_id, Some(pid("p1")));
    assert_eq!(child.withheld, [SensitiveCategory::SubstanceUse, SensitiveCategory::Hiv]);
    assert_eq!(child.expires_at, root.expires_at);
    let mut grandchild_new = NewGrant::new(client.clone(), scopes("patient/Observation.r"));
    grandchild_new.parent_grant_id = Some(child.grant_id.clone());
    let grandchild = s.create_grant(grandchild_new).await.expect("grandchild");
    assert_eq!(grandchild.expires_at, root.expires_at);

    // A child cannot widen scopes or switch patient.
    let mut wider = NewGrant::new(client.clone(), scopes("patient/*.cruds"));
    wider.parent_grant_id = Some(root.grant_id.clone());
    assert!(matches!(s.create_grant(wider).await, Err(AuthStoreError::Invalid(_))));
    let mut other_patient = NewGrant::new(client.clone(), scopes("patient/Observation.rs"));
    other_patient.parent_grant_id = Some(root.grant_id.clone());
    other_patient.patient_id = Some(pid("p9"));
    assert!(matches!(s.create_grant(other_patient).await, Err(AuthStoreError::Invalid(_))));

    s.create_refresh_token(&token_hash("rt-root"), &root.grant_id, 600).await.expect("rt root");
    s.create_refresh_token(&token_hash("rt-child"), &child.grant_id, 600).await.expect("rt child");
    let (_, pkce) = challenge();
    let code = token_hash("code-child");
    s.create_code(NewCode {
        code_hash: &code,
        grant_id: &child.grant_id,
        client_id: &client,
        redirect_uri: "https://app.example/cb",
        challenge: &pkce,
        ttl_seconds: 60,
        nonce: None,
    })
    .await
    .expect("code");

    let revoked = s.revoke_grant(&root.grant_id, "admin:1").await.expect("revoke");
    assert_eq!(revoked.first(), Some(&root.grant_id));
    let mut got: Vec<&str> = revoked.iter().map(GrantId::as_str).collect();
    got.sort();
    let mut want = vec![root.grant_id.as_str(), child.grant_id.as_str(), grandchild.grant_id.as_str()];
    want.sort();
    assert_eq!(got, want);
    for g in [&root, &child, &grandchild] {
        assert!(!is_live(ctx, &g.grant_id).await, "{} still live", g.grant_id);
        let stored = s.grant(&g.grant_id).await.expect("grant").expect("stored");
        assert_eq!(stored.revoked_by.as_deref(), Some("admin:1"));
    }
    // The unrelated grant is untouched.
    assert!(is_live(ctx, &parent.grant_id).await);
    // Tokens and codes under the revoked grants are gone.
    for rt in ["rt-root", "rt-child"] {
        let r = s.rotate_refresh_token(&token_hash(rt), &token_hash("new"), 600).await;
        assert!(matches!(r, Err(AuthStoreError::NotFound { .. })), "{rt}: {r:?}");
    }
    assert!(matches!(s.redeem_code(&code).await, Err(AuthStoreError::NotFound { .. })));

    // No new children under a dead grant.
    let mut late = NewGrant::new(client.clone(), scopes("patient/Observation.rs"));
    late.parent_grant_id = Some(child.grant_id.clone());
    assert!(matches!(s.create_grant(late).await, Err(AuthStoreError::Revoked(_))));
    // Nor under an expired one.
    let mut short = NewGrant::new(client.clone(), scopes("patient/*.rs"));
    short.lifetime_seconds = Some(10);
    let short = s.create_grant(short).await.expect("short");
    ctx.clock.advance(10);
    let mut late = NewGrant::new(client.clone(), scopes("patient/*.rs"));
    late.parent_grant_id = Some(short.grant_id.clone());
    assert!(matches!(s.create_grant(late).await, Err(AuthStoreError::Revoked(_))));
}

async fn session_grants_are_revoked_together(ctx: &Ctx) {
    let s = &ctx.store;
    let (client, user, unrelated) = setup_grant(ctx).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut g = NewGrant::new(client.clone(), scopes("patient/*.rs online_access"));
        g.user_id = Some(user.clone());
        g.patient_id = Some(pid("p1"));
        g.session_id = Some("sess-42".into());
        ids.push(s.create_grant(g).await.expect("grant").grant_id);
    }
    let mut revoked = s.revoke_session_grants("sess-42", "logout").await.expect("revoke");
    revoked.sort();
    ids.sort();
    assert_eq!(revoked, ids);
    for id in &ids {
        assert!(!is_live(ctx, id).await);
    }
    assert!(is_live(ctx, &unrelated.grant_id).await);
    assert!(s.revoke_session_grants("sess-42", "logout").await.expect("again").is_empty());
}

async fn codes_are_single_use(ctx: &Ctx) {
    let s = &ctx.store;
    let (client, _, grant) = setup_grant(ctx).await;
    let (verifier, pkce) = challenge();
    let code = "the-code-value-0123456789";
    let new_code = |hash: &'static str| NewCode {
        code_hash: hash,
        grant_id: &grant.grant_id,
        client_id: &client,
        redirect_uri: "https://app.example/cb",
        challenge: &pkce,
        ttl_seconds: 60,
        nonce: Some("n-0S6_WzA2Mj"),
    };
    let hash: &'static str = Box::leak(token_hash(code).into_boxed_str());
    s.create_code(new_code(hash)).await.expect("code");
    assert!(matches!(s.create_code(new_code(hash)).await, Err(AuthStoreError::Conflict(_))));

    let redeemed = s.redeem_code(hash).await.expect("redeem");
    assert_eq!(redeemed.grant, grant);
    assert_eq!(redeemed.client_id, client);
    assert_eq!(redeemed.redirect_uri, "https://app.example/cb");
    assert_eq!(redeemed.nonce.as_deref(), Some("n-0S6_WzA2Mj"));
    redeemed.challenge.verify(&verifier).expect("pkce");

    // Second use: the grant is revoked and the error says so.
    s.create_refresh_token(&token_hash("rt"), &grant.grant_id, 3600).await.expect("rt issued from the code");
    match s.redeem_code(hash).await {
        Err(AuthStoreError::AlreadyUsed { grant_id, revoked }) => {
            assert_eq!(grant_id, grant.grant_id);
            assert_eq!(revoked, std::slice::from_ref(&grant.grant_id));
        }
        other => panic!("expected AlreadyUsed, got {other:?}"),
    }
    assert!(!is_live(ctx, &grant.grant_id).await);
    let stored = s.grant(&grant.grant_id).await.expect("grant").expect("stored");
    assert_eq!(stored.revoked_by.as_deref(), Some("code-reuse"));
    assert!(matches!(
        s.rotate_refresh_token(&token_hash("rt"), &token_hash("rt2"), 3600).await,
        Err(AuthStoreError::NotFound { .. })
    ));
    // Still refused afterwards (and nothing more to revoke).
    match s.redeem_code(hash).await {
        Err(e @ AuthStoreError::AlreadyUsed { .. }) => {
            assert!(e.revoked_grants().is_empty());
            assert_eq!(e.oauth_error(), "invalid_grant");
        }
        other => panic!("expected AlreadyUsed, got {other:?}"),
    }
    // No codes for a dead grant.
    let dead = s.create_code(new_code("deadbeef")).await;
    assert!(matches!(dead, Err(AuthStoreError::Revoked(_))), "{dead:?}");

    // Expiry: the code is dead from its expiry second on.
    let (client2, _, grant2) = setup_grant(ctx).await;
    let hash2 = token_hash("code-2");
    let hash3 = token_hash("code-3");
    for h in [&hash2, &hash3] {
        s.create_code(NewCode {
            code_hash: h,
            grant_id: &grant2.grant_id,
            client_id: &client2,
            redirect_uri: "https://app.example/cb",
            challenge: &pkce,
            ttl_seconds: 60,
            nonce: None,
        })
        .await
        .expect("code");
    }
    ctx.clock.advance(59);
    assert!(s.redeem_code(&hash3).await.expect("just in time").nonce.is_none());
    ctx.clock.advance(1);
    assert!(matches!(s.redeem_code(&hash2).await, Err(AuthStoreError::Expired { .. })));
    // An expired code revokes nothing.
    assert!(is_live(ctx, &grant2.grant_id).await);
    assert!(matches!(s.redeem_code(&token_hash("never-issued")).await, Err(AuthStoreError::NotFound { .. })));
    // A code must belong to the grant's client.
    s.create_client(public_client("other")).await.expect("other client");
    let wrong = s
        .create_code(NewCode {
            code_hash: "cafe",
            grant_id: &grant2.grant_id,
            client_id: &cid("other"),
            redirect_uri: "https://app.example/cb",
            challenge: &pkce,
            ttl_seconds: 60,
            nonce: None,
        })
        .await;
    assert!(matches!(wrong, Err(AuthStoreError::Invalid(_))), "{wrong:?}");
}

async fn concurrent_redemption_has_one_winner(ctx: &Ctx) {
    let s = &ctx.store;
    let (client, _, grant) = setup_grant(ctx).await;
    let (_, pkce) = challenge();
    let hash = token_hash("raced-code");
    s.create_code(NewCode {
        code_hash: &hash,
        grant_id: &grant.grant_id,
        client_id: &client,
        redirect_uri: "https://app.example/cb",
        challenge: &pkce,
        ttl_seconds: 60,
        nonce: None,
    })
    .await
    .expect("code");
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = s.clone();
            let hash = hash.clone();
            tokio::spawn(async move { store.redeem_code(&hash).await })
        })
        .collect();
    let mut wins = 0;
    let mut replays = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => wins += 1,
            Err(AuthStoreError::AlreadyUsed { .. }) => replays += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((wins, replays), (1, 5));
    assert!(!is_live(ctx, &grant.grant_id).await);

    // Concurrent rotations of one refresh token: one rotates, the others are replays.
    let (_, _, grant) = setup_grant(ctx).await;
    s.create_refresh_token(&token_hash("raced-rt"), &grant.grant_id, 600).await.expect("rt");
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = s.clone();
            tokio::spawn(async move {
                store.rotate_refresh_token(&token_hash("raced-rt"), &token_hash(&format!("next-{i}")), 600).await
            })
        })
        .collect();
    // The first replay revokes the grant and deletes its tokens, so later ones find nothing.
    let (mut wins, mut replays, mut gone) = (0, 0, 0);
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => wins += 1,
            Err(AuthStoreError::Reused { .. }) => replays += 1,
            Err(AuthStoreError::NotFound { .. }) => gone += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert!(replays >= 1 && replays + gone == 5, "{replays} replays, {gone} not found");
    assert!(!is_live(ctx, &grant.grant_id).await);

    // Same for assertion ids.
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = s.clone();
            tokio::spawn(async move { store.remember_jti(&cid("app"), "jti-race", START + 300).await })
        })
        .collect();
    let mut fresh = 0;
    for t in tasks {
        if t.await.expect("join").expect("remember") {
            fresh += 1;
        }
    }
    assert_eq!(fresh, 1);
}

async fn refresh_tokens_rotate_and_reuse_revokes(ctx: &Ctx) {
    let s = &ctx.store;
    let (_, _, grant) = setup_grant(ctx).await;
    let (r1, r2, r3, r4) = (token_hash("r1"), token_hash("r2"), token_hash("r3"), token_hash("r4"));
    s.create_refresh_token(&r1, &grant.grant_id, 3600).await.expect("r1");
    assert!(matches!(s.create_refresh_token(&r1, &grant.grant_id, 3600).await, Err(AuthStoreError::Conflict(_))));
    ctx.clock.advance(100);
    let g = s.rotate_refresh_token(&r1, &r2, 3600).await.expect("r1 -> r2");
    assert_eq!(g.grant_id, grant.grant_id);
    ctx.clock.advance(100);
    s.rotate_refresh_token(&r2, &r3, 3600).await.expect("r2 -> r3");

    // r1 again: stolen. The grant dies, and with it r3 (the legitimate holder's current token).
    match s.rotate_refresh_token(&r1, &r4, 3600).await {
        Err(AuthStoreError::Reused { grant_id, revoked }) => {
            assert_eq!(grant_id, grant.grant_id);
            assert_eq!(revoked, std::slice::from_ref(&grant.grant_id));
        }
        other => panic!("expected Reused, got {other:?}"),
    }
    assert!(!is_live(ctx, &grant.grant_id).await);
    let stored = s.grant(&grant.grant_id).await.expect("grant").expect("stored");
    assert_eq!(stored.revoked_by.as_deref(), Some("refresh-reuse"));
    let r = s.rotate_refresh_token(&r3, &r4, 3600).await;
    assert!(matches!(r, Err(AuthStoreError::NotFound { .. })), "{r:?}");
    assert!(matches!(s.rotate_refresh_token(&r4, &r1, 3600).await, Err(AuthStoreError::NotFound { .. })));
    // No new tokens for the dead grant.
    assert!(matches!(
        s.create_refresh_token(&token_hash("r5"), &grant.grant_id, 3600).await,
        Err(AuthStoreError::Revoked(_))
    ));
}

async fn refresh_token_expiry(ctx: &Ctx) {
    let s = &ctx.store;
    let (client, user, _) = setup_grant(ctx).await;
    let mut new = NewGrant::new(client.clone(), scopes("patient/*.rs offline_access"));
    new.user_id = Some(user.clone());
    new.patient_id = Some(pid("p1"));
    new.lifetime_seconds = Some(1000);
    let grant = s.create_grant(new).await.expect("grant");
    s.create_refresh_token(&token_hash("a"), &grant.grant_id, 100).await.expect("a");
    ctx.clock.advance(100);
    let r = s.rotate_refresh_token(&token_hash("a"), &token_hash("b"), 100).await;
    assert!(matches!(r, Err(AuthStoreError::Expired { .. })), "{r:?}");
    // An expired token revokes nothing.
    assert!(is_live(ctx, &grant.grant_id).await);

    // A token's life ends with its grant's: at 1000 s the grant expires, so does `c`.
    s.create_refresh_token(&token_hash("c"), &grant.grant_id, 100_000).await.expect("c");
    ctx.clock.advance(899);
    s.rotate_refresh_token(&token_hash("c"), &token_hash("d"), 100_000).await.expect("c -> d");
    ctx.clock.advance(1);
    let r = s.rotate_refresh_token(&token_hash("d"), &token_hash("e"), 100_000).await;
    assert!(matches!(r, Err(AuthStoreError::Expired { .. })), "{r:?}");
}

async fn client_assertion_jti_replay(ctx: &Ctx) {
    let s = &ctx.store;
    let a = cid("backend-a");
    let b = cid("backend-b");
    assert!(s.remember_jti(&a, "jti-1", START + 300).await.expect("first"));
    assert!(!s.remember_jti(&a, "jti-1", START + 300).await.expect("replay"));
    assert!(s.remember_jti(&b, "jti-1", START + 300).await.expect("other client"));
    assert!(s.remember_jti(&a, "jti-2", START + 600).await.expect("other jti"));
    ctx.clock.advance(299);
    assert!(!s.remember_jti(&a, "jti-1", START + 300).await.expect("still remembered"));
    ctx.clock.advance(1);
    // Expired rows are pruned; an expired assertion is refused by its `exp` check anyway.
    assert!(s.remember_jti(&a, "jti-1", START + 900).await.expect("pruned"));
    assert!(!s.remember_jti(&a, "jti-2", START + 600).await.expect("jti-2 not expired yet"));
}

async fn launch_contexts_are_single_use(ctx: &Ctx) {
    let s = &ctx.store;
    let new = NewLaunch {
        patient_id: Some(pid("p1")),
        encounter_id: Some("enc-7".into()),
        fhir_context: Some(json!([{"reference": "Encounter/enc-7"}, {"reference": "Location/ward-3"}])),
        need_patient_banner: false,
        smart_style_url: Some("https://ehr.example/smart-style.json".into()),
        ttl_seconds: 300,
    };
    let id = s.create_launch(new.clone()).await.expect("launch");
    let other = s.create_launch(new.clone()).await.expect("launch 2");
    assert_ne!(id, other);
    assert!(id.len() >= 32, "launch ids are long and random: {id}");
    let taken = s.take_launch(&id).await.expect("take").expect("present");
    assert_eq!(taken.launch_id, id);
    assert_eq!(taken.patient_id, Some(pid("p1")));
    assert_eq!(taken.encounter_id.as_deref(), Some("enc-7"));
    assert_eq!(taken.fhir_context, new.fhir_context);
    assert!(!taken.need_patient_banner);
    assert_eq!(taken.smart_style_url, new.smart_style_url);
    assert_eq!((taken.created_at, taken.expires_at), (START, START + 300));
    assert!(s.take_launch(&id).await.expect("take again").is_none());
    assert!(s.take_launch("unknown").await.expect("unknown").is_none());
    ctx.clock.advance(300);
    assert!(s.take_launch(&other).await.expect("expired").is_none());
    let bare = s
        .create_launch(NewLaunch {
            patient_id: None,
            encounter_id: None,
            fhir_context: None,
            need_patient_banner: true,
            smart_style_url: None,
            ttl_seconds: 60,
        })
        .await
        .expect("bare");
    let bare = s.take_launch(&bare).await.expect("take").expect("present");
    assert!(bare.need_patient_banner && bare.patient_id.is_none() && bare.fhir_context.is_none());
}

async fn signing_keys_retire(ctx: &Ctx) {
    let s = &ctx.store;
    let key = |kid: &str, alg: KeyAlg| NewSigningKey {
        kid: kid.into(),
        alg,
        private_pem: "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n".into(),
        public_jwk: json!({"kty": "RSA", "kid": kid, "alg": alg.as_str(), "use": "sig", "n": "xyz", "e": "AQAB"}),
    };
    assert!(s.active_signing_key(KeyAlg::Rs256).await.expect("none").is_none());
    let k1 = s.insert_signing_key(key("k1", KeyAlg::Rs256)).await.expect("k1");
    assert!(k1.active && k1.retired_at.is_none());
    assert!(!format!("{k1:?}").contains("BEGIN PRIVATE KEY"), "private key stays out of Debug");
    s.insert_signing_key(key("e1", KeyAlg::Es256)).await.expect("e1");
    assert!(matches!(s.insert_signing_key(key("k1", KeyAlg::Rs256)).await, Err(AuthStoreError::Conflict(_))));
    assert_eq!(s.active_signing_key(KeyAlg::Rs256).await.expect("active").expect("k1").kid, "k1");
    assert_eq!(s.active_signing_key(KeyAlg::Es256).await.expect("active").expect("e1").kid, "e1");

    // Rotation: a newer key signs; the old one stays published for the token lifetime.
    ctx.clock.advance(10);
    let k2 = s.insert_signing_key(key("k2", KeyAlg::Rs256)).await.expect("k2");
    assert_eq!(s.active_signing_key(KeyAlg::Rs256).await.expect("active").expect("k2"), k2);
    assert!(s.retire_signing_key("k1", 3600).await.expect("retire"));
    assert!(!s.retire_signing_key("k1", 3600).await.expect("retire again"));
    assert!(!s.retire_signing_key("nope", 3600).await.expect("retire unknown"));
    assert_eq!(s.active_signing_key(KeyAlg::Rs256).await.expect("active").expect("k2").kid, "k2");
    let published: Vec<String> = s.signing_keys().await.expect("keys").into_iter().map(|k| k.kid).collect();
    assert_eq!(published, ["k2", "e1", "k1"]);
    let retired = s.signing_key("k1").await.expect("k1").expect("still published");
    assert!(!retired.active);
    assert_eq!(retired.retired_at, Some(START + 10));
    assert_eq!(retired.publish_until, Some(START + 3610));
    assert_eq!(retired.public_jwk["kid"], "k1");

    ctx.clock.advance(3600);
    let published: Vec<String> = s.signing_keys().await.expect("keys").into_iter().map(|k| k.kid).collect();
    assert_eq!(published, ["k2", "e1"]);
    assert!(s.signing_key("k1").await.expect("k1").is_none());
    // Retiring the only key of an algorithm leaves none to sign with.
    assert!(s.retire_signing_key("e1", 0).await.expect("retire e1"));
    assert!(s.active_signing_key(KeyAlg::Es256).await.expect("active").is_none());
}

async fn pruning(ctx: &Ctx) {
    let s = &ctx.store;
    let (client, _, grant) = setup_grant(ctx).await;
    let (_, pkce) = challenge();
    s.create_code(NewCode {
        code_hash: "c1",
        grant_id: &grant.grant_id,
        client_id: &client,
        redirect_uri: "https://app.example/cb",
        challenge: &pkce,
        ttl_seconds: 60,
        nonce: None,
    })
    .await
    .expect("code");
    s.create_refresh_token("r1", &grant.grant_id, 120).await.expect("rt");
    s.create_launch(NewLaunch {
        patient_id: None,
        encounter_id: None,
        fhir_context: None,
        need_patient_banner: true,
        smart_style_url: None,
        ttl_seconds: 60,
    })
    .await
    .expect("launch");
    s.remember_jti(&client, "j", START + 60).await.expect("jti");
    assert_eq!(s.prune_auth_state().await.expect("prune"), 0);
    ctx.clock.advance(60);
    assert_eq!(s.prune_auth_state().await.expect("prune"), 3);
    ctx.clock.advance(60);
    assert_eq!(s.prune_auth_state().await.expect("prune"), 1);
    assert!(is_live(ctx, &grant.grant_id).await);
}

/// PostgreSQL only: every revoked grant is announced on `GRANT_REVOKED_CHANNEL` at commit, so
/// other processes can drop cached liveness answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_revocation_notifies_other_processes() {
    let Some(ctx) = Ctx::new(Backend::Postgres).await else { return };
    let mut listener = sqlx::postgres::PgListener::connect(&ctx.url).await.expect("listener");
    listener.listen(GRANT_REVOKED_CHANNEL).await.expect("listen");
    let (client, _, grant) = setup_grant(&ctx).await;
    let mut child = NewGrant::new(client, scopes("patient/Observation.rs"));
    child.parent_grant_id = Some(grant.grant_id.clone());
    let child = ctx.store.create_grant(child).await.expect("child");
    ctx.store.revoke_grant(&grant.grant_id, "test").await.expect("revoke");
    let mut heard = Vec::new();
    for _ in 0..2 {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
            .await
            .expect("notification in time")
            .expect("notification");
        assert_eq!(n.channel(), GRANT_REVOKED_CHANNEL);
        heard.push(n.payload().to_string());
    }
    heard.sort();
    let mut want = vec![grant.grant_id.to_string(), child.grant_id.to_string()];
    want.sort();
    assert_eq!(heard, want);
    drop(listener);
}

// ---- audit trail -------------------------------------------------------------------------------

/// The audit records `query` should find, newest first: a plain scan of everything stored.
fn audit_scan(all: &[AuditRecord], query: &AuditQuery) -> Vec<i64> {
    let mut ids: Vec<i64> = all
        .iter()
        .filter(|r| query.patients.as_ref().is_none_or(|p| r.patient_id.as_ref().is_some_and(|id| p.contains(id))))
        .filter(|r| query.user_id.as_ref().is_none_or(|u| r.user_id.as_ref() == Some(u)))
        .filter(|r| query.since_ms.is_none_or(|since| r.recorded_ms >= since))
        .filter(|r| query.before_id.is_none_or(|before| r.id < before))
        .map(|r| r.id)
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.truncate(query.limit.clamp(1, 1000) as usize);
    ids
}

/// Every stored audit record, read newest first a page at a time.
async fn all_audit_records(store: &Store) -> Vec<AuditRecord> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page =
            store.audit_events(&AuditQuery { before_id: before, limit: 1000, ..AuditQuery::default() }).await.unwrap();
        let Some(last) = page.last() else { return all };
        before = Some(last.id);
        all.extend(page);
    }
}

/// Records are written in batches as the server's writer does (one transaction each); queries by
/// patient, user, time and paging cursor must find exactly the records a scan finds. One patient
/// appears in every batch, so its postings span several of the reader's pages.
async fn audit_queries_find_what_a_scan_finds(ctx: &Ctx) {
    let mut seed: u64 = 7;
    let mut next = move |n: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut ms = 1_800_000_000_000;
    let mut written = 0;
    for batch in 0..170 {
        let size = if batch % 50 == 0 { 300 } else { 1 + next(12) as usize };
        let mut records = Vec::with_capacity(size + 1);
        for i in 0..=size {
            ms += next(40) as i64 - 5; // mostly later, sometimes a little earlier (concurrent requests)
            let patient = if i == 0 {
                Some("p0".to_string())
            } else {
                [None, Some("p1"), Some("p2"), Some("p3")][next(4) as usize].map(str::to_string)
            };
            let user = [None, Some("u1"), Some("u2")][next(3) as usize].map(str::to_string);
            records.push(AuditRecord {
                recorded_ms: ms,
                interaction: "read".into(),
                action: "R".into(),
                status: 200,
                patient_id: patient,
                user_id: user,
                resource_type: Some("Patient".into()),
                resource_id: Some(format!("r{batch}-{i}")),
                ..AuditRecord::default()
            });
        }
        written += records.len();
        ctx.store.record_audit(&mut records).await.unwrap();
    }
    let all = all_audit_records(&ctx.store).await;
    assert_eq!(all.len(), written);
    let mut ids: Vec<i64> = all.iter().map(|r| r.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), written, "ids are unique");
    let middle_id = all[all.len() / 2].id;
    let middle_ms = all[all.len() / 3].recorded_ms;
    let patients = |p: &[&str]| Some(p.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let mut queries = Vec::new();
    for limit in [1, 7, 50, 1000] {
        for before_id in [None, Some(middle_id)] {
            for since_ms in [None, Some(middle_ms)] {
                for (who, user) in [
                    (patients(&["p0"]), None),
                    (patients(&["p1", "p2"]), None),
                    (patients(&["p3"]), Some("u1".to_string())),
                    (None, Some("u2".to_string())),
                    (patients(&["nobody"]), None),
                    (None, None),
                ] {
                    queries.push(AuditQuery { patients: who, user_id: user, since_ms, before_id, limit });
                }
            }
        }
    }
    for query in &queries {
        let found: Vec<i64> = ctx.store.audit_events(query).await.unwrap().iter().map(|r| r.id).collect();
        assert_eq!(found, audit_scan(&all, query), "{query:?}");
    }
    let none = AuditQuery { patients: Some(Vec::new()), limit: 10, ..AuditQuery::default() };
    assert!(ctx.store.audit_events(&none).await.unwrap().is_empty());
    // A record read back by id is the one written.
    let one = &all[17];
    assert_eq!(ctx.store.audit_event(one.id).await.unwrap().as_ref(), Some(one));
}

/// Two servers (two stores on one database) store batches at the same time: every record gets
/// its own id and is found by id, by patient and in the full listing. (SQLite refuses a batch
/// whose read snapshot went stale; the server's writer retries it, as this test does.)
async fn two_servers_write_one_audit_trail(ctx: &Ctx) {
    let options = StoreOptions { max_connections: 4, cache_bytes: 0, ..StoreOptions::default() };
    let other = Store::connect(&ctx.url, options, ctx.clock.clone()).await.expect("second store");
    let write = |store: Store, server: &'static str| async move {
        for batch in 0..12 {
            let mut records: Vec<AuditRecord> = (0..150)
                .map(|i| AuditRecord {
                    recorded_ms: 1_800_000_000_000 + batch * 1000 + i,
                    interaction: "read".into(),
                    action: "R".into(),
                    status: 200,
                    patient_id: Some(format!("p{}", i % 3)),
                    resource_id: Some(format!("{server}-{batch}-{i}")),
                    ..AuditRecord::default()
                })
                .collect();
            let mut attempts = 0;
            while let Err(e) = store.record_audit(&mut records).await {
                attempts += 1;
                assert!(attempts < 50, "batch never stored: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };
    tokio::join!(write(ctx.store.clone(), "a"), write(other.clone(), "b"));
    let all = all_audit_records(&ctx.store).await;
    assert_eq!(all.len(), 2 * 12 * 150);
    let mut ids: Vec<i64> = all.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len(), "ids are unique");
    for record in all.iter().step_by(37) {
        assert_eq!(ctx.store.audit_event(record.id).await.unwrap().as_ref(), Some(record));
    }
    let by_patient = AuditQuery { patients: Some(vec!["p1".into()]), limit: 1000, ..AuditQuery::default() };
    let found: Vec<i64> = other.audit_events(&by_patient).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(found, audit_scan(&all, &by_patient));
    assert_eq!(found.len(), 1000, "a full page");
    assert_eq!(all.iter().filter(|r| r.patient_id.as_deref() == Some("p1")).count(), 2 * 12 * 50);
    other.close().await;
}

/// Records stored before postings and blocks existed (a row each, an index on patient_id found
/// them) are found after the migrations that introduced them, on either side of the postings'
/// 100,000-id groups and of the blocks' 128-id groups, and new records are numbered after them.
async fn audit_records_stored_before_postings_are_found(backend: Backend) {
    let Some((dir, url, pg_database)) = fresh_database(backend).await else { return };
    let folder = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(folder);
    let mut before_postings = sqlx::migrate::Migrator::new(path).await.unwrap();
    let older: Vec<_> = before_postings.migrations.iter().filter(|m| m.version < 6).cloned().collect();
    assert_eq!(older.len(), 5, "the schema before postings and blocks");
    before_postings.migrations = older.into();
    let ids = [3_i64, 127, 128, 99_999, 100_000, 100_001, 250_000];
    let insert =
        "INSERT INTO audit_events (id, recorded_ms, interaction, action, outcome, status, user_id, patient_id) \
                  VALUES ($1, $2, 'read', 'R', 0, 200, $3, $4)";
    let rows = ids.iter().map(|&id| (id, 1_800_000_000_000 + id, if id % 2 == 1 { Some("u1") } else { None }, "p1"));
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&format!("sqlite://{url}?mode=rwc")).await.unwrap();
            before_postings.run(&pool).await.unwrap();
            for (id, ms, user, patient) in rows {
                sqlx::query(insert).bind(id).bind(ms).bind(user).bind(patient).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            before_postings.run(&pool).await.unwrap();
            for (id, ms, user, patient) in rows {
                sqlx::query(insert).bind(id).bind(ms).bind(user).bind(patient).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
    }
    let ctx = Ctx::connect(dir, url, pg_database).await;
    let query = |patients: Option<Vec<String>>, user: Option<&str>| AuditQuery {
        patients,
        user_id: user.map(str::to_string),
        limit: 100,
        ..AuditQuery::default()
    };
    let found = |q: AuditQuery| {
        let store = ctx.store.clone();
        async move { store.audit_events(&q).await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>() }
    };
    assert_eq!(found(query(Some(vec!["p1".into()]), None)).await, vec![250_000, 100_001, 100_000, 99_999, 128, 127, 3]);
    assert_eq!(found(query(None, Some("u1"))).await, vec![100_001, 99_999, 127, 3]);
    let old = ctx.store.audit_event(128).await.unwrap().expect("an old record by id");
    assert_eq!(
        (old.recorded_ms, old.interaction.as_str(), old.status, old.patient_id.as_deref(), old.user_id),
        (1_800_000_000_128, "read", 200, Some("p1"), None)
    );
    assert!(ctx.store.audit_event(129).await.unwrap().is_none());
    // New records are numbered after the old ones and found with them.
    let new = AuditRecord {
        recorded_ms: 1_900_000_000_000,
        interaction: "read".into(),
        action: "R".into(),
        status: 200,
        patient_id: Some("p1".into()),
        ..AuditRecord::default()
    };
    ctx.store.record_audit(&mut [new]).await.unwrap();
    let after = found(query(Some(vec!["p1".into()]), None)).await;
    assert_eq!(after.len(), 8);
    assert!(after[0] > 250_000, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_audit_records_stored_before_postings_are_found() {
    audit_records_stored_before_postings_are_found(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_audit_records_stored_before_postings_are_found() {
    audit_records_stored_before_postings_are_found(Backend::Postgres).await;
}

// ---- backend-independent -----------------------------------------------------------------------

#[test]
fn token_hash_is_sha256_hex() {
    assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(token_hash("").len(), 64);
}

#[test]
fn error_codes_for_the_token_endpoint() {
    assert_eq!(AuthStoreError::Expired { what: "refresh token" }.oauth_error(), "invalid_grant");
    assert_eq!(AuthStoreError::Revoked(GrantId::generate()).oauth_error(), "invalid_grant");
    assert_eq!(AuthStoreError::Corrupt("x".into()).oauth_error(), "server_error");
    assert!(AuthStoreError::Corrupt("x".into()).is_internal());
    assert!(!GRANT_REVOKED_CHANNEL.is_empty());
}

#[test]
fn text_enums_round_trip() {
    for t in ClientType::ALL {
        assert_eq!(t.as_str().parse::<ClientType>(), Ok(*t));
        assert_eq!(serde_json::to_string(t).expect("json"), format!("\"{t}\""));
    }
    assert_eq!(OwnerType::HealthPlan.as_str(), "health-plan");
    assert_eq!(Role::Practitioner.to_string(), "practitioner");
    assert_eq!(KeyAlg::Es256.as_str(), "ES256");
    assert!("private".parse::<ClientType>().is_err());
}
