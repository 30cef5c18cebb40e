//! `AuditEvent`: the audit trail, served as R4 AuditEvent resources built from the audit table
//! (it is written by the server in batches, not through the REST API). Readable by administrators
//! and by backend services whose scopes cover AuditEvent.
//!
//! Search parameters: `patient`, `agent` (user id), `date` (`ge`/`gt` lower bound), `_count`, and
//! the `next` links' `_before` cursor; newest first.

use auth::Interaction;
use axum::http::StatusCode;
use axum::response::Response;
use oauth::access::{Access, Principal};
use serde_json::{json, Value};
use store::clock::instant_text;
use store::{AuditQuery, AuditRecord};

use super::bundles::url_with;
use super::guard;
use crate::error::ApiError;
use crate::response::{fhir_json, BundleWriter};
use crate::AppState;

fn allowed(access: &Access, interaction: Interaction) -> Result<(), ApiError> {
    let ok = match &access.principal {
        Principal::DevOpen => true,
        Principal::Person(_) if access.is_admin() => access.restriction("AuditEvent", interaction).is_ok(),
        Principal::Service => access.restriction("AuditEvent", interaction).is_ok_and(|r| r.patients.is_none()),
        Principal::Person(_) => false,
    };
    if ok {
        Ok(())
    } else {
        Err(guard::forbidden(
            "the audit trail is readable by administrators (with a user/AuditEvent scope) and backend services with system/AuditEvent scopes",
        ))
    }
}

pub async fn read(state: &AppState, access: &Access, id: &str) -> Result<Response, ApiError> {
    allowed(access, Interaction::Read)?;
    // The writer commits about once a second; a query sees everything answered before it.
    state.audit.flush().await;
    let record = match id.parse::<i64>() {
        Ok(n) => state.store.audit_event(n).await?,
        Err(_) => None,
    };
    let record = record.ok_or_else(|| ApiError::not_found(format!("AuditEvent/{id} is not known")))?;
    Ok(fhir_json(StatusCode::OK, to_fhir(&record, &state.config.base_url).to_string()))
}

pub async fn search(state: &AppState, access: &Access, pairs: &[(String, String)]) -> Result<Response, ApiError> {
    allowed(access, Interaction::Search)?;
    let mut query = AuditQuery { limit: fhir::search::DEFAULT_COUNT as i64, ..AuditQuery::default() };
    for (name, value) in pairs {
        match name.as_str() {
            "patient" => query.patients = Some(vec![value.trim_start_matches("Patient/").to_owned()]),
            "agent" => query.user_id = Some(value.clone()),
            "date" => {
                let v = value.trim_start_matches("ge").trim_start_matches("gt");
                let range = fhir::datetime::parse_range(v)
                    .ok_or_else(|| ApiError::bad_request(format!("date '{value}' is not a FHIR date (use ge…)")))?;
                query.since_ms = Some(range.start);
            }
            "_count" => {
                query.limit = value
                    .parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("_count '{value}' is not a number")))?
                    .clamp(1, fhir::search::MAX_COUNT as i64);
            }
            "_before" => {
                query.before_id =
                    Some(value.parse().map_err(|_| ApiError::bad_request("the paging cursor is not valid"))?);
            }
            "_format" | "_pretty" | "_sort" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "AuditEvent search supports patient, agent, date and _count, not '{other}'"
                )))
            }
        }
    }
    let limit = query.limit;
    query.limit += 1;
    state.audit.flush().await;
    let mut records = state.store.audit_events(&query).await?;
    let base = &state.config.base_url;
    let path = format!("{base}/AuditEvent");
    let kept: Vec<(String, String)> = pairs.iter().filter(|(k, _)| k != "_before").cloned().collect();
    let mut links = vec![("self", url_with(&path, pairs, None))];
    let next = if records.len() as i64 > limit {
        records.truncate(limit as usize);
        records.last().map(|r| {
            let mut p = kept.clone();
            p.push(("_before".into(), r.id.to_string()));
            url_with(&path, &p, None)
        })
    } else {
        None
    };
    if let Some(n) = &next {
        links.push(("next", n.clone()));
    }
    let mut bundle = BundleWriter::new("searchset", None, &links);
    for r in &records {
        let body = to_fhir(r, base).to_string();
        bundle.entry(
            Some(&format!("{base}/AuditEvent/{}", r.id)),
            Some(&body),
            &[("search", json!({"mode": "match"}))],
        );
    }
    Ok(fhir_json(StatusCode::OK, bundle.finish()))
}

/// One audit record as an R4 AuditEvent (a RESTful operation, per the FHIR audit guidance).
pub fn to_fhir(r: &AuditRecord, base: &str) -> Value {
    let mut agents = Vec::new();
    let who = match (&r.fhir_user, &r.user_id) {
        (Some(fhir_user), _) => json!({"reference": fhir_user}),
        (None, Some(user)) => json!({"identifier": {"system": "urn:portico:user", "value": user}}),
        (None, None) => json!({"display": "anonymous"}),
    };
    agents.push(json!({
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
        "who": who,
        "altId": r.user_id,
        "requestor": true
    }));
    if let Some(client) = &r.client_id {
        agents.push(json!({
            "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150", "display": "Application"}]},
            "who": {"identifier": {"system": "urn:portico:client", "value": client}, "display": client},
            "requestor": false
        }));
    }
    let mut entities = Vec::new();
    if let Some(p) = &r.patient_id {
        entities.push(json!({
            "what": {"reference": format!("Patient/{p}")},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}
        }));
    }
    if let Some(t) = &r.resource_type {
        let what = match &r.resource_id {
            Some(id) => json!({"reference": format!("{t}/{id}")}),
            None => json!({"display": t}),
        };
        let mut entity = json!({
            "what": what,
            "type": {"system": "http://hl7.org/fhir/resource-types", "code": t},
        });
        if let Some(d) = &r.detail {
            entity["query"] = json!(base64_text(d));
        }
        entities.push(entity);
    }
    let outcome_desc = format!("HTTP {}", r.status);
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": r.id.to_string(),
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": r.interaction}],
        "action": r.action,
        "recorded": instant_text(r.recorded_ms),
        "outcome": r.outcome.to_string(),
        "outcomeDesc": outcome_desc,
        "agent": agents,
        "source": {"site": base, "observer": {"display": "Portico"}, "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]},
    });
    if !entities.is_empty() {
        event["entity"] = Value::Array(entities);
    }
    if r.user_id.is_none() {
        if let Some(a) = event["agent"][0].as_object_mut() {
            a.remove("altId");
        }
    }
    event
}

fn base64_text(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}
