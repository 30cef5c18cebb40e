//! `includeAssociatedData`: the Provenance of the exported resources (Bulk Data 2.0, code system
//! `include-associated-data`).
//!
//! After the exported types, a job scans the Provenance the caller may search, in rkey order and
//! a page at a time, and keeps those whose `target` names a resource the export returned — a
//! resource of an exported type that passes that type's view (scopes, compartments, withheld
//! categories, `_typeFilter`, `_since`), asked of the database with an `_id` filter through the
//! same restriction the type's export used. `LatestProvenanceResources` keeps a Provenance only
//! where it is the most recent one (by `recorded`) of at least one such resource. Each Provenance
//! is looked at once, when the scan reaches it, so none is written twice and a resumed job
//! continues after the last rkey it stored; memory holds one page. A Provenance the export
//! already wrote as a type of its own is not written again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use fhir::search::{Handling, SearchRequest, SearchTerm};
use oauth::access::Access;
use serde_json::Value;
use store::{ExportRow, ExportSlice, Restriction};

use crate::access::type_restriction;
use crate::request::Associated;
use crate::{BulkError, Deps, Result};

pub const PROVENANCE: &str = "Provenance";

/// Ids per `_id` or `target` filter: well under SQLite's limit on bound values, and small enough
/// that PostgreSQL's planning of each call stays cheap (1,000 made an export 5× slower).
const IDS_PER_QUERY: usize = 200;
/// Provenance read per page while looking for a resource's latest Provenance.
const LATEST_PAGE: usize = 100;
/// Provenance scanned per page at most (one can name hundreds of resources: a payer-to-payer
/// import's names a member's whole record).
pub const SCAN_PAGE: i64 = 100;

/// A resource named by a Provenance's `target`: (type, id).
type Target = (String, String);

/// Orders Provenance by recency: `recorded`, then `meta.lastUpdated`, then the id.
type Recency = (i64, i64, String);

/// What the selection needs of one Provenance.
#[derive(Debug, Clone, PartialEq)]
struct Facts {
    targets: Vec<Target>,
    recency: Recency,
}

/// Everything the selection reads besides the page: the job's view and what it exported.
pub struct Association<'a> {
    pub deps: &'a Deps,
    pub access: &'a Access,
    pub mode: Associated,
    /// The Group's members or the `patient` parameter.
    pub patients: Option<&'a Arc<Vec<String>>>,
    /// `_typeFilter` searches by type.
    pub filters: &'a HashMap<String, Vec<Vec<SearchTerm>>>,
    /// The types the job exported.
    pub exported: &'a [String],
    pub since_ms: Option<i64>,
    pub in_a_compartment: bool,
}

impl Association<'_> {
    /// The restriction the Provenance scan runs under: the caller's own view of Provenance (a
    /// Provenance outside a Group's compartments still describes the members' records).
    pub fn scan_restriction(&self) -> Result<Restriction, String> {
        type_restriction(self.access, PROVENANCE, None, &[])
    }

    /// The rows of `page` (Provenance) to write.
    pub async fn select<'p>(&self, page: &'p [ExportRow], scan: &Restriction) -> Result<Vec<&'p ExportRow>> {
        let facts: Vec<Option<Facts>> = page.iter().map(|row| facts(&row.body, &self.deps.fhir_base)).collect();
        let mut asked: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (t, id) in facts.iter().flatten().flat_map(|f| &f.targets) {
            if t != PROVENANCE && self.exported.iter().any(|e| e == t) {
                asked.entry(t.as_str()).or_default().insert(id.as_str());
            }
        }
        let mut returned: HashSet<Target> = HashSet::new();
        for (t, ids) in asked {
            for id in self.exported_ids(t, ids.into_iter().collect()).await? {
                returned.insert((t.to_owned(), id));
            }
        }
        let latest = match self.mode {
            Associated::RelevantProvenanceResources => HashMap::new(),
            Associated::LatestProvenanceResources => {
                // In the page's order, so that one search's targets are mostly those of one
                // Provenance and find few others (not a Provenance per target).
                let mut seen = HashSet::new();
                let ordered: Vec<&Target> = facts
                    .iter()
                    .flatten()
                    .flat_map(|f| &f.targets)
                    .filter(|x| returned.contains(*x) && seen.insert(*x))
                    .collect();
                self.latest_of(&ordered, scan).await?
            }
        };
        let mut chosen: Vec<&ExportRow> = page
            .iter()
            .zip(&facts)
            .filter_map(|(row, facts)| {
                let facts = facts.as_ref()?;
                let wanted = facts.targets.iter().any(|x| {
                    returned.contains(x)
                        && match self.mode {
                            Associated::RelevantProvenanceResources => true,
                            Associated::LatestProvenanceResources => latest.get(x) == Some(&facts.recency),
                        }
                });
                wanted.then_some(row)
            })
            .collect();
        if !chosen.is_empty() && self.exported.iter().any(|t| t == PROVENANCE) {
            let already: BTreeSet<String> = self
                .exported_ids(PROVENANCE, chosen.iter().map(|r| r.id.as_str()).collect())
                .await?
                .into_iter()
                .collect();
            chosen.retain(|r| !already.contains(&r.id));
        }
        Ok(chosen)
    }

    /// Which of `ids` (of type `t`) the export returned: the type's own view with an `_id` filter.
    async fn exported_ids(&self, t: &str, ids: Vec<&str>) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let by_id = terms(t, "_id", chunk.join(","))?;
            let filters: Vec<Vec<SearchTerm>> = match self.filters.get(t) {
                Some(own) => own.iter().map(|f| f.iter().chain(&by_id).cloned().collect()).collect(),
                None => vec![by_id],
            };
            let Ok(restriction) = type_restriction(self.access, t, self.patients, &filters) else { return Ok(found) };
            let slice = ExportSlice {
                resource_type: t,
                since_ms: self.since_ms,
                in_a_compartment: self.in_a_compartment,
                after_rkey: 0,
                limit: chunk.len() as i64,
            };
            found.extend(self.deps.store.export_ids(&slice, &restriction).await?);
        }
        Ok(found)
    }

    /// The recency of the most recent Provenance (of those the scan sees) of each of `targets`:
    /// a search `Provenance?target=…` under the scan's restriction, so the `target` index drives.
    async fn latest_of(&self, targets: &[&Target], scan: &Restriction) -> Result<HashMap<Target, Recency>> {
        let mut latest: HashMap<Target, Recency> = HashMap::new();
        for chunk in targets.chunks(IDS_PER_QUERY) {
            let wanted: HashSet<&Target> = chunk.iter().copied().collect();
            let refs: Vec<String> = chunk.iter().map(|(t, id)| format!("{t}/{id}")).collect();
            let pairs = [("target".to_owned(), refs.join(",")), ("_count".to_owned(), LATEST_PAGE.to_string())];
            let mut request = own_search(PROVENANCE, &pairs)?;
            loop {
                let page = self.deps.store.search(&request, scan).await?;
                for facts in page.matches.iter().filter_map(|m| facts(m.body.as_str(), &self.deps.fhir_base)) {
                    for x in facts.targets.iter().filter(|x| wanted.contains(x)) {
                        if latest.get(x).is_none_or(|known| facts.recency > *known) {
                            latest.insert(x.clone(), facts.recency.clone());
                        }
                    }
                }
                match page.next_cursor {
                    Some(cursor) => request.cursor = Some(cursor),
                    None => break,
                }
            }
        }
        Ok(latest)
    }
}

/// The terms of the search `t?name=value`.
fn terms(t: &str, name: &str, value: String) -> Result<Vec<SearchTerm>> {
    Ok(own_search(t, &[(name.to_owned(), value)])?.terms)
}

/// A search this module builds from checked types and ids (see [`facts`]), so one that does not
/// parse is a bug: it fails the job instead of silently leaving out what it would have found.
fn own_search(t: &str, pairs: &[(String, String)]) -> Result<SearchRequest> {
    fhir::search::parse(fhir::Registry::r4(), t, pairs, Handling::Strict)
        .map_err(|e| BulkError::OwnSearch(format!("{t}: {e}")))
}

/// The local resources a Provenance names in `target`, and its recency. References are
/// relative (`Type/id`, optionally `/_history/n`) or absolute at this server's base; others
/// name nothing here.
fn facts(body: &str, fhir_base: &str) -> Option<Facts> {
    let doc: Value = serde_json::from_str(body).ok()?;
    let registry = fhir::Registry::r4();
    let base = format!("{}/", fhir_base.trim_end_matches('/'));
    let mut targets = Vec::new();
    for reference in doc.get("target").and_then(Value::as_array).into_iter().flatten() {
        let Some(text) = reference.get("reference").and_then(Value::as_str) else { continue };
        let local = text.strip_prefix(base.as_str()).unwrap_or(text);
        let mut parts = local.split('/');
        let (Some(t), Some(id)) = (parts.next(), parts.next()) else { continue };
        let rest: Vec<&str> = parts.collect();
        let versioned = rest.len() == 2 && rest[0] == "_history";
        if (rest.is_empty() || versioned) && registry.is_resource_type(t) && fhir::search::is_valid_id(id) {
            targets.push((t.to_owned(), id.to_owned()));
        }
    }
    let instant = |v: Option<&Value>| -> i64 {
        v.and_then(Value::as_str)
            .and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
            .map_or(i64::MIN, store::clock::epoch_ms)
    };
    let id = doc.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let recency = (instant(doc.get("recorded")), instant(doc.pointer("/meta/lastUpdated")), id);
    Some(Facts { targets, recency })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_local_references_only() {
        let body = serde_json::json!({
            "resourceType": "Provenance", "id": "p1", "recorded": "2024-01-02T03:04:05Z",
            "meta": {"lastUpdated": "2024-02-01T00:00:00.000Z"},
            "target": [
                {"reference": "Observation/o1"},
                {"reference": "https://h/fhir/Condition/c1"},
                {"reference": "Encounter/e1/_history/3"},
                {"reference": "https://elsewhere/fhir/Condition/c2"},
                {"reference": "urn:uuid:1234"},
                {"reference": "Nonsense/x"},
                {"display": "no reference"}
            ]
        })
        .to_string();
        let f = facts(&body, "https://h/fhir").unwrap();
        let names: Vec<String> = f.targets.iter().map(|(t, id)| format!("{t}/{id}")).collect();
        assert_eq!(names, vec!["Observation/o1", "Condition/c1", "Encounter/e1"]);
        assert_eq!(f.recency.0, 1_704_164_645_000);
        assert!(f.recency.1 > f.recency.0);
        assert_eq!(f.recency.2, "p1");
    }

    #[test]
    fn a_search_of_its_own_that_does_not_parse_is_an_error_not_a_skip() {
        let bad = own_search(PROVENANCE, &[("no-such-parameter".to_owned(), "x".to_owned())]);
        assert!(matches!(bad, Err(BulkError::OwnSearch(m)) if m.starts_with("Provenance: ")));
        let good = terms("Observation", "_id", "a,b".to_owned()).unwrap();
        assert_eq!(good.len(), 1);
    }

    #[test]
    fn recency_orders_by_recorded_first() {
        let p = |id: &str, recorded: &str, updated: &str| {
            let body = serde_json::json!({"resourceType": "Provenance", "id": id, "recorded": recorded,
                "meta": {"lastUpdated": updated}, "target": []});
            facts(&body.to_string(), "h").unwrap().recency
        };
        let older = p("z", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z");
        let newer = p("a", "2024-06-01T00:00:00Z", "2024-06-01T00:00:00Z");
        assert!(newer > older);
        // Same `recorded`: the later write, then the id, decide.
        assert!(p("a", "2024-06-01T00:00:00Z", "2024-07-01T00:00:00Z") > newer);
        assert!(p("b", "2024-06-01T00:00:00Z", "2024-06-01T00:00:00Z") > newer);
    }
}
