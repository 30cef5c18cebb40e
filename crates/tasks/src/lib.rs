//! Single-task action links: the data holder's to-do items. A staff member or a backend system
//! mints a link for one `Task` (approve or decline a prior authorization, sign a Consent); the
//! person opens it without a portal session, sees that one action in plain language behind the
//! link's policy (a click-through confirm, a PIN given out of band, or a full sign-in), and
//! decides. The decision updates the Task and its focus in the transaction that uses up the
//! link. The link's authority is exactly that: [`open`] reads the Task, its focus and the names
//! of the people and organisations they mention, and [`decide`] writes those two resources.

mod decide;
mod mint;
mod open;
mod present;

pub use decide::{decide, Decider, Decision};
pub use mint::{mint, parse_instant, MintRequest, Minted, Minter};
pub use open::{open, Opened};
pub use present::{present, Presentation};
pub use store::action_links::{ActionLinkRecord, LinkState};

use serde_json::{json, Value};
use store::StoreError;
use time::OffsetDateTime;

/// Task `input`/`output` types defined by Portico (`Task.input.type` / `Task.output.type`).
pub const IO_SYSTEM: &str = "https://portico.dev/fhir/CodeSystem/task-io";
/// The input that carries a link's URL (`valueUrl`).
pub const LINK_INPUT: &str = "action-link";
/// On the link input: the policy (`valueCode`).
pub const POLICY_EXTENSION: &str = "https://portico.dev/fhir/StructureDefinition/action-link-policy";
/// On the link input: when it expires (`valueDateTime`).
pub const EXPIRES_EXTENSION: &str = "https://portico.dev/fhir/StructureDefinition/action-link-expires";
/// The decision recorded in `Task.output` (`approved` / `declined`).
pub const DECISION_SYSTEM: &str = "https://portico.dev/fhir/CodeSystem/task-decision";

/// Wrong PINs after which a link locks for good.
pub const MAX_PIN_FAILURES: i64 = 5;
/// A link's life when the minting request names no expiry.
pub const DEFAULT_LIFETIME_S: i64 = 72 * 3600;
/// The longest life a link may be given.
pub const MAX_LIFETIME_S: i64 = 30 * 24 * 3600;
/// The shortest: a link must be usable for a few minutes at least.
pub const MIN_LIFETIME_S: i64 = 5 * 60;

/// How the person proves they may take the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Holding the link is enough; the page asks for a confirming click (CSRF-protected).
    ClickThrough,
    /// A PIN given to the person out of band (attempts limited).
    Pin,
    /// A portal sign-in as the Task's patient or someone who acts for them.
    SignIn,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::ClickThrough => "click-through",
            Policy::Pin => "pin",
            Policy::SignIn => "sign-in",
        }
    }

    pub fn parse(text: &str) -> Option<Policy> {
        Some(match text {
            "click-through" => Policy::ClickThrough,
            "pin" => Policy::Pin,
            "sign-in" => Policy::SignIn,
            _ => return None,
        })
    }
}

/// The one action a link offers, decided by the Task's focus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The focus is a `Claim` with `use = preauthorization`.
    PriorAuthorization,
    /// The focus is a `Consent` waiting for the patient's signature.
    Consent,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::PriorAuthorization => "prior-authorization",
            Action::Consent => "consent",
        }
    }

    pub fn parse(text: &str) -> Option<Action> {
        Some(match text {
            "prior-authorization" => Action::PriorAuthorization,
            "consent" => Action::Consent,
            _ => return None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The Task (or the request) does not allow a link: 422 for an API caller.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The link exists but can no longer be used (used, expired, revoked, locked).
    #[error("this link can no longer be used")]
    Closed(Box<ActionLinkRecord>, LinkState),
    /// The Task is no longer waiting for this decision, or changed while the page was open.
    #[error("{0}")]
    Changed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

/// A FHIR `instant` / `dateTime` in UTC, to the second.
pub fn fhir_instant(epoch_s: i64) -> String {
    OffsetDateTime::from_unix_timestamp(epoch_s)
        .ok()
        .and_then(|t| {
            t.format(&time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z")).ok()
        })
        .unwrap_or_default()
}

/// The `Patient/{id}`-style reference's type and id.
fn split_reference(reference: &str) -> Option<(&str, &str)> {
    let mut parts = reference.rsplitn(2, '/');
    let id = parts.next()?;
    let rtype = parts.next()?.rsplit('/').next()?;
    (!id.is_empty() && !rtype.is_empty()).then_some((rtype, id))
}

fn reference_of<'a>(resource: &'a Value, field: &str) -> Option<&'a str> {
    resource.get(field)?.get("reference")?.as_str()
}

/// What a Task asks for: its patient, its action, and its focus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub patient_id: String,
    pub action: Action,
    pub focus_type: &'static str,
    pub focus_id: String,
}

const OPEN_TASK_STATUSES: [&str; 3] = ["requested", "received", "ready"];

fn task_status(task: &Value) -> &str {
    task.get("status").and_then(Value::as_str).unwrap_or_default()
}

/// The Task's patient and focus, when it is an open to-do an action link can present.
pub fn target(task: &Value) -> Result<Target, TaskError> {
    let status = task_status(task);
    if !OPEN_TASK_STATUSES.contains(&status) {
        return Err(TaskError::Changed(format!(
            "the Task is '{status}': only a Task that is requested, received or ready waits for a decision"
        )));
    }
    let patient_id = reference_of(task, "for")
        .and_then(split_reference)
        .filter(|(t, _)| *t == "Patient")
        .map(|(_, id)| id.to_owned())
        .ok_or_else(|| {
            TaskError::Invalid("the Task has no Patient in 'for': an action link is for one person".into())
        })?;
    let (focus_type, focus_id) = reference_of(task, "focus")
        .and_then(split_reference)
        .ok_or_else(|| TaskError::Invalid("the Task has no 'focus': an action link acts on the Task's focus".into()))?;
    let (action, focus_type) = match focus_type {
        "Claim" => (Action::PriorAuthorization, "Claim"),
        "Consent" => (Action::Consent, "Consent"),
        other => {
            return Err(TaskError::Invalid(format!(
            "an action link can present a prior authorization (a Claim) or a Consent; this Task's focus is a {other}"
        )))
        }
    };
    Ok(Target { patient_id, action, focus_type, focus_id: focus_id.to_owned() })
}

/// Is the focus a request this action can decide, for the Task's patient?
pub(crate) fn check_focus(target: &Target, focus: &Value) -> Result<(), TaskError> {
    let patient = reference_of(focus, "patient").and_then(split_reference);
    if patient != Some(("Patient", target.patient_id.as_str())) {
        return Err(TaskError::Invalid(format!(
            "the Task's focus is not about the Task's patient (Patient/{})",
            target.patient_id
        )));
    }
    let status = focus.get("status").and_then(Value::as_str).unwrap_or_default();
    match target.action {
        Action::PriorAuthorization => {
            if focus.get("use").and_then(Value::as_str) != Some("preauthorization") {
                return Err(TaskError::Invalid(
                    "the Task's Claim is not a prior authorization (use = preauthorization)".into(),
                ));
            }
            if !matches!(status, "draft" | "active") {
                return Err(TaskError::Changed(format!("the prior authorization request is '{status}'")));
            }
        }
        Action::Consent => {
            if !matches!(status, "draft" | "proposed") {
                return Err(TaskError::Changed(format!("the Consent is '{status}', not waiting for a signature")));
            }
        }
    }
    Ok(())
}

/// A `Task.input`/`output` type.
fn io_type(code: &str, display: &str) -> Value {
    json!({ "coding": [{ "system": IO_SYSTEM, "code": code, "display": display }], "text": display })
}

fn has_io_type(entry: &Value, code: &str) -> bool {
    entry
        .pointer("/type/coding")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(|c| c["system"] == IO_SYSTEM && c["code"] == code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(status: &str, focus: &str) -> Value {
        json!({ "resourceType": "Task", "id": "t1", "status": status, "intent": "order",
                "for": { "reference": "Patient/p1" }, "focus": { "reference": focus } })
    }

    #[test]
    fn a_task_names_its_patient_and_action() {
        let t = target(&task("requested", "Claim/c1")).unwrap();
        assert_eq!(
            t,
            Target {
                patient_id: "p1".into(),
                action: Action::PriorAuthorization,
                focus_type: "Claim",
                focus_id: "c1".into()
            }
        );
        assert_eq!(target(&task("ready", "Consent/x")).unwrap().action, Action::Consent);
        assert!(matches!(target(&task("completed", "Claim/c1")), Err(TaskError::Changed(_))));
        assert!(matches!(target(&task("requested", "Observation/o")), Err(TaskError::Invalid(_))));
        let mut no_patient = task("requested", "Claim/c1");
        no_patient["for"] = json!({ "reference": "Group/g" });
        assert!(matches!(target(&no_patient), Err(TaskError::Invalid(_))));
    }

    #[test]
    fn the_focus_must_be_an_open_request_for_the_same_patient() {
        let t = target(&task("requested", "Claim/c1")).unwrap();
        let claim = json!({ "resourceType": "Claim", "status": "draft", "use": "preauthorization", "patient": { "reference": "Patient/p1" } });
        check_focus(&t, &claim).unwrap();
        let mut other = claim.clone();
        other["patient"]["reference"] = json!("Patient/p2");
        assert!(check_focus(&t, &other).is_err());
        let mut ordinary = claim.clone();
        ordinary["use"] = json!("claim");
        assert!(check_focus(&t, &ordinary).is_err());
        let mut cancelled = claim;
        cancelled["status"] = json!("cancelled");
        assert!(matches!(check_focus(&t, &cancelled), Err(TaskError::Changed(_))));
    }

    #[test]
    fn references_split_into_type_and_id() {
        assert_eq!(split_reference("Patient/p1"), Some(("Patient", "p1")));
        assert_eq!(split_reference("https://x.org/fhir/Claim/c"), Some(("Claim", "c")));
        assert_eq!(split_reference("p1"), None);
        assert_eq!(fhir_instant(0), "1970-01-01T00:00:00Z");
    }
}
