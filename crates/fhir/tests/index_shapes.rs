//! Index extraction for every value shape, on small hand-written resources.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fhir::datetime::parse_range;
use fhir::index::parse_reference;
use fhir::{extract, Extracted, IndexValue, Registry};
use serde_json::{json, Value};

fn run(resource: Value) -> Extracted {
    extract(Registry::r4(), &resource)
}

fn values(extracted: &Extracted, param: &str) -> Vec<IndexValue> {
    extracted.entries.iter().filter(|e| e.param == param).map(|e| e.value.clone()).collect()
}

fn string(exact: &str) -> IndexValue {
    IndexValue::String { normalized: fhir::normalize::normalize_string(exact), exact: exact.to_owned() }
}

fn token(system: Option<&str>, code: Option<&str>, text: Option<&str>) -> IndexValue {
    IndexValue::Token {
        system: system.map(str::to_owned),
        code: code.map(str::to_owned),
        text: text.map(str::to_owned),
    }
}

fn reference(target_type: Option<&str>, target_id: Option<&str>, url: Option<&str>) -> IndexValue {
    IndexValue::Reference {
        target_type: target_type.map(str::to_owned),
        target_id: target_id.map(str::to_owned),
        url: url.map(str::to_owned),
    }
}

fn date(s: &str) -> IndexValue {
    let range = parse_range(s).unwrap();
    IndexValue::Date { start: range.start, end: range.end }
}

fn quantity(value: f64, system: Option<&str>, code: Option<&str>, unit: Option<&str>) -> IndexValue {
    IndexValue::Quantity {
        value,
        system: system.map(str::to_owned),
        code: code.map(str::to_owned),
        unit: unit.map(str::to_owned),
    }
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "meta": {
            "lastUpdated": "2020-01-01T00:00:00Z",
            "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
            "tag": [{"system": "http://t", "code": "x", "display": "X Tag"}],
            "security": [{"system": "http://s", "code": "R"}],
            "source": "http://source/1"
        },
        "identifier": [
            {"system": "http://hospital/mrn", "value": "12345", "type": {"text": "Medical Record Number"}},
            {"value": "no-system"}
        ],
        "active": true,
        "name": [{
            "use": "official", "text": "Dr. Zoë Ann Müller Jr.", "family": "Müller",
            "given": ["Zoë", "Ann"], "prefix": ["Dr."], "suffix": ["Jr."]
        }],
        "telecom": [
            {"system": "phone", "value": "555-1234", "use": "home"},
            {"system": "email", "value": "zoe@example.org"}
        ],
        "gender": "female",
        "birthDate": "1980-02",
        "deceasedDateTime": "2020-05-06T07:08:09+02:00",
        "address": [{
            "line": ["1 Main St", "Apt 2"], "city": "Boston", "district": "Suffolk", "state": "MA",
            "postalCode": "02110", "country": "US", "text": "1 Main St, Boston", "use": "home"
        }],
        "generalPractitioner": [
            {"reference": "https://other.example/fhir/Practitioner/dr1"},
            {"reference": "Organization/o1/_history/7"}
        ],
        "managingOrganization": {"reference": "urn:uuid:9a3b1c2d-0000-0000-0000-000000000000"},
        "link": [{"other": {"reference": "Patient/p2"}, "type": "seealso"}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "de"}]}}]
    })
}

#[test]
fn patient_strings_from_human_name_and_address() {
    let e = run(patient());
    assert_eq!(values(&e, "family"), [string("Müller")]);
    assert_eq!(values(&e, "given"), [string("Zoë"), string("Ann")]);
    assert_eq!(
        values(&e, "name"),
        [
            string("Müller"),
            string("Zoë"),
            string("Ann"),
            string("Dr."),
            string("Jr."),
            string("Dr. Zoë Ann Müller Jr.")
        ]
    );
    assert_eq!(values(&e, "given")[0], IndexValue::String { normalized: "zoe".into(), exact: "Zoë".into() });
    assert_eq!(
        values(&e, "address"),
        [
            string("1 Main St, Boston"),
            string("1 Main St"),
            string("Apt 2"),
            string("Boston"),
            string("Suffolk"),
            string("MA"),
            string("02110"),
            string("US"),
        ]
    );
    assert_eq!(values(&e, "address-city"), [string("Boston")]);
    assert_eq!(values(&e, "address-postalcode"), [string("02110")]);
    assert_eq!(values(&e, "address-use"), [token(None, Some("home"), None)]);
}

#[test]
fn patient_tokens() {
    let e = run(patient());
    assert_eq!(values(&e, "gender"), [token(None, Some("female"), None)]);
    assert_eq!(values(&e, "active"), [token(None, Some("true"), None)]);
    assert_eq!(values(&e, "deceased"), [token(None, Some("true"), None)]);
    assert_eq!(
        values(&e, "identifier"),
        [
            token(Some("http://hospital/mrn"), Some("12345"), Some("medical record number")),
            token(None, Some("no-system"), None),
        ]
    );
    // ContactPoint: the value is the code; its `system` (phone/email) is not a token system.
    assert_eq!(values(&e, "email"), [token(None, Some("zoe@example.org"), None)]);
    assert_eq!(values(&e, "phone"), [token(None, Some("555-1234"), None)]);
    assert_eq!(values(&e, "telecom").len(), 2);
    assert_eq!(values(&e, "language"), [token(Some("urn:ietf:bcp:47"), Some("de"), None)]);
    // Common parameters apply to every type; _id and _lastUpdated are columns, not index rows.
    assert_eq!(values(&e, "_tag"), [token(Some("http://t"), Some("x"), Some("x tag"))]);
    assert_eq!(values(&e, "_security"), [token(Some("http://s"), Some("R"), None)]);
    assert_eq!(
        values(&e, "_profile"),
        [IndexValue::Uri { value: "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient".into() }]
    );
    assert_eq!(values(&e, "_source"), [IndexValue::Uri { value: "http://source/1".into() }]);
    assert!(values(&e, "_id").is_empty() && values(&e, "_lastUpdated").is_empty());
}

#[test]
fn deceased_boolean_and_absent() {
    let mut p = patient();
    p["deceasedBoolean"] = json!(false);
    p.as_object_mut().unwrap().remove("deceasedDateTime");
    assert_eq!(values(&run(p.clone()), "deceased"), [token(None, Some("false"), None)]);
    assert!(values(&run(p.clone()), "death-date").is_empty());
    p.as_object_mut().unwrap().remove("deceasedBoolean");
    assert_eq!(values(&run(p), "deceased"), [token(None, Some("false"), None)]);
}

#[test]
fn patient_dates_references_and_compartment() {
    let e = run(patient());
    assert_eq!(values(&e, "birthdate"), [date("1980-02")]);
    assert_eq!(values(&e, "death-date"), [date("2020-05-06T05:08:09Z")]);
    assert_eq!(
        values(&e, "general-practitioner"),
        [
            reference(Some("Practitioner"), Some("dr1"), Some("https://other.example/fhir/Practitioner/dr1")),
            reference(Some("Organization"), Some("o1"), None),
        ]
    );
    assert_eq!(
        values(&e, "organization"),
        [reference(None, None, Some("urn:uuid:9a3b1c2d-0000-0000-0000-000000000000"))]
    );
    assert_eq!(values(&e, "link"), [reference(Some("Patient"), Some("p2"), None)]);
    assert_eq!(e.compartments, ["p1", "p2"]);
}

#[test]
fn observation_codes_values_and_compartment() {
    let e = run(json!({
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {
            "coding": [
                {"system": "http://loinc.org", "code": "2339-0", "display": "Glucose [Mass/volume] in Blood"},
                {"system": "http://loinc.org", "code": "2339-0", "display": "Glucose [Mass/volume] in Blood"},
                {"system": "http://snomed.info/sct", "code": "123"}
            ],
            "text": "Glucose"
        },
        "subject": {"reference": "Patient/p1"},
        "performer": [
            {"reference": "Practitioner/d1"},
            {"reference": "Patient/p9"},
            {"reference": "#contained-1"},
            {"display": "no reference"}
        ],
        "effectivePeriod": {"start": "2021-01-01T10:00:00Z"},
        "valueQuantity": {"value": 6.3, "unit": "mmol/l", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "component": [
            {"code": {"text": "c1"}, "valueCodeableConcept": {"coding": [{"system": "http://s", "code": "pos"}]}},
            {"code": {"text": "c2"}, "valueQuantity": {"value": 120, "code": "mm[Hg]"}}
        ]
    }));
    assert_eq!(
        values(&e, "code"),
        [
            token(Some("http://loinc.org"), Some("2339-0"), Some("glucose [mass/volume] in blood")),
            token(Some("http://snomed.info/sct"), Some("123"), None),
            token(None, None, Some("glucose")),
        ]
    );
    assert_eq!(
        values(&e, "category"),
        [token(Some("http://terminology.hl7.org/CodeSystem/observation-category"), Some("laboratory"), None)]
    );
    assert_eq!(values(&e, "status"), [token(None, Some("final"), None)]);
    assert_eq!(values(&e, "patient"), [reference(Some("Patient"), Some("p1"), None)]);
    assert_eq!(
        values(&e, "performer"),
        [
            reference(Some("Practitioner"), Some("d1"), None),
            reference(Some("Patient"), Some("p9"), None),
            reference(None, None, Some("#contained-1")),
        ]
    );
    let start = parse_range("2021-01-01T10:00:00Z").unwrap().start;
    assert_eq!(values(&e, "date"), [IndexValue::Date { start, end: i64::MAX }]);
    assert_eq!(
        values(&e, "value-quantity"),
        [quantity(6.3, Some("http://unitsofmeasure.org"), Some("mmol/L"), Some("mmol/l"))]
    );
    assert_eq!(values(&e, "component-value-quantity"), [quantity(120.0, None, Some("mm[Hg]"), None)]);
    assert_eq!(values(&e, "combo-value-quantity").len(), 2);
    assert_eq!(values(&e, "component-value-concept"), [token(Some("http://s"), Some("pos"), None)]);
    assert!(values(&e, "value-concept").is_empty());
    assert_eq!(values(&e, "component-code"), [token(None, None, Some("c1")), token(None, None, Some("c2"))]);
    // Composite parameters are not indexed as such.
    assert!(values(&e, "code-value-quantity").is_empty());
    assert_eq!(e.compartments, ["p1", "p9"]);
}

#[test]
fn observation_value_string_and_sampled_data() {
    let e = run(json!({
        "resourceType": "Observation",
        "valueSampledData": {"origin": {"value": 0}, "period": 10, "dimensions": 1, "data": "1 2 3"},
        "subject": {"reference": "Group/g1"}
    }));
    assert!(values(&e, "value-quantity").is_empty());
    assert!(values(&e, "patient").is_empty());
    assert_eq!(values(&e, "subject"), [reference(Some("Group"), Some("g1"), None)]);
    assert!(e.compartments.is_empty());

    let e = run(json!({"resourceType": "Observation", "valueCodeableConcept": {"text": "Positive"}}));
    assert_eq!(values(&e, "value-string"), [string("Positive")]);
    assert_eq!(values(&e, "value-concept"), [token(None, None, Some("positive"))]);
}

#[test]
fn condition_choice_types_and_ranges() {
    let e = run(json!({
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p1"},
        "onsetAge": {"value": 52, "unit": "yr", "system": "http://unitsofmeasure.org", "code": "a"},
        "abatementRange": {"low": {"value": 60, "code": "a"}, "high": {"value": 65, "code": "a"}},
        "recordedDate": "2019-03-04"
    }));
    assert_eq!(values(&e, "onset-age"), [quantity(52.0, Some("http://unitsofmeasure.org"), Some("a"), Some("yr"))]);
    assert_eq!(
        values(&e, "abatement-age"),
        [quantity(60.0, None, Some("a"), None), quantity(65.0, None, Some("a"), None)]
    );
    assert!(values(&e, "onset-date").is_empty());
    assert_eq!(values(&e, "recorded-date"), [date("2019-03-04")]);
    assert_eq!(e.compartments, ["p1"]);

    let e = run(json!({
        "resourceType": "Condition",
        "onsetPeriod": {"start": "2019", "end": "2020-06"},
        "abatementString": "in remission",
        "abatementDateTime": "not a date"
    }));
    let (start, end) = (parse_range("2019").unwrap().start, parse_range("2020-06").unwrap().end);
    assert_eq!(values(&e, "onset-date"), [IndexValue::Date { start, end }]);
    assert_eq!(values(&e, "abatement-string"), [string("in remission")]);
    assert!(values(&e, "abatement-date").is_empty());
}

#[test]
fn encounter_period_and_resolve_filter() {
    let e = run(json!({
        "resourceType": "Encounter",
        "period": {"end": "2020-01-02"},
        "participant": [
            {"individual": {"reference": "Practitioner/d1"}},
            {"individual": {"reference": "RelatedPerson/r1"}}
        ],
        "length": {"value": 30, "unit": "min", "system": "http://unitsofmeasure.org", "code": "min"},
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}
    }));
    let end = parse_range("2020-01-02").unwrap().end;
    assert_eq!(values(&e, "date"), [IndexValue::Date { start: i64::MIN, end }]);
    assert_eq!(values(&e, "practitioner"), [reference(Some("Practitioner"), Some("d1"), None)]);
    assert_eq!(values(&e, "participant").len(), 2);
    assert_eq!(values(&e, "length"), [quantity(30.0, Some("http://unitsofmeasure.org"), Some("min"), Some("min"))]);
    assert_eq!(
        values(&e, "class"),
        [token(Some("http://terminology.hl7.org/CodeSystem/v3-ActCode"), Some("AMB"), None)]
    );
}

#[test]
fn timing_events_canonicals_uris_numbers_and_money() {
    let e = run(json!({
        "resourceType": "MedicationRequest",
        "subject": {"reference": "Patient/p1"},
        "medicationReference": {"reference": "Medication/m1"},
        "dosageInstruction": [{"timing": {"event": ["2020-01-01", "2020-01-02T08:00:00Z"]}}],
        "authoredOn": "2019-12-31"
    }));
    assert_eq!(values(&e, "date"), [date("2020-01-01"), date("2020-01-02T08:00:00Z")]);
    assert_eq!(values(&e, "medication"), [reference(Some("Medication"), Some("m1"), None)]);
    assert!(values(&e, "code").is_empty());
    assert_eq!(e.compartments, ["p1"]);

    let e = run(json!({
        "resourceType": "MedicationRequest",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "313782"}]}
    }));
    assert_eq!(values(&e, "code"), [token(Some("http://www.nlm.nih.gov/research/umls/rxnorm"), Some("313782"), None)]);
    assert!(values(&e, "medication").is_empty());

    let e = run(json!({
        "resourceType": "CarePlan",
        "instantiatesCanonical": ["http://example.org/PlanDefinition/pd1"],
        "instantiatesUri": ["http://example.org/protocol"],
        "subject": {"reference": "Patient/p1"},
        "period": {"start": "2020-01-01", "end": "2020-02-01"}
    }));
    assert_eq!(
        values(&e, "instantiates-canonical"),
        [reference(None, None, Some("http://example.org/PlanDefinition/pd1"))]
    );
    assert_eq!(values(&e, "instantiates-uri"), [IndexValue::Uri { value: "http://example.org/protocol".into() }]);
    assert_eq!(values(&e, "patient"), [reference(Some("Patient"), Some("p1"), None)]);

    let e = run(json!({"resourceType": "RiskAssessment", "prediction": [{"probabilityDecimal": 0.25}]}));
    assert_eq!(values(&e, "probability"), [IndexValue::Number { value: 0.25 }]);

    let e = run(json!({"resourceType": "ChargeItem", "priceOverride": {"value": 12.5, "currency": "EUR"}}));
    assert_eq!(values(&e, "price-override"), [quantity(12.5, Some("urn:iso:std:iso:4217"), Some("EUR"), None)]);

    let e = run(json!({"resourceType": "Subscription", "channel": {"type": "rest-hook", "endpoint": "https://hook"}}));
    assert_eq!(values(&e, "url"), [IndexValue::Uri { value: "https://hook".into() }]);
    assert_eq!(values(&e, "type"), [token(None, Some("rest-hook"), None)]);
}

#[test]
fn odd_input_is_skipped() {
    assert_eq!(run(json!({"no": "resourceType"})), Extracted::default());
    assert_eq!(run(json!("string")), Extracted::default());
    let e = run(json!({"resourceType": "Unknown", "id": "x"}));
    assert!(e.entries.is_empty());
    let e = run(json!({
        "resourceType": "Patient",
        "name": [null, {"family": 7, "given": [null, "A"]}],
        "birthDate": "1980-13-01",
        "gender": {"weird": true},
        "managingOrganization": {"reference": "Organization?identifier=x"}
    }));
    assert_eq!(values(&e, "given"), [string("A")]);
    assert!(values(&e, "birthdate").is_empty());
    assert!(values(&e, "gender").is_empty());
    assert_eq!(values(&e, "organization"), [reference(None, None, Some("Organization?identifier=x"))]);
    assert!(e.compartments.is_empty(), "no id, no compartment");
}

#[test]
fn reference_parsing() {
    assert_eq!(parse_reference("Patient/1"), Some(("Patient", "1")));
    assert_eq!(parse_reference("Patient/a-b.c/_history/2"), Some(("Patient", "a-b.c")));
    assert_eq!(parse_reference("http://x/fhir/Patient/1"), Some(("Patient", "1")));
    assert_eq!(parse_reference("https://x/Patient/1/_history/1"), Some(("Patient", "1")));
    for bad in
        ["Patient", "#p1", "urn:uuid:1234", "x/Patient/1", "Patient/", "patient/1", "Patient/1?x", "Patient/a_b", ""]
    {
        assert_eq!(parse_reference(bad), None, "{bad}");
    }
}
