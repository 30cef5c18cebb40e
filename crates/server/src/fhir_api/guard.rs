//! The checks handlers make with the request's [`Access`] before they touch data. Reads and
//! searches get a [`Restriction`] the store applies in SQL; single resources are checked with the
//! same restriction; writes are checked on the content they would store.
//!
//! Answers: no scope for the interaction on the type is 403; a resource outside the caller's
//! patients, or withheld by the person, is 404 (its existence is not revealed); a resource of
//! the caller's own patient excluded only by a granular scope is 403.

use auth::Interaction;
use axum::http::StatusCode;
use fhir::search::{SearchTerm, SearchValue, Target, TokenSystem};
use fhir::{IndexValue, ParamType};
use oauth::access::Access;
use serde_json::Value;
use store::{Restriction, TypeRule};

use super::access::refused;
use crate::error::ApiError;
use crate::AppState;

/// The restriction for `interaction` on `resource_type`, or 403.
pub fn restriction(access: &Access, resource_type: &str, interaction: Interaction) -> Result<Restriction, ApiError> {
    access.restriction(resource_type, interaction).map_err(|r| refused(r, resource_type))
}

pub fn forbidden(why: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", why)
}

/// May the caller see `resource_type/id` for `interaction`? Returns the restriction to keep
/// using (history), 403 or 404.
pub async fn one(
    state: &AppState,
    access: &Access,
    resource_type: &str,
    id: &str,
    interaction: Interaction,
) -> Result<Restriction, ApiError> {
    let r = restriction(access, resource_type, interaction)?;
    if r.is_unrestricted() || state.store.visible(resource_type, id, &r).await? {
        return Ok(r);
    }
    // Excluded only by a granular scope? Then the caller may know it exists.
    if matches!(r.types.rule(resource_type), TypeRule::Filtered(_)) {
        let loose = r.without_filter_on(resource_type);
        if state.store.visible(resource_type, id, &loose).await? {
            return Err(forbidden(format!(
                "{resource_type}/{id} is outside the token's granular scopes ({})",
                access.scopes
            )));
        }
    }
    Err(ApiError::not_found(format!("{resource_type}/{id} is not known")))
}

/// May the caller store `resource` (the new content of a create or update) under `restriction`?
/// It must sit in the compartment of the caller's patients only, and match a granular filter if
/// the type has them.
pub fn content(restriction: &Restriction, resource_type: &str, resource: &Value) -> Result<(), ApiError> {
    let registry = fhir::Registry::r4();
    let extracted = fhir::extract(registry, resource);
    if let Some(patients) = &restriction.patients {
        if registry.patient_compartment_params(resource_type).is_empty() {
            return Err(forbidden(format!("a token limited to patients cannot write {resource_type} resources")));
        }
        if extracted.compartments.is_empty() {
            return Err(forbidden(format!(
                "this {resource_type} belongs to no patient; it must refer to a patient the token may write for"
            )));
        }
        if let Some(other) = extracted.compartments.iter().find(|p| !patients.contains(p)) {
            return Err(forbidden(format!("the token may not write records of Patient/{other}")));
        }
    }
    match restriction.types.rule(resource_type) {
        TypeRule::All => Ok(()),
        TypeRule::None => Err(forbidden(format!("the token may not write {resource_type} resources"))),
        TypeRule::Filtered(filters) => {
            let fits = filters.iter().any(|terms| terms.iter().all(|t| term_matches(t, &extracted.entries)));
            if fits {
                Ok(())
            } else {
                Err(forbidden(format!("this {resource_type} is outside the token's granular scopes")))
            }
        }
    }
}

/// Does the resource (its index entries) satisfy a granular scope's term? Token terms are what
/// granular scopes use (`category=system|code`); any other kind is treated as not matching, so
/// an unusual filter refuses rather than allows.
fn term_matches(term: &SearchTerm, entries: &[fhir::IndexEntry]) -> bool {
    let Target::Param { code, kind: ParamType::Token } = &term.target else { return false };
    if term.missing.is_some() {
        return false;
    }
    let values: Vec<(&Option<String>, &Option<String>)> = entries
        .iter()
        .filter(|e| e.param == *code)
        .filter_map(|e| match &e.value {
            IndexValue::Token { system, code, .. } => Some((system, code)),
            _ => None,
        })
        .collect();
    term.values.iter().any(|v| match v {
        SearchValue::Token { system, code: want } => values.iter().any(|(sys, have)| {
            let code_ok = want.as_ref().is_none_or(|w| have.as_deref() == Some(w.as_str()));
            let system_ok = match system {
                TokenSystem::Any => true,
                TokenSystem::None => sys.is_none(),
                TokenSystem::Is(s) => sys.as_deref() == Some(s.as_str()),
            };
            code_ok && system_ok
        }),
        _ => false,
    })
}

/// Conditional writes search on the caller's behalf; only callers that see everything may use
/// them (a restricted search would tell them about records they may not see).
pub fn unrestricted(restriction: &Restriction, what: &str) -> Result<(), ApiError> {
    if restriction.is_unrestricted() {
        Ok(())
    } else {
        Err(forbidden(format!("{what} needs a token that is not limited to patients, filters or withheld categories")))
    }
}

/// The patient a resource is about, read from its usual reference elements (for the audit trail).
pub fn patient_of(resource_type: &str, id: &str, body: &str) -> Option<String> {
    if resource_type == "Patient" {
        return Some(id.to_owned());
    }
    // Only these three elements are deserialized (the rest of the body is skipped, not built
    // into a tree): this runs on every read without a patient context.
    #[derive(serde::Deserialize)]
    struct Reference {
        reference: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct About {
        subject: Option<Reference>,
        patient: Option<Reference>,
        beneficiary: Option<Reference>,
    }
    let about: About = serde_json::from_str(body).ok()?;
    [about.subject, about.patient, about.beneficiary]
        .into_iter()
        .find_map(|r| r?.reference?.strip_prefix("Patient/").map(str::to_owned))
}
