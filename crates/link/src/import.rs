//! Payer-to-payer: a member's history fetched through one connection, made ready to load into
//! the new plan's own Portico store (`portico link import`).
//!
//! - Every resource gets an id in the old plan's namespace (`{ns}-{id}`, `ns` from a hash of
//!   the old plan's FHIR base; a hash of the id when that would pass 64 characters), so the same
//!   record always lands on the same id and never on one of the new plan's own.
//! - With a target patient (the member's Patient at the new plan), the old plan's Patient is not
//!   copied and every reference to it points at the target instead.
//! - References to records that were imported follow their new ids; references to anything
//!   else become absolute URLs at the old plan (where it lives), never a local id that could
//!   name another record here.
//! - One Provenance names the old plan as the source of all of it: its id, targets and recorded
//!   time follow from the records alone (the newest `meta.lastUpdated`), so re-running an
//!   import of unchanged records writes nothing.
//!
//! A fetch with a failed part is not imported: the import would be silently incomplete.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{LinkError, Result};
use crate::fetch::request::FetchRequest;
use crate::fetch::run::ENDPOINT_TAG_SYSTEM;
use crate::ids::ConnectionId;
use crate::jobs::Target;
use crate::Link;

/// Where an import's records come from.
#[derive(Debug, Clone)]
pub struct ImportSource {
    pub connection: ConnectionId,
    pub endpoint_id: String,
    pub endpoint_name: String,
    pub fhir_base: String,
    /// The member's Patient id at the old plan.
    pub patient: Option<String>,
}

/// Resources ready for the new plan's store, and what was left out.
#[derive(Debug, Clone, Default)]
pub struct ImportPlan {
    pub resources: Vec<Value>,
    /// By type, what is imported.
    pub counts: BTreeMap<String, usize>,
}

fn hash_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The namespace of a FHIR base's records.
pub fn namespace(fhir_base: &str) -> String {
    hash_hex(fhir_base.trim_end_matches('/'))[..8].to_owned()
}

fn namespaced(ns: &str, id: &str) -> String {
    let candidate = format!("{ns}-{id}");
    if candidate.len() <= 64 {
        candidate
    } else {
        format!("{ns}-{}", &hash_hex(id)[..40])
    }
}

/// `Type/id` of a reference relative to `base` (or absolute at it), if it is one.
fn local_key(reference: &str, base: &str) -> Option<(String, String)> {
    let relative = match reference.strip_prefix(base) {
        Some(rest) => rest.strip_prefix('/')?,
        None if reference.contains("://") || reference.starts_with('#') || reference.starts_with("urn:") => {
            return None
        }
        None => reference,
    };
    let mut parts = relative.split('/');
    let (t, id) = (parts.next()?, parts.next()?);
    (fhir::Registry::r4().is_resource_type(t) && fhir::search::is_valid_id(id)).then(|| (t.to_owned(), id.to_owned()))
}

fn relink(value: &mut Value, base: &str, ids: &BTreeMap<(String, String), String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), v) {
                    ("reference", Value::String(reference)) => {
                        if let Some((t, id)) = local_key(reference, base) {
                            *reference = match ids.get(&(t.clone(), id.clone())) {
                                Some(new_id) => format!("{t}/{new_id}"),
                                None => format!("{base}/{t}/{id}"),
                            };
                        }
                    }
                    (_, v) => relink(v, base, ids),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| relink(v, base, ids)),
        _ => {}
    }
}

/// Make a fetched result Bundle (one connection's) ready to import.
pub fn plan_import(bundle: &Value, source: &ImportSource, target_patient: Option<&str>) -> Result<ImportPlan> {
    let base = source.fhir_base.trim_end_matches('/');
    let ns = namespace(base);
    let entries = bundle["entry"].as_array().map(Vec::as_slice).unwrap_or_default();
    if let Some(failed) = entries.iter().find(|e| e["resource"]["resourceType"] == "OperationOutcome") {
        let why = failed["resource"]["issue"][0]["diagnostics"].as_str().unwrap_or("a part of the fetch failed");
        return Err(LinkError::Conflict(format!("the fetch was incomplete ({why}); nothing was imported")));
    }
    // Link's own Provenance describes the fetch; the import writes its own.
    let records: Vec<&Value> =
        entries.iter().map(|e| &e["resource"]).filter(|r| r["resourceType"] != "Provenance").collect();
    let mut ids = BTreeMap::new();
    for r in &records {
        let (Some(t), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) else { continue };
        let is_member = t == "Patient" && source.patient.as_deref() == Some(id);
        let new_id = match target_patient {
            Some(target) if is_member => target.to_owned(),
            _ => namespaced(&ns, id),
        };
        ids.insert((t.to_owned(), id.to_owned()), new_id);
    }
    let mut plan = ImportPlan::default();
    let mut newest: Option<String> = None;
    let mut targets = BTreeSet::new();
    for r in records {
        let (Some(t), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) else { continue };
        let Some(new_id) = ids.get(&(t.to_owned(), id.to_owned())).cloned() else { continue };
        targets.insert(format!("{t}/{new_id}"));
        if target_patient.is_some() && t == "Patient" && source.patient.as_deref() == Some(id) {
            // The member's own Patient at the new plan stays as the new plan keeps it.
            continue;
        }
        let mut copy = r.clone();
        copy["id"] = json!(new_id);
        relink(&mut copy, base, &ids);
        if let Some(meta) = copy.get_mut("meta").and_then(Value::as_object_mut) {
            if let Some(updated) = meta.remove("lastUpdated").and_then(|v| v.as_str().map(String::from)) {
                if newest.as_ref().is_none_or(|n| {
                    fhir::datetime::parse_range(n).map(|r| r.start)
                        < fhir::datetime::parse_range(&updated).map(|r| r.start)
                }) {
                    newest = Some(updated);
                }
            }
            meta.remove("versionId");
        }
        *plan.counts.entry(t.to_owned()).or_insert(0) += 1;
        plan.resources.push(copy);
    }
    if plan.resources.is_empty() {
        return Ok(plan);
    }
    let member = target_patient
        .map(str::to_owned)
        .or_else(|| source.patient.as_ref().and_then(|p| ids.get(&("Patient".to_owned(), p.clone())).cloned()))
        .unwrap_or_default();
    plan.resources.push(json!({
        "resourceType": "Provenance",
        "id": namespaced(&ns, &format!("import-{}", &hash_hex(&member)[..16])),
        "meta": {"source": base, "tag": [{"system": ENDPOINT_TAG_SYSTEM, "code": source.endpoint_id}]},
        "target": targets.iter().map(|t| json!({"reference": t})).collect::<Vec<_>>(),
        "recorded": newest.unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned()),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE",
            "display": "create"}], "text": "copied from the member's previous health plan"},
        "agent": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                "code": "author", "display": "Author"}]},
            "who": {"display": source.endpoint_name,
                    "identifier": {"system": ENDPOINT_TAG_SYSTEM, "value": source.endpoint_id}},
        }],
        "entity": [{"role": "source", "what": {"display": format!("{} ({base})", source.endpoint_name),
            "identifier": {"system": "urn:ietf:rfc:3986", "value": base}}}],
    }));
    *plan.counts.entry("Provenance".into()).or_insert(0) += 1;
    Ok(plan)
}

impl Link {
    /// Fetch everything a connection reaches, for an import: where it comes from, and the
    /// result Bundle (R4, converted where the portal speaks an older version).
    pub async fn fetch_for_import(&self, connection: &ConnectionId) -> Result<(ImportSource, Value)> {
        let record = self.connection_record(connection).await?.ok_or_else(|| LinkError::not_found("connection"))?;
        let endpoint = self.require_endpoint(&record.endpoint).await?;
        let (_, _, text) =
            self.fetch_now(&record.app, &Target::Connection(connection.clone()), FetchRequest::default()).await?;
        let bundle: Value =
            serde_json::from_str(&text).map_err(|_| LinkError::Vault("the fetch result is not JSON".into()))?;
        let source = ImportSource {
            connection: connection.clone(),
            endpoint_id: endpoint.id.to_string(),
            endpoint_name: endpoint.name.clone(),
            fhir_base: endpoint.fhir_base.clone(),
            patient: record.patient_id.clone(),
        };
        Ok((source, bundle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> ImportSource {
        ImportSource {
            connection: ConnectionId::generate(),
            endpoint_id: "ep_1".into(),
            endpoint_name: "Old Plan".into(),
            fhir_base: "https://old.example/fhir".into(),
            patient: Some("p1".into()),
        }
    }

    fn bundle() -> Value {
        json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "https://old.example/fhir/Patient/p1", "resource": {"resourceType": "Patient", "id": "p1",
                "meta": {"lastUpdated": "2024-01-01T00:00:00Z"}}},
            {"fullUrl": "https://old.example/fhir/ExplanationOfBenefit/e1", "resource": {"resourceType": "ExplanationOfBenefit",
                "id": "e1", "meta": {"lastUpdated": "2024-03-01T00:00:00Z", "versionId": "4"},
                "patient": {"reference": "Patient/p1"}, "provider": {"reference": "https://old.example/fhir/Organization/o1"},
                "facility": {"reference": "Location/elsewhere"}, "insurer": {"reference": "https://other.example/Organization/9"}}},
            {"fullUrl": "https://old.example/fhir/Organization/o1", "resource": {"resourceType": "Organization", "id": "o1"}},
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Provenance", "id": "x"}},
        ]})
    }

    #[test]
    fn ids_are_namespaced_and_references_follow() {
        let plan = plan_import(&bundle(), &source(), Some("m42")).unwrap();
        let ns = namespace("https://old.example/fhir");
        let eob = plan.resources.iter().find(|r| r["resourceType"] == "ExplanationOfBenefit").unwrap();
        assert_eq!(eob["id"], format!("{ns}-e1"));
        assert_eq!(eob["patient"]["reference"], "Patient/m42", "the member's Patient here");
        assert_eq!(eob["provider"]["reference"], format!("Organization/{ns}-o1"));
        assert_eq!(
            eob["facility"]["reference"], "https://old.example/fhir/Location/elsewhere",
            "not imported: where it lives"
        );
        assert_eq!(eob["insurer"]["reference"], "https://other.example/Organization/9");
        assert!(eob["meta"].get("versionId").is_none() && eob["meta"].get("lastUpdated").is_none());
        assert!(!plan.resources.iter().any(|r| r["resourceType"] == "Patient"), "the old Patient is not copied");
        let provenance = plan.resources.iter().find(|r| r["resourceType"] == "Provenance").unwrap();
        assert_eq!(provenance["recorded"], "2024-03-01T00:00:00Z");
        assert_eq!(provenance["target"].as_array().unwrap().len(), 3);
        // Deterministic: the same input plans the same output.
        assert_eq!(plan_import(&bundle(), &source(), Some("m42")).unwrap().resources, plan.resources);
        fhir::validate::Validator::r4().validate(provenance).unwrap();
    }

    #[test]
    fn without_a_target_the_patient_is_copied_and_an_incomplete_fetch_is_refused() {
        let plan = plan_import(&bundle(), &source(), None).unwrap();
        let ns = namespace("https://old.example/fhir");
        assert!(plan.resources.iter().any(|r| r["resourceType"] == "Patient" && r["id"] == format!("{ns}-p1")));
        let mut failed = bundle();
        failed["entry"].as_array_mut().unwrap().push(json!({"resource": {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "timeout", "diagnostics": "the portal timed out"}]}}));
        assert!(plan_import(&failed, &source(), None).is_err());
        assert_eq!(namespaced("abcd1234", &"x".repeat(70)).len(), 49);
    }
}
