//! Hostile and malformed input never produces a 5xx (and never writes anything).

use reqwest::Method;
use serde_json::json;

use crate::both_backends;
use crate::harness::{Backend, TestServer};

both_backends!(no_server_errors_on_hostile_input);

/// A small deterministic generator so failures are reproducible.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn no_server_errors_on_hostile_input(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else { return };
    let weird_values = [
        "",
        "%00",
        "%FF%FE",
        "'",
        "\"",
        "\\",
        "%5C%2C",
        ",,,",
        "|",
        "||",
        "a|b|c",
        "ge",
        "ge9999-99-99",
        "eq1e400",
        "-",
        "*",
        "%25",
        "_",
        "Patient/",
        "/Patient/1",
        "http://x/",
        "urn:uuid:",
        "😀",
        "a%0Ab",
        "null",
        "[]",
        "9223372036854775808",
        "-9223372036854775809",
        "1e-400",
        "0x10",
    ];
    let params = [
        "_id",
        "_lastUpdated",
        "name",
        "family",
        "birthdate",
        "gender",
        "identifier",
        "organization",
        "general-practitioner:Practitioner",
        "name:exact",
        "name:contains",
        "gender:not",
        "gender:text",
        "_count",
        "_sort",
        "_include",
        "_revinclude",
        "_elements",
        "_summary",
        "_total",
        "_cursor",
        "address-city:missing",
        "_has:Observation:patient:code",
        "link",
        "deceased",
        "_tag",
        "_profile",
    ];
    let mut checked = 0;
    for p in params {
        for v in weird_values {
            for path in [format!("Patient?{p}={v}"), format!("Observation?{p}={v}")] {
                let r = s.client.get(s.url(&path)).send().await.unwrap();
                assert!(r.status().as_u16() < 500, "GET {path} -> {}", r.status());
                checked += 1;
            }
        }
    }
    // weird ids and operations in paths
    for id in ["%00", "..", "a%2Fb", "x".repeat(65).as_str(), "%E2%80%AE", "_history", "$everything", "_search"] {
        for path in [
            format!("Patient/{id}"),
            format!("Patient/{id}/_history"),
            format!("Patient/{id}/_history/1"),
            format!("Patient/{id}/_history/x"),
            format!("Patient/{id}/$everything?_type=Nope"),
            format!("{id}/{id}"),
        ] {
            for method in [Method::GET, Method::DELETE, Method::PUT, Method::POST, Method::PATCH] {
                let r = s
                    .client
                    .request(method.clone(), s.url(&path))
                    .header("content-type", "application/fhir+json")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().as_u16() < 500, "{method} {path} -> {}", r.status());
                checked += 1;
            }
        }
    }
    // random bodies, including deeply nested and huge numbers
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut bodies: Vec<String> = vec![
        "[".repeat(5000),
        format!("{}{}", "{\"a\":".repeat(300), "}".repeat(300)),
        r#"{"resourceType":"Patient","birthDate":1e400}"#.into(),
        json!({"resourceType": "Patient", "birthDate": "1e400"}).to_string(),
        r#"{"resourceType":"Patient","multipleBirthInteger":99999999999999999999999}"#.into(),
        r#"{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Patient"},"resource":{"resourceType":"Patient","contained":[{"resourceType":"Nope"}]}}]}"#.into(),
        r#"{"resourceType":"Bundle","type":"transaction","entry":"nope"}"#.into(),
        r#"{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"%00"}}]}"#.into(),
    ];
    for _ in 0..200 {
        let len = (xorshift(&mut state) % 200) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| (xorshift(&mut state) % 256) as u8).collect();
        bodies.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    for body in &bodies {
        for path in ["", "Patient", "Patient/p1", "Patient/_search"] {
            let method = if path == "Patient/p1" { Method::PUT } else { Method::POST };
            let ct =
                if path.ends_with("_search") { "application/x-www-form-urlencoded" } else { "application/fhir+json" };
            let r = s
                .client
                .request(method.clone(), s.url(path))
                .header("content-type", ct)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert!(
                r.status().as_u16() < 500,
                "{method} /{path} with {:?} -> {}",
                &body[..body.len().min(60)],
                r.status()
            );
            checked += 1;
        }
    }
    assert!(checked > 2000);
    let (_, count) = s.get("Patient?_summary=count").await;
    assert_eq!(count["total"], 0, "nothing hostile was stored");
}

both_backends!(no_server_errors_on_hostile_authorization_input);

/// The authorization endpoints and pages take malformed forms, headers, JSON and tokens without
/// a 5xx: every refusal is an OAuth error, a FHIR OperationOutcome or a page.
async fn no_server_errors_on_hostile_authorization_input(backend: Backend) {
    let Some(s) = TestServer::start_enforcing(backend).await else { return };
    crate::smart::setup(&s).await;
    let weird = [
        "",
        "%00",
        "%FF%FE",
        "'",
        "\"",
        "\\",
        "😀",
        "a%0Ab",
        "null",
        "[]",
        "x".repeat(5000).leak(),
        "%",
        "&&&",
        "=",
        "a=b=c",
        "eyJhbGciOiJub25lIn0.e30.",
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.e30.x",
        "..",
        "Basic",
        "Bearer",
    ];
    let form_fields = [
        "grant_type",
        "code",
        "redirect_uri",
        "code_verifier",
        "refresh_token",
        "scope",
        "client_id",
        "client_secret",
        "client_assertion_type",
        "client_assertion",
        "token",
        "req",
        "csrf",
        "username",
        "password",
        "patient",
        "decision",
        "grant",
        "state",
        "aud",
        "response_type",
        "code_challenge",
        "code_challenge_method",
        "launch",
    ];
    let posts = [
        "/auth/token",
        "/auth/introspect",
        "/auth/revoke",
        "/auth/authorize",
        "/auth/signin",
        "/auth/patient",
        "/auth/consent",
        "/account/signin",
        "/account/signout",
        "/account/apps/revoke",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut checked = 0;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for round in 0..120 {
        let path = posts[round % posts.len()];
        let mut body = String::new();
        for _ in 0..(1 + xorshift(&mut state) % 6) {
            let field = form_fields[(xorshift(&mut state) % form_fields.len() as u64) as usize];
            let value = weird[(xorshift(&mut state) % weird.len() as u64) as usize];
            body.push_str(&format!("{field}={value}&"));
        }
        let auth = match xorshift(&mut state) % 4 {
            0 => Some(format!("Basic {}", weird[(xorshift(&mut state) % weird.len() as u64) as usize])),
            1 => Some("Basic Z3Jvd3RoOnNlY3JldA==".to_owned()),
            2 => Some(format!("Bearer {}", weird[(xorshift(&mut state) % weird.len() as u64) as usize])),
            _ => None,
        };
        let mut req = http
            .post(format!("{}{path}", s.origin))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone());
        if let Some(a) = auth.filter(|a| reqwest::header::HeaderValue::from_str(a).is_ok()) {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert!(r.status().as_u16() < 500, "POST {path} with {body:?}: {}", r.status());
        checked += 1;
        // The same fields as a query on the GET pages.
        for get in ["/auth/authorize", "/auth/signin", "/auth/patient", "/auth/consent"] {
            let r = http.get(format!("{}{get}?{body}", s.origin)).send().await.unwrap();
            assert!(r.status().as_u16() < 500, "GET {get}?{body}: {}", r.status());
            checked += 1;
        }
    }
    // JSON endpoints with bodies that are not what they expect.
    for body in [
        "",
        "{",
        "[]",
        "null",
        "{\"redirect_uris\": 5}",
        "{\"patient\": \"\\u0000\"}",
        "{\"fhirContext\": [1]}",
        "\u{0}",
    ] {
        for path in ["/auth/register", "/auth/launch"] {
            let r = http.post(format!("{}{path}", s.origin)).body(body).send().await.unwrap();
            assert!(r.status().as_u16() < 500, "POST {path} with {body:?}: {}", r.status());
            checked += 1;
        }
    }
    // Bearer tokens the FHIR API must refuse with 401, never 500.
    for token in ["", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "😀", "x".repeat(9000).as_str(), "Bearer"] {
        let r = http.get(s.url("Patient")).header("authorization", format!("Bearer {token}")).send().await;
        if let Ok(r) = r {
            assert!(matches!(r.status().as_u16(), 400 | 401), "FHIR with token {token:?}: {}", r.status());
            checked += 1;
        }
    }
    assert!(checked > 600);
    // Nothing was granted or registered by any of it.
    let alice = s.store.user_by_username("alice").await.unwrap().unwrap();
    assert!(s.store.grants_for_user(&alice.user_id).await.unwrap().is_empty());
}
