//! Opening a link: find it by its secret, check it is still usable, and read the one Task and
//! focus it is for (and the names the page shows). Nothing else is read.

use std::collections::HashMap;

use serde_json::Value;
use store::action_links::{ActionLinkRecord, LinkState};
use store::Store;

use crate::mint::read_json;
use crate::{check_focus, split_reference, target, Action, Policy, TaskError};

/// A usable link with what it acts on.
#[derive(Debug, Clone)]
pub struct Opened {
    pub link: ActionLinkRecord,
    pub action: Action,
    pub policy: Policy,
    pub task: Value,
    pub task_version: i64,
    pub focus_type: &'static str,
    pub focus_id: String,
    pub focus: Value,
    pub focus_version: i64,
    /// Display names of the patient and of the practitioners and organisations the Task and its
    /// focus refer to, by reference (`Patient/p1` → "Ana Lopez").
    pub names: HashMap<String, String>,
}

impl Opened {
    pub fn patient_reference(&self) -> String {
        format!("Patient/{}", self.link.patient_id)
    }

    /// The name of what `reference` points at: its `display`, else the stored name.
    pub fn name_of(&self, reference: &Value) -> Option<String> {
        if let Some(display) = reference.get("display").and_then(Value::as_str) {
            return Some(display.to_owned());
        }
        let key = reference.get("reference").and_then(Value::as_str)?;
        let (rtype, id) = split_reference(key)?;
        self.names.get(&format!("{rtype}/{id}")).cloned()
    }
}

/// The longest secret considered: anything longer is not one of ours.
const MAX_SECRET_LEN: usize = 128;

/// Open the link whose URL ends in `secret`. `NotFound` for an unknown secret; `Closed` for a
/// link that was used, revoked, locked or has expired; `Changed` when the Task is no longer
/// waiting for this decision.
pub async fn open(store: &Store, secret: &str) -> Result<Opened, TaskError> {
    let unknown = || TaskError::NotFound("this link is not known".into());
    if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
        return Err(unknown());
    }
    let link = store.action_link_by_secret(&store::auth::token_hash(secret)).await?.ok_or_else(unknown)?;
    let now = store.clock().now().unix_timestamp();
    let state = link.state(now);
    if state != LinkState::Open {
        return Err(TaskError::Closed(Box::new(link), state));
    }
    let corrupt = |what: &str| TaskError::Internal(format!("action link {} has a bad {what}", link.link_id));
    let action = Action::parse(&link.action).ok_or_else(|| corrupt("action"))?;
    let policy = Policy::parse(&link.policy).ok_or_else(|| corrupt("policy"))?;
    let (task, task_version) = read_json(store, "Task", &link.task_id).await.map_err(|e| match e {
        TaskError::NotFound(_) => TaskError::Changed("the request this link was for no longer exists".into()),
        other => other,
    })?;
    let target = target(&task)?;
    if target.patient_id != link.patient_id || target.action != action {
        return Err(TaskError::Changed("the request this link was for has changed; ask for a new link".into()));
    }
    let (focus, focus_version) = read_json(store, target.focus_type, &target.focus_id).await.map_err(|e| match e {
        TaskError::NotFound(_) => TaskError::Changed("the request this link was for no longer exists".into()),
        other => other,
    })?;
    check_focus(&target, &focus)?;
    let names = names(store, &link.patient_id, &task, &focus).await?;
    Ok(Opened {
        link,
        action,
        policy,
        task,
        task_version,
        focus_type: target.focus_type,
        focus_id: target.focus_id,
        focus,
        focus_version,
        names,
    })
}

/// Types whose names a page may show: the patient and who asks (never clinical records).
const NAMED_TYPES: [&str; 5] = ["Patient", "Practitioner", "PractitionerRole", "Organization", "RelatedPerson"];

async fn names(
    store: &Store,
    patient_id: &str,
    task: &Value,
    focus: &Value,
) -> Result<HashMap<String, String>, TaskError> {
    let mut wanted = vec![format!("Patient/{patient_id}")];
    for (resource, fields) in [
        (task, &["requester", "owner"][..]),
        (focus, &["provider", "insurer", "enterer", "performer", "organization"][..]),
    ] {
        for field in fields {
            let refs: Vec<&Value> = match resource.get(*field) {
                Some(Value::Array(items)) => items.iter().collect(),
                Some(one) => vec![one],
                None => Vec::new(),
            };
            for r in refs {
                if let Some((rtype, id)) = r.get("reference").and_then(Value::as_str).and_then(split_reference) {
                    if NAMED_TYPES.contains(&rtype) {
                        wanted.push(format!("{rtype}/{id}"));
                    }
                }
            }
        }
    }
    let mut out = HashMap::new();
    for key in wanted {
        if out.contains_key(&key) {
            continue;
        }
        let Some((rtype, id)) = split_reference(&key) else { continue };
        if let Ok((resource, _)) = read_json(store, rtype, id).await {
            if let Some(name) = display_name(&resource) {
                out.insert(key, name);
            }
        }
    }
    Ok(out)
}

/// A resource's human-readable name: `name` as a string (Organization) or a HumanName.
pub(crate) fn display_name(resource: &Value) -> Option<String> {
    match resource.get("name")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(names) => {
            let name = names
                .iter()
                .find(|n| n.get("use").and_then(Value::as_str) == Some("official"))
                .or_else(|| names.first())?;
            if let Some(text) = name.get("text").and_then(Value::as_str) {
                return Some(text.to_owned());
            }
            let mut parts: Vec<&str> = Vec::new();
            for p in ["prefix", "given"] {
                if let Some(items) = name.get(p).and_then(Value::as_array) {
                    parts.extend(items.iter().filter_map(Value::as_str));
                }
            }
            if let Some(family) = name.get("family").and_then(Value::as_str) {
                parts.push(family);
            }
            (!parts.is_empty()).then(|| parts.join(" "))
        }
        _ => None,
    }
}
