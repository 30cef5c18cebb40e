//! What Link refuses: return addresses that are not registered (an error page, never a
//! redirect), replayed or foreign login states, reused or foreign codes, other apps'
//! connections, missing or wrong keys, portals offering only `plain` PKCE, and hostile input on
//! every endpoint (no 5xx).

use link::directory::Category;
use reqwest::Method;
use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::Backend;
use crate::link_harness::*;
use crate::smart::Browser;

both_backends!(the_broker_refuses_what_it_cannot_trust, hostile_input_gets_clear_errors);

async fn the_broker_refuses_what_it_cannot_trust(backend: Backend) {
    let Some(link) = LinkServer::start(backend, |_| {}).await else { return };
    let fake = FakePortal::start(Mode::Healthy).await;
    let app = link.app(None).await;
    let other = link.app(None).await;
    let (key, other_key) = (app.secret_key.clone(), other.secret_key.clone());
    let ep = link.add_endpoint("Fake", Category::Clinical, &fake.base, "link").await;
    let app_id = app.app.app_id.clone();

    // An unregistered clientURL: an error page, no redirect, nowhere near the portal.
    let browser = Browser::new();
    for url in [
        format!("{}/link/v1/connect/{ep}?app={app_id}&clientURL=https://evil.example/&state=s", link.base),
        format!("{}/link/v1/connect/{ep}?app={app_id}&clientURL={}x&state=s", link.base, CLIENT_URL),
        format!(
            "{}/link/v1/connect/{ep}?app=app_00000000000000000000000000000000&clientURL={CLIENT_URL}&state=s",
            link.base
        ),
        format!("{}/link/v1/connect/{ep}?clientURL={CLIENT_URL}&state=s", link.base),
        format!("{}/link/v1/connect/{ep}?app={app_id}&state=s", link.base),
    ] {
        let page = browser.get(&url).await;
        assert_eq!(page.status, 400, "{url}: {}", page.body);
        assert!(page.location.is_none(), "never a redirect: {url}");
        assert!(page.body.contains("<h1>"), "a readable page: {}", page.body);
    }
    // Other mistakes go back to the (registered) app as OAuth errors.
    let to_app = |query: &str| format!("{}/link/v1/connect/{query}", link.base);
    for (url, error) in [
        (to_app(&format!("{ep}?app={app_id}&clientURL={CLIENT_URL}")), "invalid_request"),
        (
            to_app(&format!("ep_00000000000000000000000000000000?app={app_id}&clientURL={CLIENT_URL}&state=s")),
            "invalid_request",
        ),
        (to_app(&format!("nonsense?app={app_id}&clientURL={CLIENT_URL}&state=s")), "invalid_request"),
    ] {
        let page = browser.get(&url).await;
        assert_eq!(page.status, 303, "{url}");
        let location = page.location.unwrap();
        assert!(location.starts_with(CLIENT_URL), "{location}");
        assert_eq!(param(&location, "error").as_deref(), Some(error), "{location}");
    }
    // A portal offering only plain PKCE is refused.
    fake.plain_pkce_only.store(true, std::sync::atomic::Ordering::SeqCst);
    let plain_ep = link
        .add_endpoint(
            "Plain only",
            Category::Clinical,
            &format!("{}/", fake.base.replace("127.0.0.1", "localhost")),
            "link",
        )
        .await;
    fake.plain_pkce_only.store(false, std::sync::atomic::Ordering::SeqCst);
    let page = browser.get(&connect_url(&link, &plain_ep, &app_id, "s", None)).await;
    assert_eq!(param(page.location.as_deref().unwrap(), "error").as_deref(), Some("portal_unsupported"));

    // A login's state is bound to its browser and works once.
    let first = browser.get(&connect_url(&link, &ep, &app_id, "app-s", Some("p"))).await;
    let at_portal = browser.get(first.location.as_deref().unwrap()).await;
    let callback = at_portal.location.unwrap();
    let stranger = Browser::new().get(&callback).await;
    assert_eq!(stranger.status, 400, "a foreign browser: {}", stranger.body);
    assert!(stranger.location.is_none());
    let forged = Browser::new().get(&format!("{}/link/v1/callback?code=x&state=forged", link.base)).await;
    assert_eq!(forged.status, 400);
    let back = browser.get(&callback).await;
    assert_eq!(back.status, 303, "the right browser still finishes: {}", back.body);
    let location = back.location.unwrap();
    assert_eq!(param(&location, "state").as_deref(), Some("app-s"));
    let replay = browser.get(&callback).await;
    assert_eq!(replay.status, 400, "a replayed state");
    assert!(replay.location.is_none());

    // The code: only for its app, once, within a minute.
    let code = param(&location, "code").unwrap();
    let (status, _, body) = link.call(&other_key, Method::POST, "/link/v1/token", Some(json!({"code": code}))).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "another app's code");
    let connection = redeem(&link, &key, &location).await;
    let (status, _, body) = link.call(&key, Method::POST, "/link/v1/token", Some(json!({"code": code}))).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "a reused code: {body}");
    let late = login_at_fake(&Browser::new(), &connect_url(&link, &ep, &app_id, "s", Some("p"))).await;
    link.clock.advance(61);
    let (status, _, _) =
        link.call(&key, Method::POST, "/link/v1/token", Some(json!({"code": param(&late, "code").unwrap()}))).await;
    assert_eq!(status, 400, "an expired code");

    // Another app's connection is unknown to it.
    let id = connection["connectionId"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/link/v1/connections/{id}")),
        (Method::DELETE, format!("/link/v1/connections/{id}")),
        (Method::POST, format!("/link/v1/connections/{id}/fetch")),
        (Method::GET, format!("/link/v1/connections/{id}/fhir/Patient/fp1")),
    ] {
        let (status, _, body) = link.call(&other_key, method.clone(), &path, None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (_, list) = link.get(&other_key, "/link/v1/connections").await;
    assert_eq!(list, json!([]));
    // The pass-through works for the owner.
    let (status, patient) = link.get(&key, &format!("/link/v1/connections/{id}/fhir/Patient/fp1")).await;
    assert_eq!((status, patient["id"].as_str()), (200, Some("fp1")), "{patient}");

    // No key, a wrong key, a malformed header: 401 everywhere but the public routes.
    let paths = [
        (Method::GET, "/link/v1/directory/clinical".to_owned()),
        (Method::GET, "/link/v1/directory/clinical/search/x".to_owned()),
        (Method::POST, "/link/v1/token".to_owned()),
        (Method::GET, "/link/v1/connections".to_owned()),
        (Method::GET, format!("/link/v1/connections/{id}")),
        (Method::POST, format!("/link/v1/connections/{id}/fetch")),
        (Method::POST, "/link/v1/persons/p/fetch".to_owned()),
        (Method::GET, "/link/v1/jobs/job_00000000000000000000000000000000".to_owned()),
    ];
    let altered = format!("Bearer {key}x");
    let no_scheme = key.clone();
    for (method, path) in &paths {
        for auth in [
            None,
            Some("Bearer lk_wrong"),
            Some("Bearer "),
            Some("Basic abc"),
            Some(altered.as_str()),
            Some(no_scheme.as_str()),
        ] {
            let mut request = link.http.request(method.clone(), format!("{}{path}", link.base));
            if let Some(a) = auth {
                request = request.header("authorization", a);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 401, "{method} {path} with {auth:?}");
            assert!(r.headers().contains_key("www-authenticate"));
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["error"], "unauthorized");
        }
    }
}

async fn hostile_input_gets_clear_errors(backend: Backend) {
    let Some(link) = LinkServer::start(backend, |_| {}).await else { return };
    let fake = FakePortal::start(Mode::Healthy).await;
    let app = link.app(None).await;
    let key = app.secret_key.clone();
    let ep = link.add_endpoint("Fake", Category::Clinical, &fake.base, "link").await;
    let back = login_at_fake(&Browser::new(), &connect_url(&link, &ep, &app.app.app_id, "s", Some("p"))).await;
    let id = redeem(&link, &key, &back).await["connectionId"].as_str().unwrap().to_owned();
    let long = "x".repeat(5000);
    let bodies: Vec<Option<&str>> = vec![
        None,
        Some(""),
        Some("{"),
        Some("[]"),
        Some("null"),
        Some("\"text\""),
        Some("{\"code\": 5}"),
        Some("{\"resources\": \"Labs\"}"),
        Some("{\"resources\": [\"Labs\", 7]}"),
        Some("{\"resources\": [\"Nope\"]}"),
        Some("{\"fromTime\": \"yesterday\"}"),
        Some("{\"fromTime\": \"2024\", \"toTime\": \"2020\"}"),
        Some("{\"unknown\": true}"),
        Some("{\"excludeUndatedEntries\": \"yes\"}"),
    ];
    let paths = vec![
        "/link/v1/token".to_owned(),
        format!("/link/v1/connections/{id}/fetch"),
        "/link/v1/persons/p/fetch".to_owned(),
        "/link/v1/persons/nobody/fetch".to_owned(),
        format!("/link/v1/persons/{long}/fetch"),
        "/link/v1/connections/conn_zz/fetch".to_owned(),
        "/link/v1/connections/%00/fetch".to_owned(),
    ];
    for path in &paths {
        for body in &bodies {
            let mut request = link.http.post(format!("{}{path}", link.base)).bearer_auth(&key);
            if let Some(b) = body {
                request = request.header("content-type", "application/json").body(b.to_string());
            }
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            assert!(status < 500, "POST {path} {body:?}: {status}");
            if status >= 400 {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                assert!(v["error"].is_string(), "POST {path} {body:?}: {v}");
            }
        }
    }
    let gets = vec![
        format!("/link/v1/connections/{id}/fhir/Nonsense"),
        format!("/link/v1/connections/{id}/fhir/Patient/../../etc"),
        format!("/link/v1/connections/{id}/fhir/Patient/a/b/c/d"),
        format!("/link/v1/connections/{id}/fhir/Patient?{long}"),
        "/link/v1/connections?person=%FF".to_owned(),
        "/link/v1/jobs/job_zz".to_owned(),
        "/link/v1/jobs/job_00000000000000000000000000000000/result".to_owned(),
        "/link/v1/directory/clinical/search/%20".to_owned(),
        format!("/link/v1/directory/clinical/search/{long}"),
        "/link/v1/directory/clinical?near=1e400,5".to_owned(),
        "/link/v1/directory/clinical?near=5,5&radius_km=1e400".to_owned(),
        "/link/v1/nothing".to_owned(),
        format!("/link/v1/connect/{ep}?app=%00&clientURL=%00&state=%00"),
        format!("/link/v1/connect/{ep}?app={}&clientURL={CLIENT_URL}&state={long}", app.app.app_id),
        "/link/v1/callback".to_owned(),
        "/link/v1/callback?state=&code=".to_owned(),
        format!("/link/v1/callback?state={long}&code=x"),
        "/link/v1/callback?error=access_denied".to_owned(),
    ];
    for path in &gets {
        let r = link.http.get(format!("{}{path}", link.base)).bearer_auth(&key).send().await.unwrap();
        assert!(r.status().as_u16() < 500, "GET {path}: {}", r.status());
    }
    for (method, path) in [
        (Method::PUT, "/link/v1/token"),
        (Method::PATCH, "/link/v1/connections"),
        (Method::DELETE, "/link/v1/directory/clinical"),
    ] {
        let r =
            link.http.request(method.clone(), format!("{}{path}", link.base)).bearer_auth(&key).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method} {path}");
    }
    let huge = "x".repeat(2 << 20);
    let r = link
        .http
        .post(format!("{}/link/v1/token", link.base))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 400 | 413), "{}", r.status());
    // Nothing hostile left a trace: the one connection is still the only one.
    let (_, list) = link.get(&key, "/link/v1/connections").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
}
