//! Bundles the server returns: searchset, history, `$everything`.

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::Response;
use fhir::search::{SearchRequest, Summary};
use serde_json::{json, Value};
use store::clock::instant_text;
use store::{EverythingQuery, HistoryQuery, HistoryScope, ReadOutcome, SearchPage, StoredResource};

use crate::error::ApiError;
use crate::request::query_pairs;
use crate::response::{fhir_json, BundleWriter};
use crate::AppState;

/// The searchset Bundle's text for one page of results.
pub fn searchset(state: &AppState, request: &SearchRequest, pairs: &[(String, String)], page: &SearchPage) -> String {
    let base = &state.config.base_url;
    let path = format!("{base}/{}", request.resource_type);
    let mut links = vec![("self", url_with(&path, pairs, None))];
    if let Some(cursor) = &page.next_cursor {
        links.push(("next", url_with(&path, pairs, Some(cursor))));
    }
    // Each entry adds its fullUrl and search mode (~100 bytes beside the base URL) to its body.
    let room = page.matches.iter().chain(&page.included).map(|r| r.body.len() + base.len() + 128).sum::<usize>();
    let mut bundle = BundleWriter::with_capacity(room + 2048, "searchset", page.total, &links);
    for m in &page.matches {
        let body = shaped(m, request);
        bundle.entry(Some(&full_url(base, m)), Some(&body), &[("search", json!({"mode": "match"}))]);
    }
    for inc in &page.included {
        let body = shaped(inc, request);
        bundle.entry(Some(&full_url(base, inc)), Some(&body), &[("search", json!({"mode": "include"}))]);
    }
    let mut warnings = Vec::new();
    if !request.ignored.is_empty() {
        warnings.push(fhir::outcome::Issue::warning(
            "not-supported",
            format!("ignored unknown or unsupported parameters: {}", request.ignored.join(", ")),
        ));
    }
    if page.include_truncated {
        warnings.push(fhir::outcome::Issue::warning(
            "too-costly",
            "_revinclude matched more resources than one page carries; use a smaller _count or search them directly",
        ));
    }
    if !warnings.is_empty() {
        let outcome = fhir::outcome::operation_outcome(&warnings);
        bundle.entry(None, Some(&outcome.to_string()), &[("search", json!({"mode": "outcome"}))]);
    }
    bundle.finish()
}

pub async fn history(
    state: &AppState,
    scope: HistoryScope,
    query: Option<&str>,
    restriction: &store::Restriction,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query);
    let mut since_ms = None;
    let mut count = fhir::search::DEFAULT_COUNT;
    let mut cursor = None;
    for (name, value) in &pairs {
        match name.as_str() {
            "_since" => {
                let range = fhir::datetime::parse_range(value)
                    .ok_or_else(|| ApiError::bad_request(format!("_since '{value}' is not a FHIR instant")))?;
                since_ms = Some(range.start);
            }
            "_count" => {
                count = value
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("_count '{value}' is not a number")))?
                    .clamp(1, fhir::search::MAX_COUNT);
            }
            "_cursor" => cursor = Some(value.clone()),
            "_format" | "_pretty" => {}
            other => return Err(ApiError::bad_request(format!("history does not support the parameter '{other}'"))),
        }
    }
    if let HistoryScope::Instance(t, id) = &scope {
        if state.store.read(t, id).await? == ReadOutcome::NotFound {
            return Err(ApiError::not_found(format!("{t}/{id} is not known")));
        }
    }
    let base = &state.config.base_url;
    let path = match &scope {
        HistoryScope::System => format!("{base}/_history"),
        HistoryScope::Type(t) => format!("{base}/{t}/_history"),
        HistoryScope::Instance(t, id) => format!("{base}/{t}/{id}/_history"),
    };
    let page = state.store.history(&HistoryQuery { scope, since_ms, count, cursor }, restriction).await?;
    let mut links = vec![("self", url_with(&path, &pairs, None))];
    if let Some(c) = &page.next_cursor {
        links.push(("next", url_with(&path, &pairs, Some(c))));
    }
    let mut bundle = BundleWriter::new("history", None, &links);
    for e in &page.entries {
        history_entry(&mut bundle, base, e);
    }
    Ok(fhir_json(StatusCode::OK, bundle.finish()))
}

/// One version in a `history` Bundle (instance/type/system history and `$sync` pulls).
pub(super) fn history_entry(bundle: &mut BundleWriter, base: &str, e: &store::HistoryEntry) {
    let url = if e.method == "POST" { e.resource_type.clone() } else { format!("{}/{}", e.resource_type, e.id) };
    let status = match e.method.as_str() {
        "POST" => "201 Created",
        "DELETE" => "204 No Content",
        _ => "200 OK",
    };
    bundle.entry(
        Some(&format!("{base}/{}/{}", e.resource_type, e.id)),
        e.body.as_deref(),
        &[
            ("request", json!({"method": e.method, "url": url})),
            (
                "response",
                json!({"status": status, "etag": format!("W/\"{}\"", e.version), "lastModified": instant_text(e.last_updated_ms)}),
            ),
        ],
    );
}

pub async fn everything(
    state: &AppState,
    id: &str,
    query: Option<&str>,
    restriction: &store::Restriction,
) -> Result<Response, ApiError> {
    let pairs = query_pairs(query);
    let mut q = EverythingQuery { patient_id: id.to_string(), since_ms: None, types: None, count: 100, cursor: None };
    for (name, value) in &pairs {
        match name.as_str() {
            "_since" => {
                q.since_ms = Some(
                    fhir::datetime::parse_range(value)
                        .ok_or_else(|| ApiError::bad_request(format!("_since '{value}' is not a FHIR instant")))?
                        .start,
                )
            }
            "_type" => {
                let types: Vec<String> =
                    value.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect();
                if let Some(bad) = types.iter().find(|t| !fhir::Registry::r4().is_resource_type(t)) {
                    return Err(ApiError::bad_request(format!("_type: '{bad}' is not a resource type")));
                }
                q.types = Some(types);
            }
            "_count" => {
                q.count = value
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("_count '{value}' is not a number")))?
                    .clamp(1, fhir::search::MAX_COUNT)
            }
            "_cursor" => q.cursor = Some(value.clone()),
            "_format" | "_pretty" => {}
            other => {
                return Err(ApiError::bad_request(format!("$everything does not support the parameter '{other}'")))
            }
        }
    }
    match state.store.read("Patient", id).await? {
        ReadOutcome::Found(_) => {}
        ReadOutcome::Deleted { .. } => {
            return Err(ApiError::new(StatusCode::GONE, "deleted", format!("Patient/{id} was deleted")))
        }
        ReadOutcome::NotFound => return Err(ApiError::not_found(format!("Patient/{id} is not known"))),
    }
    let page = state.store.everything(&q, restriction).await?;
    let base = &state.config.base_url;
    let path = format!("{base}/Patient/{id}/$everything");
    let mut links = vec![("self", url_with(&path, &pairs, None))];
    if let Some(c) = &page.next_cursor {
        links.push(("next", url_with(&path, &pairs, Some(c))));
    }
    let mut bundle = BundleWriter::new("searchset", None, &links);
    for (mode, list) in [("match", &page.matches), ("include", &page.included)] {
        for r in list {
            bundle.entry(Some(&full_url(base, r)), Some(&r.body), &[("search", json!({"mode": mode}))]);
        }
    }
    Ok(fhir_json(StatusCode::OK, bundle.finish()))
}

fn full_url(base: &str, r: &StoredResource) -> String {
    format!("{base}/{}/{}", r.resource_type, r.id)
}

/// `path?pairs` with `_cursor` replaced.
pub(crate) fn url_with(path: &str, pairs: &[(String, String)], cursor: Option<&str>) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(k, _)| k != "_cursor") {
        serializer.append_pair(k, v);
    }
    if let Some(c) = cursor {
        serializer.append_pair("_cursor", c);
    }
    let query = serializer.finish();
    if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    }
}

/// Apply `_elements` / `_summary=data|text`; otherwise the stored text unchanged.
fn shaped<'a>(r: &'a StoredResource, request: &SearchRequest) -> Cow<'a, str> {
    let keep: Option<Vec<&str>> = match (&request.elements, request.summary) {
        (Some(elements), _) => Some(elements.iter().map(String::as_str).collect()),
        (None, Some(Summary::Text)) => Some(vec!["text"]),
        (None, Some(Summary::Data)) => None,
        _ => return Cow::Borrowed(r.body.as_str()),
    };
    let Ok(Value::Object(mut doc)) = serde_json::from_str::<Value>(&r.body) else {
        return Cow::Borrowed(r.body.as_str());
    };
    match keep {
        Some(keep) => fhir::elements::retain(&mut doc, &keep),
        None => {
            doc.shift_remove("text");
            fhir::elements::mark_subsetted(&mut doc);
        }
    }
    Cow::Owned(Value::Object(doc).to_string())
}
