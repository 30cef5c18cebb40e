//! Link end to end over HTTP: an app registered at Link, Portico portals (clinical and payer) in
//! its directory, a person connecting through the login broker, fetches (synchronous and as
//! jobs) with their webhooks, and the directory's searches and publications.

use link::directory::Category;
use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::Backend;
use crate::link_harness::*;
use crate::smart::Browser;

both_backends!(connect_fetch_and_webhooks, directory_search_and_brands);

fn resource_ids(bundle: &Value) -> Vec<String> {
    let mut ids: Vec<String> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap_or("?"),
                e["resource"]["id"].as_str().unwrap_or("?")
            )
        })
        .collect();
    ids.sort();
    ids
}

async fn connect_fetch_and_webhooks(backend: Backend) {
    let Some(link) = LinkServer::start(backend, |_| {}).await else { return };
    let Some(clinic) = portico_portal(backend, &link, "clinic", |_| {}).await else { return };
    let Some(plan) = portico_portal(backend, &link, "plan", |_| {}).await else { return };
    let hooks = WebhookReceiver::start().await;
    let app = link.app(Some(&hooks.url)).await;
    let key = app.secret_key.as_str();
    let clinic_ep = link.add_endpoint("Springfield Clinic", Category::Clinical, &clinic.base, "link").await;
    let plan_ep = link.add_endpoint("Springfield Health Plan", Category::Payer, &plan.base, "link").await;

    // The person signs in at the clinic through Link; the app gets a one-time code.
    let connection = connect_portico(&link, key, &app.app.app_id, &clinic_ep, &clinic, "person-1").await;
    assert_eq!(connection["endpointId"], clinic_ep.as_str());
    assert_eq!(connection["person"], "person-1");
    assert_eq!(connection["patientId"], "p1");
    assert_eq!(connection["status"], "active");
    assert_eq!(connection["refreshable"], true, "offline_access was granted");
    assert!(connection["scope"].as_str().unwrap().contains("patient/"), "{connection}");
    assert!(
        connection.get("accessToken").is_none() && !connection.to_string().contains("refresh_token"),
        "tokens never leave Link"
    );
    let clinic_conn = connection["connectionId"].as_str().unwrap().to_owned();

    // A synchronous fetch of everything: R4 resources with their source, the withheld
    // behavioral-health condition absent, referenced practitioner and organization included.
    let (status, headers, bundle) =
        link.call(key, Method::POST, &format!("/link/v1/connections/{clinic_conn}/fetch"), Some(json!({}))).await;
    assert_eq!(status, 200, "{bundle}");
    assert!(headers.get("link-transaction-id").is_some());
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "collection");
    let ids = resource_ids(&bundle);
    for expected in [
        "Patient/p1",
        "Observation/clinic-a1c-2019",
        "Observation/clinic-bp",
        "Condition/clinic-diabetes",
        "Immunization/clinic-flu",
        "Coverage/clinic-coverage",
        "Practitioner/clinic-doc",
        "Organization/clinic-org",
    ] {
        assert!(ids.contains(&expected.to_owned()), "{expected} missing from {ids:?}");
    }
    assert!(!ids.contains(&"Condition/clinic-depression".to_owned()), "the withheld category stays out: {ids:?}");
    // One Provenance names the portal and every record it supplied.
    let entries = bundle["entry"].as_array().unwrap();
    let provenances: Vec<&Value> =
        entries.iter().map(|e| &e["resource"]).filter(|r| r["resourceType"] == "Provenance").collect();
    assert_eq!(provenances.len(), 1, "{bundle}");
    let provenance = provenances[0];
    fhir::validate::Validator::r4().validate(provenance).unwrap_or_else(|e| panic!("{provenance}: {e:?}"));
    assert_eq!(provenance["agent"][0]["who"]["identifier"]["value"], clinic_ep.as_str());
    assert_eq!(provenance["entity"][0]["what"]["identifier"]["value"], clinic.base.as_str());
    assert!(provenance.get("activity").is_none(), "nothing was converted: {provenance}");
    let targets: Vec<&str> =
        provenance["target"].as_array().unwrap().iter().map(|t| t["reference"].as_str().unwrap()).collect();
    let full_urls: Vec<&str> = entries
        .iter()
        .filter(|e| e["resource"]["resourceType"] != "Provenance")
        .map(|e| e["fullUrl"].as_str().unwrap())
        .collect();
    assert_eq!(targets, full_urls);
    for entry in entries.iter().filter(|e| e["resource"]["resourceType"] != "Provenance") {
        let r = &entry["resource"];
        assert_eq!(r["meta"]["source"], clinic.base.as_str(), "{r}");
        assert!(r["meta"]["tag"].as_array().unwrap().iter().any(|t| t["code"] == clinic_ep.as_str()), "{r}");
        assert!(entry["fullUrl"].as_str().unwrap().starts_with(&clinic.base));
        fhir::validate::Validator::r4().validate(r).unwrap_or_else(|e| panic!("{r} is not valid R4: {e:?}"));
    }

    // Filters: labs within 2021 only (the portal's own search and Link's re-check agree).
    let (status, _, labs) = link
        .call(
            key,
            Method::POST,
            &format!("/link/v1/connections/{clinic_conn}/fetch"),
            Some(json!({"resources": ["Labs"], "fromTime": "2021-01-01", "toTime": "2021-12-31"})),
        )
        .await;
    assert_eq!(status, 200, "{labs}");
    let lab_ids: Vec<String> = resource_ids(&labs).into_iter().filter(|i| i.starts_with("Observation/")).collect();
    assert_eq!(lab_ids, vec!["Observation/clinic-a1c-2021", "Observation/clinic-glucose-2021"]);
    assert!(resource_ids(&labs).contains(&"Practitioner/clinic-doc".to_owned()), "the performer comes along");

    // The same person at the health plan; then one asynchronous fetch over both.
    let browser = Browser::new();
    let back =
        login_at_portico(&browser, &plan, &connect_url(&link, &plan_ep, &app.app.app_id, "s-2", Some("person-1")), &[])
            .await;
    let plan_conn = redeem(&link, key, &back).await;
    let (status, list) = link.get(key, "/link/v1/connections?person=person-1").await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");

    let (status, headers, started) = link
        .call_with(
            key,
            Method::POST,
            "/link/v1/persons/person-1/fetch",
            Some(json!({"resources": ["Patient", "Labs", "Coverage"]})),
            &[("prefer", "respond-async")],
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let job = started["transactionId"].as_str().unwrap().to_owned();
    assert_eq!(headers["link-transaction-id"].to_str().unwrap(), job);
    let finished = link.wait_job(key, &job).await;
    assert_eq!(finished["status"], "done", "{finished}");
    assert_eq!(finished["progress"].as_array().unwrap().len(), 2);
    let (status, result) = link.get(key, &format!("/link/v1/jobs/{job}/result")).await;
    assert_eq!(status, 200);
    let sources: std::collections::BTreeSet<&str> =
        result["entry"].as_array().unwrap().iter().filter_map(|e| e["resource"]["meta"]["source"].as_str()).collect();
    assert_eq!(sources, [clinic.base.as_str(), plan.base.as_str()].into_iter().collect(), "both portals side by side");
    let hook = hooks.wait_for("fetch.completed", |d| d["transactionId"] == job.as_str()).await;
    let secret = app.webhook_secret.as_deref().unwrap();
    assert!(
        link::webhooks::verify(
            secret,
            &hook.id,
            &hook.timestamp,
            &hook.raw,
            &hook.signature,
            link.link.now_ms() / 1000,
            300
        ),
        "the webhook's signature verifies: {hook:?}"
    );
    assert!(!link::webhooks::verify(
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        &hook.id,
        &hook.timestamp,
        &hook.raw,
        &hook.signature,
        link.link.now_ms() / 1000,
        300
    ));
    assert_eq!(hook.body["data"]["status"], "done");

    // The result expires (two hours by default): then 410.
    link.clock.advance(2 * 3600 + 1);
    link.link.maintain().await.unwrap();
    let (status, _) = link.get(key, &format!("/link/v1/jobs/{job}/result")).await;
    assert_eq!(status, 410);
    let (status, _) = link.get(key, &format!("/link/v1/jobs/{job}")).await;
    assert_eq!(status, 410);

    // Revoking the connection at Link revokes it at the portal too.
    let plan_id = plan_conn["connectionId"].as_str().unwrap();
    let (status, _, revoked) = link.call(key, Method::DELETE, &format!("/link/v1/connections/{plan_id}"), None).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    hooks.wait_for("connection.revoked", |d| d["connectionId"] == plan_id).await;
    let grants = plan.store.user_by_username("alice").await.unwrap().unwrap();
    let live = plan
        .store
        .grants_for_user(&grants.user_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|g| g.revoked_at.is_none())
        .count();
    assert_eq!(live, 0, "the portal's grant was revoked");
    let (status, _, body) = link.call(key, Method::POST, &format!("/link/v1/connections/{plan_id}/fetch"), None).await;
    assert_eq!(status, 409, "{body}");
}

async fn directory_search_and_brands(backend: Backend) {
    let Some(link) = LinkServer::start(backend, |_| {}).await else { return };
    let Some(clinic) = portico_portal(backend, &link, "clinic", |_| {}).await else { return };
    let app = link.app(None).await;
    let key = app.secret_key.as_str();
    let clinic_ep = link.add_endpoint("Springfield Clinic", Category::Clinical, &clinic.base, "link").await;
    // A payer far away, imported from CSV, never discovered.
    let csv = "name,organization,city,state,zip,latitude,longitude,category,fhir_base\n\
               Pacific Health Plan,Pacific Mutual,Seattle,WA,98101,47.6062,-122.3321,payer,https://pacific.example/fhir\n";
    let report = link.link.import_directory(csv, "csv:test").await.unwrap();
    assert_eq!((report.added, report.updated), (1, 0));

    let (status, clinical) = link.get(key, "/link/v1/directory/clinical").await;
    assert_eq!(status, 200);
    let items = clinical.as_array().unwrap();
    assert_eq!(items.len(), 1);
    let item = &items[0];
    assert_eq!(item["id"], clinic_ep.as_str());
    assert_eq!(item["fhirBase"], clinic.base.as_str());
    assert_eq!(item["fhirVersion"], "4.0.1");
    assert_eq!(item["status"], "active");
    assert_eq!(item["connectable"], true);
    assert!(item["discovery"]["pkceMethods"].as_array().unwrap().contains(&json!("S256")), "{item}");
    assert!(item["discovery"]["tokenEndpoint"].as_str().unwrap().ends_with("/auth/token"));
    assert_eq!(item["discovery"]["everything"], true);
    assert!(item["discovery"]["resourceTypes"].as_array().unwrap().contains(&json!("Observation")));
    assert!(item["health"]["requests24h"].as_i64().is_some(), "{item}");
    assert_eq!(item["connectUrl"], format!("{}/link/v1/connect/{clinic_ep}", link.base));

    for (path, expected) in [
        ("/link/v1/directory/clinical/search/springfield", 1),
        ("/link/v1/directory/clinical/search/SPRINGFIELD%20clinic", 1),
        ("/link/v1/directory/clinical/search/01103", 1),
        ("/link/v1/directory/clinical/search/011", 1),
        ("/link/v1/directory/clinical/search/98101", 0),
        ("/link/v1/directory/payer/search/98101", 1),
        ("/link/v1/directory/payer/search/mutual", 1),
        ("/link/v1/directory/payer/search/springfield", 0),
        ("/link/v1/directory/clinical?near=42.10,-72.59&radius_km=10", 1),
        ("/link/v1/directory/payer?near=42.10,-72.59&radius_km=100", 0),
        ("/link/v1/directory/payer?near=47.61,-122.33&radius_km=5", 1),
    ] {
        let (status, found) = link.get(key, path).await;
        assert_eq!(status, 200, "{path}: {found}");
        assert_eq!(found.as_array().unwrap().len(), expected, "{path}: {found}");
    }
    let (_, near) = link.get(key, "/link/v1/directory/payer?near=47.61,-122.33&radius_km=5").await;
    assert!(near[0]["distanceKm"].as_f64().unwrap() < 1.0);
    for bad in [
        "/link/v1/directory/hospital",
        "/link/v1/directory/clinical?near=abc",
        "/link/v1/directory/clinical?radius_km=4",
    ] {
        let (status, body) = link.get(key, bad).await;
        assert!(status == 400 || status == 404, "{bad}: {status} {body}");
        assert!(body["error"].is_string());
    }

    // The directory published as a User-access Brands bundle, public, and read back in.
    let r = link.http.get(format!("{}/link/v1/directory/brands", link.base)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let brands: Value = r.json().await.unwrap();
    assert_eq!(brands["type"], "collection");
    let entries = brands["entry"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "an Organization and an Endpoint per portal");
    for e in entries {
        fhir::validate::Validator::r4().validate(&e["resource"]).unwrap_or_else(|err| panic!("{e}: {err:?}"));
    }
    let org = entries.iter().find(|e| e["resource"]["name"] == "Pacific Mutual").unwrap();
    assert_eq!(org["resource"]["type"][0]["coding"][0]["code"], "pay");
    let (inputs, skipped) = link::directory::import::parse_bundle(&brands, "roundtrip").unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    let mut bases: Vec<String> = inputs.iter().map(|i| i.fhir_base.clone()).collect();
    bases.sort();
    let mut expected = vec![clinic.base.clone(), "https://pacific.example/fhir".to_owned()];
    expected.sort();
    assert_eq!(bases, expected);
    let report = link.link.import_directory(&brands.to_string(), "roundtrip").await.unwrap();
    assert_eq!((report.added, report.updated), (0, 2), "re-importing updates, never duplicates");
}

both_backends!(confidential_registrations_at_portals);

/// Link authenticates at portals where it is a confidential client: with a secret
/// (`client_secret_basic`) and with a private key (`private_key_jwt`, RS384), for the code
/// exchange, refreshes and revocation alike.
async fn confidential_registrations_at_portals(backend: Backend) {
    let Some(link) = LinkServer::start(backend, |_| {}).await else { return };
    let app = link.app(None).await;
    let key = app.secret_key.clone();
    let Some(with_secret) = portico_portal(backend, &link, "secret", |c| c.auth.access_token_seconds = 10).await else {
        return;
    };
    let Some(with_key) = portico_portal(backend, &link, "key", |c| c.auth.access_token_seconds = 10).await else {
        return;
    };
    // Registered at the portals as confidential clients instead of the public `link`.
    let secret = crate::smart::register(
        &with_secret,
        "link-secret",
        store::auth::ClientType::ConfidentialSymmetric,
        vec![link.callback()],
        oauth::register::DEFAULT_APP_SCOPES,
    )
    .await
    .client_secret
    .unwrap();
    let pair = auth::keys::generate(auth::keys::SigningAlg::Rs256).unwrap();
    let mut jwk = pair.public_jwk.clone();
    jwk["alg"] = "RS384".into();
    crate::smart::register_with(
        &with_key,
        "link-key",
        store::auth::ClientType::ConfidentialAsymmetric,
        vec![link.callback()],
        oauth::register::DEFAULT_APP_SCOPES,
        Some(json!({"keys": [jwk]})),
        false,
    )
    .await;
    let mut endpoints = Vec::new();
    for (name, portal, input) in [
        (
            "Secret",
            &with_secret,
            link::directory::EndpointInput {
                client_id: Some("link-secret".into()),
                client_secret: Some(secret.clone()),
                ..Default::default()
            },
        ),
        (
            "Key",
            &with_key,
            link::directory::EndpointInput {
                client_id: Some("link-key".into()),
                private_key_pem: Some(pair.private_pem.clone()),
                key_id: Some(pair.kid.clone()),
                ..Default::default()
            },
        ),
    ] {
        let input = link::directory::EndpointInput {
            name: name.into(),
            category: Some(Category::Clinical),
            fhir_base: portal.base.clone(),
            source: "test".into(),
            ..input
        };
        let (id, _) = link.link.upsert_endpoint(&input).await.unwrap();
        link.link.discover(&link.link.require_endpoint(&id).await.unwrap()).await.unwrap().unwrap();
        endpoints.push((id, portal));
    }
    for (ep, portal) in &endpoints {
        let back =
            login_at_portico(&Browser::new(), portal, &connect_url(&link, ep, &app.app.app_id, "s", Some("p")), &[])
                .await;
        let connection = redeem(&link, &key, &back).await;
        assert_eq!(connection["patientId"], "p1", "{connection}");
        let id = connection["connectionId"].as_str().unwrap().to_owned();
        // Past the token's life: the refresh authenticates too.
        link.clock.advance(11);
        portal.clock.advance(11);
        let (status, _, bundle) = link
            .call(
                &key,
                Method::POST,
                &format!("/link/v1/connections/{id}/fetch"),
                Some(json!({"resources": ["Patient"]})),
            )
            .await;
        assert_eq!(status, 200, "{bundle}");
        assert_eq!(portal_count(portal, "SELECT COUNT(*) FROM refresh_tokens").await, 2, "one refresh");
        // Revocation at the portal authenticates as well: the grant ends there.
        let (status, _, _) = link.call(&key, Method::DELETE, &format!("/link/v1/connections/{id}"), None).await;
        assert_eq!(status, 200);
        let user = portal.store.user_by_username("alice").await.unwrap().unwrap();
        let live = portal
            .store
            .grants_for_user(&user.user_id)
            .await
            .unwrap()
            .into_iter()
            .filter(|g| g.revoked_at.is_none())
            .count();
        assert_eq!(live, 0, "revoked at {}", portal.base);
    }
    // The secret is sealed, never stored in clear.
    assert!(!link_database_text(&link).await.contains(&secret));
}

both_backends!(a_refusal_at_the_portal_goes_back_to_the_app);

/// The person denies at the portal: the app's client URL gets `error=access_denied` and its own
/// state, no code, and no connection exists.
async fn a_refusal_at_the_portal_goes_back_to_the_app(backend: Backend) {
    let Some(link) = LinkServer::start(backend, |_| {}).await else { return };
    let Some(portal) = portico_portal(backend, &link, "clinic", |_| {}).await else { return };
    let app = link.app(None).await;
    let ep = link.add_endpoint("Clinic", Category::Clinical, &portal.base, "link").await;
    let browser = Browser::new();
    let first = browser.get(&connect_url(&link, &ep, &app.app.app_id, "mine", Some("p"))).await;
    let after =
        crate::smart::sign_in(&browser, &portal, first.location.as_deref().unwrap(), "alice", crate::smart::PASSWORD)
            .await;
    let page = crate::smart::follow(&browser, &portal, &after).await;
    let form = [
        ("req", form_value(&page.body, "req")),
        ("csrf", form_value(&page.body, "csrf")),
        ("decision", "deny".to_owned()),
    ];
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let denied = browser.post(&format!("{}/auth/consent", portal.origin), &form).await;
    let back = browser.get(denied.location.as_deref().unwrap()).await;
    assert_eq!(back.status, 303, "{}", back.body);
    let location = back.location.unwrap();
    assert!(location.starts_with(CLIENT_URL), "{location}");
    assert_eq!(param(&location, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&location, "state").as_deref(), Some("mine"));
    assert!(param(&location, "code").is_none());
    let (_, list) = link.get(&app.secret_key, "/link/v1/connections").await;
    assert_eq!(list, json!([]));
}
