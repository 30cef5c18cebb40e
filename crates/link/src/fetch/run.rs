//! Fetching one connection's records for a job: `$everything` where the portal offers it and
//! nothing asks otherwise, per-type searches elsewhere, then the Practitioners, Organizations,
//! Locations and Medications the records refer to, each once. Date windows are sent where the
//! portal's search supports them and always re-checked here. Each part of the work is stored as
//! it finishes, so a job taken up again after a crash does only what is left.

use std::collections::{BTreeSet, HashSet};

use futures::StreamExt as _;
use serde_json::{json, Value};

use super::portal_fhir::PartError;
use super::request::{FetchPlan, Group};
use crate::connections::{ConnectionRecord, ACTIVE};
use crate::db::{Col, RowExt};
use crate::directory::Endpoint;
use crate::discovery::Discovery;
use crate::error::Result;
use crate::ids::{ConnectionId, JobId};
use crate::portal::PortalError;
use crate::Link;

/// The system of the tag naming the endpoint a resource came from.
pub const ENDPOINT_TAG_SYSTEM: &str = "https://portico.dev/fhir/CodeSystem/link-endpoint";
/// Types fetched because records refer to them.
pub const REFERENCED_TYPES: [&str; 5] = ["Practitioner", "PractitionerRole", "Organization", "Location", "Medication"];

pub const PART_EVERYTHING: &str = "everything";
pub const PART_REFERENCES: &str = "references";
pub const PART_CONNECTION: &str = "connection";

fn part_context(job: &JobId, connection: &ConnectionId, part: &str) -> String {
    format!("job:{job}:{connection}:{part}")
}

/// Is the portal's FHIR version one Link reads as R4?
fn r4(version: Option<&str>) -> bool {
    version.is_none_or(|v| v.starts_with("4."))
}

impl Link {
    /// Run what is left of one connection's share of a job.
    pub(crate) async fn fetch_connection(
        &self,
        job: &JobId,
        connection: &ConnectionId,
        plan: &FetchPlan,
    ) -> Result<()> {
        let done = self.parts_done(job, connection).await?;
        if done.contains(PART_CONNECTION) {
            return Ok(());
        }
        let Some(record) = self.connection_record(connection).await? else {
            return self.store_part_error(job, connection, PART_CONNECTION, &PartError::Internal).await;
        };
        if record.status != ACTIVE {
            return self.store_part_error(job, connection, PART_CONNECTION, &PartError::Reauthorize).await;
        }
        let Some(endpoint) = self.endpoint(&record.endpoint).await? else {
            return self.store_part_error(job, connection, PART_CONNECTION, &PartError::Internal).await;
        };
        let discovery = match self.discovery_for(&endpoint).await? {
            Ok(d) => d,
            Err(e) => return self.store_part_error(job, connection, PART_CONNECTION, &PartError::Portal(e)).await,
        };
        let version = discovery.fhir_version.as_deref().or(endpoint.fhir_version.as_deref());
        if !r4(version) {
            let e = PortalError::Invalid(format!("FHIR version {} is not read as R4", version.unwrap_or("?")));
            return self.store_part_error(job, connection, PART_CONNECTION, &PartError::Portal(e)).await;
        }
        let parts: Vec<String> = if discovery.everything && plan.all && !plan.has_dates() {
            vec![PART_EVERYTHING.to_owned()]
        } else {
            plan.groups.iter().map(|g| g.name().to_owned()).collect()
        };
        let pending: Vec<&String> = parts.iter().filter(|p| !done.contains(p.as_str())).collect();
        let runs = pending.into_iter().map(|part| {
            let (record, endpoint, discovery) = (&record, &endpoint, &discovery);
            async move {
                let outcome = self.run_part(record, endpoint, discovery, plan, part).await;
                self.store_part(job, connection, &endpoint.fhir_base, part, outcome).await
            }
        });
        for stored in futures::future::join_all(runs).await {
            stored?;
        }
        if !done.contains(PART_REFERENCES) {
            let have = self.part_resources(job, connection).await?;
            let outcome = self.fetch_references(&record, &endpoint, &have).await;
            self.store_part(job, connection, &endpoint.fhir_base, PART_REFERENCES, outcome).await?;
        }
        self.touch_fetched(connection).await?;
        Ok(())
    }

    async fn run_part(
        &self,
        record: &ConnectionRecord,
        endpoint: &Endpoint,
        discovery: &Discovery,
        plan: &FetchPlan,
        part: &str,
    ) -> std::result::Result<Vec<Value>, PartError> {
        let base = &endpoint.fhir_base;
        let patient = record.patient_id.clone().unwrap_or_default();
        if part == PART_EVERYTHING {
            let found = self.portal_search(record, endpoint, format!("{base}/Patient/{patient}/$everything")).await?;
            return Ok(found
                .into_iter()
                .filter(|r| match Group::of(r) {
                    Some(g) => plan.groups.contains(&g) && plan.keeps(g, r),
                    None => {
                        r.get("resourceType").and_then(Value::as_str).is_some_and(|t| REFERENCED_TYPES.contains(&t))
                    }
                })
                .collect());
        }
        let Some(group) = Group::parse(part) else { return Ok(Vec::new()) };
        if group == Group::Patient {
            let patient = self.portal_get(record, endpoint, &format!("{base}/Patient/{patient}")).await?;
            if patient.get("resourceType").and_then(Value::as_str) != Some("Patient") {
                return Err(PortalError::Invalid("a read of the Patient answered with something else".into()).into());
            }
            return Ok(vec![patient]);
        }
        let t = group.resource_type();
        let url = format!("{base}/{t}?{}", search_query(group, discovery, plan, &patient));
        let found = self.portal_search(record, endpoint, url).await?;
        // Portals ignore what they do not know: the group and the window are checked here too.
        Ok(found
            .into_iter()
            .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some(t))
            .filter(|r| group.narrowing().is_none() || Group::of(r) == Some(group))
            .filter(|r| plan.keeps(group, r))
            .collect())
    }

    /// Fetch, once each, the referenced resources of the listed types the result lacks.
    async fn fetch_references(
        &self,
        record: &ConnectionRecord,
        endpoint: &Endpoint,
        have: &[Value],
    ) -> std::result::Result<Vec<Value>, PartError> {
        let present: HashSet<String> = have
            .iter()
            .filter_map(|r| Some(format!("{}/{}", r.get("resourceType")?.as_str()?, r.get("id")?.as_str()?)))
            .collect();
        let mut wanted = BTreeSet::new();
        for r in have {
            collect_references(r, &endpoint.fhir_base, &mut wanted);
        }
        wanted.retain(|key| !present.contains(key));
        let base = endpoint.fhir_base.clone();
        let reads = futures::stream::iter(wanted.into_iter().map(|key| {
            let url = format!("{base}/{key}");
            async move {
                match self.portal_get(record, endpoint, &url).await {
                    Ok(v) => Ok(Some(v)),
                    // A reference the portal cannot resolve (deleted, not shared) is not a failure.
                    Err(PartError::Portal(PortalError::Status { status: 403 | 404 | 410, .. })) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        }))
        .buffer_unordered(self.portals().limits().concurrency.max(1));
        let results: Vec<_> = reads.collect().await;
        let mut out = Vec::new();
        for r in results {
            if let Some(v) = r? {
                out.push(v);
            }
        }
        Ok(out)
    }

    pub(crate) async fn parts_done(&self, job: &JobId, connection: &ConnectionId) -> Result<HashSet<String>> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT part FROM link_job_parts WHERE job_id = ")
            .bind(job.as_str())
            .push(" AND connection_id = ")
            .bind(connection.as_str());
        Ok(db.rows(&sql, &[Col::Text]).await?.into_iter().filter_map(|mut r| r.take_text(0)).collect())
    }

    /// The resources stored so far for a connection's share of a job.
    pub(crate) async fn part_resources(&self, job: &JobId, connection: &ConnectionId) -> Result<Vec<Value>> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT part, body FROM link_job_parts WHERE job_id = ")
            .bind(job.as_str())
            .push(" AND connection_id = ")
            .bind(connection.as_str())
            .push(" AND body IS NOT NULL ORDER BY part");
        let mut out = Vec::new();
        for row in db.rows(&sql, &[Col::Text, Col::Text]).await? {
            let (Some(part), Some(body)) = (row.text(0), row.text(1)) else { continue };
            let text = self.vault().open_string(&part_context(job, connection, part), body)?;
            if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&text) {
                out.extend(items);
            }
        }
        Ok(out)
    }

    async fn store_part(
        &self,
        job: &JobId,
        connection: &ConnectionId,
        fhir_base: &str,
        part: &str,
        outcome: std::result::Result<Vec<Value>, PartError>,
    ) -> Result<()> {
        let resources = match outcome {
            Ok(r) => r,
            Err(e) => return self.store_part_error(job, connection, part, &e).await,
        };
        let endpoint = self.connection_record(connection).await?.map(|c| c.endpoint);
        let mut kept = Vec::with_capacity(resources.len());
        for mut r in resources {
            if !well_formed(&r) {
                continue;
            }
            if let Some(endpoint) = &endpoint {
                tag_source(&mut r, fhir_base, endpoint.as_str());
            }
            kept.push(r);
        }
        let body =
            self.vault().seal_str(&part_context(job, connection, part), &Value::Array(kept.clone()).to_string())?;
        self.insert_part(job, connection, part, "done", kept.len() as i64, Some(body), None).await
    }

    async fn store_part_error(
        &self,
        job: &JobId,
        connection: &ConnectionId,
        part: &str,
        error: &PartError,
    ) -> Result<()> {
        let outcome = json!({"resourceType": "OperationOutcome", "issue": [{
            "severity": "error", "code": error.code(), "diagnostics": error.text()}]});
        self.insert_part(job, connection, part, "failed", 0, None, Some(outcome.to_string())).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_part(
        &self,
        job: &JobId,
        connection: &ConnectionId,
        part: &str,
        status: &str,
        count: i64,
        body: Option<String>,
        error: Option<String>,
    ) -> Result<()> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("INSERT INTO link_job_parts (job_id, connection_id, part, status, resources, body, error, finished_at) VALUES (")
            .bind(job.as_str())
            .push(", ")
            .bind(connection.as_str())
            .push(", ")
            .bind(part)
            .push(", ")
            .bind(status)
            .push(", ")
            .bind(count)
            .push(", ")
            .bind(body)
            .push(", ")
            .bind(error)
            .push(", ")
            .bind(self.now_ms())
            .push(") ON CONFLICT (job_id, connection_id, part) DO NOTHING");
        db.execute(&sql).await?;
        Ok(())
    }
}

/// The query of a group's search: the patient, the group's narrowing (unless the portal lists
/// its search parameters without that one), the window where the portal supports its date
/// parameter, and a page size.
fn search_query(group: Group, discovery: &Discovery, plan: &FetchPlan, patient: &str) -> String {
    let t = group.resource_type();
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("patient", patient);
    if let Some((name, value)) = group.narrowing() {
        let listed = discovery.search_params.get(t).is_some_and(|p| !p.is_empty());
        if !listed || discovery.supports_search(t, name) {
            query.append_pair(name, &value);
        }
    }
    if let Some(param) = group.date_param() {
        if discovery.supports_search(t, param) {
            if let Some(from) = &plan.from_text {
                query.append_pair(param, &format!("ge{from}"));
            }
            if let Some(to) = &plan.to_text {
                query.append_pair(param, &format!("le{to}"));
            }
        }
    }
    query.append_pair("_count", "100");
    query.finish()
}

/// A resource Link passes on: an object with an R4 resource type and a valid id.
fn well_formed(r: &Value) -> bool {
    let t = r.get("resourceType").and_then(Value::as_str).unwrap_or_default();
    let id = r.get("id").and_then(Value::as_str).unwrap_or_default();
    fhir::Registry::r4().is_resource_type(t) && fhir::search::is_valid_id(id)
}

/// Say where a resource came from: `meta.source` is the portal's FHIR base, and a tag names the
/// directory endpoint.
fn tag_source(r: &mut Value, fhir_base: &str, endpoint: &str) {
    let Some(obj) = r.as_object_mut() else { return };
    let meta = obj.entry("meta").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta["source"] = json!(fhir_base);
    let tags = meta.as_object_mut().and_then(|m| {
        let t = m.entry("tag").or_insert_with(|| json!([]));
        if !t.is_array() {
            *t = json!([]);
        }
        t.as_array_mut()
    });
    if let Some(tags) = tags {
        tags.retain(|t| t.get("system").and_then(Value::as_str) != Some(ENDPOINT_TAG_SYSTEM));
        tags.push(json!({"system": ENDPOINT_TAG_SYSTEM, "code": endpoint}));
    }
}

/// Every `reference` in a resource to one of [`REFERENCED_TYPES`] at this portal, as `Type/id`.
pub fn collect_references(value: &Value, base: &str, into: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "reference" {
                    if let Some(key) = v.as_str().and_then(|r| reference_key(r, base)) {
                        into.insert(key);
                    }
                } else {
                    collect_references(v, base, into);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, base, into)),
        _ => {}
    }
}

fn reference_key(reference: &str, base: &str) -> Option<String> {
    let relative = match reference.strip_prefix(base) {
        Some(rest) => rest.trim_start_matches('/'),
        None if reference.contains("://") || reference.starts_with('#') || reference.starts_with("urn:") => {
            return None
        }
        None => reference,
    };
    let mut parts = relative.split('/');
    let (t, id) = (parts.next()?, parts.next()?);
    if parts.next().is_some_and(|p| p != "_history") {
        return None;
    }
    (REFERENCED_TYPES.contains(&t) && fhir::search::is_valid_id(id)).then(|| format!("{t}/{id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_found_and_limited_to_the_portal() {
        let base = "https://p.example/fhir";
        let r = json!({"resourceType": "Encounter", "participant": [{"individual": {"reference": "Practitioner/a"}}],
            "serviceProvider": {"reference": "https://p.example/fhir/Organization/o1"},
            "location": [{"location": {"reference": "Location/l1/_history/2"}}],
            "subject": {"reference": "Patient/p"},
            "other": [{"reference": "https://elsewhere.example/fhir/Practitioner/x"}, {"reference": "#contained"},
                      {"reference": "Practitioner/bad id"}]});
        let mut found = BTreeSet::new();
        collect_references(&r, base, &mut found);
        assert_eq!(found.into_iter().collect::<Vec<_>>(), vec!["Location/l1", "Organization/o1", "Practitioner/a"]);
    }

    #[test]
    fn sources_are_tagged_once() {
        let mut r = json!({"resourceType": "Condition", "id": "c", "meta": {"tag": [{"system": "x", "code": "y"}]}});
        tag_source(&mut r, "https://p/fhir", "ep_1");
        tag_source(&mut r, "https://p/fhir", "ep_1");
        assert_eq!(r["meta"]["source"], "https://p/fhir");
        assert_eq!(r["meta"]["tag"].as_array().unwrap().len(), 2);
        let mut odd = json!({"resourceType": "Condition", "id": "c", "meta": "nonsense"});
        tag_source(&mut odd, "https://p/fhir", "ep_1");
        assert_eq!(odd["meta"]["tag"][0]["code"], "ep_1");
        assert!(well_formed(&json!({"resourceType": "Condition", "id": "c"})));
        assert!(!well_formed(&json!({"resourceType": "Nonsense", "id": "c"})));
        assert!(!well_formed(&json!({"resourceType": "Condition", "id": "c c"})));
    }
}
