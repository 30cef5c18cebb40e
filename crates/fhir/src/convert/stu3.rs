//! STU3 (3.0.x) → R4: the rules per resource type. Elements not named here keep their name;
//! the fit step then moves whatever R4 does not know into cross-version extensions.

use serde_json::{json, Map, Value};

use super::ops::{obj, Ctx, Obj};

const CONDITION_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
const CONDITION_VERIFICATION: &str = "http://terminology.hl7.org/CodeSystem/condition-ver-status";
const ALLERGY_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
const ALLERGY_VERIFICATION: &str = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";

pub(crate) fn convert(map: &mut Map<String, Value>, ctx: &mut Ctx) {
    let mut o = obj(map);
    // `context` (Encounter or EpisodeOfCare) is `encounter` in most R4 resources.
    if matches!(
        ctx.source_type,
        "Observation" | "Condition" | "DiagnosticReport" | "Procedure" | "CarePlan" | "CareTeam" | "MedicationRequest"
    ) {
        o.rename("context", "encounter");
    }
    match ctx.source_type {
        "Encounter" => encounter(&mut o),
        "Observation" => observation(&mut o),
        "Condition" => condition(&mut o),
        "AllergyIntolerance" => allergy(&mut o),
        "MedicationRequest" => medication_request(&mut o),
        "MedicationStatement" => medication_statement(&mut o),
        "MedicationDispense" => medication_dispense(&mut o),
        "Medication" => medication(&mut o),
        "Immunization" => immunization(&mut o),
        "Procedure" => procedure(&mut o),
        "DiagnosticReport" => diagnostic_report(&mut o),
        "DocumentReference" => document_reference(&mut o),
        "CarePlan" => care_plan(&mut o),
        "CareTeam" => care_team(&mut o),
        "Goal" => goal(&mut o),
        "FamilyMemberHistory" => family_member_history(&mut o),
        "Coverage" => coverage(&mut o),
        "Claim" => claim(&mut o),
        "ExplanationOfBenefit" => explanation_of_benefit(&mut o, ctx),
        _ => {}
    }
}

fn encounter(o: &mut Obj) {
    o.rename("reason", "reasonCode");
    o.each("diagnosis", |d| obj(d).rename("role", "use"));
}

fn observation(o: &mut Obj) {
    o.annotations("comment", "note");
    let Some(Value::Array(related)) = o.take("related") else { return };
    let mut rest = Vec::new();
    for r in related {
        let slot = match r.get("type").and_then(Value::as_str).unwrap_or("has-member") {
            "has-member" => Some("hasMember"),
            "derived-from" => Some("derivedFrom"),
            _ => None,
        };
        match (slot, r.get("target").cloned()) {
            (Some(slot), Some(t)) => push(o, slot, t),
            _ => rest.push(r),
        }
    }
    if !rest.is_empty() {
        o.put("related", Value::Array(rest));
    }
}

fn condition(o: &mut Obj) {
    o.code_to_concept("clinicalStatus", "clinicalStatus", CONDITION_CLINICAL, &[]);
    o.code_to_concept(
        "verificationStatus",
        "verificationStatus",
        CONDITION_VERIFICATION,
        &[("unknown", "unconfirmed")],
    );
    o.rename("assertedDate", "recordedDate");
}

fn allergy(o: &mut Obj) {
    o.code_to_concept("clinicalStatus", "clinicalStatus", ALLERGY_CLINICAL, &[]);
    o.code_to_concept("verificationStatus", "verificationStatus", ALLERGY_VERIFICATION, &[]);
    o.rename("assertedDate", "recordedDate");
}

pub(crate) fn dosage(d: &mut Map<String, Value>) {
    let mut d = obj(d);
    let mut dose_and_rate = Map::new();
    for key in ["doseQuantity", "doseRange", "rateRatio", "rateRange", "rateQuantity"] {
        if let Some(v) = d.take(key) {
            dose_and_rate.insert(key.to_owned(), v);
        }
    }
    if !dose_and_rate.is_empty() {
        d.put("doseAndRate", json!([Value::Object(dose_and_rate)]));
    }
}

fn medication_request(o: &mut Obj) {
    if let Some(Value::Object(mut requester)) = o.take("requester") {
        if let Some(agent) = requester.remove("agent") {
            o.put("requester", agent);
        }
        if !requester.is_empty() {
            o.put("requesterOnBehalfOf", Value::Object(requester));
        }
    }
    o.recode("intent", &[("instance-order", "instance-order")]);
    o.each("dosageInstruction", dosage);
    o.each("substitution", |s| obj(s).rename("allowed", "allowedBoolean"));
}

fn medication_statement(o: &mut Obj) {
    match o.str("taken") {
        Some("n") => {
            o.put("status", json!("not-taken"));
            o.take("taken");
        }
        Some("unk") if o.str("status").is_none() => {
            o.put("status", json!("unknown"));
            o.take("taken");
        }
        Some("y") => {
            o.take("taken");
        }
        _ => {}
    }
    o.rename("reasonNotTaken", "statusReason");
    o.each("dosage", dosage);
}

fn medication_dispense(o: &mut Obj) {
    if o.map.get("notDone").and_then(Value::as_bool) == Some(true) {
        o.put("status", json!("declined"));
    }
    o.take("notDone");
    o.rename("notDoneReasonCodeableConcept", "statusReasonCodeableConcept");
    o.rename("notDoneReasonReference", "statusReasonReference");
    o.each("dosageInstruction", dosage);
}

fn medication(o: &mut Obj) {
    o.each("ingredient", |i| obj(i).rename("amount", "strength"));
    if let Some(Value::Object(mut package)) = o.take("package") {
        if let Some(Value::Array(mut batches)) = package.remove("batch") {
            if !batches.is_empty() {
                o.put("batch", batches.remove(0));
            }
            if !batches.is_empty() {
                package.insert("batch".into(), Value::Array(batches));
            }
        }
        if !package.is_empty() {
            o.put("package", Value::Object(package));
        }
    }
}

fn immunization(o: &mut Obj) {
    o.rename("date", "occurrenceDateTime");
    if o.map.get("notGiven").and_then(Value::as_bool) == Some(true) {
        o.put("status", json!("not-done"));
    }
    o.take("notGiven");
    o.rename("practitioner", "performer");
    o.each("performer", |p| obj(p).rename("role", "function"));
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
    o.recode("status", &[("suspended", "on-hold"), ("aborted", "stopped")]);
    if o.map.get("notDone").and_then(Value::as_bool) == Some(true) {
        o.put("status", json!("not-done"));
    }
    o.take("notDone");
    o.rename("notDoneReason", "statusReason");
    o.each("performer", |p| obj(p).rename("role", "function"));
}

fn diagnostic_report(o: &mut Obj) {
    o.rename("codedDiagnosis", "conclusionCode");
    o.rename("image", "media");
    if let Some(Value::Array(performers)) = o.take("performer") {
        let actors: Vec<Value> = performers.into_iter().filter_map(|p| p.get("actor").cloned()).collect();
        if !actors.is_empty() {
            o.put("performer", Value::Array(actors));
        }
    }
}

fn document_reference(o: &mut Obj) {
    o.rename("class", "category");
    o.rename("indexed", "date");
    o.each("context", |c| {
        let mut c = obj(c);
        if let Some(Value::Array(related)) = c.take("related") {
            let refs: Vec<Value> = related.into_iter().filter_map(|r| r.get("ref").cloned()).collect();
            if !refs.is_empty() {
                c.put("related", Value::Array(refs));
            }
        }
    });
}

fn care_plan(o: &mut Obj) {
    o.recode("status", &[("suspended", "on-hold"), ("cancelled", "revoked")]);
}

fn care_team(o: &mut Obj) {
    let _ = o;
}

fn goal(o: &mut Obj) {
    if let Some(Value::String(status)) = o.take("status") {
        let (lifecycle, achievement) = match status.as_str() {
            "proposed" | "accepted" | "planned" | "on-hold" | "cancelled" | "entered-in-error" | "rejected" => {
                (status.clone(), None)
            }
            "in-progress" => ("active".to_owned(), Some("in-progress")),
            "on-target" | "ahead-of-target" | "behind-target" | "sustaining" => {
                ("active".to_owned(), Some(status.as_str()))
            }
            "achieved" => ("completed".to_owned(), Some("achieved")),
            other => {
                o.put("status", Value::String(other.to_owned()));
                (String::new(), None)
            }
        };
        if !lifecycle.is_empty() {
            o.put("lifecycleStatus", Value::String(lifecycle));
        }
        if let Some(a) = achievement {
            let a = match a {
                "on-target" | "ahead-of-target" => "improving",
                "behind-target" => "worsening",
                other => other,
            };
            o.put(
                "achievementStatus",
                json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/goal-achievement", "code": a}]}),
            );
        }
    }
    if let Some(Value::Object(mut target)) = o.take("target") {
        let mut due = Map::new();
        for (from, to) in [("dueDate", "dueDate"), ("dueDuration", "dueDuration")] {
            if let Some(v) = target.remove(from) {
                due.insert(to.into(), v);
            }
        }
        target.extend(due);
        o.put("target", json!([Value::Object(target)]));
    }
}

fn family_member_history(o: &mut Obj) {
    if let Some(Value::String(g)) = o.take("gender") {
        o.put("sex", json!({"coding": [{"system": "http://hl7.org/fhir/administrative-gender", "code": g}]}));
    }
    o.rename("definition", "instantiatesCanonical");
    if o.map.get("notDone").and_then(Value::as_bool) != Some(true) {
        o.take("notDone");
    }
    o.rename("notDoneReason", "dataAbsentReason");
}

fn coverage(o: &mut Obj) {
    if let Some(Value::Object(grouping)) = o.take("grouping") {
        let mut classes = Vec::new();
        for (key, code) in [
            ("group", "group"),
            ("subGroup", "subgroup"),
            ("plan", "plan"),
            ("subPlan", "subplan"),
            ("class", "class"),
            ("subClass", "subclass"),
        ] {
            if let Some(Value::String(v)) = grouping.get(key) {
                let mut class = json!({"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": code}]}, "value": v});
                if let Some(Value::String(name)) = grouping.get(&format!("{key}Display")) {
                    class["name"] = json!(name);
                }
                classes.push(class);
            }
        }
        if !classes.is_empty() {
            o.put("class", Value::Array(classes));
        }
    }
    let has_order = o.has("order");
    if let (false, Some(Value::String(seq))) = (has_order, o.take("sequence")) {
        if let Ok(n) = seq.trim().parse::<u32>() {
            o.put("order", json!(n));
        } else {
            o.put("sequence", json!(seq));
        }
    }
}

fn item(i: &mut Map<String, Value>) {
    let mut i = obj(i);
    i.rename("service", "productOrService");
    i.rename("careTeamLinkId", "careTeamSequence");
    i.rename("diagnosisLinkId", "diagnosisSequence");
    i.rename("procedureLinkId", "procedureSequence");
    i.rename("informationLinkId", "informationSequence");
    i.each("detail", |d| {
        let mut d = obj(d);
        d.rename("service", "productOrService");
        d.each("subDetail", |s| obj(s).rename("service", "productOrService"));
    });
}

fn claim(o: &mut Obj) {
    o.recode("use", &[("complete", "claim"), ("proposed", "preauthorization"), ("exploratory", "predetermination")]);
    o.rename("information", "supportingInfo");
    o.each("supportingInfo", |s| {
        if let Some(Value::Object(coding)) = s.remove("reason") {
            s.insert("reason".into(), json!({"coding": [Value::Object(coding)]}));
        }
    });
    o.each("item", item);
}

fn explanation_of_benefit(o: &mut Obj, ctx: &mut Ctx) {
    o.rename("information", "supportingInfo");
    if let Some(Value::Object(outcome)) = o.map.get("outcome").cloned() {
        if let Some(code) = outcome.get("coding").and_then(|c| c.get(0)).and_then(|c| c.get("code")).cloned() {
            o.put("outcome", code);
        }
    }
    if let Some(Value::Object(mut insurance)) = o.take("insurance") {
        // STU3 has one insurance: the coverage this claim was adjudicated against.
        insurance.insert("focal".into(), json!(true));
        ctx.report.derived("ExplanationOfBenefit.insurance.focal (STU3's one insurance)");
        o.put("insurance", json!([Value::Object(insurance)]));
    }
    o.each("item", item);
}

fn push(o: &mut Obj, name: &str, v: Value) {
    let list = o.map.entry(name.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
    if let Some(l) = list.as_array_mut() {
        l.push(v);
    }
}
