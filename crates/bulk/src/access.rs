//! Whose view an export runs under. A job keeps its grant, client and the kick-off token's
//! scopes, and rebuilds the `Access` each time it runs: a person's patient list and withheld
//! categories as they are then, and nothing at all once the grant is revoked. A backend
//! service's token grant expires with the token; its job lives on the client's registration,
//! within the scopes the client still holds.

use std::sync::Arc;

use auth::{GrantId, Interaction, ScopeSet};
use fhir::search::SearchTerm;
use oauth::access::{Access, Principal};
use store::{Restriction, TypeRule};

use crate::{Deps, Result};

/// `None`: the job's authorization has ended (stop it).
pub async fn job_access(deps: &Deps, grant_id: Option<&str>, client_id: &str, scopes: &str) -> Result<Option<Access>> {
    let Some(grant_id) = grant_id else {
        // Kicked off under --dev-open-access (no token): development only.
        return Ok(Some(Access::dev_open()));
    };
    let Ok(grant_id) = grant_id.parse::<GrantId>() else { return Ok(None) };
    let scopes = ScopeSet::parse(scopes).0;
    let Some(grant) = deps.store.grant(&grant_id).await? else { return Ok(None) };
    if grant.revoked_at.is_some() {
        return Ok(None);
    }
    if grant.user_id.is_some() {
        return Ok(deps.auth.access_for_grant(&grant_id, scopes).await?);
    }
    let Ok(client_id) = client_id.parse::<auth::ClientId>() else { return Ok(None) };
    let Some(client) = deps.store.client(&client_id).await? else { return Ok(None) };
    let scopes = scopes.intersect(&grant.scopes).intersect(&client.allowed_scopes);
    let withheld = Arc::new(Vec::new());
    Ok(Some(Access::new(Principal::Service, None, scopes, None, None, withheld)))
}

/// The view for one type: the access's restriction, narrowed to `patients` (a group's members
/// or the `patient` parameter) and to the `_typeFilter` searches of the type (OR'ed, each an AND
/// of terms, combined with a granular scope's own filters). `Err`: no scope allows searching it.
pub fn type_restriction(
    access: &Access,
    resource_type: &str,
    patients: Option<&Arc<Vec<String>>>,
    filters: &[Vec<SearchTerm>],
) -> Result<Restriction, String> {
    let base = access.restriction(resource_type, Interaction::Search).map_err(|r| match r {
        oauth::access::Refusal::Scope(why) => why,
        oauth::access::Refusal::Hidden => format!("{resource_type} is not visible to this client"),
    })?;
    let patients = match (&base.patients, patients) {
        (Some(seen), Some(asked)) => Some(Arc::new(asked.iter().filter(|p| seen.contains(p)).cloned().collect())),
        (Some(seen), None) => Some(seen.clone()),
        (None, Some(asked)) => Some(asked.clone()),
        (None, None) => None,
    };
    let mut types = (*base.types).clone();
    if !filters.is_empty() {
        let combined = match types.rule(resource_type) {
            TypeRule::None => TypeRule::None,
            TypeRule::All => TypeRule::Filtered(filters.to_vec()),
            TypeRule::Filtered(own) => TypeRule::Filtered(
                own.iter()
                    .flat_map(|a| filters.iter().map(move |b| a.iter().chain(b).cloned().collect::<Vec<_>>()))
                    .collect(),
            ),
        };
        types.by_type.insert(resource_type.to_owned(), combined);
    }
    Ok(Restriction::new(patients, base.withheld.clone(), types))
}
