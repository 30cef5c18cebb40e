//! The action in plain language: a heading, one sentence of what it means, the facts a
//! person needs to decide, and the two buttons.

use serde_json::Value;

use crate::{Action, Opened};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presentation {
    pub heading: String,
    pub summary: String,
    /// (label, value) pairs, in reading order.
    pub facts: Vec<(String, String)>,
    /// The Task's own description, when the sender wrote one.
    pub note: Option<String>,
    pub approve_label: &'static str,
    pub decline_label: &'static str,
    /// What each choice does, said before the person chooses.
    pub approve_means: String,
    pub decline_means: String,
}

/// A CodeableConcept's words: its text, else its codings' displays, else its codes.
fn concept_text(concept: &Value) -> Option<String> {
    if let Some(text) = concept.get("text").and_then(Value::as_str) {
        return Some(text.to_owned());
    }
    let codings = concept.get("coding")?.as_array()?;
    codings
        .iter()
        .find_map(|c| c.get("display").and_then(Value::as_str))
        .or_else(|| codings.iter().find_map(|c| c.get("code").and_then(Value::as_str)))
        .map(str::to_owned)
}

fn list(values: Vec<String>) -> Option<String> {
    (!values.is_empty()).then(|| values.join("; "))
}

/// "2026-11-30" from a FHIR date or dateTime.
fn day(text: &str) -> String {
    text.get(..10).unwrap_or(text).to_owned()
}

fn money(value: &Value) -> Option<String> {
    let amount = value.get("value")?;
    let amount = amount.as_f64().map(|v| format!("{v:.2}")).unwrap_or_else(|| amount.to_string());
    let currency = value.get("currency").and_then(Value::as_str).unwrap_or("");
    Some(format!("{amount} {currency}").trim().to_owned())
}

pub fn present(opened: &Opened) -> Presentation {
    let patient = opened
        .names
        .get(&opened.patient_reference())
        .cloned()
        .unwrap_or_else(|| format!("patient {}", opened.link.patient_id));
    let note = opened.task.get("description").and_then(Value::as_str).map(str::to_owned);
    let focus = &opened.focus;
    let name = |field: &str| focus.get(field).and_then(|r| opened.name_of(r));
    match opened.action {
        Action::PriorAuthorization => {
            let provider = name("provider").unwrap_or_else(|| "Your care team".into());
            let insurer = name("insurer").unwrap_or_else(|| "your health plan".into());
            let care = focus
                .get("item")
                .and_then(Value::as_array)
                .map(|items| items.iter().filter_map(|i| i.get("productOrService").and_then(concept_text)).collect())
                .and_then(list)
                .unwrap_or_else(|| "the care described by your provider".into());
            let mut facts = vec![
                ("For".to_owned(), patient.clone()),
                ("Care requested".to_owned(), care.clone()),
                ("Requested by".to_owned(), provider.clone()),
                ("Health plan".to_owned(), insurer.clone()),
            ];
            let reasons: Vec<String> = focus
                .get("diagnosis")
                .and_then(Value::as_array)
                .map(|d| d.iter().filter_map(|d| d.get("diagnosisCodeableConcept").and_then(concept_text)).collect())
                .unwrap_or_default();
            if let Some(reasons) = list(reasons) {
                facts.push(("Reason".into(), reasons));
            }
            if let Some(created) = focus.get("created").and_then(Value::as_str) {
                facts.push(("Date of the request".into(), day(created)));
            }
            if let Some(total) = focus.get("total").and_then(money) {
                facts.push(("Estimated cost".into(), total));
            }
            Presentation {
                heading: "Approve a prior authorization request".into(),
                summary: format!(
                    "{provider} wants to ask {insurer} to approve care for {patient} before it happens. \
                     They need your approval to send the request."
                ),
                facts,
                note,
                approve_label: "Approve",
                decline_label: "Decline",
                approve_means: format!("Approve: the request for {care} goes ahead."),
                decline_means: "Decline: the request is withdrawn. You can talk to your provider about other options."
                    .into(),
            }
        }
        Action::Consent => {
            let asks = name("organization")
                .or_else(|| {
                    focus
                        .get("performer")
                        .and_then(Value::as_array)
                        .and_then(|p| p.first())
                        .and_then(|r| opened.name_of(r))
                })
                .unwrap_or_else(|| "Your care team".into());
            let what = focus
                .get("category")
                .and_then(Value::as_array)
                .map(|c| c.iter().filter_map(concept_text).collect())
                .and_then(list)
                .or_else(|| focus.get("scope").and_then(concept_text))
                .unwrap_or_else(|| "a consent".into());
            let mut facts = vec![
                ("For".to_owned(), patient.clone()),
                ("What you are asked to agree to".to_owned(), what.clone()),
                ("Asked by".to_owned(), asks.clone()),
            ];
            if let Some(rule) = focus.get("policyRule").and_then(concept_text) {
                facts.push(("Policy".into(), rule));
            }
            if let Some(period) = focus.pointer("/provision/period") {
                let start = period.get("start").and_then(Value::as_str).map(day);
                let end = period.get("end").and_then(Value::as_str).map(day);
                let text = match (start, end) {
                    (Some(s), Some(e)) => format!("{s} to {e}"),
                    (Some(s), None) => format!("from {s}"),
                    (None, Some(e)) => format!("until {e}"),
                    (None, None) => String::new(),
                };
                if !text.is_empty() {
                    facts.push(("For the period".into(), text));
                }
            }
            Presentation {
                heading: "Sign a consent".into(),
                summary: format!("{asks} asks {patient} to agree to {what}."),
                facts,
                note,
                approve_label: "Sign",
                decline_label: "Decline",
                approve_means: "Sign: the consent takes effect.".into(),
                decline_means: "Decline: the consent is not given. Nothing changes.".into(),
            }
        }
    }
}
