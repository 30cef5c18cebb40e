//! DSTU2 (1.0.2) → R4: the rules per resource type. Elements not named here keep their name;
//! the fit step then moves whatever R4 does not know into cross-version extensions.

use serde_json::{json, Map, Value};

use super::ops::{obj, Ctx, Obj};

const CONDITION_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
const CONDITION_VERIFICATION: &str = "http://terminology.hl7.org/CodeSystem/condition-ver-status";
const ALLERGY_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
const ALLERGY_VERIFICATION: &str = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

pub(crate) fn convert(map: &mut Map<String, Value>, ctx: &mut Ctx) {
    let mut o = obj(map);
    match ctx.source_type {
        "Patient" => patient(&mut o),
        "Practitioner" => practitioner(&mut o),
        "Organization" | "Location" => {}
        "Encounter" => encounter(&mut o),
        "Observation" => observation(&mut o),
        "Condition" => condition(&mut o),
        "AllergyIntolerance" => allergy(&mut o),
        "MedicationOrder" => medication_order(&mut o, ctx),
        "MedicationStatement" => medication_statement(&mut o),
        "MedicationDispense" => medication_dispense(&mut o),
        "Medication" => medication(&mut o),
        "Immunization" => immunization(&mut o),
        "Procedure" => procedure(&mut o),
        "DiagnosticReport" => diagnostic_report(&mut o),
        "DocumentReference" => document_reference(&mut o),
        "CarePlan" => care_plan(&mut o, ctx),
        "Goal" => goal(&mut o),
        "FamilyMemberHistory" => family_member_history(&mut o),
        "Coverage" => coverage(&mut o),
        "Claim" => claim(&mut o),
        "ExplanationOfBenefit" => explanation_of_benefit(&mut o),
        _ => {}
    }
}

fn patient(o: &mut Obj) {
    o.rename("careProvider", "generalPractitioner");
}

fn practitioner(o: &mut Obj) {
    // DSTU2 has one name; R4 a list (the fit step wraps it). practitionerRole has no R4 home in
    // Practitioner (R4 has the PractitionerRole resource): it is kept in its extension.
    let _ = o;
}

/// DSTU2 `Encounter.class` codes → v3 ActCode.
const ENCOUNTER_CLASS: &[(&str, &str, &str)] = &[
    ("inpatient", "IMP", "inpatient encounter"),
    ("outpatient", "AMB", "ambulatory"),
    ("ambulatory", "AMB", "ambulatory"),
    ("emergency", "EMER", "emergency"),
    ("home", "HH", "home health"),
    ("field", "FLD", "field"),
    ("daytime", "SS", "short stay"),
    ("virtual", "VR", "virtual"),
];

fn encounter(o: &mut Obj) {
    o.rename("patient", "subject");
    if let Some(Value::String(code)) = o.take("class") {
        let coding = match ENCOUNTER_CLASS.iter().find(|(c, ..)| *c == code) {
            Some((_, act, display)) => json!({"system": ACT_CODE, "code": act, "display": display}),
            // Kept as it was: a Coding of the DSTU2 code system.
            None => json!({"system": "http://hl7.org/fhir/encounter-class", "code": code}),
        };
        o.put("class", coding);
    }
    o.rename("reason", "reasonCode");
    o.rename("indication", "reasonReference");
    o.each("participant", |p| {
        let mut p = obj(p);
        p.rename("type", "type");
    });
}

fn observation(o: &mut Obj) {
    o.annotations("comments", "note");
    related_to_members(o);
    o.each("referenceRange", reference_range);
    o.each("component", |c| obj(c).each("referenceRange", reference_range));
}

fn reference_range(r: &mut Map<String, Value>) {
    let mut r = obj(r);
    r.rename("meaning", "type");
}

/// `Observation.related` → `hasMember` / `derivedFrom` by its type (others stay in the extension).
fn related_to_members(o: &mut Obj) {
    let Some(Value::Array(related)) = o.take("related") else { return };
    let mut rest = Vec::new();
    for r in related {
        let kind = r.get("type").and_then(Value::as_str).unwrap_or("has-member").to_owned();
        let target = r.get("target").cloned();
        let slot = match kind.as_str() {
            "has-member" => Some("hasMember"),
            "derived-from" => Some("derivedFrom"),
            _ => None,
        };
        match (slot, target) {
            (Some(slot), Some(t)) => {
                let list = o.map.entry(slot.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
                if let Some(l) = list.as_array_mut() {
                    l.push(t);
                }
            }
            _ => rest.push(r),
        }
    }
    if !rest.is_empty() {
        o.put("related", Value::Array(rest));
    }
}

fn condition(o: &mut Obj) {
    o.rename("patient", "subject");
    o.rename("dateRecorded", "recordedDate");
    o.code_to_concept(
        "clinicalStatus",
        "clinicalStatus",
        CONDITION_CLINICAL,
        &[("active", "active"), ("relapse", "recurrence"), ("remission", "remission"), ("resolved", "resolved")],
    );
    o.code_to_concept(
        "verificationStatus",
        "verificationStatus",
        CONDITION_VERIFICATION,
        &[
            ("provisional", "provisional"),
            ("differential", "differential"),
            ("confirmed", "confirmed"),
            ("refuted", "refuted"),
            ("entered-in-error", "entered-in-error"),
            ("unknown", "unconfirmed"),
        ],
    );
    // DSTU2 diagnosis → R4 encounter-diagnosis; other DSTU2 categories stay as they are.
    o.each("category", |c| {
        if let Some(Value::Array(codings)) = c.get_mut("coding") {
            for coding in codings {
                if coding.get("code").and_then(Value::as_str) == Some("diagnosis") {
                    coding["system"] = json!("http://terminology.hl7.org/CodeSystem/condition-category");
                    coding["code"] = json!("encounter-diagnosis");
                }
            }
        }
    });
    o.annotations("notes", "note");
    o.each("evidence", |e| {
        // `code` is one CodeableConcept in DSTU2, a list in R4 (the fit step wraps it).
        let _ = e;
    });
}

fn allergy(o: &mut Obj) {
    o.rename("substance", "code");
    o.rename("reporter", "asserter");
    o.rename("onset", "onsetDateTime");
    o.rename("lastOccurence", "lastOccurrence");
    if let Some(Value::String(status)) = o.take("status") {
        let (clinical, verification) = match status.as_str() {
            "active" => (Some("active"), None),
            "unconfirmed" => (Some("active"), Some("unconfirmed")),
            "confirmed" => (Some("active"), Some("confirmed")),
            "inactive" => (Some("inactive"), None),
            "resolved" => (Some("resolved"), None),
            "refuted" => (None, Some("refuted")),
            "entered-in-error" => (None, Some("entered-in-error")),
            other => {
                o.put("status", Value::String(other.to_owned()));
                (None, None)
            }
        };
        if let Some(c) = clinical {
            o.put("clinicalStatus", json!({"coding": [{"system": ALLERGY_CLINICAL, "code": c}]}));
        }
        if let Some(v) = verification {
            o.put("verificationStatus", json!({"coding": [{"system": ALLERGY_VERIFICATION, "code": v}]}));
        }
    }
    o.recode("criticality", &[("CRITL", "low"), ("CRITH", "high"), ("CRITU", "unable-to-assess")]);
    o.annotations("note", "note");
    o.each("reaction", |r| {
        let mut r = obj(r);
        r.annotations("note", "note");
    });
}

fn dosage(d: &mut Map<String, Value>) {
    let mut d = obj(d);
    d.rename("additionalInstructions", "additionalInstruction");
    let mut dose_and_rate = Map::new();
    for (from, to) in [
        ("doseQuantity", "doseQuantity"),
        ("doseRange", "doseRange"),
        ("quantityQuantity", "doseQuantity"),
        ("quantityRange", "doseRange"),
        ("rateRatio", "rateRatio"),
        ("rateRange", "rateRange"),
    ] {
        if let Some(v) = d.take(from) {
            dose_and_rate.insert(to.to_owned(), v);
        }
    }
    if !dose_and_rate.is_empty() {
        d.put("doseAndRate", json!([Value::Object(dose_and_rate)]));
    }
    d.rename("siteCodeableConcept", "site");
    d.each("timing", timing);
}

pub(crate) fn timing(t: &mut Map<String, Value>) {
    obj(t).each("repeat", |r| {
        let mut r = obj(r);
        r.rename("periodUnits", "periodUnit");
        r.rename("durationUnits", "durationUnit");
    });
}

fn medication_order(o: &mut Obj, ctx: &mut Ctx) {
    o.rename("dateWritten", "authoredOn");
    o.rename("patient", "subject");
    o.rename("prescriber", "requester");
    o.rename("reasonEnded", "statusReason");
    o.choice_to_lists("reason", "reasonCode", "reasonReference");
    o.annotations("note", "note");
    o.each("dosageInstruction", dosage);
    // A MedicationOrder is an order.
    if !o.has("intent") {
        o.put("intent", json!("order"));
        ctx.report.derived("MedicationRequest.intent = order (a MedicationOrder)");
    }
}

fn medication_statement(o: &mut Obj) {
    o.rename("patient", "subject");
    if o.map.get("wasNotTaken").and_then(Value::as_bool) == Some(true) {
        o.take("wasNotTaken");
        o.put("status", json!("not-taken"));
    } else if o.map.get("wasNotTaken").and_then(Value::as_bool) == Some(false) {
        o.take("wasNotTaken");
    }
    o.rename("reasonNotTaken", "statusReason");
    o.choice_to_lists("reasonForUse", "reasonCode", "reasonReference");
    o.rename("supportingInformation", "derivedFrom");
    o.annotations("note", "note");
    o.each("dosage", dosage);
}

fn medication_dispense(o: &mut Obj) {
    o.rename("patient", "subject");
    o.wrap_in("dispenser", "performer", "actor");
    o.annotations("note", "note");
    o.each("dosageInstruction", dosage);
    o.each("substitution", |s| {
        // A DSTU2 substitution element records a substitution that was made.
        if !s.contains_key("wasSubstituted") {
            s.insert("wasSubstituted".into(), json!(true));
        }
    });
}

fn medication(o: &mut Obj) {
    if let Some(Value::Object(mut product)) = o.take("product") {
        for key in ["form", "ingredient", "batch"] {
            if let Some(v) = product.remove(key) {
                o.put(key, v);
            }
        }
        if !product.is_empty() {
            o.put("product", Value::Object(product));
        }
    }
    o.each("ingredient", |i| {
        let mut i = obj(i);
        i.rename("item", "itemReference");
        i.rename("amount", "strength");
    });
}

fn immunization(o: &mut Obj) {
    o.rename("date", "occurrenceDateTime");
    if o.map.get("wasNotGiven").and_then(Value::as_bool) == Some(true) {
        o.put("status", json!("not-done"));
    }
    o.take("wasNotGiven");
    if let Some(Value::Bool(reported)) = o.take("reported") {
        o.put("primarySource", Value::Bool(!reported));
    }
    o.wrap_in("performer", "performer", "actor");
    if let Some(Value::Object(mut explanation)) = o.take("explanation") {
        if let Some(r) = explanation.remove("reason") {
            o.put("reasonCode", r);
        }
        if let Some(r) = explanation.remove("reasonNotGiven") {
            o.put("statusReason", r);
        }
        if !explanation.is_empty() {
            o.put("explanation", Value::Object(explanation));
        }
    }
    o.rename("vaccinationProtocol", "protocolApplied");
    o.each("protocolApplied", |p| {
        let mut p = obj(p);
        p.rename("doseSequence", "doseNumberPositiveInt");
        p.rename("seriesDoses", "seriesDosesPositiveInt");
    });
}

fn procedure(o: &mut Obj) {
    o.recode("status", &[("aborted", "stopped")]);
    if o.map.get("notPerformed").and_then(Value::as_bool) == Some(true) {
        o.put("status", json!("not-done"));
    }
    o.take("notPerformed");
    o.rename("reasonNotPerformed", "statusReason");
    o.choice_to_lists("reason", "reasonCode", "reasonReference");
    o.each("performer", |p| obj(p).rename("role", "function"));
    o.rename("request", "basedOn");
    o.annotations("notes", "note");
    o.rename("used", "usedReference");
}

fn diagnostic_report(o: &mut Obj) {
    o.rename("request", "basedOn");
    o.rename("codedDiagnosis", "conclusionCode");
    o.rename("image", "media");
}

fn document_reference(o: &mut Obj) {
    o.rename("class", "category");
    o.rename("indexed", "date");
    if let Some(Value::Object(status)) = o.map.get("docStatus") {
        if let Some(code) = status.get("coding").and_then(|c| c.get(0)).and_then(|c| c.get("code")).cloned() {
            o.put("docStatus", code);
        }
    }
    o.each("context", |c| {
        let mut c = obj(c);
        c.rename("encounter", "encounter");
        if let Some(Value::Array(related)) = c.take("related") {
            let refs: Vec<Value> = related.into_iter().filter_map(|r| r.get("ref").cloned()).collect();
            if !refs.is_empty() {
                c.put("related", Value::Array(refs));
            }
        }
    });
}

fn care_plan(o: &mut Obj, ctx: &mut Ctx) {
    let status = o.str("status").map(String::from);
    o.recode("status", &[("proposed", "draft"), ("cancelled", "revoked")]);
    o.rename("context", "encounter");
    o.rename("support", "supportingInfo");
    o.annotations("note", "note");
    o.each("activity", |a| {
        let mut a = obj(a);
        a.rename("actionResulting", "outcomeReference");
        a.each("detail", |d| {
            let mut d = obj(d);
            d.rename("prohibited", "doNotPerform");
        });
    });
    // Every DSTU2 CarePlan is a plan (a proposed one a proposal): R4 says so in intent.
    if !o.has("intent") {
        let intent = if status.as_deref() == Some("proposed") { "proposal" } else { "plan" };
        o.put("intent", json!(intent));
        ctx.report.derived("CarePlan.intent (a DSTU2 CarePlan is a plan)");
    }
}

fn goal(o: &mut Obj) {
    if let Some(Value::String(status)) = o.take("status") {
        let (lifecycle, achievement) = match status.as_str() {
            "proposed" => ("proposed", None),
            "planned" => ("planned", None),
            "accepted" => ("accepted", None),
            "rejected" => ("rejected", None),
            "in-progress" => ("active", Some("in-progress")),
            "achieved" => ("completed", Some("achieved")),
            "sustaining" => ("active", Some("sustaining")),
            "on-hold" => ("on-hold", None),
            "cancelled" => ("cancelled", None),
            other => {
                o.put("status", Value::String(other.to_owned()));
                ("", None)
            }
        };
        if !lifecycle.is_empty() {
            o.put("lifecycleStatus", json!(lifecycle));
        }
        if let Some(a) = achievement {
            o.put(
                "achievementStatus",
                json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/goal-achievement", "code": a}]}),
            );
        }
    }
    o.string_to_concept("description");
    o.rename("author", "expressedBy");
    if let Some(Value::Object(reason)) = o.map.get("statusReason").cloned() {
        let text = reason
            .get("text")
            .or_else(|| reason.get("coding").and_then(|c| c.get(0)).and_then(|c| c.get("display")))
            .and_then(Value::as_str)
            .map(String::from);
        if let Some(t) = text {
            o.put("statusReason", Value::String(t));
        }
    }
    let mut target = Map::new();
    if let Some(v) = o.take("targetDate") {
        target.insert("dueDate".into(), v);
    }
    if let Some(v) = o.take("targetQuantity") {
        target.insert("dueDuration".into(), v);
    }
    if !target.is_empty() {
        o.put("target", json!([Value::Object(target)]));
    }
    if let Some(Value::Array(outcomes)) = o.take("outcome") {
        for out in outcomes {
            if let Some(c) = out.get("resultCodeableConcept") {
                push(o, "outcomeCode", c.clone());
            }
            if let Some(r) = out.get("resultReference") {
                push(o, "outcomeReference", r.clone());
            }
        }
    }
}

fn push(o: &mut Obj, name: &str, v: Value) {
    let list = o.map.entry(name.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
    if let Some(l) = list.as_array_mut() {
        l.push(v);
    }
}

fn family_member_history(o: &mut Obj) {
    if let Some(Value::String(g)) = o.take("gender") {
        o.put("sex", json!({"coding": [{"system": "http://hl7.org/fhir/administrative-gender", "code": g}]}));
    }
    o.annotations("note", "note");
    o.each("condition", |c| obj(c).annotations("note", "note"));
}

fn coverage(o: &mut Obj) {
    o.rename("issuer", "payor");
    o.rename("sequence", "order");
    if let Some(Value::Object(coding)) = o.take("type") {
        o.put("type", json!({"coding": [Value::Object(coding)]}));
    }
    if let Some(Value::Object(id)) = o.map.get("subscriberId").cloned() {
        if let Some(v) = id.get("value") {
            o.put("subscriberId", v.clone());
        }
    }
    if let Some(Value::Object(id)) = o.map.get("network").cloned() {
        if let Some(v) = id.get("value") {
            o.put("network", v.clone());
        }
    }
    let mut classes = Vec::new();
    for (from, code) in [("group", "group"), ("plan", "plan"), ("subPlan", "subplan")] {
        if let Some(Value::String(v)) = o.take(from) {
            classes.push(json!({"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": code}]}, "value": v}));
        }
    }
    if !classes.is_empty() {
        o.put("class", Value::Array(classes));
    }
}

fn claim(o: &mut Obj) {
    if let Some(Value::String(t)) = o.take("type") {
        o.put("type", json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": t}]}));
    }
    o.recode("use", &[("complete", "claim"), ("proposed", "preauthorization"), ("exploratory", "predetermination")]);
    if let Some(Value::Object(coding)) = o.take("priority") {
        o.put("priority", json!({"coding": [Value::Object(coding)]}));
    }
    o.each("diagnosis", |d| {
        let mut d = obj(d);
        if let Some(Value::Object(coding)) = d.take("diagnosis") {
            d.put("diagnosisCodeableConcept", json!({"coding": [Value::Object(coding)]}));
        }
    });
    o.rename("coverage", "insurance");
    o.each("item", |i| {
        let mut i = obj(i);
        if let Some(Value::Object(coding)) = i.take("service") {
            i.put("productOrService", json!({"coding": [Value::Object(coding)]}));
        }
        i.rename("serviceDate", "servicedDate");
        i.rename("diagnosisLinkId", "diagnosisSequence");
    });
}

fn explanation_of_benefit(o: &mut Obj) {
    o.rename("request", "claim");
    o.rename("requestProvider", "provider");
}
