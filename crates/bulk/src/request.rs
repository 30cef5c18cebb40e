//! A kick-off request (Bulk Data Access 2.0, "Bulk Data Kick-off Request"): its parameters from
//! the query string (GET) or a `Parameters` resource (POST), checked before a job exists, so a
//! bad request is a 400 at once and never a failed job later.

use fhir::search::Handling;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::BulkError;

/// Which data an export covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Level {
    /// `[base]/$export`: every type the caller may read.
    System,
    /// `[base]/Patient/$export`: the patient compartments (all patients, or `patient`).
    Patient,
    /// `[base]/Group/{id}/$export`: the compartments of the group's members.
    Group(String),
}

/// The accepted parameters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExportRequest {
    pub since_ms: Option<i64>,
    pub types: Option<Vec<String>>,
    /// `Type?search`, as given.
    pub type_filters: Vec<String>,
    /// `_elements`: `element` or `Type.element`.
    pub elements: Option<Vec<String>>,
    /// `patient` (POST): the patients to export, by id.
    pub patients: Option<Vec<String>>,
    /// `includeAssociatedData`: which Provenance to add for the exported resources.
    pub associated: Option<Associated>,
    /// Parameters ignored under `Prefer: handling=lenient`, reported in the manifest's `error`.
    pub ignored: Vec<String>,
}

/// The `includeAssociatedData` values Portico offers (Bulk Data 2.0's code system
/// `include-associated-data`). Both add the Provenance whose `target` names an exported
/// (non-Provenance) resource; they differ in how many per resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Associated {
    /// `LatestProvenanceResources`: each exported resource's most recent Provenance (by
    /// `recorded`).
    LatestProvenanceResources,
    /// `RelevantProvenanceResources`: every Provenance of each exported resource.
    RelevantProvenanceResources,
}

impl Associated {
    fn from_code(code: &str) -> Option<Associated> {
        match code {
            "LatestProvenanceResources" => Some(Associated::LatestProvenanceResources),
            "RelevantProvenanceResources" => Some(Associated::RelevantProvenanceResources),
            _ => None,
        }
    }
}

const NDJSON_FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// Parameters the spec defines that Portico does not offer.
const UNSUPPORTED: &[&str] = &["organizeOutputBy", "allowPartialManifests", "_until"];

/// `Prefer: handling=lenient` (anything else, or nothing, is strict).
pub fn handling(prefer: Option<&str>) -> Handling {
    let lenient =
        prefer.is_some_and(|p| p.split([',', ';']).any(|part| part.trim().eq_ignore_ascii_case("handling=lenient")));
    if lenient {
        Handling::Lenient
    } else {
        Handling::Strict
    }
}

/// Does the `Prefer` header ask for an asynchronous answer (required by the spec)?
pub fn respond_async(prefer: Option<&str>) -> bool {
    prefer.is_some_and(|p| p.split([',', ';']).any(|part| part.trim().eq_ignore_ascii_case("respond-async")))
}

impl ExportRequest {
    /// From `name=value` pairs (the query string of a GET kick-off).
    pub fn from_pairs(
        registry: &fhir::Registry,
        level: &Level,
        pairs: &[(String, String)],
        handling: Handling,
    ) -> Result<ExportRequest, BulkError> {
        let mut request = ExportRequest::default();
        let _ = level; // every GET parameter means the same at each level
        for (name, value) in pairs {
            request.take(registry, name, value, handling)?;
        }
        Ok(request)
    }

    /// From a `Parameters` resource (a POST kick-off).
    pub fn from_parameters(
        registry: &fhir::Registry,
        level: &Level,
        body: &Value,
        handling: Handling,
    ) -> Result<ExportRequest, BulkError> {
        if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Err(BulkError::BadRequest("a POST kick-off takes a Parameters resource".into()));
        }
        let mut request = ExportRequest::default();
        for parameter in body.get("parameter").and_then(Value::as_array).into_iter().flatten() {
            let Some(name) = parameter.get("name").and_then(Value::as_str) else {
                return Err(BulkError::BadRequest("a parameter has no name".into()));
            };
            if name == "patient" {
                if *level == Level::System {
                    return Err(BulkError::BadRequest("'patient' applies to Patient and Group exports only".into()));
                }
                let reference = parameter.pointer("/valueReference/reference").and_then(Value::as_str);
                let Some(id) =
                    reference.and_then(|r| r.strip_prefix("Patient/")).filter(|id| fhir::search::is_valid_id(id))
                else {
                    return Err(BulkError::BadRequest("'patient' takes a valueReference to Patient/{id}".into()));
                };
                request.patients.get_or_insert_with(Vec::new).push(id.to_owned());
                continue;
            }
            let value = ["valueString", "valueInstant", "valueDateTime", "valueCode", "valueBoolean"]
                .iter()
                .find_map(|k| parameter.get(*k))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            let Some(value) = value else {
                return Err(BulkError::BadRequest(format!("parameter '{name}' has no value Portico can read")));
            };
            request.take(registry, name, &value, handling)?;
        }
        Ok(request)
    }

    fn take(
        &mut self,
        registry: &fhir::Registry,
        name: &str,
        value: &str,
        handling: Handling,
    ) -> Result<(), BulkError> {
        match name {
            "_outputFormat" => {
                if !NDJSON_FORMATS.contains(&value) {
                    return Err(BulkError::BadRequest(format!(
                        "_outputFormat '{value}' is not supported (use application/fhir+ndjson)"
                    )));
                }
            }
            "_since" => {
                let at = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| BulkError::BadRequest(format!("_since '{value}' is not a FHIR instant")))?;
                self.since_ms = Some(store::clock::epoch_ms(at));
            }
            "_type" => {
                let types = self.types.get_or_insert_with(Vec::new);
                for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !registry.is_resource_type(t) {
                        match handling {
                            Handling::Strict => {
                                return Err(BulkError::BadRequest(format!("_type '{t}' is not an R4 resource type")))
                            }
                            Handling::Lenient => {
                                self.ignored.push(format!("_type '{t}' is not an R4 resource type"));
                                continue;
                            }
                        }
                    }
                    if !types.iter().any(|x| x == t) {
                        types.push(t.to_owned());
                    }
                }
            }
            "_typeFilter" => {
                for filter in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    check_type_filter(registry, filter)?;
                    self.type_filters.push(filter.to_owned());
                }
            }
            "_elements" => {
                let elements = self.elements.get_or_insert_with(Vec::new);
                elements.extend(value.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned));
            }
            "patient" => {
                return Err(BulkError::BadRequest("'patient' is given in a POST kick-off's Parameters".into()));
            }
            "includeAssociatedData" => {
                for code in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    match (Associated::from_code(code), handling) {
                        // Every Provenance of a resource includes its latest one.
                        (Some(wanted), _) => self.associated = self.associated.max(Some(wanted)),
                        (None, Handling::Strict) => {
                            return Err(BulkError::BadRequest(format!(
                                "includeAssociatedData '{code}' is not supported (LatestProvenanceResources and \
                                 RelevantProvenanceResources are; send Prefer: handling=lenient to have it ignored)"
                            )))
                        }
                        (None, Handling::Lenient) => self
                            .ignored
                            .push(format!("includeAssociatedData '{code}' is not supported; it was ignored")),
                    }
                }
            }
            _ => {
                let what = if UNSUPPORTED.contains(&name) { "is not supported" } else { "is not an export parameter" };
                match handling {
                    Handling::Strict => {
                        return Err(BulkError::BadRequest(format!(
                            "'{name}' {what} (send Prefer: handling=lenient to have it ignored)"
                        )))
                    }
                    Handling::Lenient => self.ignored.push(format!("'{name}' {what}; it was ignored")),
                }
            }
        }
        Ok(())
    }
}

/// The type and the search of one `_typeFilter` entry, checked as a search of that type.
pub fn parse_type_filter(
    registry: &fhir::Registry,
    filter: &str,
) -> Result<(String, fhir::search::SearchRequest), BulkError> {
    let (resource_type, query) = filter
        .split_once('?')
        .ok_or_else(|| BulkError::BadRequest(format!("_typeFilter '{filter}' is not of the form Type?search")))?;
    if !registry.is_resource_type(resource_type) {
        return Err(BulkError::BadRequest(format!("_typeFilter '{filter}' names no R4 resource type")));
    }
    let pairs: Vec<(String, String)> =
        form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let search = fhir::search::parse(registry, resource_type, &pairs, Handling::Strict)
        .map_err(|e| BulkError::BadRequest(format!("_typeFilter '{filter}': {e}")))?;
    let shaped = !search.includes.is_empty()
        || !search.revincludes.is_empty()
        || !search.sort.is_empty()
        || search.elements.is_some()
        || search.summary.is_some()
        || search.cursor.is_some();
    if shaped || search.terms.is_empty() {
        return Err(BulkError::BadRequest(format!(
            "_typeFilter '{filter}' must be search terms only (no _include, _sort, _elements, _summary)"
        )));
    }
    Ok((resource_type.to_owned(), search))
}

fn check_type_filter(registry: &fhir::Registry, filter: &str) -> Result<(), BulkError> {
    parse_type_filter(registry, filter).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_spec_parameters_are_read_and_checked() {
        let registry = fhir::Registry::r4();
        let r = ExportRequest::from_pairs(
            registry,
            &Level::System,
            &pairs(&[
                ("_outputFormat", "ndjson"),
                ("_since", "2024-01-02T03:04:05Z"),
                ("_type", "Patient,Observation"),
                ("_typeFilter", "Observation?category=laboratory"),
                ("_elements", "id,Observation.code"),
            ]),
            Handling::Strict,
        )
        .unwrap();
        assert_eq!(r.since_ms, Some(1_704_164_645_000));
        assert_eq!(r.types, Some(vec!["Patient".to_string(), "Observation".to_string()]));
        assert_eq!(r.type_filters, vec!["Observation?category=laboratory"]);
        assert_eq!(r.elements, Some(vec!["id".to_string(), "Observation.code".to_string()]));
    }

    #[test]
    fn associated_data_takes_the_provenance_codes() {
        let registry = fhir::Registry::r4();
        let read = |value: &str, handling| {
            ExportRequest::from_pairs(registry, &Level::System, &pairs(&[("includeAssociatedData", value)]), handling)
        };
        assert_eq!(
            read("LatestProvenanceResources", Handling::Strict).unwrap().associated,
            Some(Associated::LatestProvenanceResources)
        );
        let both = read("LatestProvenanceResources,RelevantProvenanceResources", Handling::Strict).unwrap();
        assert_eq!(both.associated, Some(Associated::RelevantProvenanceResources));
        assert!(matches!(read("_customThing", Handling::Strict), Err(BulkError::BadRequest(_))));
        let lenient = read("_customThing,LatestProvenanceResources", Handling::Lenient).unwrap();
        assert_eq!(lenient.associated, Some(Associated::LatestProvenanceResources));
        assert_eq!(lenient.ignored.len(), 1);
    }

    #[test]
    fn unsupported_parameters_are_refused_unless_lenient() {
        let registry = fhir::Registry::r4();
        let p = pairs(&[("organizeOutputBy", "Patient")]);
        assert!(matches!(
            ExportRequest::from_pairs(registry, &Level::Patient, &p, Handling::Strict),
            Err(BulkError::BadRequest(_))
        ));
        let lenient = ExportRequest::from_pairs(registry, &Level::Patient, &p, Handling::Lenient).unwrap();
        assert_eq!(lenient.ignored.len(), 1);
        for bad in [("_outputFormat", "text/csv"), ("_since", "yesterday"), ("_typeFilter", "Observation?_sort=date")] {
            assert!(ExportRequest::from_pairs(registry, &Level::System, &pairs(&[bad]), Handling::Lenient).is_err());
        }
    }

    #[test]
    fn prefer_headers() {
        assert!(respond_async(Some("respond-async")));
        assert!(respond_async(Some("handling=lenient, respond-async")));
        assert!(!respond_async(None));
        assert_eq!(handling(Some("respond-async, handling=lenient")), Handling::Lenient);
        assert_eq!(handling(Some("respond-async")), Handling::Strict);
    }
}
