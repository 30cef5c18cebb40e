use serde_json::json;

use super::*;

fn valid(r: &Value) {
    if let Err(issues) = crate::validate::Validator::r4().validate(r) {
        panic!("{r}\nis not valid R4: {issues:?}");
    }
}

#[test]
fn a_dstu2_condition_becomes_r4() {
    let mut report = Report::default();
    let c = convert_resource(
        Version::Dstu2,
        json!({"resourceType": "Condition", "id": "c1", "patient": {"reference": "Patient/p"},
               "clinicalStatus": "relapse", "verificationStatus": "confirmed", "dateRecorded": "2020-01-01",
               "category": {"coding": [{"system": "http://hl7.org/fhir/condition-category", "code": "diagnosis"}]},
               "code": {"text": "x"}, "abatementBoolean": true, "notes": "seen"}),
        &mut report,
    )
    .unwrap();
    valid(&c);
    assert_eq!(c["subject"]["reference"], "Patient/p");
    assert_eq!(c["clinicalStatus"]["coding"][0]["code"], "recurrence");
    assert_eq!(c["recordedDate"], "2020-01-01");
    assert_eq!(c["category"][0]["coding"][0]["code"], "encounter-diagnosis");
    assert_eq!(c["note"][0]["text"], "seen");
    // abatementBoolean has no R4 home: kept, not dropped.
    let ext = &c["extension"][0];
    assert_eq!(ext["url"], "http://hl7.org/fhir/1.0/StructureDefinition/extension-Condition.abatementBoolean");
    assert_eq!(ext["valueBoolean"], true);
    assert_eq!(report.kept_in_extensions["Condition.abatementBoolean"], 1);
    assert_eq!(c["meta"]["tag"][0]["code"], "1.0.2");
}

#[test]
fn a_medication_order_becomes_a_request() {
    let mut report = Report::default();
    let m = convert_resource(
        Version::Dstu2,
        json!({"resourceType": "MedicationOrder", "id": "m1", "patient": {"reference": "Patient/p"}, "dateWritten": "2020-02-02",
               "status": "active", "dateEnded": "2020-03-01", "medicationCodeableConcept": {"text": "x"},
               "reasonReference": {"reference": "Condition/c"},
               "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnits": "d"}}, "doseQuantity": {"value": 1}, "asNeededBoolean": false}]}),
        &mut report,
    )
    .unwrap();
    valid(&m);
    assert_eq!(m["resourceType"], "MedicationRequest");
    assert_eq!(m["intent"], "order");
    assert_eq!(m["authoredOn"], "2020-02-02");
    assert_eq!(m["reasonReference"][0]["reference"], "Condition/c");
    assert_eq!(m["dosageInstruction"][0]["timing"]["repeat"]["periodUnit"], "d");
    assert_eq!(m["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"], 1);
    assert_eq!(report.renamed["MedicationOrder → MedicationRequest"], 1);
    assert!(report.kept_in_extensions.contains_key("MedicationOrder.dateEnded"));
}

#[test]
fn codes_r4_does_not_know_are_kept_and_required_elements_left_missing() {
    let mut report = Report::default();
    let i = convert_resource(Version::Dstu2, json!({"resourceType": "Immunization", "status": "in-progress", "patient": {"reference": "Patient/p"}, "vaccineCode": {"text": "flu"}}), &mut report)
        .unwrap();
    assert!(i.get("status").is_none(), "in-progress has no R4 code: {i}");
    assert!(i["extension"][0]["url"].as_str().unwrap().ends_with("extension-Immunization.status"));
    assert!(i.get("occurrenceDateTime").is_none(), "nothing invented");
}

#[test]
fn stu3_goals_and_bundles() {
    let mut report = Report::default();
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "p"}},
        {"fullUrl": "urn:uuid:g", "resource": {"resourceType": "Goal", "id": "g", "status": "in-progress", "description": {"text": "A1c < 7"}}},
        {"fullUrl": "urn:uuid:o", "resource": {"resourceType": "Observation", "id": "o", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "urn:uuid:p"}, "context": {"reference": "urn:uuid:e"}, "comment": "c"}}]});
    let out = convert_bundle(Version::Stu3, bundle, &mut report).unwrap();
    valid(&out);
    let goal = &out["entry"][1]["resource"];
    assert_eq!(goal["lifecycleStatus"], "active");
    assert_eq!(goal["subject"]["reference"], "urn:uuid:p", "the record's one Patient");
    assert_eq!(goal["subject"]["extension"][0]["url"], ops::DERIVED_EXTENSION);
    let obs = &out["entry"][2]["resource"];
    assert_eq!(obs["encounter"]["reference"], "urn:uuid:e");
    assert_eq!(obs["note"][0]["text"], "c");
    assert_eq!(report.derived.len(), 1);
}

#[test]
fn empty_values_are_dropped_and_versions_parse() {
    let mut report = Report::default();
    let c = convert_resource(Version::Dstu2, json!({"resourceType": "CarePlan", "status": "active", "subject": {"reference": "Patient/p"}, "goal": [{"reference": ""}], "description": ""}), &mut report).unwrap();
    assert!(c.get("goal").is_none() && c.get("description").is_none(), "{c}");
    assert!(report.dropped_empty >= 2);
    assert_eq!(c["intent"], "plan");
    valid(&c);
    assert_eq!(Version::parse("1.0.2"), Some(Version::Dstu2));
    assert_eq!(Version::parse("3.0.1"), Some(Version::Stu3));
    assert_eq!(Version::parse("STU3"), Some(Version::Stu3));
    assert_eq!(Version::parse("4.0.1"), None);
    assert!(convert_resource(Version::Dstu2, json!([1]), &mut report).is_err());
}

/// Types the fixtures do not hold, one example each, converted and validated.
#[test]
fn every_listed_type_converts_to_valid_r4() {
    let cases: Vec<(Version, Value, &str, Value)> = vec![
        (
            Version::Dstu2,
            json!({"resourceType": "Practitioner", "id": "d", "name": {"family": ["Doe"], "given": ["Dana"]},
            "practitionerRole": [{"role": {"text": "GP"}, "managingOrganization": {"reference": "Organization/o"}}]}),
            "/name/0/given/0",
            json!("Dana"),
        ),
        (
            Version::Dstu2,
            json!({"resourceType": "Organization", "id": "o", "name": "Org", "type": {"text": "prov"}}),
            "/type/0/text",
            json!("prov"),
        ),
        (
            Version::Dstu2,
            json!({"resourceType": "Location", "id": "l", "name": "Ward", "type": {"text": "w"}, "status": "active"}),
            "/type/0/text",
            json!("w"),
        ),
        (
            Version::Dstu2,
            json!({"resourceType": "Encounter", "id": "e", "status": "finished", "class": "inpatient", "patient": {"reference": "Patient/p"},
            "reason": [{"text": "r"}], "indication": [{"reference": "Condition/c"}]}),
            "/class/code",
            json!("IMP"),
        ),
        (
            Version::Dstu2,
            json!({"resourceType": "AllergyIntolerance", "id": "a", "patient": {"reference": "Patient/p"}, "status": "confirmed",
            "criticality": "CRITH", "substance": {"text": "peanut"}, "category": "food", "note": {"text": "n"}}),
            "/verificationStatus/coding/0/code",
            json!("confirmed"),
        ),
        (
            Version::Dstu2,
            json!({"resourceType": "MedicationStatement", "id": "ms", "patient": {"reference": "Patient/p"}, "status": "completed",
            "wasNotTaken": true, "medicationCodeableConcept": {"text": "x"}, "note": "n", "effectiveDateTime": "2020"}),
            "/status",
            json!("not-taken"),
        ),
        (
            Version::Dstu2,
            json!({"resourceType": "MedicationDispense", "id": "md", "patient": {"reference": "Patient/p"}, "status": "completed",
            "dispenser": {"reference": "Practitioner/d"}, "medicationCodeableConcept": {"text": "x"}, "substitution": {"type": {"text": "G"}}}),
            "/performer/0/actor/reference",
            json!("Practitioner/d"),
        ),
        (
            Version::Dstu2,
            json!({"resourceType": "Medication", "id": "m", "code": {"text": "x"}, "isBrand": true,
            "product": {"form": {"text": "tab"}, "ingredient": [{"item": {"reference": "Substance/s"}, "amount": {"numerator": {"value": 1}, "denominator": {"value": 1}}}]}}),
            "/ingredient/0/itemReference/reference",
            json!("Substance/s"),
        ),
        (
            Version::Dstu2,
            json!({"resourceType": "DiagnosticReport", "id": "dr", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/p"},
            "issued": "2020-01-01T00:00:00Z", "performer": {"reference": "Organization/o"}, "codedDiagnosis": [{"text": "dx"}]}),
            "/conclusionCode/0/text",
            json!("dx"),
        ),
        (
            Version::Dstu2,
            json!({"resourceType": "DocumentReference", "id": "doc", "status": "current", "type": {"text": "note"}, "subject": {"reference": "Patient/p"},
            "indexed": "2020-01-01T00:00:00Z", "class": {"text": "c"}, "content": [{"attachment": {"url": "http://x/doc"}, "format": [{"code": "urn:x"}]}]}),
            "/date",
            json!("2020-01-01T00:00:00Z"),
        ),
        (
            Version::Dstu2,
            json!({"resourceType": "FamilyMemberHistory", "id": "f", "patient": {"reference": "Patient/p"}, "status": "completed",
            "relationship": {"text": "mother"}, "gender": "female", "note": {"text": "n"}}),
            "/sex/coding/0/code",
            json!("female"),
        ),
        (
            Version::Dstu2,
            json!({"resourceType": "Coverage", "id": "cov", "issuer": {"reference": "Organization/o"}, "subscriberId": {"value": "M1"},
            "group": "G1", "plan": "P1", "type": {"code": "EHCPOL"}, "subscriber": {"reference": "Patient/p"}}),
            "/subscriberId",
            json!("M1"),
        ),
        (
            Version::Dstu2,
            json!({"resourceType": "Claim", "id": "cl", "type": "professional", "use": "complete", "patient": {"reference": "Patient/p"},
            "created": "2020-01-01", "priority": {"code": "normal"}, "diagnosis": [{"sequence": 1, "diagnosis": {"code": "J20"}}],
            "coverage": [{"sequence": 1, "focal": true, "coverage": {"reference": "Coverage/cov"}}],
            "item": [{"sequence": 1, "service": {"code": "99213"}, "serviceDate": "2020-01-01"}]}),
            "/item/0/productOrService/coding/0/code",
            json!("99213"),
        ),
        (
            Version::Stu3,
            json!({"resourceType": "Encounter", "id": "e3", "status": "finished", "class": {"code": "AMB"}, "subject": {"reference": "Patient/p"},
            "reason": [{"text": "r"}], "diagnosis": [{"condition": {"reference": "Condition/c"}, "role": {"text": "AD"}}], "appointment": {"reference": "Appointment/a"}}),
            "/diagnosis/0/use/text",
            json!("AD"),
        ),
        (
            Version::Stu3,
            json!({"resourceType": "MedicationRequest", "id": "mr", "status": "active", "intent": "order", "subject": {"reference": "Patient/p"},
            "medicationCodeableConcept": {"text": "x"}, "requester": {"agent": {"reference": "Practitioner/d"}, "onBehalfOf": {"reference": "Organization/o"}},
            "substitution": {"allowed": true}, "dosageInstruction": [{"doseQuantity": {"value": 2}}]}),
            "/requester/reference",
            json!("Practitioner/d"),
        ),
        (
            Version::Stu3,
            json!({"resourceType": "CareTeam", "id": "ct", "status": "active", "subject": {"reference": "Patient/p"}, "context": {"reference": "Encounter/e"},
            "participant": [{"role": {"text": "gp"}, "member": {"reference": "Practitioner/d"}}]}),
            "/participant/0/role/0/text",
            json!("gp"),
        ),
        (
            Version::Stu3,
            json!({"resourceType": "PractitionerRole", "id": "pr", "practitioner": {"reference": "Practitioner/d"}, "code": [{"text": "gp"}]}),
            "/practitioner/reference",
            json!("Practitioner/d"),
        ),
        (
            Version::Stu3,
            json!({"resourceType": "Coverage", "id": "cov3", "status": "active", "beneficiary": {"reference": "Patient/p"}, "payor": [{"reference": "Organization/o"}],
            "grouping": {"group": "G1", "groupDisplay": "Group one", "plan": "P1"}, "sequence": "1"}),
            "/class/0/name",
            json!("Group one"),
        ),
        (
            Version::Stu3,
            json!({"resourceType": "ExplanationOfBenefit", "id": "eob", "status": "active", "type": {"text": "prof"}, "patient": {"reference": "Patient/p"},
            "created": "2020-01-01", "insurer": {"reference": "Organization/o"}, "provider": {"reference": "Practitioner/d"},
            "outcome": {"coding": [{"code": "complete"}]}, "insurance": {"coverage": {"reference": "Coverage/c"}},
            "item": [{"sequence": 1, "service": {"text": "visit"}}]}),
            "/insurance/0/focal",
            json!(true),
        ),
        (
            Version::Stu3,
            json!({"resourceType": "DocumentReference", "id": "d3", "status": "current", "type": {"text": "t"}, "indexed": "2020-01-01T00:00:00Z",
            "class": {"text": "c"}, "content": [{"attachment": {"url": "http://x"}}], "context": {"related": [{"ref": {"reference": "Observation/o"}}]}}),
            "/context/related/0/reference",
            json!("Observation/o"),
        ),
        (
            Version::Stu3,
            json!({"resourceType": "MedicationStatement", "id": "ms3", "status": "active", "taken": "n", "subject": {"reference": "Patient/p"},
            "medicationCodeableConcept": {"text": "x"}}),
            "/status",
            json!("not-taken"),
        ),
        (
            Version::Stu3,
            json!({"resourceType": "Medication", "id": "m3", "code": {"text": "x"}, "isBrand": false,
            "package": {"batch": [{"lotNumber": "L1"}]}, "ingredient": [{"itemCodeableConcept": {"text": "i"}, "amount": {"numerator": {"value": 5}}}]}),
            "/batch/lotNumber",
            json!("L1"),
        ),
        (
            Version::Stu3,
            json!({"resourceType": "FamilyMemberHistory", "id": "f3", "status": "completed", "patient": {"reference": "Patient/p"},
            "relationship": {"text": "father"}, "gender": "male"}),
            "/sex/coding/0/code",
            json!("male"),
        ),
    ];
    // What DSTU2 cannot say and R4 requires: left missing, for validation to name.
    let left_to_validation: &[(&str, &str)] = &[("Coverage", "beneficiary"), ("Claim", "provider")];
    for (version, source, pointer, expected) in cases {
        let mut report = Report::default();
        let t = source["resourceType"].as_str().unwrap().to_owned();
        let converted = convert_resource(version, source, &mut report).unwrap();
        let missing: Vec<&str> = left_to_validation
            .iter()
            .filter(|(rt, _)| version == Version::Dstu2 && *rt == t)
            .map(|(_, e)| *e)
            .collect();
        if missing.is_empty() {
            valid(&converted);
        } else {
            let issues =
                crate::validate::Validator::r4().validate(&converted).expect_err("a required element is missing");
            for m in missing {
                assert!(issues.iter().any(|i| i.message.contains(m)), "{t}: {issues:?}");
            }
        }
        assert_eq!(converted.pointer(pointer), Some(&expected), "{t} {pointer}: {converted}");
    }
}

#[test]
fn leftovers_keep_their_source_path() {
    let mut report = Report::default();
    let p = convert_resource(
        Version::Dstu2,
        json!({"resourceType": "Practitioner", "id": "d",
        "practitionerRole": [{"role": {"text": "GP"}, "period": {"start": "2020"}}]}),
        &mut report,
    )
    .unwrap();
    valid(&p);
    let ext = &p["extension"][0];
    assert_eq!(ext["url"], "http://hl7.org/fhir/1.0/StructureDefinition/extension-Practitioner.practitionerRole");
    let subs: Vec<&str> = ext["extension"].as_array().unwrap().iter().map(|e| e["url"].as_str().unwrap()).collect();
    assert_eq!(subs, vec!["role", "period"]);
    let m = convert_resource(
        Version::Stu3,
        json!({"resourceType": "Medication", "id": "m", "isBrand": true, "isOverTheCounter": false}),
        &mut report,
    )
    .unwrap();
    valid(&m);
    assert!(report.kept_in_extensions.contains_key("Medication.isBrand"), "{:?}", report.kept_in_extensions);
    assert!(m.to_string().contains("extension-Medication.isOverTheCounter"));
}
