//! The decision: the Task (status, output: what, who, when) and its focus (status) change in the
//! transaction that uses up the link.

use serde_json::{json, Map, Value};
use store::action_links::LinkState;
use store::{Store, StoreError, WriteRequest};

use crate::{fhir_instant, io_type, Action, Opened, Policy, TaskError, DECISION_SYSTEM};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Decline,
}

impl Decision {
    /// The recorded outcome: `approved` or `declined`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approved",
            Decision::Decline => "declined",
        }
    }

    pub fn parse(text: &str) -> Option<Decision> {
        match text {
            "approve" | "approved" => Some(Decision::Approve),
            "decline" | "declined" => Some(Decision::Decline),
            _ => None,
        }
    }
}

/// Who decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decider {
    /// Whoever held the link (and, under the `pin` policy, its PIN).
    LinkHolder(Policy),
    /// A signed-in person: their FHIR user (when they have one) and name.
    Person { reference: Option<String>, name: String },
}

impl Decider {
    fn as_reference(&self) -> Value {
        match self {
            Decider::LinkHolder(Policy::Pin) => json!({ "display": "The holder of the link and its PIN" }),
            Decider::LinkHolder(_) => json!({ "display": "The holder of the link" }),
            Decider::Person { reference: Some(r), name } => json!({ "reference": r, "display": name }),
            Decider::Person { reference: None, name } => json!({ "display": name }),
        }
    }

    /// For the link's record and the audit trail.
    pub fn describe(&self) -> String {
        match self {
            Decider::LinkHolder(policy) => format!("link holder ({})", policy.as_str()),
            Decider::Person { reference: Some(r), .. } => r.clone(),
            Decider::Person { reference: None, name } => name.clone(),
        }
    }
}

/// Record `decision` on the opened link's Task and focus, using up the link. The writes carry
/// the versions that were shown, so a Task changed meanwhile is not overwritten (the link stays
/// open and the person is asked to reload).
pub async fn decide(store: &Store, opened: &Opened, decision: Decision, who: &Decider) -> Result<(), TaskError> {
    let now = store.clock().now().unix_timestamp();
    let (task, focus) = decided(opened, decision, who, now);
    let writes = vec![
        WriteRequest::Update {
            resource_type: "Task".into(),
            id: opened.link.task_id.clone(),
            resource: task,
            if_match: Some(opened.task_version),
        },
        WriteRequest::Update {
            resource_type: opened.focus_type.into(),
            id: opened.focus_id.clone(),
            resource: focus,
            if_match: Some(opened.focus_version),
        },
    ];
    match store.use_action_link(&opened.link.link_id, decision.as_str(), &who.describe(), writes).await {
        Ok(_) => Ok(()),
        Err(StoreError::VersionConflict { .. }) => {
            Err(TaskError::Changed("the request changed while this page was open; reload the page".into()))
        }
        Err(StoreError::Conflict(_)) => {
            // Used, locked or expired meanwhile: say which.
            let link = store.action_link_by_secret(&opened.link.secret_hash).await?;
            match link {
                Some(link) => {
                    let state = link.state(now);
                    let state = if state == LinkState::Open { LinkState::Used } else { state };
                    Err(TaskError::Closed(Box::new(link), state))
                }
                None => Err(TaskError::NotFound("this link is not known".into())),
            }
        }
        Err(other) => Err(other.into()),
    }
}

fn without_meta(resource: &Value) -> Map<String, Value> {
    let mut map = resource.as_object().cloned().unwrap_or_default();
    if let Some(Value::Object(meta)) = map.get_mut("meta") {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            map.remove("meta");
        }
    }
    map
}

/// The Task and focus after the decision (pure).
fn decided(opened: &Opened, decision: Decision, who: &Decider, now: i64) -> (Value, Value) {
    let at = fhir_instant(now);
    let mut task = without_meta(&opened.task);
    let (status, business) = match (opened.action, decision) {
        (Action::PriorAuthorization, Decision::Approve) => ("completed", "Approved by the patient"),
        (Action::PriorAuthorization, Decision::Decline) => ("rejected", "Declined by the patient"),
        (Action::Consent, Decision::Approve) => ("completed", "Signed by the patient"),
        (Action::Consent, Decision::Decline) => ("rejected", "Declined by the patient"),
    };
    task.insert("status".into(), json!(status));
    task.insert("businessStatus".into(), json!({ "text": business }));
    task.insert("lastModified".into(), json!(at));
    let mut period = task.get("executionPeriod").and_then(Value::as_object).cloned().unwrap_or_default();
    period.entry("start").or_insert_with(|| json!(at));
    period.insert("end".into(), json!(at));
    task.insert("executionPeriod".into(), Value::Object(period));
    let mut outputs = task.get("output").and_then(Value::as_array).cloned().unwrap_or_default();
    let word = if decision == Decision::Approve { "Approved" } else { "Declined" };
    outputs.push(json!({
        "type": io_type("decision", "Decision"),
        "valueCodeableConcept": {
            "coding": [{ "system": DECISION_SYSTEM, "code": decision.as_str(), "display": word }],
            "text": word,
        },
    }));
    outputs.push(json!({ "type": io_type("decided-by", "Decided by"), "valueReference": who.as_reference() }));
    outputs.push(json!({ "type": io_type("decided-at", "Decided at"), "valueDateTime": at }));
    task.insert("output".into(), Value::Array(outputs));

    let mut focus = without_meta(&opened.focus);
    match (opened.action, decision) {
        (Action::PriorAuthorization, Decision::Approve) => {
            focus.insert("status".into(), json!("active"));
        }
        (Action::PriorAuthorization, Decision::Decline) => {
            focus.insert("status".into(), json!("cancelled"));
        }
        (Action::Consent, Decision::Approve) => {
            focus.insert("status".into(), json!("active"));
            focus.insert("dateTime".into(), json!(at));
        }
        (Action::Consent, Decision::Decline) => {
            focus.insert("status".into(), json!("rejected"));
        }
    }
    (Value::Object(task), Value::Object(focus))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use store::action_links::ActionLinkRecord;

    fn opened(action: Action) -> Opened {
        let (focus_type, focus) = match action {
            Action::PriorAuthorization => (
                "Claim",
                json!({ "resourceType": "Claim", "id": "c1", "status": "draft", "use": "preauthorization",
                        "patient": { "reference": "Patient/p1" }, "meta": { "versionId": "3" } }),
            ),
            Action::Consent => (
                "Consent",
                json!({ "resourceType": "Consent", "id": "c1", "status": "proposed", "patient": { "reference": "Patient/p1" } }),
            ),
        };
        Opened {
            link: ActionLinkRecord {
                link_id: "l".into(),
                secret_hash: "h".into(),
                task_id: "t1".into(),
                patient_id: "p1".into(),
                action: action.as_str().into(),
                policy: "pin".into(),
                pin_hash: None,
                pin_failures: 0,
                grant_id: None,
                client_id: None,
                created_at: 0,
                expires_at: 10,
                used_at: None,
                outcome: None,
                used_by: None,
                revoked_at: None,
                locked_at: None,
            },
            action,
            policy: Policy::Pin,
            task: json!({ "resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
                          "for": { "reference": "Patient/p1" }, "focus": { "reference": format!("{focus_type}/c1") },
                          "meta": { "versionId": "2", "lastUpdated": "2026-01-01T00:00:00Z" } }),
            task_version: 2,
            focus_type,
            focus_id: "c1".into(),
            focus,
            focus_version: 3,
            names: HashMap::new(),
        }
    }

    #[test]
    fn approving_completes_the_task_and_activates_the_claim() {
        let who = Decider::Person { reference: Some("Patient/p1".into()), name: "Ana".into() };
        let (task, claim) = decided(&opened(Action::PriorAuthorization), Decision::Approve, &who, 86_400);
        assert_eq!(task["status"], "completed");
        assert_eq!(task["lastModified"], "1970-01-02T00:00:00Z");
        assert_eq!(task["executionPeriod"]["end"], "1970-01-02T00:00:00Z");
        assert!(task["meta"].get("versionId").is_none());
        let outputs = task["output"].as_array().unwrap();
        assert_eq!(outputs[0]["valueCodeableConcept"]["coding"][0]["code"], "approved");
        assert_eq!(outputs[1]["valueReference"]["reference"], "Patient/p1");
        assert_eq!(outputs[2]["valueDateTime"], "1970-01-02T00:00:00Z");
        assert_eq!(claim["status"], "active");
    }

    #[test]
    fn declining_rejects_the_task_and_withdraws_the_request() {
        let (task, claim) =
            decided(&opened(Action::PriorAuthorization), Decision::Decline, &Decider::LinkHolder(Policy::Pin), 0);
        assert_eq!(task["status"], "rejected");
        assert_eq!(task["output"][1]["valueReference"]["display"], "The holder of the link and its PIN");
        assert_eq!(claim["status"], "cancelled");
        let (_, consent) =
            decided(&opened(Action::Consent), Decision::Approve, &Decider::LinkHolder(Policy::ClickThrough), 0);
        assert_eq!(consent["status"], "active");
        assert_eq!(consent["dateTime"], "1970-01-01T00:00:00Z");
    }
}
