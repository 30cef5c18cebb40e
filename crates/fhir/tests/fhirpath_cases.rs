//! Data-driven FHIRPath cases in the style of the official FHIRPath test suite, limited to the
//! subset search parameters use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fhir::fhirpath::{evaluate, parse};
use serde_json::{json, Value};

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "example",
        "meta": {"tag": [{"system": "http://t", "code": "a"}, {"system": "http://t", "code": "b"}]},
        "extension": [
            {"url": "http://example.org/race", "valueString": "x"},
            {"url": "http://example.org/other", "valueBoolean": true}
        ],
        "active": true,
        "name": [
            {"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
            {"use": "usual", "given": ["Jim"]},
            {"use": "maiden", "family": "Windsor", "given": ["Peter", "James"]}
        ],
        "telecom": [
            {"system": "phone", "value": "(03) 5555 6473", "use": "work"},
            {"system": "email", "value": "p@example.org"}
        ],
        "gender": "male",
        "birthDate": "1974-12-25",
        "deceasedBoolean": false,
        "generalPractitioner": [
            {"reference": "Practitioner/1"},
            {"reference": "http://server/fhir/Organization/2/_history/3"}
        ],
        "link": [{"other": {"reference": "Patient/other"}, "type": "seealso"}]
    })
}

fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "o1",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}], "text": "Body Weight"},
        "subject": {"reference": "https://example.org/fhir/Patient/p1"},
        "performer": [{"reference": "Practitioner/d1"}, {"reference": "Patient/p1"}, {"reference": "#c1"}],
        "effectiveDateTime": "2016-03-28",
        "valueQuantity": {"value": 67.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
        "component": [
            {"code": {"text": "a"}, "valueString": "s"},
            {"code": {"text": "b"}, "valueCodeableConcept": {"text": "cc"}}
        ]
    })
}

fn condition() -> Value {
    json!({
        "resourceType": "Condition",
        "onsetAge": {"value": 52, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
        "abatementRange": {"low": {"value": 1}, "high": {"value": 2}},
        "subject": {"reference": "Group/g1"}
    })
}

fn bundle() -> Value {
    json!({
        "resourceType": "Bundle",
        "entry": [{"resource": {"resourceType": "Composition", "id": "c"}}, {"resource": {"resourceType": "Patient"}}]
    })
}

/// Builds the input resource of a case.
type Input = fn() -> Value;

/// (input, expression, expected results as a JSON array)
#[rustfmt::skip]
const CASES: &[(Input, &str, &str)] = &[
    // paths, flattening, type-name roots
    (patient, "Patient.name.given", r#"["Peter","James","Jim","Peter","James"]"#),
    (patient, "Patient.name.family", r#"["Chalmers","Windsor"]"#),
    (patient, "name.family", r#"["Chalmers","Windsor"]"#),
    (patient, "Patient.birthDate", r#"["1974-12-25"]"#),
    (patient, "Resource.meta.tag.code", r#"["a","b"]"#),
    (patient, "DomainResource.id", r#"["example"]"#),
    (patient, "Observation.id", "[]"),
    (patient, "Patient.nothing.here", "[]"),
    // indexing and first()
    (patient, "Patient.name[1].given", r#"["Jim"]"#),
    (patient, "Patient.name[5].given", "[]"),
    (patient, "Patient.name.first().family", r#"["Chalmers"]"#),
    (patient, "Patient.name.given.first()", r#"["Peter"]"#),
    (bundle, "Bundle.entry[0].resource.id", r#"["c"]"#),
    // union removes duplicates of the same node only
    (patient, "Patient.name.family | Patient.gender", r#"["Chalmers","Windsor","male"]"#),
    (patient, "Patient.gender | Patient.gender", r#"["male"]"#),
    // where / equality / boolean logic
    (patient, "Patient.telecom.where(system='email').value", r#"["p@example.org"]"#),
    (patient, "Patient.telecom.where(system='fax')", "[]"),
    (patient, "Patient.name.where(use='usual').given", r#"["Jim"]"#),
    (patient, "Patient.name.where(given = 'Jim').exists()", "[true]"),
    (patient, "Patient.name.where(family.exists() and use != 'official').family", r#"["Windsor"]"#),
    (patient, "Patient.name.where(use = 'usual' or use = 'maiden').given", r#"["Jim","Peter","James"]"#),
    (patient, "Patient.gender = 'male'", "[true]"),
    (patient, "Patient.gender != 'male'", "[false]"),
    (patient, "Patient.nothing = 'male'", "[]"),
    (patient, "Patient.active and Patient.nothing.exists()", "[false]"),
    (patient, "Patient.active or Patient.nothing", "[true]"),
    (patient, "Patient.nothing.empty()", "[true]"),
    (patient, "Patient.active.not()", "[false]"),
    (patient, "Patient.name.exists(family = 'Windsor')", "[true]"),
    // `=` compares whole collections
    (patient, "Patient.exists(name.family = 'Windsor')", "[false]"),
    (patient, "Patient.deceased.exists() and Patient.deceased != false", "[false]"),
    (observation, "Observation.valueQuantity.value = 67.50", "[true]"),
    // choice elements and type operators
    (observation, "Observation.value.unit", r#"["kg"]"#),
    (observation, "(Observation.value as Quantity).value", "[67.5]"),
    (observation, "Observation.value.as(Quantity).code", r#"["kg"]"#),
    (observation, "Observation.value.ofType(Quantity).unit", r#"["kg"]"#),
    (observation, "(Observation.value as string)", "[]"),
    (observation, "(Observation.value as CodeableConcept).text", "[]"),
    (observation, "Observation.value is Quantity", "[true]"),
    (observation, "Observation.value is FHIR.Period", "[false]"),
    (observation, "(Observation.component.value as CodeableConcept).text", r#"["cc"]"#),
    (observation, "(Observation.component.value as string)", r#"["s"]"#),
    (observation, "(Observation.effective as dateTime)", r#"["2016-03-28"]"#),
    (observation, "Observation.effective.as(Period)", "[]"),
    (observation, "(Observation.code as CodeableConcept).text", r#"["Body Weight"]"#),
    (observation, "(Observation.status as code)", "[]"),
    (condition, "Condition.onset.as(Age).value", "[52]"),
    (condition, "Condition.onset.as(Quantity).value", "[52]"),
    (condition, "Condition.abatement.as(Age) | Condition.abatement.as(Range)", r#"[{"low":{"value":1},"high":{"value":2}}]"#),
    (patient, "(Patient.deceased as dateTime)", "[]"),
    (patient, "(Patient.deceased as boolean)", "[false]"),
    // resolve() is T: relative, absolute, versioned, contained
    (observation, "Observation.subject.where(resolve() is Patient).reference", r#"["https://example.org/fhir/Patient/p1"]"#),
    (observation, "Observation.performer.where(resolve() is Patient).reference", r#"["Patient/p1"]"#),
    (observation, "Observation.performer.where(resolve() is Practitioner).reference", r#"["Practitioner/d1"]"#),
    (condition, "Condition.subject.where(resolve() is Patient)", "[]"),
    (patient, "Patient.generalPractitioner.where(resolve() is Organization).reference", r#"["http://server/fhir/Organization/2/_history/3"]"#),
    (patient, "Patient.link.other.where(resolve() is Patient).reference", r#"["Patient/other"]"#),
    // extension()
    (patient, "Patient.extension('http://example.org/race').value", r#"["x"]"#),
    (patient, "Patient.extension('http://example.org/none')", "[]"),
    // literals and $this
    (patient, "'a' = 'a'", "[true]"),
    (patient, "Patient.name.given.where($this = 'Jim')", r#"["Jim"]"#),
];

#[test]
fn evaluates_cases() {
    let mut failures = Vec::new();
    for (input, source, expected) in CASES {
        let resource = input();
        let expr = match parse(source) {
            Ok(expr) => expr,
            Err(e) => {
                failures.push(format!("{source}: {e}"));
                continue;
            }
        };
        let actual: Vec<Value> = evaluate(&expr, &resource).into_iter().map(|item| item.node.clone()).collect();
        let expected: Vec<Value> = serde_json::from_str(expected).unwrap();
        // Compare as numbers where both are numbers: 67.5 from the resource vs literal text.
        let same = actual.len() == expected.len()
            && actual.iter().zip(&expected).all(|(a, e)| match (a.as_f64(), e.as_f64()) {
                (Some(a), Some(e)) => a == e,
                _ => a == e,
            });
        if !same {
            failures.push(format!("{source}: expected {expected:?}, got {actual:?}"));
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

/// Choice elements report their type; resolve() reports the target type.
#[test]
fn reports_types() {
    let cases: &[(Input, &str, &[Option<&str>])] = &[
        (observation, "Observation.value", &[Some("Quantity")]),
        (observation, "Observation.effective", &[Some("dateTime")]),
        (observation, "Observation.component.value", &[Some("string"), Some("CodeableConcept")]),
        (observation, "Observation.code", &[None]),
        (condition, "Condition.onset | Condition.abatement", &[Some("Age"), Some("Range")]),
        (patient, "Patient.deceased", &[Some("boolean")]),
        (patient, "Patient.generalPractitioner.resolve()", &[Some("Practitioner"), Some("Organization")]),
    ];
    for (input, source, expected) in cases {
        let resource = input();
        let expr = parse(source).unwrap();
        let types: Vec<Option<&str>> = evaluate(&expr, &resource).iter().map(|item| item.type_name).collect();
        assert_eq!(&types, expected, "{source}");
    }
}

#[test]
fn rejects_what_it_does_not_support() {
    for source in [
        "",
        "Patient.",
        "Patient.name.where(",
        "Patient.name[x]",
        "Patient.descendants()",
        "Patient.name.given + 'x'",
        "'unterminated",
        "Patient.name as",
        "(Patient.name",
        "Patient.name)",
        "Patient.extension(1)",
    ] {
        assert!(parse(source).is_err(), "{source:?} should not parse");
    }
}

#[test]
fn parse_error_reports_position() {
    let error = parse("Patient.name.descendants()").unwrap_err();
    assert_eq!(error.position, 13);
    assert!(error.to_string().contains("descendants"), "{error}");
}
