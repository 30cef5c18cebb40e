//! Turning a resource into the rows of the typed search index tables.
//!
//! Contract (used by the `store` crate):
//! - `extract(registry, resource)` evaluates every supported search parameter of the resource's
//!   type (see `Registry::params_for`) and returns one `IndexEntry` per value found.
//! - `Extracted::compartments` lists the ids of the Patients whose compartment contains the
//!   resource, following the R4 Patient CompartmentDefinition (a Patient is in its own compartment).
//! - `_id` and `_lastUpdated` are NOT emitted: the store keeps them as columns.

use serde_json::Value;

use crate::datetime::parse_range;
use crate::fhirpath::{self, field, Item};
use crate::normalize::normalize_string;
use crate::registry::{ParamType, Registry, SearchParamDef};

/// One typed value of one search parameter of one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    /// The search parameter code, e.g. `code`, `patient`, `_tag`.
    pub param: String,
    pub value: IndexValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// `normalized` is `normalize::normalize_string(exact)` (lower case, no diacritics).
    String {
        normalized: String,
        exact: String,
    },
    /// Coding / CodeableConcept / Identifier / ContactPoint / code / boolean.
    /// `text` carries the normalized display/text for the `:text` modifier.
    Token {
        system: Option<String>,
        code: Option<String>,
        text: Option<String>,
    },
    /// `Type/id` relative references become type + id; absolute URLs and canonicals go in `url`.
    Reference {
        target_type: Option<String>,
        target_id: Option<String>,
        url: Option<String>,
    },
    /// Milliseconds since the Unix epoch (UTC). `end` is exclusive; open ends use i64::MIN/MAX.
    Date {
        start: i64,
        end: i64,
    },
    Number {
        value: f64,
    },
    Quantity {
        value: f64,
        system: Option<String>,
        code: Option<String>,
        unit: Option<String>,
    },
    Uri {
        value: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Extracted {
    pub entries: Vec<IndexEntry>,
    /// Patient ids whose compartment this resource belongs to (deduplicated, sorted).
    pub compartments: Vec<String>,
}

/// Parameters the index does not store: `_id`/`_lastUpdated` are columns of the resource table;
/// `_text`/`_content`/`_query` have no expression (full-text and named queries).
const NOT_INDEXED: [&str; 5] = ["_id", "_lastUpdated", "_text", "_content", "_query"];

/// Extract index rows and compartment membership. Never fails on odd-but-valid content: values
/// it cannot interpret are skipped.
pub fn extract(registry: &crate::Registry, resource: &Value) -> Extracted {
    let Some(resource_type) = field(resource, "resourceType").and_then(Value::as_str) else {
        return Extracted::default();
    };
    let mut entries = Vec::new();
    let mut items = Vec::new();
    for (def, expr) in registry.compiled_params(resource_type) {
        if matches!(def.kind, ParamType::Composite | ParamType::Special) || NOT_INDEXED.contains(&def.code.as_str()) {
            continue;
        }
        let first = entries.len();
        let mut emit = |value: IndexValue| {
            // Values repeat (e.g. the same code in two codings); keep each once per parameter.
            if !entries[first..].iter().any(|e: &IndexEntry| e.value == value) {
                entries.push(IndexEntry { param: def.code.clone(), value });
            }
        };
        items.clear();
        fhirpath::evaluate_into(expr, resource, &mut items);
        for item in &items {
            convert(registry, def, item, &mut emit);
        }
    }
    let compartments = patient_compartments(registry, resource_type, resource, &entries);
    Extracted { entries, compartments }
}

fn patient_compartments(
    registry: &Registry,
    resource_type: &str,
    resource: &Value,
    entries: &[IndexEntry],
) -> Vec<String> {
    let params = registry.patient_compartment_params(resource_type);
    let mut ids: Vec<String> = entries
        .iter()
        .filter(|entry| params.contains(&entry.param))
        .filter_map(|entry| match &entry.value {
            IndexValue::Reference { target_type: Some(t), target_id: Some(id), .. } if t == "Patient" => {
                Some(id.clone())
            }
            _ => None,
        })
        .collect();
    if resource_type == "Patient" {
        ids.extend(field(resource, "id").and_then(Value::as_str).map(str::to_owned));
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Split a literal reference into `(type, id)`: `Patient/1`, `Patient/1/_history/2`,
/// `https://server/fhir/Patient/1`. `None` for anything else (`#contained`, `urn:uuid:...`,
/// conditional references, malformed ids). The type is only checked for shape here.
pub fn parse_reference(reference: &str) -> Option<(&str, &str)> {
    let absolute = reference.starts_with("http://") || reference.starts_with("https://");
    let mut segments = reference.rsplit('/');
    let (mut id, mut resource_type) = (segments.next()?, segments.next()?);
    if resource_type == "_history" {
        (id, resource_type) = (segments.next()?, segments.next()?);
    }
    if !absolute && segments.next().is_some() {
        return None;
    }
    let type_ok = resource_type.starts_with(|c: char| c.is_ascii_uppercase())
        && resource_type.bytes().all(|b| b.is_ascii_alphanumeric());
    let id_ok = (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    (type_ok && id_ok).then_some((resource_type, id))
}

/// Turn one FHIRPath result into index values according to the parameter type and node shape.
fn convert(registry: &Registry, def: &SearchParamDef, item: &Item<'_>, emit: &mut impl FnMut(IndexValue)) {
    let node = item.node;
    match def.kind {
        ParamType::String => string_values(node, emit),
        ParamType::Token => token_values(node, emit),
        ParamType::Reference => reference_values(registry, node, emit),
        ParamType::Date => date_values(node, emit),
        ParamType::Number => {
            if let Some(value) = node.as_f64() {
                emit(IndexValue::Number { value });
            }
        }
        ParamType::Quantity => {
            if item.type_name != Some("SampledData") {
                quantity_values(node, emit);
            }
        }
        ParamType::Uri => {
            if let Some(value) = node.as_str() {
                emit(IndexValue::Uri { value: value.to_owned() });
            }
        }
        ParamType::Composite | ParamType::Special => {}
    }
}

fn string_value(exact: &str) -> IndexValue {
    IndexValue::String { normalized: normalize_string(exact), exact: exact.to_owned() }
}

/// Plain strings, and the searchable parts of HumanName and Address (the key lists of both types
/// do not overlap in a harmful way, so one list serves both without detecting the type).
fn string_values(node: &Value, emit: &mut impl FnMut(IndexValue)) {
    const NAME_AND_ADDRESS_PARTS: [&str; 11] =
        ["family", "given", "prefix", "suffix", "text", "line", "city", "district", "state", "postalCode", "country"];
    match node {
        Value::String(s) => emit(string_value(s)),
        Value::Object(_) => {
            for part in NAME_AND_ADDRESS_PARTS {
                match field(node, part) {
                    Some(Value::String(s)) => emit(string_value(s)),
                    Some(Value::Array(items)) => {
                        items.iter().filter_map(Value::as_str).for_each(|s| emit(string_value(s)))
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn has(node: &Value, key: &str) -> bool {
    field(node, key).is_some()
}

fn str_field(node: &Value, key: &str) -> Option<String> {
    field(node, key).and_then(Value::as_str).map(str::to_owned)
}

fn normalized_field(node: &Value, key: &str) -> Option<String> {
    field(node, key).and_then(Value::as_str).map(normalize_string)
}

fn token(system: Option<String>, code: Option<String>, text: Option<String>) -> IndexValue {
    IndexValue::Token { system, code, text }
}

fn token_values(node: &Value, emit: &mut impl FnMut(IndexValue)) {
    match node {
        Value::String(code) => return emit(token(None, Some(code.clone()), None)),
        Value::Bool(b) => return emit(token(None, Some(b.to_string()), None)),
        Value::Number(n) => return emit(token(None, Some(n.to_string()), None)),
        _ => {}
    }
    if has(node, "value") {
        // Identifier, or ContactPoint: its `system` (`phone`, `email`...) says what kind of
        // contact the value is, not a code system, so it is not the token's system.
        const CONTACT_SYSTEMS: [&str; 7] = ["phone", "fax", "email", "pager", "url", "sms", "other"];
        let system = str_field(node, "system").filter(|s| !CONTACT_SYSTEMS.contains(&s.as_str()));
        let text = field(node, "type").and_then(|t| normalized_field(t, "text"));
        emit(token(system, str_field(node, "value"), text));
    } else if has(node, "coding") || has(node, "text") {
        // CodeableConcept
        for coding in field(node, "coding").and_then(Value::as_array).into_iter().flatten() {
            emit(coding_token(coding));
        }
        if let Some(text) = normalized_field(node, "text") {
            emit(token(None, None, Some(text)));
        }
    } else if has(node, "code") || has(node, "system") {
        emit(coding_token(node));
    }
}

fn coding_token(coding: &Value) -> IndexValue {
    token(str_field(coding, "system"), str_field(coding, "code"), normalized_field(coding, "display"))
}

fn reference_values(registry: &Registry, node: &Value, emit: &mut impl FnMut(IndexValue)) {
    // A plain string is a canonical (or uri) pointing at a resource by URL.
    let reference = match node {
        Value::String(canonical) => {
            return emit(IndexValue::Reference { target_type: None, target_id: None, url: Some(canonical.clone()) })
        }
        node => field(node, "reference").and_then(Value::as_str),
    };
    let Some(reference) = reference else { return };
    let url = Some(reference.to_owned());
    let value = match parse_reference(reference) {
        Some((resource_type, id)) if registry.is_resource_type(resource_type) => IndexValue::Reference {
            target_type: Some(resource_type.to_owned()),
            target_id: Some(id.to_owned()),
            url: url.filter(|_| reference.contains("://")),
        },
        _ => IndexValue::Reference { target_type: None, target_id: None, url },
    };
    emit(value);
}

fn date_values(node: &Value, emit: &mut impl FnMut(IndexValue)) {
    match node {
        Value::String(s) => emit_date(s, emit),
        Value::Object(_) if has(node, "start") || has(node, "end") => {
            // Period: an absent bound is open; a bound that does not parse makes it unusable.
            let bound = |key: &str| match field(node, key).and_then(Value::as_str) {
                None => Some(None),
                Some(s) => parse_range(s).map(Some),
            };
            if let (Some(start), Some(end)) = (bound("start"), bound("end")) {
                emit(IndexValue::Date {
                    start: start.map_or(i64::MIN, |r| r.start),
                    end: end.map_or(i64::MAX, |r| r.end),
                });
            }
        }
        Value::Object(_) => {
            // Timing: each event time.
            for event in field(node, "event").and_then(Value::as_array).into_iter().flatten() {
                if let Some(s) = event.as_str() {
                    emit_date(s, emit);
                }
            }
        }
        _ => {}
    }
}

fn emit_date(s: &str, emit: &mut impl FnMut(IndexValue)) {
    if let Some(range) = parse_range(s) {
        emit(IndexValue::Date { start: range.start, end: range.end });
    }
}

fn quantity_values(node: &Value, emit: &mut impl FnMut(IndexValue)) {
    if has(node, "low") || has(node, "high") {
        // Range: both ends, as separate values.
        for end in ["low", "high"].iter().filter_map(|k| field(node, k)) {
            quantity_values(end, emit);
        }
        return;
    }
    let Some(value) = field(node, "value").and_then(Value::as_f64) else {
        return;
    };
    let value = if let Some(currency) = str_field(node, "currency") {
        IndexValue::Quantity {
            value,
            system: Some("urn:iso:std:iso:4217".to_owned()),
            code: Some(currency),
            unit: None,
        }
    } else {
        IndexValue::Quantity {
            value,
            system: str_field(node, "system"),
            code: str_field(node, "code"),
            unit: str_field(node, "unit"),
        }
    };
    emit(value);
}
