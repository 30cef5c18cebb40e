//! `POST /fhir/Patient/$member-match` (Da Vinci HRex): the rules are `fhir::member_match`'s;
//! this finds the candidates and their coverage in the store under the caller's restriction.

use auth::Interaction;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use fhir::member_match::{answer, member_identifier, MemberMatch};
use fhir::search::{self, Handling};
use oauth::access::{Access, Principal};
use serde_json::Value;

use super::guard;
use crate::error::ApiError;
use crate::AppState;

/// Candidates looked at, at most: a family name and birth date shared by more is refused as
/// not unique anyway.
const MAX_CANDIDATES: usize = 50;

fn unprocessable(code: &'static str, why: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, why)
}

pub async fn member_match(state: &AppState, access: &Access, body: &Bytes) -> Result<Response, ApiError> {
    // Payers' systems ask, not people: a backend client (or an administrator) whose scopes
    // allow searching Patients and Coverages.
    if matches!(access.principal, Principal::Person(_)) && !access.is_admin() {
        return Err(guard::forbidden("$member-match is for a health plan's backend client (system scopes)"));
    }
    let patients = guard::restriction(access, "Patient", Interaction::Search)?;
    let coverages = guard::restriction(access, "Coverage", Interaction::Search)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("$member-match needs a Parameters body"));
    }
    let parameters: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let request = MemberMatch::parse(&parameters).map_err(ApiError::bad_request)?;
    if let Some(why) = request.consent_problem() {
        return Err(unprocessable("business-rule", why));
    }
    let mut pairs = request.candidate_search();
    pairs.push(("_count".into(), MAX_CANDIDATES.to_string()));
    let found = state
        .store
        .search(&search::parse(fhir::Registry::r4(), "Patient", &pairs, Handling::Strict)?, &patients)
        .await?;
    let mut matched: Vec<Value> = Vec::new();
    for stored in found.matches {
        let Ok(patient) = serde_json::from_str::<Value>(stored.body.as_str()) else { continue };
        if !request.demographics_match(&patient) {
            continue;
        }
        let query = vec![("beneficiary".to_owned(), format!("Patient/{}", stored.id)), ("_count".into(), "100".into())];
        let held = state
            .store
            .search(&search::parse(fhir::Registry::r4(), "Coverage", &query, Handling::Strict)?, &coverages)
            .await?;
        let covered = held
            .matches
            .iter()
            .filter_map(|c| serde_json::from_str::<Value>(c.body.as_str()).ok())
            .any(|c| request.coverage_matches(&c));
        if covered {
            matched.push(patient);
        }
    }
    match matched.len() {
        0 => Err(unprocessable("not-found", "no member matches the patient and coverage given")),
        1 => {
            let identifier = member_identifier(&matched[0], &state.config.base_url);
            Ok(crate::response::fhir_json(StatusCode::OK, answer(identifier).to_string()))
        }
        _ => Err(unprocessable("multiple-matches", "more than one member matches; nothing was returned")),
    }
}
