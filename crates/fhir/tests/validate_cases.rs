//! Hand-written valid and invalid resources for `fhir::validate`.

use fhir::validate::{ValidationIssue, Validator};
use serde_json::{json, Value};

fn check(v: &Value) -> Vec<ValidationIssue> {
    Validator::r4().validate(v).err().unwrap_or_default()
}

fn assert_valid(v: Value) {
    let found = check(&v);
    assert!(found.is_empty(), "expected valid, got {found:#?}");
}

/// Asserts exactly one issue, at `path`, whose message contains `needle`.
fn assert_one(v: Value, path: &str, needle: &str) {
    let found = check(&v);
    assert_eq!(found.len(), 1, "expected one issue at {path}, got {found:#?}");
    assert_eq!(found[0].path, path, "{found:#?}");
    assert!(found[0].message.contains(needle), "message {:?} lacks {needle:?}", found[0].message);
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "pat-1",
        "meta": {"versionId": "1", "lastUpdated": "2024-01-02T03:04:05.678Z", "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
        "extension": [{
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
            "extension": [
                {"url": "ombCategory", "valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": "2106-3", "display": "White"}},
                {"url": "text", "valueString": "White"}
            ]
        }, {
            "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
            "valueAddress": {"city": "Boston", "state": "MA", "country": "US"}
        }, {
            "url": "http://example.org/b64", "valueBase64Binary": "SGVsbG8="
        }],
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520"}],
        "active": true,
        "name": [{"use": "official", "family": "Doe", "given": ["Jane", "Q"], "prefix": ["Ms."]}],
        "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
        "gender": "female",
        "birthDate": "1970-02-28",
        "deceasedDateTime": "2020-05-06T07:08:09-04:00",
        "address": [{"line": ["1 Main St"], "city": "Boston", "postalCode": "02101", "geolocation": 1}],
        "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}], "text": "M"},
        "multipleBirthInteger": 2,
        "communication": [{"language": {"text": "English"}, "preferred": true}]
    })
}

fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "obs-1",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}], "text": "Body Height"},
        "subject": {"reference": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520"},
        "effectiveDateTime": "2012-06-14T06:47:18-04:00",
        "issued": "2012-06-14T06:47:18.254-04:00",
        "valueQuantity": {"value": 162.7, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"},
        "component": [{"code": {"text": "x"}, "valueSampledData": {"origin": {"value": 0}, "period": 1.5, "dimensions": 1, "data": "1 2 E"}}]
    })
}

#[test]
fn valid_patient_and_observation() {
    let mut p = patient();
    // `geolocation` above is deliberately wrong; remove it for the valid case
    if let Some(a) = p.pointer_mut("/address/0").and_then(Value::as_object_mut) {
        a.remove("geolocation");
    }
    assert_valid(p);
    assert_valid(observation());
}

#[test]
fn unknown_property() {
    let mut p = patient();
    if let Some(a) = p.pointer_mut("/address/0").and_then(Value::as_object_mut) {
        a.remove("geolocation");
    }
    p["nickname"] = json!("JJ");
    assert_one(p, "Patient.nickname", "unknown property");

    let p = patient();
    assert!(p.pointer("/address/0/geolocation").is_some());
    let found = check(&p);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].path, "Patient.address[0].geolocation");
    // unknown choice variant
    let mut o = observation();
    o["valueAge"] = o["valueQuantity"].clone();
    assert_one(o, "Observation.valueAge", "unknown property");
}

#[test]
fn wrong_json_kind() {
    let mut o = observation();
    o["valueQuantity"]["value"] = json!("162.7");
    assert_one(o, "Observation.valueQuantity.value", "expected a JSON number");

    let mut o = observation();
    o["code"] = json!("8302-2");
    assert_one(o, "Observation.code", "expected an object");

    let mut o = observation();
    o["status"] = json!(1);
    assert_one(o, "Observation.status", "expected a JSON string");

    let mut o = observation();
    o["code"]["coding"][0]["userSelected"] = json!("true");
    assert_one(o, "Observation.code.coding[0].userSelected", "expected a JSON boolean");

    let mut o = observation();
    o["component"][0]["valueSampledData"]["dimensions"] = json!(0);
    assert_one(o, "Observation.component[0].valueSampledData.dimensions", "out of range");

    let mut o = observation();
    o["status"] = json!("done");
    assert_one(o, "Observation.status", "not an allowed code");

    let mut o = observation();
    o["code"]["text"] = Value::Null;
    assert_one(o, "Observation.code.text", "null");
}

#[test]
fn bad_dates() {
    let mut p = patient();
    p["address"][0].as_object_mut().map(|a| a.remove("geolocation"));
    for bad in ["1970-02-30", "1970-13-01", "70-01-01", "1970-01-01T10:00:00Z", "1970/01/01", ""] {
        let mut p = p.clone();
        p["birthDate"] = json!(bad);
        assert_one(p, "Patient.birthDate", "not a valid date");
    }
    let mut o = observation();
    o["effectiveDateTime"] = json!("2012-06-14T06:47:18");
    assert_one(o, "Observation.effectiveDateTime", "not a valid dateTime");
    let mut o = observation();
    o["issued"] = json!("2012-06-14");
    assert_one(o, "Observation.issued", "not a valid instant");
}

#[test]
fn bad_ids_codes_uris() {
    let mut o = observation();
    o["id"] = json!("obs_1");
    assert_one(o, "Observation.id", "not a valid id");
    let mut o = observation();
    o["id"] = json!("x".repeat(65));
    assert_one(o, "Observation.id", "not a valid id");
    let mut o = observation();
    o["code"]["coding"][0]["code"] = json!(" 8302-2");
    assert_one(o, "Observation.code.coding[0].code", "not a valid code");
    let mut o = observation();
    o["code"]["coding"][0]["system"] = json!("http://loinc .org");
    assert_one(o, "Observation.code.coding[0].system", "not a valid uri");
    let mut p = patient();
    p["address"][0].as_object_mut().map(|a| a.remove("geolocation"));
    p["extension"][2]["valueBase64Binary"] = json!("SGVsbG8*");
    assert_one(p, "Patient.extension[2].valueBase64Binary", "not a valid base64Binary");
}

#[test]
fn missing_required() {
    let mut o = observation();
    o.as_object_mut().map(|m| m.remove("code"));
    assert_one(o, "Observation", "missing required property \"code\"");

    // required inside a backbone element
    let mut o = observation();
    o["component"][0].as_object_mut().map(|m| m.remove("code"));
    assert_one(o, "Observation.component[0]", "missing required property \"code\"");

    assert_one(json!({"id": "x"}), "Resource", "missing resourceType");
    assert_one(json!({"resourceType": "Patientt"}), "Patientt", "unknown resourceType");
    assert_one(json!([]), "Resource", "expected a resource");
}

#[test]
fn array_expected_and_single_expected() {
    let mut o = observation();
    o["category"] = o["category"][0].clone();
    assert_one(o, "Observation.category", "expected an array");

    let mut o = observation();
    o["subject"] = json!([o["subject"].clone()]);
    assert_one(o, "Observation.subject", "expected a single value");

    let mut p = patient();
    p["address"][0].as_object_mut().map(|a| a.remove("geolocation"));
    p["name"][0]["given"] = json!("Jane");
    assert_one(p, "Patient.name[0].given", "expected an array");

    let mut o = observation();
    o["category"] = json!([]);
    assert_one(o, "Observation.category", "empty array");
}

#[test]
fn primitive_extensions() {
    let mut p = patient();
    p["address"][0].as_object_mut().map(|a| a.remove("geolocation"));
    let ext = json!({"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1970-02-28T10:11:12+01:00"}]});
    p["_birthDate"] = ext.clone();
    assert_valid(p.clone());
    // an extension without a value: only `_birthDate`
    p.as_object_mut().map(|m| m.remove("birthDate"));
    assert_valid(p.clone());
    // nulls align a primitive array with its extensions
    p["name"][0]["given"] = json!(["Jane", null]);
    p["name"][0]["_given"] = json!([null, ext]);
    assert_valid(p.clone());
    // but `_birthDate` is an Element: no `value`, and must be an object
    let mut q = p.clone();
    q["_birthDate"] = json!({"value": "1970"});
    assert_one(q, "Patient._birthDate.value", "unknown property");
    let mut q = p.clone();
    q["_birthDate"] = json!("1970");
    assert_one(q, "Patient._birthDate", "expected an object");
    // bad value inside a primitive extension
    let mut q = p.clone();
    q["_birthDate"]["extension"][0]["valueDateTime"] = json!("1970-02-28T10:11");
    assert_one(q, "Patient._birthDate.extension[0].valueDateTime", "not a valid dateTime");
    // null is only allowed in primitive arrays
    let mut q = p;
    q["name"] = json!([null]);
    assert_one(q, "Patient.name[0]", "null is not allowed");
}

#[test]
fn contained_resources() {
    let mut o = observation();
    let mut pat = patient();
    pat["address"][0].as_object_mut().map(|a| a.remove("geolocation"));
    let mut med = json!({"resourceType": "Medication", "id": "m1", "code": {"text": "aspirin"}});
    o["contained"] = json!([pat.clone(), med.clone()]);
    o["subject"] = json!({"reference": "#pat-1"});
    assert_valid(o.clone());

    med["form"] = json!({"coding": {"code": "tab"}});
    o["contained"] = json!([pat, med]);
    assert_one(o.clone(), "Observation.contained[1].form.coding", "expected an array");

    o["contained"] = json!([{"resourceType": "Observation", "status": "final"}]);
    assert_one(o.clone(), "Observation.contained[0]", "missing required property \"code\"");
    o["contained"] = json!([{"status": "final"}]);
    assert_one(o.clone(), "Observation.contained[0]", "missing resourceType");
    o["contained"] = json!([{"resourceType": "Nope"}]);
    assert_one(o, "Observation.contained[0]", "unknown resourceType \"Nope\"");
}

#[test]
fn nested_bundles() {
    let mut pat = patient();
    pat["address"][0].as_object_mut().map(|a| a.remove("geolocation"));
    let inner = json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:c757873d-ec9a-4326-a141-556f43239520", "resource": observation()}]
    });
    let outer = json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "timestamp": "2024-01-01T00:00:00Z",
        "entry": [
            {"fullUrl": "urn:uuid:c757873d-ec9a-4326-a141-556f43239521", "resource": pat, "request": {"method": "POST", "url": "Patient"}},
            {"resource": inner, "request": {"method": "POST", "url": "Bundle"}}
        ]
    });
    assert_valid(outer.clone());

    let mut bad = outer.clone();
    bad["entry"][1]["resource"]["entry"][0]["resource"]["valueQuantity"]["unit"] = json!(7);
    assert_one(bad, "Bundle.entry[1].resource.entry[0].resource.valueQuantity.unit", "expected a JSON string");

    let mut bad = outer.clone();
    bad["entry"][0]["request"]["method"] = json!("FETCH");
    assert_one(bad, "Bundle.entry[0].request.method", "not an allowed code");

    let mut bad = outer;
    bad["entry"][0]["request"]["url"] = json!(["Patient"]);
    bad["entry"][1]["resource"]["entry"][0]["resource"]["id"] = json!("a b");
    let found = check(&bad);
    let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, ["Bundle.entry[0].request.url", "Bundle.entry[1].resource.entry[0].resource.id"], "{found:#?}");
}

#[test]
fn collects_several_issues_in_document_order() {
    let v = json!({
        "resourceType": "Observation",
        "id": "bad id",
        "status": "final",
        "foo": 1,
        "effectiveDateTime": "yesterday",
        "valueQuantity": {"value": "1"}
    });
    let found = check(&v);
    let paths: Vec<&str> = found.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "Observation.id",
            "Observation.foo",
            "Observation.effectiveDateTime",
            "Observation.valueQuantity.value",
            "Observation"
        ],
        "{found:#?}"
    );
    assert!(found.iter().all(|i| !i.to_string().is_empty()));
}
