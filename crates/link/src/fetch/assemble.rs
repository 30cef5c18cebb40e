//! Building a job's result from its stored parts: one R4 collection Bundle with every
//! connection's entries, duplicates across portals merged, references to merged-away records
//! pointed at the one kept, a Provenance per portal naming what it supplied, and an
//! OperationOutcome per failed part.
//!
//! Which copy of a duplicate is kept: a clinical portal's over a payer's (a chart is richer than
//! what claims imply), then the connection made first. The kept record gains the endpoint tags
//! of every portal that supplied it, and each of those portals' Provenance names it.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::run::{PartMeta, ENDPOINT_TAG_SYSTEM};
use crate::db::{Col, RowExt};
use crate::error::Result;
use crate::ids::{ConnectionId, JobId};
use crate::jobs::JobSpec;
use crate::Link;

const DATA_OPERATION: &str = "http://terminology.hl7.org/CodeSystem/v3-DataOperation";
const PARTICIPANT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/provenance-participant-type";

/// Where one connection's records came from.
struct Source {
    connection: ConnectionId,
    endpoint_id: String,
    endpoint_name: String,
    fhir_base: String,
    converted_from: Option<String>,
    /// Keeps its copy of a duplicate before sources of a higher rank (clinical 0, payer 1).
    rank: u8,
    connected_at: i64,
}

/// What merging decided: the fullUrls merged away (each to the fullUrl kept) and, for each kept
/// record, the endpoints that also supplied it.
#[derive(Default)]
struct Merge {
    merged_into: HashMap<String, String>,
    also_from: HashMap<String, Vec<String>>,
}

impl Merge {
    /// Decide, source by source in order of precedence, which records are the same as one a
    /// source before supplied. Records of one portal are never merged with each other: a portal
    /// that lists two alike records means two.
    fn plan(sources: &[(Source, Vec<PartMeta>)]) -> Merge {
        let mut merge = Merge::default();
        let mut claimed: HashMap<&str, (usize, &str)> = HashMap::new();
        let mut order: Vec<usize> = (0..sources.len()).collect();
        order.sort_by_key(|&i| (sources[i].0.rank, sources[i].0.connected_at, i));
        for index in order {
            let (source, metas) = &sources[index];
            for meta in metas {
                for (at, keys) in &meta.matches {
                    let Some(full_url) = meta.keys.get(*at as usize) else { continue };
                    let earlier = keys.iter().find_map(|k| claimed.get(k.as_str()).filter(|(i, _)| *i != index));
                    match earlier {
                        Some(&(_, kept)) => {
                            merge.merged_into.insert(full_url.clone(), kept.to_owned());
                            let also = merge.also_from.entry(kept.to_owned()).or_default();
                            if !also.contains(&source.endpoint_id) {
                                also.push(source.endpoint_id.clone());
                            }
                        }
                        None => {
                            for k in keys {
                                claimed.entry(k.as_str()).or_insert((index, full_url.as_str()));
                            }
                        }
                    }
                }
            }
        }
        merge
    }

    /// The entry line as it goes into the result: tagged with the other endpoints that supplied
    /// it, its references to merged-away records pointed at the records kept.
    fn rewrite(&self, full_url: &str, line: &str, base: &str, merged_here: bool) -> Option<String> {
        let also = self.also_from.get(full_url);
        let refers = merged_here && line.contains("\"reference\"");
        if also.is_none() && !refers {
            return None;
        }
        let mut entry: Value = serde_json::from_str(line).ok()?;
        let resource = entry.get_mut("resource")?;
        if let Some(also) = also {
            if let Some(tags) = ensure_tags(resource) {
                for endpoint in also {
                    let tag = json!({"system": ENDPOINT_TAG_SYSTEM, "code": endpoint});
                    if !tags.contains(&tag) {
                        tags.push(tag);
                    }
                }
            }
        }
        if refers {
            self.point_references(resource, base);
        }
        Some(entry.to_string())
    }

    fn point_references(&self, value: &mut Value, base: &str) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if k == "reference" {
                        if let Value::String(reference) = v {
                            let absolute = if reference.contains("://") {
                                reference.clone()
                            } else {
                                format!("{base}/{}", reference.trim_start_matches('/'))
                            };
                            if let Some(kept) = self.merged_into.get(&absolute) {
                                *reference = kept.clone();
                            }
                        }
                    } else {
                        self.point_references(v, base);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.point_references(v, base)),
            _ => {}
        }
    }
}

fn ensure_tags(resource: &mut Value) -> Option<&mut Vec<Value>> {
    let meta = resource.as_object_mut()?.entry("meta").or_insert_with(|| json!({}));
    let tags = meta.as_object_mut()?.entry("tag").or_insert_with(|| json!([]));
    tags.as_array_mut()
}

/// The Provenance of one portal's share: the records it supplied (kept, or merged into another
/// portal's), who supplied them, and whether they were converted to R4.
fn provenance(source: &Source, targets: &[String], recorded: &str) -> Value {
    let version = source.converted_from.as_deref().unwrap_or("4.0.1");
    let mut p = json!({
        "resourceType": "Provenance",
        "id": uuid::Uuid::new_v4().to_string(),
        "target": targets.iter().map(|t| json!({"reference": t})).collect::<Vec<_>>(),
        "recorded": recorded,
        "agent": [{
            "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "author", "display": "Author"}]},
            "who": {"display": source.endpoint_name,
                    "identifier": {"system": ENDPOINT_TAG_SYSTEM, "value": source.endpoint_id}},
        }],
        "entity": [{
            "role": "source",
            "what": {"display": format!("FHIR {version} at {}", source.fhir_base),
                     "identifier": {"system": "urn:ietf:rfc:3986", "value": source.fhir_base}},
        }],
    });
    if source.converted_from.is_some() {
        p["activity"] = json!({"coding": [{"system": DATA_OPERATION, "code": "TRANSFORM", "display": "transform"}]});
    }
    p
}

/// Appends entries to a Bundle's JSON text.
struct Entries<'a> {
    out: &'a mut String,
    first: bool,
}

impl Entries<'_> {
    fn push(&mut self, entry: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push_str(entry);
    }
}

impl Link {
    /// The R4 collection Bundle of a job's result.
    pub(crate) async fn assemble_result(&self, job: &JobId, spec: &JobSpec) -> Result<String> {
        let now = self.now_ms();
        let recorded = store::clock::instant_text(now);
        let mut out = String::with_capacity(self.collector(job).map_or(64 * 1024, |c| c.total_len() + 4096));
        out.push_str(
            &json!({"resourceType": "Bundle", "id": job.as_str().replace('_', "-"),
                "meta": {"lastUpdated": recorded}, "type": "collection", "timestamp": recorded})
            .to_string(),
        );
        // Reopen the object to append the entries.
        out.pop();
        out.push_str(",\"entry\":[");

        let mut sources = Vec::with_capacity(spec.connections.len());
        for c in &spec.connections {
            let metas = self.entry_metas(job, c).await?;
            sources.push((self.source(c, &metas).await?, metas));
        }
        let merging = spec.fetch.deduplicate() && sources.len() > 1;
        let merge = if merging { Merge::plan(&sources) } else { Merge::default() };
        let mut entries = Entries { out: &mut out, first: true };
        let mut seen = HashSet::new();
        for (source, _) in &sources {
            let base = source.fhir_base.as_str();
            let merged_here = merge.merged_into.keys().any(|k| k.starts_with(base));
            let mut targets: Vec<String> = Vec::new();
            let mut targeted = HashSet::new();
            self.visit_entries(job, &source.connection, |key, line| {
                if let Some(kept) = merge.merged_into.get(key) {
                    if targeted.insert(kept.clone()) {
                        targets.push(kept.clone());
                    }
                    return;
                }
                if !seen.insert(key.to_owned()) {
                    return;
                }
                if targeted.insert(key.to_owned()) {
                    targets.push(key.to_owned());
                }
                match merge.rewrite(key, line, base, merged_here) {
                    Some(rewritten) => entries.push(&rewritten),
                    None => entries.push(line),
                }
            })
            .await?;
            if !targets.is_empty() {
                let p = provenance(source, &targets, &recorded);
                entries.push(
                    &json!({"fullUrl": format!("urn:uuid:{}", p["id"].as_str().unwrap_or_default()), "resource": p})
                        .to_string(),
                );
            }
            for outcome in self.part_errors(job, &source.connection).await? {
                entries.push(
                    &json!({"fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()), "resource": outcome}).to_string(),
                );
            }
        }
        out.push_str("]}");
        Ok(out)
    }

    async fn source(&self, connection: &ConnectionId, metas: &[PartMeta]) -> Result<Source> {
        let record = self.connection_record(connection).await?;
        let endpoint = match &record {
            Some(r) => self.endpoint(&r.endpoint).await?,
            None => None,
        };
        Ok(Source {
            rank: match endpoint.as_ref().map(|e| e.category) {
                Some(crate::directory::Category::Payer) => 1,
                _ => 0,
            },
            connected_at: record.as_ref().map_or(i64::MAX, |r| r.created_at),
            connection: connection.clone(),
            endpoint_id: record.as_ref().map(|r| r.endpoint.to_string()).unwrap_or_default(),
            endpoint_name: endpoint.as_ref().map(|e| e.name.clone()).unwrap_or_default(),
            fhir_base: endpoint.map(|e| e.fhir_base).unwrap_or_default(),
            converted_from: metas.iter().find_map(|m| m.converted_from.clone()),
        })
    }

    async fn part_errors(&self, job: &JobId, connection: &ConnectionId) -> Result<Vec<Value>> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT error FROM link_job_parts WHERE job_id = ")
            .bind(job.as_str())
            .push(" AND connection_id = ")
            .bind(connection.as_str())
            .push(" AND status = 'failed' ORDER BY part");
        Ok(db
            .rows(&sql, &[Col::Text])
            .await?
            .iter()
            .filter_map(|row| serde_json::from_str(row.text(0)?).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(id: &str, base: &str) -> Source {
        Source {
            rank: 0,
            connected_at: 0,
            connection: ConnectionId::generate(),
            endpoint_id: id.into(),
            endpoint_name: id.into(),
            fhir_base: base.into(),
            converted_from: None,
        }
    }

    fn meta(keys: &[&str], matches: &[(u32, &[&str])]) -> PartMeta {
        PartMeta {
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            matches: matches.iter().map(|(i, k)| (*i, k.iter().map(|s| (*s).to_owned()).collect())).collect(),
            ..PartMeta::default()
        }
    }

    #[test]
    fn a_clinic_keeps_its_copy_over_a_payer_named_first() {
        let mut payer = source("p", "https://p");
        payer.rank = 1;
        let sources = vec![
            (payer, vec![meta(&["https://p/Immunization/1"], &[(0, &["k"])])]),
            (source("c", "https://c"), vec![meta(&["https://c/Immunization/2"], &[(0, &["k"])])]),
        ];
        let merge = Merge::plan(&sources);
        assert_eq!(merge.merged_into["https://p/Immunization/1"], "https://c/Immunization/2");
    }

    #[test]
    fn first_connection_keeps_and_one_portal_is_never_merged_with_itself() {
        let sources = vec![
            (
                source("a", "https://a"),
                vec![meta(&["https://a/Immunization/1", "https://a/Immunization/2"], &[(0, &["k1"]), (1, &["k1"])])],
            ),
            (
                source("b", "https://b"),
                vec![meta(&["https://b/Immunization/9", "https://b/Condition/3"], &[(0, &["k1"]), (1, &["k2"])])],
            ),
        ];
        let merge = Merge::plan(&sources);
        assert_eq!(merge.merged_into.len(), 1);
        assert_eq!(merge.merged_into["https://b/Immunization/9"], "https://a/Immunization/1");
        assert_eq!(merge.also_from["https://a/Immunization/1"], vec!["b".to_owned()]);
    }

    #[test]
    fn references_to_merged_records_point_at_the_kept_ones() {
        let mut merge = Merge::default();
        merge.merged_into.insert("https://b/Encounter/e".into(), "https://a/Encounter/x".into());
        let line = r#"{"fullUrl":"https://b/Observation/o","resource":{"resourceType":"Observation","encounter":{"reference":"Encounter/e"},"subject":{"reference":"Patient/p"}}}"#;
        let out: Value = serde_json::from_str(
            &merge.rewrite("https://b/Observation/o", line, "https://b", true).unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_eq!(out["resource"]["encounter"]["reference"], "https://a/Encounter/x");
        assert_eq!(out["resource"]["subject"]["reference"], "Patient/p");
    }
}
