//! Fetching one connection's records for a job: `$everything` where the portal offers it and
//! nothing asks otherwise, per-type searches elsewhere, then the Practitioners, Organizations,
//! Locations and Medications the records refer to, each once. Date windows are sent where the
//! portal's search supports them and always re-checked here. Each part of the work is stored as
//! it finishes, so a job taken up again after a crash does only what is left.

use std::collections::{BTreeSet, HashSet};

use futures::StreamExt as _;
use serde_json::json;

use super::portal_fhir::PartError;
use super::raw::RawResource;
use fhir::convert::Version;

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

fn meta_context(job: &JobId, connection: &ConnectionId, part: &str) -> String {
    format!("job:{job}:{connection}:{part}:meta")
}

/// Beside a part's entries: their fullUrls (in order) and the references they make.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct PartMeta {
    pub(crate) keys: Vec<String>,
    pub(crate) refs: Vec<String>,
    /// The match keys ([`fhir::dedup::match_keys`]) of the entries that have any, by index
    /// into `keys`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) matches: Vec<(u32, Vec<String>)>,
    /// The FHIR version the entries were converted from (absent: read as R4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) converted_from: Option<String>,
}

/// The match keys of a record of a merged type, from just the fields the rules read.
fn record_match_keys(r: &RawResource, resource_type: &str) -> Vec<String> {
    if !fhir::dedup::MERGED_TYPES.contains(&resource_type) {
        return Vec::new();
    }
    let fields: serde_json::Map<String, serde_json::Value> =
        fhir::dedup::FIELDS.iter().filter_map(|f| Some(((*f).to_owned(), r.field(f)?))).collect();
    fhir::dedup::match_keys(&serde_json::Value::Object(fields))
}

/// The parts of a synchronous fetch, kept in memory only: its result goes out in the answer,
/// and records are not written to the database when nothing will read them there again.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    parts: std::sync::Mutex<Vec<(ConnectionId, String, PartMeta, String)>>,
}

impl Collector {
    /// The bytes of every collected part's text.
    pub(crate) fn total_len(&self) -> usize {
        self.parts.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(.., body)| body.len()).sum()
    }
}

/// How Link reads a portal's FHIR version: as R4, converted from DSTU2 or STU3, or not at all.
fn reading(version: Option<&str>) -> std::result::Result<Option<Version>, String> {
    match version {
        None => Ok(None),
        Some(v) if v.starts_with("4.") => Ok(None),
        Some(v) => Version::parse(v).map(Some).ok_or_else(|| format!("FHIR version {v} is not one Link reads")),
    }
}

/// A legacy portal's resource converted to R4 (None when it is not a resource at all).
fn to_r4(version: Option<Version>, resource: RawResource) -> Option<RawResource> {
    let Some(version) = version else { return Some(resource) };
    let value: serde_json::Value = serde_json::from_str(&resource.to_text()).ok()?;
    let mut report = fhir::convert::Report::default();
    let converted = fhir::convert::convert_resource(version, value, &mut report).ok()?;
    RawResource::parse(&converted.to_string()).ok()
}

/// A legacy portal's name for a group's type (DSTU2 orders medications with MedicationOrder);
/// None when the version has no such type.
fn legacy_type(version: Version, group: Group) -> Option<&'static str> {
    match (version, group.resource_type()) {
        (Version::Dstu2, "MedicationRequest") => Some("MedicationOrder"),
        (Version::Dstu2, "CareTeam") => None,
        (_, t) => Some(t),
    }
}

impl Link {
    /// The in-memory collector of a synchronous fetch running in this process.
    pub(crate) fn collector(&self, job: &JobId) -> Option<std::sync::Arc<Collector>> {
        self.inner.collectors.lock().unwrap_or_else(|p| p.into_inner()).get(job).cloned()
    }

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
        let legacy = match reading(version) {
            Ok(l) => l,
            Err(why) => {
                let e = PortalError::Invalid(why);
                return self.store_part_error(job, connection, PART_CONNECTION, &PartError::Portal(e)).await;
            }
        };
        let parts: Vec<String> = if discovery.everything && plan.all && !plan.has_dates() {
            vec![PART_EVERYTHING.to_owned()]
        } else {
            plan.groups.iter().map(|g| g.name().to_owned()).collect()
        };
        let pending: Vec<&String> = parts.iter().filter(|p| !done.contains(p.as_str())).collect();
        let runs = pending.into_iter().map(|part| {
            let (record, endpoint, discovery) = (&record, &endpoint, &discovery);
            async move {
                let outcome = self.run_part(record, endpoint, discovery, plan, part, legacy).await;
                self.store_part(job, connection, &endpoint.fhir_base, legacy, part, outcome).await
            }
        });
        for stored in futures::future::join_all(runs).await {
            stored?;
        }
        if !done.contains(PART_REFERENCES) {
            let wanted = self.wanted_references(job, connection, &endpoint.fhir_base).await?;
            let outcome = self.fetch_references(&record, &endpoint, wanted, legacy).await;
            self.store_part(job, connection, &endpoint.fhir_base, legacy, PART_REFERENCES, outcome).await?;
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
        legacy: Option<Version>,
    ) -> std::result::Result<Vec<RawResource>, PartError> {
        let base = &endpoint.fhir_base;
        let patient = record.patient_id.clone().unwrap_or_default();
        if part == PART_EVERYTHING {
            let found = self.portal_search(record, endpoint, format!("{base}/Patient/{patient}/$everything")).await?;
            return Ok(found
                .into_iter()
                .filter_map(|r| to_r4(legacy, r))
                .filter(|r| match r.group() {
                    Some(g) => plan.groups.contains(&g) && plan.keeps_dated(g, r.date(g)),
                    None => r.resource_type().is_some_and(|t| REFERENCED_TYPES.contains(&t.as_str())),
                })
                .collect());
        }
        let Some(group) = Group::parse(part) else { return Ok(Vec::new()) };
        if group == Group::Patient {
            let patient = self.portal_read(record, endpoint, &format!("{base}/Patient/{patient}")).await?;
            if patient.resource_type().as_deref() != Some("Patient") {
                return Err(PortalError::Invalid("a read of the Patient answered with something else".into()).into());
            }
            return Ok(to_r4(legacy, patient).into_iter().collect());
        }
        let t = group.resource_type();
        let url = match legacy {
            None => format!("{base}/{t}?{}", search_query(group, discovery, plan, &patient)),
            Some(version) => {
                // Older search parameters and code systems differ: only the patient is asked
                // for, and the group and the window are checked on the converted records.
                let Some(source_type) = legacy_type(version, group) else { return Ok(Vec::new()) };
                let query = form_urlencoded::Serializer::new(String::new())
                    .append_pair("patient", &patient)
                    .append_pair("_count", "100")
                    .finish();
                format!("{base}/{source_type}?{query}")
            }
        };
        let found = self.portal_search(record, endpoint, url).await?;
        // Portals ignore what they do not know: the group and the window are checked here too.
        Ok(found
            .into_iter()
            .filter_map(|r| to_r4(legacy, r))
            .filter(|r| r.resource_type().as_deref() == Some(t))
            .filter(|r| group.narrowing().is_none() || r.group() == Some(group))
            .filter(|r| plan.keeps_dated(group, r.date(group)))
            .collect())
    }

    /// Fetch, once each, the referenced resources (`Type/id`) the result lacks.
    async fn fetch_references(
        &self,
        record: &ConnectionRecord,
        endpoint: &Endpoint,
        wanted: BTreeSet<String>,
        legacy: Option<Version>,
    ) -> std::result::Result<Vec<RawResource>, PartError> {
        let base = endpoint.fhir_base.clone();
        let reads = futures::stream::iter(wanted.into_iter().map(|key| {
            let url = format!("{base}/{key}");
            async move {
                match self.portal_read(record, endpoint, &url).await {
                    Ok(v) => Ok(to_r4(legacy, v)),
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

    /// The references the stored parts make to [`REFERENCED_TYPES`] that they do not resolve
    /// themselves.
    async fn wanted_references(&self, job: &JobId, connection: &ConnectionId, base: &str) -> Result<BTreeSet<String>> {
        let mut wanted = BTreeSet::new();
        let mut present = HashSet::new();
        if let Some(c) = self.collector(job) {
            for (_, _, meta, _) in
                c.parts.lock().unwrap_or_else(|p| p.into_inner()).iter().filter(|(conn, ..)| conn == connection)
            {
                wanted.extend(meta.refs.iter().cloned());
                for key in &meta.keys {
                    if let Some(relative) = key.strip_prefix(base) {
                        present.insert(relative.trim_start_matches('/').to_owned());
                    }
                }
            }
            wanted.retain(|k| !present.contains(k));
            return Ok(wanted);
        }
        for meta in self.part_metas(job, connection).await? {
            wanted.extend(meta.refs);
            for key in meta.keys {
                if let Some(relative) = key.strip_prefix(base) {
                    present.insert(relative.trim_start_matches('/').to_owned());
                }
            }
        }
        wanted.retain(|k| !present.contains(k));
        Ok(wanted)
    }

    /// The indexes of a connection's stored parts, in the order [`Self::visit_entries`] visits
    /// them.
    pub(crate) async fn entry_metas(&self, job: &JobId, connection: &ConnectionId) -> Result<Vec<PartMeta>> {
        if let Some(c) = self.collector(job) {
            let parts = c.parts.lock().unwrap_or_else(|p| p.into_inner());
            let mut mine: Vec<&(ConnectionId, String, PartMeta, String)> =
                parts.iter().filter(|(conn, ..)| conn == connection).collect();
            mine.sort_by(|a, b| a.1.cmp(&b.1));
            return Ok(mine.into_iter().map(|(_, _, meta, _)| meta.clone()).collect());
        }
        self.part_metas(job, connection).await
    }

    async fn part_metas(&self, job: &JobId, connection: &ConnectionId) -> Result<Vec<PartMeta>> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT part, meta FROM link_job_parts WHERE job_id = ")
            .bind(job.as_str())
            .push(" AND connection_id = ")
            .bind(connection.as_str())
            .push(" AND meta IS NOT NULL ORDER BY part");
        let mut out = Vec::new();
        for row in db.rows(&sql, &[Col::Text, Col::Text]).await? {
            let (Some(part), Some(meta)) = (row.text(0), row.text(1)) else { continue };
            let text = self.vault().open_string(&meta_context(job, connection, part), meta)?;
            out.push(
                serde_json::from_str(&text).map_err(|_| crate::error::LinkError::Vault("damaged part index".into()))?,
            );
        }
        Ok(out)
    }

    /// Visit every stored entry of a connection's share of a job, part by part: its fullUrl and
    /// its JSON text (`{"fullUrl", "resource"}`), without parsing it.
    pub(crate) async fn visit_entries(
        &self,
        job: &JobId,
        connection: &ConnectionId,
        mut visit: impl FnMut(&str, &str),
    ) -> Result<()> {
        if let Some(collector) = self.collector(job) {
            // Taken out as visited: the result is built once, and each part's text can go as
            // soon as it is copied.
            let mut mine: Vec<(ConnectionId, String, PartMeta, String)> = {
                let mut parts = collector.parts.lock().unwrap_or_else(|p| p.into_inner());
                let (taken, kept) = std::mem::take(&mut *parts).into_iter().partition(|(conn, ..)| conn == connection);
                *parts = kept;
                taken
            };
            mine.sort_by(|a, b| a.1.cmp(&b.1));
            for (_, _, meta, body) in mine {
                for (key, line) in meta.keys.iter().zip(body.lines()) {
                    visit(key, line);
                }
            }
            return Ok(());
        }
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT part FROM link_job_parts WHERE job_id = ")
            .bind(job.as_str())
            .push(" AND connection_id = ")
            .bind(connection.as_str())
            .push(" AND body IS NOT NULL ORDER BY part");
        let parts: Vec<String> =
            db.rows(&sql, &[Col::Text]).await?.into_iter().filter_map(|mut r| r.take_text(0)).collect();
        // One part in memory at a time.
        for part in parts {
            let mut sql = db.sql();
            sql.push("SELECT body, meta FROM link_job_parts WHERE job_id = ")
                .bind(job.as_str())
                .push(" AND connection_id = ")
                .bind(connection.as_str())
                .push(" AND part = ")
                .bind(part.as_str());
            let Some(row) = db.rows(&sql, &[Col::Text, Col::Text]).await?.into_iter().next() else { continue };
            let (Some(body), Some(meta)) = (row.text(0), row.text(1)) else { continue };
            let meta: PartMeta =
                serde_json::from_str(&self.vault().open_string(&meta_context(job, connection, &part), meta)?)
                    .map_err(|_| crate::error::LinkError::Vault("damaged part index".into()))?;
            let body = self.vault().open_string(&part_context(job, connection, &part), body)?;
            for (key, line) in meta.keys.iter().zip(body.lines()) {
                visit(key, line);
            }
        }
        Ok(())
    }

    async fn store_part(
        &self,
        job: &JobId,
        connection: &ConnectionId,
        fhir_base: &str,
        legacy: Option<Version>,
        part: &str,
        outcome: std::result::Result<Vec<RawResource>, PartError>,
    ) -> Result<()> {
        let resources = match outcome {
            Ok(r) => r,
            Err(e) => return self.store_part_error(job, connection, part, &e).await,
        };
        let endpoint = self.connection_record(connection).await?.map(|c| c.endpoint.to_string());
        let mut meta = PartMeta {
            keys: Vec::with_capacity(resources.len()),
            converted_from: legacy.map(|v| v.code().to_owned()),
            ..PartMeta::default()
        };
        let mut body: Vec<u8> = Vec::with_capacity(resources.iter().map(|r| r.text_len() + fhir_base.len() + 64).sum());
        let mut refs = BTreeSet::new();
        for mut r in resources {
            if !r.well_formed() {
                continue;
            }
            if let Some(endpoint) = &endpoint {
                r.tag_source(fhir_base, ENDPOINT_TAG_SYSTEM, endpoint.as_str());
            }
            for reference in r.references() {
                if let Some(key) = reference_key(&reference, fhir_base) {
                    refs.insert(key);
                }
            }
            let resource_type = r.resource_type().unwrap_or_default();
            let key = format!("{fhir_base}/{resource_type}/{}", r.id().unwrap_or_default());
            let match_keys = record_match_keys(&r, &resource_type);
            let start = body.len();
            body.extend_from_slice(b"{\"fullUrl\":");
            let written = serde_json::to_writer(&mut body, &key)
                .and_then(|()| {
                    body.extend_from_slice(b",\"resource\":");
                    r.write_to(&mut body)
                })
                .is_ok();
            if !written {
                body.truncate(start);
                continue;
            }
            body.extend_from_slice(b"}\n");
            if !match_keys.is_empty() {
                meta.matches.push((meta.keys.len() as u32, match_keys));
            }
            meta.keys.push(key);
        }
        // serde_json writes UTF-8 only; checked once for the whole part.
        let body = String::from_utf8(body).map_err(|_| crate::error::LinkError::Vault("a part is not UTF-8".into()))?;
        meta.refs = refs.into_iter().collect();
        let count = meta.keys.len() as i64;
        if let Some(collector) = self.collector(job) {
            self.insert_part(job, connection, part, "done", count, None, None).await?;
            collector.parts.lock().unwrap_or_else(|p| p.into_inner()).push((
                connection.clone(),
                part.to_owned(),
                meta,
                body,
            ));
            return Ok(());
        }
        let sealed_body = self.vault().seal_str(&part_context(job, connection, part), &body)?;
        let sealed_meta = self
            .vault()
            .seal_str(&meta_context(job, connection, part), &serde_json::to_string(&meta).unwrap_or_default())?;
        self.insert_part(job, connection, part, "done", count, Some((sealed_body, sealed_meta)), None).await
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
        body: Option<(String, String)>,
        error: Option<String>,
    ) -> Result<()> {
        let (body, meta) = match body {
            Some((b, m)) => (Some(b), Some(m)),
            None => (None, None),
        };
        let db = self.db();
        let mut sql = db.sql();
        sql.push(
            "INSERT INTO link_job_parts (job_id, connection_id, part, status, resources, body, meta, error, finished_at) \
             VALUES (",
        )
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
            .bind(meta)
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
    fn references_are_limited_to_the_portal_and_the_listed_types() {
        let base = "https://p.example/fhir";
        let keys: Vec<Option<String>> = [
            "Practitioner/a",
            "https://p.example/fhir/Organization/o1",
            "Location/l1/_history/2",
            "Patient/p",
            "https://elsewhere.example/fhir/Practitioner/x",
            "#contained",
            "urn:uuid:1",
            "Practitioner/bad id",
        ]
        .iter()
        .map(|r| reference_key(r, base))
        .collect();
        assert_eq!(
            keys,
            vec![
                Some("Practitioner/a".into()),
                Some("Organization/o1".into()),
                Some("Location/l1".into()),
                None,
                None,
                None,
                None,
                None
            ]
        );
    }
}
