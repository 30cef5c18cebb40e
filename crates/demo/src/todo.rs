//! The demo's open to-dos: prior authorization requests that wait for the patient's approval
//! (a `Claim` with `use = preauthorization` and the `Task` that asks for the decision), one for
//! the member and one for each of the parent's children, so `portico demo` can print a working
//! action link and `portico task-link create` has Tasks to mint for.

use serde_json::{json, Value};

use crate::{DemoData, AS_OF};

/// The member's Task id (the Claim has the same); the children's are `demo-prior-auth-child-N`.
pub const PRIOR_AUTH_TASK: &str = "demo-prior-auth";

fn reference_in(resource: &Value, field: &str) -> Option<Value> {
    let value = resource.get(field)?;
    Some(match value {
        Value::Array(items) => items.first()?.clone(),
        one => one.clone(),
    })
}

/// The prior authorization requests and their Tasks: the member's, then each child's.
pub fn prior_authorizations(data: &DemoData) -> Vec<Value> {
    let mut out = request(data, &data.accounts.member_patient_id, PRIOR_AUTH_TASK);
    for (i, child) in data.accounts.proxy_patient_ids.iter().enumerate() {
        out.extend(request(data, child, &format!("{PRIOR_AUTH_TASK}-child-{}", i + 1)));
    }
    out
}

/// One request and its Task (both with id `id`), referring to the patient's own plan and to a
/// demo doctor in the generated data.
fn request(data: &DemoData, patient_id: &str, id: &str) -> Vec<Value> {
    let patient = format!("Patient/{patient_id}");
    let coverage = data.resources().find(|r| {
        r["resourceType"] == "Coverage" && r.pointer("/beneficiary/reference").and_then(Value::as_str) == Some(&patient)
    });
    let insurer =
        coverage.and_then(|c| reference_in(c, "payor")).unwrap_or_else(|| json!({ "display": "Your health plan" }));
    let coverage_ref = coverage
        .and_then(|c| c["id"].as_str())
        .map(|id| json!({ "reference": format!("Coverage/{id}") }))
        .unwrap_or_else(|| json!({ "display": "Member coverage" }));
    let provider = data
        .accounts
        .practitioner_ids
        .first()
        .map(|id| json!({ "reference": format!("Practitioner/{id}") }))
        .unwrap_or_else(|| json!({ "display": "Your care team" }));
    vec![
        json!({
            "resourceType": "Claim",
            "id": id,
            "status": "draft",
            "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional" }] },
            "use": "preauthorization",
            "patient": { "reference": patient },
            "created": AS_OF,
            "insurer": insurer,
            "provider": provider,
            "priority": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal" }] },
            "diagnosis": [{
                "sequence": 1,
                "diagnosisCodeableConcept": { "coding": [{ "system": "http://snomed.info/sct", "code": "239873007", "display": "Osteoarthritis of knee" }] },
            }],
            "insurance": [{ "sequence": 1, "focal": true, "coverage": coverage_ref }],
            "item": [{
                "sequence": 1,
                "productOrService": { "coding": [{ "system": "http://www.ama-assn.org/go/cpt", "code": "73721",
                    "display": "MRI of the knee without contrast" }], "text": "MRI of the knee without contrast" },
                "unitPrice": { "value": 1250.0, "currency": "USD" },
            }],
            "total": { "value": 1250.0, "currency": "USD" },
        }),
        json!({
            "resourceType": "Task",
            "id": id,
            "status": "requested",
            "intent": "order",
            "code": { "coding": [{ "system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "approve", "display": "Activate/approve the focal resource" }] },
            "description": "Your doctor would like to ask your health plan to approve a knee MRI before it is done.",
            "focus": { "reference": format!("Claim/{id}") },
            "for": { "reference": patient },
            "authoredOn": AS_OF,
            "requester": provider,
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_for_the_member_and_their_plan() {
        let data = crate::generate(&crate::DemoConfig::default());
        let all = prior_authorizations(&data);
        assert_eq!(all.len(), 2 * (1 + data.accounts.proxy_patient_ids.len()));
        let [claim, task] = [all[0].clone(), all[1].clone()];
        assert_eq!(task["id"], PRIOR_AUTH_TASK);
        assert_eq!(all[3]["id"], "demo-prior-auth-child-1");
        assert_eq!(all[3]["for"]["reference"], format!("Patient/{}", data.accounts.proxy_patient_ids[0]).as_str());
        let patient = format!("Patient/{}", data.accounts.member_patient_id);
        assert_eq!(claim["patient"]["reference"], patient.as_str());
        assert_eq!(task["for"]["reference"], patient.as_str());
        assert!(claim["insurer"]["reference"].as_str().unwrap().starts_with("Organization/"));
        assert!(claim["insurance"][0]["coverage"]["reference"].as_str().unwrap().starts_with("Coverage/"));
    }
}
