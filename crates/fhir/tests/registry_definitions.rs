//! The embedded R4 definitions load and give the expected parameters and compartments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fhir::{ParamType, Registry};

/// The resource types Portico supports well (Synthea + US Core-ish content).
pub const SUPPORTED: [&str; 25] = [
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Endpoint",
    "Encounter",
    "Observation",
    "Condition",
    "Procedure",
    "MedicationRequest",
    "Immunization",
    "AllergyIntolerance",
    "DiagnosticReport",
    "DocumentReference",
    "CarePlan",
    "CareTeam",
    "Goal",
    "Coverage",
    "Claim",
    "ExplanationOfBenefit",
    "Provenance",
    "Task",
    "Consent",
    "Subscription",
];

#[test]
fn embedded_definitions_parse() {
    let registry = Registry::r4();
    let types = registry.resource_types();
    // R4 has 146 concrete resource types (the 145 of the CompartmentDefinition + Parameters).
    assert_eq!(types.len(), 146, "{types:?}");
    assert!(types.windows(2).all(|w| w[0] < w[1]), "sorted");
    for name in ["Patient", "Observation", "Bundle", "Parameters", "Binary", "OperationOutcome"] {
        assert!(registry.is_resource_type(name), "{name}");
    }
    for name in ["Resource", "DomainResource", "Project", "User", "patient", "Foo", ""] {
        assert!(!registry.is_resource_type(name), "{name}");
    }
    let total: usize = types.iter().map(|t| registry.params_for(t).len()).sum();
    assert!(total > 1_300, "{total} parameters");
    assert!(registry.expression_errors().is_empty(), "{:#?}", registry.expression_errors());
}

#[test]
fn every_expression_compiles() {
    let registry = Registry::r4();
    for resource_type in registry.resource_types() {
        let with_expression = registry.params_for(resource_type).into_iter().filter(|d| !d.expression.is_empty());
        let compiled = registry.compiled_params(resource_type).count();
        assert_eq!(with_expression.count(), compiled, "{resource_type}");
    }
}

#[test]
fn observation_parameters() {
    let registry = Registry::r4();
    for code in ["code", "patient", "subject", "category", "date", "value-quantity", "_tag", "_id", "_lastUpdated"] {
        assert!(registry.param("Observation", code).is_some(), "Observation.{code}");
    }
    let patient = registry.param("Observation", "patient").unwrap();
    assert_eq!(patient.expression, "Observation.subject.where(resolve() is Patient)");
    assert_eq!(patient.kind, ParamType::Reference);
    assert_eq!(patient.resource_type, "Observation");
    assert!(patient.targets.iter().any(|t| t == "Patient"));

    let value_quantity = registry.param("Observation", "value-quantity").unwrap();
    assert_eq!(value_quantity.kind, ParamType::Quantity);
    assert_eq!(value_quantity.expression, "(Observation.value as Quantity) | (Observation.value as SampledData)");

    assert_eq!(registry.param("Observation", "date").unwrap().expression, "Observation.effective");
    assert_eq!(registry.param("Observation", "code-value-quantity").unwrap().kind, ParamType::Composite);

    let tag = registry.param("Observation", "_tag").unwrap();
    assert_eq!((tag.resource_type.as_str(), tag.expression.as_str()), ("Resource", "Resource.meta.tag"));
    assert!(registry.param("Observation", "birthdate").is_none());
    assert!(registry.param("NotAType", "_id").is_none());
    assert!(registry.param("Resource", "_id").is_some());
}

#[test]
fn shared_parameters_are_split_per_base() {
    let registry = Registry::r4();
    let expression = |t: &str, code: &str| registry.param(t, code).map(|d| d.expression.clone());
    assert_eq!(expression("CarePlan", "patient").as_deref(), Some("CarePlan.subject.where(resolve() is Patient)"));
    assert_eq!(expression("AllergyIntolerance", "patient").as_deref(), Some("AllergyIntolerance.patient"));
    assert_eq!(
        expression("MedicationRequest", "code").as_deref(),
        Some("(MedicationRequest.medication as CodeableConcept)")
    );
    assert_eq!(
        expression("Condition", "abatement-age").as_deref(),
        Some("Condition.abatement.as(Age) | Condition.abatement.as(Range)")
    );
    assert_eq!(expression("Patient", "email").as_deref(), Some("Patient.telecom.where(system='email')"));
    assert_eq!(expression("Practitioner", "family").as_deref(), Some("Practitioner.name.family"));
    assert_eq!(expression("Organization", "name").as_deref(), Some("Organization.name | Organization.alias"));
}

#[test]
fn supported_types_have_their_parameters() {
    let registry = Registry::r4();
    let expected: [(&str, &[&str]); 25] = [
        ("Patient", &["name", "family", "given", "birthdate", "gender", "identifier", "address-city", "deceased"]),
        ("Practitioner", &["name", "identifier", "family"]),
        ("PractitionerRole", &["practitioner", "organization", "role", "specialty"]),
        ("Organization", &["name", "identifier", "address", "partof"]),
        ("Location", &["name", "address", "organization", "near"]),
        ("Endpoint", &["name", "connection-type", "status"]),
        ("Encounter", &["date", "patient", "subject", "class", "type", "practitioner"]),
        ("Observation", &["code", "patient", "category", "date", "value-quantity", "value-concept"]),
        ("Condition", &["code", "patient", "onset-date", "clinical-status", "abatement-age"]),
        ("Procedure", &["code", "patient", "date", "performer"]),
        ("MedicationRequest", &["code", "patient", "medication", "authoredon", "status", "intent"]),
        ("Immunization", &["vaccine-code", "patient", "date", "status"]),
        ("AllergyIntolerance", &["code", "patient", "clinical-status", "criticality"]),
        ("DiagnosticReport", &["code", "patient", "date", "result", "category"]),
        ("DocumentReference", &["type", "patient", "date", "category", "location"]),
        ("CarePlan", &["patient", "category", "date", "activity-code"]),
        ("CareTeam", &["patient", "participant", "status", "date"]),
        ("Goal", &["patient", "lifecycle-status", "target-date", "start-date"]),
        ("Coverage", &["beneficiary", "patient", "payor", "type"]),
        ("Claim", &["patient", "provider", "created", "use"]),
        ("ExplanationOfBenefit", &["patient", "provider", "created", "coverage"]),
        ("Provenance", &["target", "patient", "recorded", "agent"]),
        ("Task", &["patient", "owner", "status", "code"]),
        ("Consent", &["patient", "status", "scope", "category"]),
        ("Subscription", &["status", "url", "criteria", "type"]),
    ];
    for (resource_type, codes) in expected {
        for code in codes.iter().chain(&["_id", "_lastUpdated", "_tag", "_profile", "_security", "_source"]) {
            assert!(registry.param(resource_type, code).is_some(), "{resource_type}.{code}");
        }
        let params = registry.params_for(resource_type);
        assert!(params.len() > codes.len(), "{resource_type}");
        for def in params {
            assert!(
                def.resource_type == resource_type || def.resource_type.ends_with("Resource"),
                "{resource_type}: {def:?}"
            );
            assert!(
                def.expression.is_empty()
                    || def.expression.trim_start_matches('(').starts_with(def.resource_type.as_str()),
                "{resource_type}: {def:?}"
            );
        }
    }
    assert_eq!(expected.map(|(t, _)| t), SUPPORTED);
}

#[test]
fn patient_compartment() {
    let registry = Registry::r4();
    assert_eq!(registry.patient_compartment_params("Observation"), ["subject", "performer"]);
    assert_eq!(registry.patient_compartment_params("Patient"), ["{def}", "link"]);
    assert_eq!(registry.patient_compartment_params("Encounter"), ["subject"]);
    assert!(registry.patient_compartment_params("Organization").is_empty());
    assert!(registry.patient_compartment_params("Nope").is_empty());
    let types = registry.patient_compartment_types();
    assert!(types.contains(&"Patient") && types.contains(&"Claim") && !types.contains(&"Practitioner"));
    assert!(types.windows(2).all(|w| w[0] < w[1]));
}
