//! Minting a link: check the Task is an open to-do Portico can present, make the secret (and
//! the PIN), and record the link with the Task that advertises it.

use serde_json::{json, Value};
use store::action_links::ActionLinkRecord;
use store::{ReadOutcome, Store, WriteOutcome, WriteRequest};

use crate::{
    check_focus, fhir_instant, has_io_type, io_type, target, Policy, TaskError, DEFAULT_LIFETIME_S, EXPIRES_EXTENSION,
    LINK_INPUT, MAX_LIFETIME_S, MIN_LIFETIME_S, POLICY_EXTENSION,
};

/// What the minting client asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MintRequest {
    pub policy: Policy,
    /// Epoch seconds; `None`: [`DEFAULT_LIFETIME_S`] from now.
    pub expires_at: Option<i64>,
}

impl MintRequest {
    /// From the `$action-link` operation's `Parameters`: `policy` (valueCode, required) and
    /// `expires` (valueDateTime or valueInstant, optional).
    pub fn from_parameters(body: &Value) -> Result<MintRequest, TaskError> {
        if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Err(TaskError::Invalid("$action-link takes a Parameters resource".into()));
        }
        let params = body.get("parameter").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        let mut policy = None;
        let mut expires_at = None;
        for p in params {
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
            match name {
                "policy" => {
                    let code = p.get("valueCode").or_else(|| p.get("valueString")).and_then(Value::as_str);
                    policy = Some(code.and_then(Policy::parse).ok_or_else(|| {
                        TaskError::Invalid("policy must be click-through, pin or sign-in (valueCode)".into())
                    })?);
                }
                "expires" => {
                    let text = p.get("valueDateTime").or_else(|| p.get("valueInstant")).and_then(Value::as_str);
                    expires_at = Some(text.and_then(parse_instant).ok_or_else(|| {
                        TaskError::Invalid(
                            "expires must be a date and time with seconds and a time zone (valueDateTime)".into(),
                        )
                    })?);
                }
                other => return Err(TaskError::Invalid(format!("$action-link has no parameter '{other}'"))),
            }
        }
        let policy = policy.ok_or_else(|| TaskError::Invalid("$action-link needs a policy".into()))?;
        Ok(MintRequest { policy, expires_at })
    }
}

/// An RFC 3339 date-time (a FHIR `instant`, or a `dateTime` with a time and zone).
pub fn parse_instant(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}

/// Who mints the link: the token's grant (the link dies with it) and client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Minter {
    pub grant_id: Option<String>,
    pub client_id: Option<String>,
    /// The link may not outlive this (a person's grant's expiry).
    pub not_after: Option<i64>,
}

/// A new link. The secret is in `url` and the PIN here only: neither is stored.
#[derive(Debug, Clone)]
pub struct Minted {
    pub url: String,
    pub pin: Option<String>,
    pub expires_at: i64,
    pub policy: Policy,
    pub link_id: String,
    pub patient_id: String,
    /// The Task as written (with the link's input).
    pub task: WriteOutcome,
}

/// Mint a link for `Task/{task_id}`, served under `origin` (`{origin}/act/{secret}`).
pub async fn mint(
    store: &Store,
    task_id: &str,
    request: &MintRequest,
    minter: &Minter,
    origin: &str,
) -> Result<Minted, TaskError> {
    let now = store.clock().now().unix_timestamp();
    let mut expires_at = request.expires_at.unwrap_or(now + DEFAULT_LIFETIME_S);
    if expires_at < now + MIN_LIFETIME_S {
        return Err(TaskError::Invalid(format!("expires must be at least {} minutes from now", MIN_LIFETIME_S / 60)));
    }
    if expires_at > now + MAX_LIFETIME_S {
        return Err(TaskError::Invalid(format!("expires may be at most {} days from now", MAX_LIFETIME_S / 86_400)));
    }
    if let Some(limit) = minter.not_after {
        if limit < now + MIN_LIFETIME_S {
            return Err(TaskError::Invalid("the authorization behind this token ends too soon to mint a link".into()));
        }
        expires_at = expires_at.min(limit);
    }

    let (mut task, version) = read_json(store, "Task", task_id).await?;
    let target = target(&task).map_err(|e| match e {
        TaskError::Changed(m) => TaskError::Invalid(m),
        other => other,
    })?;
    let (focus, _) = read_json(store, target.focus_type, &target.focus_id).await.map_err(|e| match e {
        TaskError::NotFound(_) => {
            TaskError::Invalid(format!("the Task's focus {}/{} is not known", target.focus_type, target.focus_id))
        }
        other => other,
    })?;
    check_focus(&target, &focus).map_err(|e| match e {
        TaskError::Changed(m) => TaskError::Invalid(m),
        other => other,
    })?;

    let secret = auth::password::random_token(32);
    let pin = (request.policy == Policy::Pin).then(|| auth::password::random_digits(6));
    let pin_hash = match &pin {
        Some(pin) => Some(auth::password::hash_secret(pin).map_err(|e| TaskError::Internal(e.to_string()))?),
        None => None,
    };
    let url = format!("{}/act/{secret}", origin.trim_end_matches('/'));
    advertise(&mut task, &url, request.policy, expires_at);
    let record = ActionLinkRecord {
        link_id: auth::password::random_token(12),
        secret_hash: store::auth::token_hash(&secret),
        task_id: task_id.to_owned(),
        patient_id: target.patient_id.clone(),
        action: target.action.as_str().to_owned(),
        policy: request.policy.as_str().to_owned(),
        pin_hash,
        pin_failures: 0,
        grant_id: minter.grant_id.clone(),
        client_id: minter.client_id.clone(),
        created_at: now,
        expires_at,
        used_at: None,
        outcome: None,
        used_by: None,
        revoked_at: None,
        locked_at: None,
    };
    let write = WriteRequest::Update {
        resource_type: "Task".into(),
        id: task_id.to_owned(),
        resource: task,
        if_match: Some(version),
    };
    let task = store.create_action_link(&record, write).await.map_err(|e| match e {
        store::StoreError::VersionConflict { .. } => {
            TaskError::Changed("the Task changed while the link was being made; try again".into())
        }
        store::StoreError::Conflict(m) => TaskError::Invalid(m),
        other => other.into(),
    })?;
    Ok(Minted {
        url,
        pin,
        expires_at,
        policy: request.policy,
        link_id: record.link_id,
        patient_id: target.patient_id,
        task,
    })
}

/// Record the link on the Task as its one `action-link` input (an earlier link's input is
/// replaced: that link is revoked in the same transaction).
fn advertise(task: &mut Value, url: &str, policy: Policy, expires_at: i64) {
    let input = json!({
        "extension": [
            { "url": POLICY_EXTENSION, "valueCode": policy.as_str() },
            { "url": EXPIRES_EXTENSION, "valueDateTime": fhir_instant(expires_at) },
        ],
        "type": io_type(LINK_INPUT, "Action link"),
        "valueUrl": url,
    });
    let mut inputs: Vec<Value> = task
        .get("input")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter(|i| !has_io_type(i, LINK_INPUT)).cloned().collect())
        .unwrap_or_default();
    inputs.push(input);
    task["input"] = Value::Array(inputs);
}

/// A stored resource's JSON and version.
pub(crate) async fn read_json(store: &Store, rtype: &str, id: &str) -> Result<(Value, i64), TaskError> {
    match store.read(rtype, id).await? {
        ReadOutcome::Found(stored) => {
            let value = serde_json::from_str(&stored.body).map_err(|e| TaskError::Internal(e.to_string()))?;
            Ok((value, stored.version))
        }
        _ => Err(TaskError::NotFound(format!("{rtype}/{id} is not known"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_name_policy_and_expiry() {
        let body = json!({ "resourceType": "Parameters", "parameter": [
            { "name": "policy", "valueCode": "pin" },
            { "name": "expires", "valueDateTime": "2030-01-02T03:04:05Z" } ] });
        let r = MintRequest::from_parameters(&body).unwrap();
        assert_eq!(r.policy, Policy::Pin);
        assert_eq!(r.expires_at, parse_instant("2030-01-02T03:04:05+00:00"));
        for bad in [
            json!({ "resourceType": "Parameters" }),
            json!({ "resourceType": "Parameters", "parameter": [{ "name": "policy", "valueCode": "magic" }] }),
            json!({ "resourceType": "Parameters", "parameter": [{ "name": "policy", "valueCode": "pin" }, { "name": "expires", "valueDateTime": "2030-01-02" }] }),
            json!({ "resourceType": "Parameters", "parameter": [{ "name": "policy", "valueCode": "pin" }, { "name": "reader", "valueString": "x" }] }),
            json!({ "resourceType": "Task" }),
        ] {
            assert!(matches!(MintRequest::from_parameters(&bad), Err(TaskError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn a_new_link_replaces_the_old_input_and_keeps_the_others() {
        let mut task = json!({ "resourceType": "Task", "input": [
            { "type": { "text": "note" }, "valueString": "keep me" } ] });
        advertise(&mut task, "https://p/act/one", Policy::Pin, 0);
        advertise(&mut task, "https://p/act/two", Policy::SignIn, 0);
        let inputs = task["input"].as_array().unwrap();
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[0]["valueString"], "keep me");
        assert_eq!(inputs[1]["valueUrl"], "https://p/act/two");
        assert_eq!(inputs[1]["extension"][0]["valueCode"], "sign-in");
    }
}
