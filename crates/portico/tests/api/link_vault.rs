//! Link's vault: tokens refreshed ahead of expiry and after a 401, exactly once however many
//! requests need it at the same moment; a grant revoked at the portal turning the connection
//! into `reauthorization_required` (with its webhook); no token in clear in the database; key
//! rotation re-encrypting everything.

use link::directory::Category;
use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::harness::Backend;
use crate::link_harness::*;
use crate::smart::Browser;

both_backends!(refresh_is_single_flight_and_revocation_needs_reauthorization, tokens_are_sealed_and_keys_rotate);

const GROUPS: [&str; 10] = [
    "Patient",
    "Labs",
    "Vitals",
    "Condition",
    "Immunization",
    "Coverage",
    "Procedure",
    "CarePlan",
    "CareTeam",
    "DiagnosticReport",
];

async fn refresh_is_single_flight_and_revocation_needs_reauthorization(backend: Backend) {
    let Some(link) = LinkServer::start(backend, |_| {}).await else { return };
    let Some(portal) = portico_portal(backend, &link, "clinic", |c| c.auth.access_token_seconds = 10).await else {
        return;
    };
    let hooks = WebhookReceiver::start().await;
    let app = link.app(Some(&hooks.url)).await;
    let key = app.secret_key.clone();
    let ep = link.add_endpoint("Clinic", Category::Clinical, &portal.base, "link").await;
    let browser = Browser::new();
    let back =
        login_at_portico(&browser, &portal, &connect_url(&link, &ep, &app.app.app_id, "s", Some("pat")), &[]).await;
    let connection = redeem(&link, &key, &back).await;
    let id = connection["connectionId"].as_str().unwrap().to_owned();
    let refresh_tokens = || portal_count(&portal, "SELECT COUNT(*) FROM refresh_tokens");
    assert_eq!(refresh_tokens().await, 1, "the login's refresh token");

    // Past the access token's ten seconds, on both clocks: twenty requests at once, one refresh.
    for round in 1..=2 {
        link.clock.advance(11);
        portal.clock.advance(11);
        let requests = (0..20).map(|i| {
            let (link, key, id) = (&link, key.clone(), id.clone());
            async move {
                if i % 2 == 0 {
                    link.get(&key, &format!("/link/v1/connections/{id}/fhir/Patient/p1")).await
                } else {
                    let group = GROUPS[(i / 2) % GROUPS.len()];
                    let body = json!({"resources": [group], "fromTime": format!("20{i:02}")});
                    let (s, _, v) =
                        link.call(&key, Method::POST, &format!("/link/v1/connections/{id}/fetch"), Some(body)).await;
                    (s, v)
                }
            }
        });
        for (status, body) in futures::future::join_all(requests).await {
            assert_eq!(status, 200, "round {round}: {body}");
        }
        assert_eq!(refresh_tokens().await, 1 + round, "exactly one refresh at the portal in round {round}");
    }
    let (_, view) = link.get(&key, &format!("/link/v1/connections/{id}")).await;
    assert_eq!(view["status"], "active");
    assert!(view["lastFetch"].is_string());

    // The person revokes the app on the portal's Connected apps page (the same browser).
    let page = browser.get(&format!("{}/account/apps", portal.origin)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let form = [("csrf", form_value(&page.body, "csrf")), ("grant", form_value(&page.body, "grant"))];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let done = browser.post(&format!("{}/account/apps/revoke", portal.origin), &form).await;
    assert_eq!(done.status, 303, "{}", done.body);

    // The next fetch finds the grant gone: reauthorization is required, and the app is told.
    let (status, _, body) = link
        .call(&key, Method::POST, &format!("/link/v1/connections/{id}/fetch"), Some(json!({"resources": ["Patient"]})))
        .await;
    assert!(status == 502 || status == 409, "{status} {body}");
    let (_, view) = link.get(&key, &format!("/link/v1/connections/{id}")).await;
    assert_eq!(view["status"], "reauthorization_required", "{view}");
    let hook = hooks.wait_for("connection.reauthorization_required", |d| d["connectionId"] == id.as_str()).await;
    assert_eq!(hook.body["data"]["person"], "pat");
    let (status, _, body) = link.call(&key, Method::POST, &format!("/link/v1/connections/{id}/fetch"), None).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("reauthorization_required")));

    // Signing in again through Link makes the same connection active.
    let back =
        login_at_portico(&browser, &portal, &connect_url(&link, &ep, &app.app.app_id, "s2", Some("pat")), &[]).await;
    let again = redeem(&link, &key, &back).await;
    assert_eq!(again["connectionId"], id.as_str(), "the person's connection is reused");
    assert_eq!(again["status"], "active");
}

async fn tokens_are_sealed_and_keys_rotate(backend: Backend) {
    let Some(link) = LinkServer::start(backend, |_| {}).await else { return };
    let fake = FakePortal::start(Mode::Healthy).await;
    let app = link.app(Some("https://aggregator.example/hooks")).await;
    let key = app.secret_key.clone();
    let ep = link.add_endpoint("Fake", Category::Clinical, &fake.base, "link").await;
    let back = login_at_fake(&Browser::new(), &connect_url(&link, &ep, &app.app.app_id, "s", Some("p"))).await;
    let connection = redeem(&link, &key, &back).await;
    let id = connection["connectionId"].as_str().unwrap().to_owned();
    let (status, headers, bundle) =
        link.call(&key, Method::POST, &format!("/link/v1/connections/{id}/fetch"), None).await;
    assert_eq!(status, 200, "{bundle}");
    assert!(bundle.to_string().contains("fimm"), "{bundle}");
    // A synchronous fetch's result was its answer: it is not kept.
    let sync_job = headers["link-transaction-id"].to_str().unwrap().to_owned();
    let (status, body) = link.get(&key, &format!("/link/v1/jobs/{sync_job}/result")).await;
    assert_eq!(status, 410, "{body}");
    // An asynchronous one keeps its result (sealed) until it expires.
    let (status, _, started) = link
        .call_with(
            &key,
            Method::POST,
            &format!("/link/v1/connections/{id}/fetch"),
            Some(json!({"resources": ["Immunization"]})),
            &[("prefer", "respond-async")],
        )
        .await;
    assert_eq!(status, 202);
    let job = started["transactionId"].as_str().unwrap();
    assert_eq!(link.wait_job(&key, job).await["status"], "done");
    let (status, kept) = link.get(&key, &format!("/link/v1/jobs/{job}/result")).await;
    assert_eq!(status, 200);
    assert!(kept.to_string().contains("fimm"), "{kept}");
    // A synchronous fetch whose request went away is not run in the background: once its lease
    // has run out it ends failed.
    let abandoned = link
        .link
        .start_fetch(&app.app.app_id, &link::jobs::Target::Connection(id.parse().unwrap()), Default::default(), true)
        .await
        .expect("a claimed synchronous job");
    link.clock.advance(5);
    let ended = link.wait_job(&key, abandoned.job.as_str()).await;
    assert_eq!(ended["status"], "failed", "{ended}");

    assert_eq!(fake.token_hits.load(std::sync::atomic::Ordering::SeqCst), 1, "one code exchange, no refresh needed");
    let issued = fake.issued.lock().unwrap().clone();
    assert!(issued.len() >= 2);
    let text = link_database_text(&link).await;
    assert!(!text.is_empty());
    for secret in issued.iter().chain([&key, app.webhook_secret.as_ref().unwrap()]) {
        assert!(!text.contains(secret.as_str()), "a secret is stored in clear: {secret}");
    }
    assert!(!text.contains("fimm"), "fetched records are sealed too");

    // Rotation: a new key first, everything re-encrypted, then the old key can go.
    let before = link.link.sealed_by_key().await.unwrap();
    assert_eq!(before.len(), 1, "{before:?}");
    let new_key = link::vault::new_key();
    let open = |keys: Vec<[u8; 32]>| {
        let url = link.database_url.clone();
        let config = link.link.config().clone();
        async move {
            let vault = link::vault::Vault::from_keys(&keys).unwrap();
            link::Link::open(&url, config, vault, std::sync::Arc::new(store::SystemClock)).await.unwrap()
        }
    };
    let rotating = open(vec![new_key, link.key]).await;
    let count = rotating.reencrypt_all().await.unwrap();
    assert_eq!(count, before.values().sum::<usize>(), "every sealed value was re-encrypted");
    let after = rotating.sealed_by_key().await.unwrap();
    let new_kid = link::vault::Vault::from_keys(&[new_key]).unwrap().active_kid().to_owned();
    assert_eq!(after.keys().collect::<Vec<_>>(), vec![&new_kid], "only the new key is in use");
    assert_eq!(rotating.reencrypt_all().await.unwrap(), 0, "a second run has nothing to do");
    rotating.close().await;
    // A process with only the new key reads everything; one with only the old key reads nothing.
    let app_id = app.app.app_id.clone();
    let target = link::jobs::Target::Connection(id.parse().unwrap());
    let with_new = open(vec![new_key]).await;
    let (_, status, bundle) = with_new.fetch_now(&app_id, &target, Default::default()).await.unwrap();
    let bundle: serde_json::Value = serde_json::from_str(&bundle).unwrap();
    assert_eq!(status, link::jobs::JobStatus::Done, "{bundle}");
    with_new.close().await;
    let with_old = open(vec![link.key]).await;
    let refused = with_old
        .fetch_now(
            &app_id,
            &target,
            link::fetch::FetchRequest { resources: Some(vec!["Patient".into()]), ..Default::default() },
        )
        .await;
    let (_, status, _) = refused.expect("the job runs and reports its failure");
    assert_eq!(status, link::jobs::JobStatus::Failed, "the old key opens nothing any more");
    with_old.close().await;
}
