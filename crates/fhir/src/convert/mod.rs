//! FHIR DSTU2 (1.0.2) and STU3 (3.0.x) to R4, as pure functions over JSON: Link, `portico
//! convert` and `portico import --from` share this one implementation.
//!
//! A resource goes through four steps:
//! 1. the type's own rules ([`dstu2`], [`stu3`]): renamed and moved elements, codes that
//!    changed, `code` → `CodeableConcept` and the like, resource types that were renamed
//!    (`MedicationOrder` → `MedicationRequest`);
//! 2. references to renamed types and code-system URLs that moved ([`systems`]) are rewritten;
//! 3. the result is fitted to the R4 definitions ([`fit`]): a single value where R4 has an array
//!    becomes a one-item array, a one-item array where R4 has a single value becomes that value,
//!    empty values are dropped, and **whatever has no R4 home** — an unknown element, a value of
//!    another type, a code R4 does not list — is kept in the standard cross-version extension
//!    (`http://hl7.org/fhir/{1.0|3.0}/StructureDefinition/extension-{Resource}.{element}`);
//! 4. `meta.tag` says the source version.
//!
//! A conversion never invents data: a required R4 element with no source value stays missing, for
//! validation to report with the resource and the element. The few values derived from context
//! (a MedicationOrder is an order, so `intent` is `order`; a record export's one Patient is the
//! subject of the Goals that name none) are listed in [`Report::derived`].

mod dstu2;
mod fit;
mod ops;
mod stu3;
pub mod systems;
mod values;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

/// The code system of the `meta.tag` that says which version a resource was converted from.
pub const SOURCE_VERSION_SYSTEM: &str = "http://hl7.org/fhir/FHIR-version";

/// A FHIR version Portico converts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Version {
    /// DSTU2, 1.0.2
    Dstu2,
    /// STU3, 3.0.x
    Stu3,
}

impl Version {
    /// From a CapabilityStatement's `fhirVersion` or a name (`dstu2`, `stu3`); R4 and later are
    /// `None` (nothing to convert).
    pub fn parse(text: &str) -> Option<Version> {
        let t = text.trim().to_ascii_lowercase();
        if t == "dstu2" || t.starts_with("1.0") || t == "1.0" {
            Some(Version::Dstu2)
        } else if t == "stu3" || t.starts_with("3.0") {
            Some(Version::Stu3)
        } else {
            None
        }
    }

    /// The version number used in cross-version extension URLs.
    pub fn short(self) -> &'static str {
        match self {
            Version::Dstu2 => "1.0",
            Version::Stu3 => "3.0",
        }
    }

    /// The `meta.tag` code.
    pub fn code(self) -> &'static str {
        match self {
            Version::Dstu2 => "1.0.2",
            Version::Stu3 => "3.0.2",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Version::Dstu2 => "DSTU2",
            Version::Stu3 => "STU3",
        }
    }

    /// The URL of the cross-version extension for `path` (`Resource.element.child`).
    pub fn extension_url(self, path: &str) -> String {
        format!("http://hl7.org/fhir/{}/StructureDefinition/extension-{path}", self.short())
    }
}

/// What a conversion did, for the summary `portico convert` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Resources converted, by source type.
    pub resources: BTreeMap<String, usize>,
    /// Elements kept in cross-version extensions, by source path, and why.
    pub kept_in_extensions: BTreeMap<String, usize>,
    /// Values derived from context rather than copied (see the module documentation).
    pub derived: BTreeMap<String, usize>,
    /// Resource types renamed (`MedicationOrder → MedicationRequest`).
    pub renamed: BTreeMap<String, usize>,
    /// Empty values dropped (FHIR JSON has no empty strings, objects or arrays).
    pub dropped_empty: usize,
    /// Resources that could not be converted at all (not a JSON object, no resourceType).
    pub refused: Vec<String>,
}

impl Report {
    pub(crate) fn kept(&mut self, path: &str) {
        *self.kept_in_extensions.entry(path.to_owned()).or_insert(0) += 1;
    }
    pub(crate) fn derived(&mut self, what: &str) {
        *self.derived.entry(what.to_owned()).or_insert(0) += 1;
    }
    /// Add another report's counts.
    pub fn merge(&mut self, other: Report) {
        for (k, v) in other.resources {
            *self.resources.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.kept_in_extensions {
            *self.kept_in_extensions.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.derived {
            *self.derived.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.renamed {
            *self.renamed.entry(k).or_insert(0) += v;
        }
        self.dropped_empty += other.dropped_empty;
        self.refused.extend(other.refused);
    }
}

/// Why a value could not be converted at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error("not a FHIR resource (a JSON object with a resourceType)")]
    NotAResource,
}

/// The R4 name of a source resource type.
pub fn r4_type(version: Version, source: &str) -> &str {
    match (version, source) {
        (Version::Dstu2, "MedicationOrder") => "MedicationRequest",
        (Version::Dstu2, "DiagnosticOrder")
        | (Version::Dstu2, "ProcedureRequest")
        | (Version::Stu3, "ProcedureRequest") => "ServiceRequest",
        (_, "ReferralRequest") => "ServiceRequest",
        (Version::Dstu2, "Conformance") => "CapabilityStatement",
        (Version::Stu3, "DeviceComponent") => "DeviceDefinition",
        (Version::Stu3, "EligibilityRequest") => "CoverageEligibilityRequest",
        (Version::Stu3, "EligibilityResponse") => "CoverageEligibilityResponse",
        _ => source,
    }
}

/// Convert one resource to R4.
pub fn convert_resource(version: Version, resource: Value, report: &mut Report) -> Result<Value, ConvertError> {
    let Value::Object(mut map) = resource else { return Err(ConvertError::NotAResource) };
    let source_type = match map.get("resourceType").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => return Err(ConvertError::NotAResource),
    };
    let target = r4_type(version, &source_type).to_owned();
    *report.resources.entry(source_type.clone()).or_insert(0) += 1;
    if target != source_type {
        *report.renamed.entry(format!("{source_type} → {target}")).or_insert(0) += 1;
    }
    // Contained resources are resources too.
    if let Some(Value::Array(items)) = map.remove("contained") {
        let mut converted = Vec::with_capacity(items.len());
        for item in items {
            match convert_resource(version, item, report) {
                Ok(c) => converted.push(c),
                Err(_) => report.kept(&format!("{source_type}.contained")),
            }
        }
        map.insert("contained".into(), Value::Array(converted));
    }
    {
        let mut ctx = ops::Ctx { version, source_type: &source_type, report };
        match version {
            Version::Dstu2 => dstu2::convert(&mut map, &mut ctx),
            Version::Stu3 => stu3::convert(&mut map, &mut ctx),
        }
        restrict_codes(&mut map, &target, &mut ctx);
        map.insert("resourceType".into(), Value::String(target.clone()));
        let mut value = Value::Object(map);
        systems::rewrite(&mut value, version);
        let Value::Object(m) = value else { return Err(ConvertError::NotAResource) };
        map = m;
        fit::fit_resource(&mut map, &target, &mut ctx);
    }
    tag_source_version(&mut map, version);
    Ok(Value::Object(map))
}

/// R4's codes for the coded elements whose schema lists none: a source code outside them is kept
/// in its extension, never passed on as if R4 knew it.
const R4_CODES: &[(&str, &str, &[&str])] = &[
    ("Immunization", "status", &["completed", "entered-in-error", "not-done"]),
    (
        "Procedure",
        "status",
        &["preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error", "unknown"],
    ),
    (
        "Encounter",
        "status",
        &[
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
    ),
    (
        "Observation",
        "status",
        &["registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"],
    ),
    (
        "DiagnosticReport",
        "status",
        &[
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        ],
    ),
    (
        "MedicationRequest",
        "status",
        &["active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"],
    ),
    (
        "MedicationRequest",
        "intent",
        &["proposal", "plan", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"],
    ),
    (
        "MedicationStatement",
        "status",
        &["active", "completed", "entered-in-error", "intended", "stopped", "on-hold", "unknown", "not-taken"],
    ),
    (
        "MedicationDispense",
        "status",
        &[
            "preparation",
            "in-progress",
            "cancelled",
            "on-hold",
            "completed",
            "entered-in-error",
            "stopped",
            "declined",
            "unknown",
        ],
    ),
    ("CarePlan", "status", &["draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"]),
    ("CarePlan", "intent", &["proposal", "plan", "order", "option"]),
    (
        "Goal",
        "lifecycleStatus",
        &[
            "proposed",
            "planned",
            "accepted",
            "active",
            "on-hold",
            "completed",
            "cancelled",
            "entered-in-error",
            "rejected",
        ],
    ),
    ("AllergyIntolerance", "type", &["allergy", "intolerance"]),
    ("AllergyIntolerance", "criticality", &["low", "high", "unable-to-assess"]),
    ("DocumentReference", "status", &["current", "superseded", "entered-in-error"]),
    ("DocumentReference", "docStatus", &["preliminary", "final", "amended", "entered-in-error"]),
    ("FamilyMemberHistory", "status", &["partial", "completed", "entered-in-error", "health-unknown"]),
    ("Coverage", "status", &["active", "cancelled", "draft", "entered-in-error"]),
    ("Claim", "status", &["active", "cancelled", "draft", "entered-in-error"]),
    ("Claim", "use", &["claim", "preauthorization", "predetermination"]),
    ("ExplanationOfBenefit", "status", &["active", "cancelled", "draft", "entered-in-error"]),
    ("ExplanationOfBenefit", "use", &["claim", "preauthorization", "predetermination"]),
    ("ExplanationOfBenefit", "outcome", &["queued", "complete", "error", "partial"]),
    ("CareTeam", "status", &["proposed", "active", "suspended", "inactive", "entered-in-error"]),
];

const ACTIVITY_STATUS: &[&str] = &[
    "not-started",
    "scheduled",
    "in-progress",
    "on-hold",
    "completed",
    "cancelled",
    "stopped",
    "unknown",
    "entered-in-error",
];

fn restrict_codes(map: &mut Map<String, Value>, r4_type: &str, ctx: &mut ops::Ctx) {
    let mut o = ops::obj(map);
    for (t, element, codes) in R4_CODES {
        if *t == r4_type {
            ops::restrict(&mut o, ctx, element, codes);
        }
    }
    if r4_type == "CarePlan" {
        let version = ctx.version;
        let mut kept = 0;
        o.each("activity", |a| {
            if let Some(Value::Object(detail)) = a.get_mut("detail") {
                let unknown =
                    detail.get("status").and_then(Value::as_str).is_some_and(|s| !ACTIVITY_STATUS.contains(&s));
                if unknown {
                    if let Some(v) = detail.remove("status") {
                        let url = version.extension_url("CarePlan.activity.detail.status");
                        let list = detail.entry("extension").or_insert_with(|| Value::Array(Vec::new()));
                        if let Some(l) = list.as_array_mut() {
                            l.extend(values::extensions_for(&url, v));
                        }
                        kept += 1;
                    }
                }
            }
        });
        for _ in 0..kept {
            ctx.report.kept("CarePlan.activity.detail.status");
        }
    }
}

fn tag_source_version(map: &mut Map<String, Value>, version: Version) {
    let source_type = map.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_owned();
    let meta = map.entry("meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        // Profiles of the source version do not apply to the R4 resource: kept, not claimed.
        if let Some(profiles) = meta.remove("profile") {
            let url = version.extension_url(&format!("{source_type}.meta.profile"));
            let list = meta.entry("extension").or_insert_with(|| json!([]));
            if let Some(l) = list.as_array_mut() {
                for p in profiles.as_array().cloned().unwrap_or_default() {
                    l.push(json!({"url": url, "valueUri": p}));
                }
            }
        }
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Some(tags) = tags.as_array_mut() {
            tags.retain(|t| t.get("system").and_then(Value::as_str) != Some(SOURCE_VERSION_SYSTEM));
            tags.push(json!({"system": SOURCE_VERSION_SYSTEM, "code": version.code(),
                "display": format!("converted from FHIR {}", version.name())}));
        }
    }
}

/// Convert a Bundle (of any type) and every resource in it. Entries keep their `fullUrl`s;
/// `request.url`s naming renamed types are rewritten; a record export (one Patient) gives that
/// Patient as subject to the resources that require one and name none.
pub fn convert_bundle(version: Version, bundle: Value, report: &mut Report) -> Result<Value, ConvertError> {
    let Value::Object(mut map) = bundle else { return Err(ConvertError::NotAResource) };
    if map.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return convert_resource(version, Value::Object(map), report);
    }
    let entries = match map.remove("entry") {
        Some(Value::Array(e)) => e,
        _ => Vec::new(),
    };
    let patient_ref = single_patient_reference(&entries);
    let mut out = Vec::with_capacity(entries.len());
    for mut entry in entries {
        let Some(resource) = entry.get_mut("resource").map(Value::take) else {
            out.push(entry);
            continue;
        };
        match convert_resource(version, resource, report) {
            Ok(mut r) => {
                if let Some(p) = &patient_ref {
                    ops::give_subject(&mut r, p, version, report);
                }
                if let Some(url) = entry.pointer_mut("/request/url") {
                    if let Some(u) = url.as_str() {
                        *url = Value::String(systems::rename_reference(u, version));
                    }
                }
                entry["resource"] = r;
                out.push(entry);
            }
            Err(_) => report.refused.push(format!("a Bundle entry: {}", ConvertError::NotAResource)),
        }
    }
    map.insert("entry".into(), Value::Array(out));
    let mut value = Value::Object(map);
    // The Bundle's own elements (type codes, links) are the same in R4 but for a few fields.
    if let Some(obj) = value.as_object_mut() {
        let mut ctx = ops::Ctx { version, source_type: "Bundle", report };
        fit::fit_resource(obj, "Bundle", &mut ctx);
    }
    Ok(value)
}

/// The reference to a Bundle's one Patient (its fullUrl, else Patient/id), when it has exactly one.
fn single_patient_reference(entries: &[Value]) -> Option<String> {
    let patients: Vec<&Value> = entries
        .iter()
        .filter(|e| e.pointer("/resource/resourceType").and_then(Value::as_str) == Some("Patient"))
        .collect();
    let [only] = patients.as_slice() else { return None };
    only.get("fullUrl")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| only.pointer("/resource/id").and_then(Value::as_str).map(|id| format!("Patient/{id}")))
}

/// Convert any FHIR JSON document: a Bundle or a single resource.
pub fn convert(version: Version, value: Value, report: &mut Report) -> Result<Value, ConvertError> {
    if value.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        convert_bundle(version, value, report)
    } else {
        convert_resource(version, value, report)
    }
}

#[cfg(test)]
mod tests;
