//! `GET [base]/$sync`: an offline client's pull. Every version committed after the client's
//! cursor, in commit order (the commit sequence, never wall-clock time), within what the
//! caller may see — deletions as tombstones — and, first, which patients joined or left the
//! caller's list since the cursor was given out (a client purges the ones that left and fetches
//! `Patient/{id}/$everything` for the ones that joined). The answer's `next` link carries the
//! cursor to resume from; a page with fewer entries than `_count` means the client is caught up.

use std::collections::BTreeSet;
use std::sync::Arc;

use auth::Interaction;
use axum::extract::{Extension, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use oauth::access::Access;
use serde_json::{json, Value};
use store::SyncPosition;

use crate::error::ApiError;
use crate::response::{fhir_json, BundleWriter};
use crate::AppState;

const DEFAULT_COUNT: usize = 500;
const MAX_COUNT: usize = 2000;
/// The cursor owner recorded without a token (`--dev-open-access`).
const DEV_OPEN: &str = "dev-open-access";

pub async fn pull(
    State(state): State<AppState>,
    Extension(access): Extension<Arc<Access>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut cursor = None;
    let mut count = DEFAULT_COUNT;
    for (name, value) in form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "cursor" => cursor = Some(value.into_owned()),
            "_count" => {
                count = value
                    .parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("_count '{value}' is not a number")))?
                    .clamp(1, MAX_COUNT)
            }
            "_format" | "_pretty" => {}
            other => return Err(ApiError::bad_request(format!("$sync does not take the parameter '{other}'"))),
        }
    }
    let restriction = access.restriction_any(Interaction::Read).map_err(|r| super::access::refused(r, "$sync"))?;
    let owner = access.token.as_ref().map_or_else(|| DEV_OPEN.to_owned(), |t| t.grant.grant_id.to_string());
    let current: Option<Vec<String>> = restriction.patients.as_ref().map(|p| p.to_vec());
    let (position, previous, given) = match &cursor {
        None => (SyncPosition::default(), None, None),
        Some(c) => {
            let gone = || {
                ApiError::new(
                    StatusCode::GONE,
                    "not-found",
                    "this sync cursor is unknown, expired or was given to another authorization; pull again without one",
                )
            };
            let stored = state.store.sync_cursor(c).await?.ok_or_else(gone)?;
            if stored.grant_id != owner {
                return Err(gone());
            }
            (stored.position, stored.patients, Some(stored.cursor_id))
        }
    };
    let (joined, left) = match (&previous, &current) {
        (Some(before), Some(now)) => {
            let before: BTreeSet<&String> = before.iter().collect();
            let now_set: BTreeSet<&String> = now.iter().collect();
            (
                now_set.difference(&before).map(|s| (*s).clone()).collect::<Vec<_>>(),
                before.difference(&now_set).map(|s| (*s).clone()).collect::<Vec<_>>(),
            )
        }
        _ => (Vec::new(), Vec::new()),
    };
    let page = state.store.changes_since(position, count, &restriction).await?;
    // Nothing new and the same list: the client keeps its cursor (an idle client's polling
    // writes nothing).
    let next = match given {
        Some(id) if page.position == position && previous == current => id,
        _ => state.store.save_sync_cursor(&owner, page.position, current.as_deref()).await?,
    };
    let base = &state.config.base_url;
    let next_url = format!("{base}/$sync?cursor={next}&_count={count}");
    let mut self_url = format!("{base}/$sync?_count={count}");
    if let Some(c) = &cursor {
        self_url.push_str(&format!("&cursor={c}"));
    }
    let mut bundle = BundleWriter::new("history", None, &[("self", self_url), ("next", next_url)]);
    if !joined.is_empty() || !left.is_empty() {
        let mut parameters: Vec<Value> = Vec::new();
        for (name, list) in [("joined", &joined), ("left", &left)] {
            for p in list {
                parameters.push(json!({"name": name, "valueReference": {"reference": format!("Patient/{p}")}}));
            }
        }
        let body = json!({"resourceType": "Parameters", "parameter": parameters}).to_string();
        bundle.entry(
            None,
            Some(&body),
            &[
                ("request", json!({"method": "GET", "url": "$sync-patients"})),
                ("response", json!({"status": "200 OK"})),
            ],
        );
    }
    for e in &page.entries {
        super::bundles::history_entry(&mut bundle, base, e);
    }
    Ok(fhir_json(StatusCode::OK, bundle.finish()))
}
