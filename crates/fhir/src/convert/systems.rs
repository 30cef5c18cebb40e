//! URLs that changed between versions: code systems that moved to terminology.hl7.org in R4, and
//! references to resource types that were renamed.

use serde_json::Value;

use super::{r4_type, Version};

/// FHIR-defined code systems that R4 publishes at `http://terminology.hl7.org/CodeSystem/{name}`
/// (DSTU2 and STU3 had them at `http://hl7.org/fhir/{name}`).
const MOVED: &[&str] = &[
    "observation-category",
    "observation-statistics",
    "referencerange-meaning",
    "condition-clinical",
    "condition-ver-status",
    "condition-category",
    "condition-state",
    "allergyintolerance-clinical",
    "allergyintolerance-verification",
    "organization-type",
    "claim-type",
    "claim-exception",
    "claimcareteamrole",
    "claiminformationcategory",
    "processpriority",
    "payeetype",
    "adjudication",
    "adjudication-reason",
    "adjudication-error",
    "benefit-type",
    "benefit-network",
    "benefit-unit",
    "benefit-term",
    "ex-benefitcategory",
    "ex-diagnosistype",
    "ex-diagnosisrelatedgroup",
    "ex-onsettype",
    "ex-payee-resource-type",
    "ex-paymenttype",
    "ex-program-code",
    "ex-revenue-center",
    "ex-serviceproduct",
    "ex-udi",
    "ex-USCLS",
    "coverage-class",
    "coverage-selfpay",
    "policyholder-relationship",
    "subscriber-relationship",
    "diagnosis-role",
    "encounter-admit-source",
    "encounter-discharge-disposition",
    "encounter-special-arrangements",
    "encounter-type",
    "episodeofcare-type",
    "goal-category",
    "goal-priority",
    "goal-acceptance-status",
    "goal-relationship-type",
    "goal-achievement",
    "medication-admin-category",
    "medication-statement-category",
    "medicationrequest-category",
    "medicationrequest-status-reason",
    "medicationdispense-performer-function",
    "immunization-origin",
    "immunization-recommendation-status",
    "location-physical-type",
    "practitioner-role",
    "practitioner-specialty",
    "contactentity-type",
    "identifier-type",
    "dose-rate-type",
    "flag-category",
    "consentcategorycodes",
    "consent-action",
    "consent-scope",
    "document-relationship-type",
    "media-type",
    "diagnostic-service-sections",
    "service-category",
    "service-type",
    "special-values",
    "careplan-activity-category",
    "care-team-category",
    "participant-role",
    "reaction-event-certainty",
    "audit-event-type",
    "v2-tables",
];

/// The R4 URL of a code system, when it moved.
pub fn r4_system(system: &str) -> Option<String> {
    let rest = system.strip_prefix("http://hl7.org/fhir/")?;
    if let Some(table) = rest.strip_prefix("v2/") {
        return Some(format!("http://terminology.hl7.org/CodeSystem/v2-{table}"));
    }
    if let Some(name) = rest.strip_prefix("v3/") {
        return Some(format!("http://terminology.hl7.org/CodeSystem/v3-{name}"));
    }
    // Some exporters put a ValueSet's URL where its code system belongs.
    let name = rest.strip_prefix("ValueSet/").unwrap_or(rest);
    if name == "identifier-type" {
        // R4's identifier types are the v2 table 0203 codes.
        return Some("http://terminology.hl7.org/CodeSystem/v2-0203".into());
    }
    MOVED.contains(&name).then(|| format!("http://terminology.hl7.org/CodeSystem/{name}"))
}

/// A reference with renamed types renamed (`MedicationOrder/1` → `MedicationRequest/1`, also
/// inside absolute URLs).
pub fn rename_reference(reference: &str, version: Version) -> String {
    renamed_reference(reference, version).unwrap_or_else(|| reference.to_owned())
}

/// The renamed reference, or None when nothing in it is renamed (most references: nothing is
/// allocated for those).
fn renamed_reference(reference: &str, version: Version) -> Option<String> {
    if reference.starts_with("urn:") || reference.starts_with('#') {
        return None;
    }
    let segments: Vec<&str> = reference.split('/').collect();
    let n = segments.len();
    // …/Type/id or …/Type/id/_history/v, or just Type (a request URL).
    let type_at = if n >= 4 && segments[n - 2] == "_history" {
        n.checked_sub(4)
    } else if n >= 2 {
        n.checked_sub(2)
    } else {
        n.checked_sub(1)
    }?;
    let t = segments[type_at].split('?').next().unwrap_or_default();
    let renamed = r4_type(version, t);
    if renamed == t {
        return None;
    }
    let rest = &segments[type_at][t.len()..];
    let mut out = String::with_capacity(reference.len() + 8);
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        if i == type_at {
            out.push_str(renamed);
            out.push_str(rest);
        } else {
            out.push_str(segment);
        }
    }
    Some(out)
}

/// Rewrite, everywhere in a value, moved code-system URLs (`system` keys) and references to
/// renamed resource types (`reference` keys).
pub fn rewrite(value: &mut Value, version: Version) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), &*v) {
                    ("system", Value::String(s)) => {
                        if let Some(r4) = r4_system(s) {
                            *v = Value::String(r4);
                        }
                    }
                    ("reference", Value::String(r)) => {
                        if let Some(renamed) = renamed_reference(r, version) {
                            *v = Value::String(renamed);
                        }
                    }
                    _ => rewrite(v, version),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, version)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems_move_and_references_follow_renamed_types() {
        assert_eq!(
            r4_system("http://hl7.org/fhir/v2/0203").as_deref(),
            Some("http://terminology.hl7.org/CodeSystem/v2-0203")
        );
        assert_eq!(
            r4_system("http://hl7.org/fhir/v3/Race").as_deref(),
            Some("http://terminology.hl7.org/CodeSystem/v3-Race")
        );
        assert_eq!(
            r4_system("http://hl7.org/fhir/observation-category").as_deref(),
            Some("http://terminology.hl7.org/CodeSystem/observation-category")
        );
        assert_eq!(
            r4_system("http://hl7.org/fhir/ValueSet/organization-type").as_deref(),
            Some("http://terminology.hl7.org/CodeSystem/organization-type")
        );
        assert_eq!(r4_system("http://hl7.org/fhir/sid/cvx"), None);
        assert_eq!(r4_system("http://loinc.org"), None);
        assert_eq!(rename_reference("MedicationOrder/1", Version::Dstu2), "MedicationRequest/1");
        assert_eq!(
            rename_reference("https://x/fhir/MedicationOrder/1/_history/2", Version::Dstu2),
            "https://x/fhir/MedicationRequest/1/_history/2"
        );
        assert_eq!(rename_reference("MedicationOrder", Version::Dstu2), "MedicationRequest");
        assert_eq!(rename_reference("MedicationOrder?patient=1", Version::Dstu2), "MedicationRequest?patient=1");
        assert_eq!(rename_reference("urn:uuid:1234", Version::Dstu2), "urn:uuid:1234");
        assert_eq!(rename_reference("Patient/1", Version::Stu3), "Patient/1");
        assert_eq!(rename_reference("ReferralRequest/9", Version::Stu3), "ServiceRequest/9");
    }
}
