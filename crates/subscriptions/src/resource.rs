//! Accepting a `Subscription` (backport profile) from a token, and serving it back.
//!
//! A subscription belongs to the grant of the token that created it: it may watch only what that
//! token may search, a patient token only its own patient, and its `end` never lies beyond the
//! grant's expiry (clamped, and the answer says so with an extension on `end`).

use auth::{GrantId, Interaction};
use oauth::access::Access;
use serde_json::{json, Map, Value};
use store::auth::Grant;
use store::subscriptions::{SubscriptionRecord, SubscriptionStatus};

use crate::topics::{self, Topic};
use crate::SubscriptionError;

pub const BACKPORT: &str = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/";
pub const CLAMPED_EXTENSION: &str = "https://portico.dev/fhir/StructureDefinition/end-clamped-to-grant";

/// What a new subscription is checked against.
pub struct CreateContext<'a> {
    pub access: &'a Access,
    pub grant: &'a Grant,
    /// The creating token's scopes (text).
    pub token_scopes: String,
    pub now: i64,
    /// `http://` endpoints on loopback addresses (development and tests).
    pub allow_loopback_http: bool,
    /// Heartbeat periods and timeouts are bounded (seconds).
    pub max_timeout_s: i64,
}

fn invalid(message: impl Into<String>) -> SubscriptionError {
    SubscriptionError::Invalid(message.into())
}

fn extension_value<'a>(element: Option<&'a Value>, name: &str) -> Vec<&'a Value> {
    let url = format!("{BACKPORT}{name}");
    element
        .and_then(|e| e.get("extension"))
        .and_then(Value::as_array)
        .map(|list| list.iter().filter(|e| e.get("url").and_then(Value::as_str) == Some(url.as_str())).collect())
        .unwrap_or_default()
}

fn int_value(ext: &Value) -> Option<i64> {
    ["valueUnsignedInt", "valuePositiveInt", "valueInteger"].iter().find_map(|k| ext.get(*k).and_then(Value::as_i64))
}

/// Check an incoming Subscription and turn it into the record to store (status `requested`).
pub fn accept(body: &Value, ctx: &CreateContext<'_>) -> Result<SubscriptionRecord, SubscriptionError> {
    let Some(doc) = body.as_object() else { return Err(invalid("the body must be a Subscription resource")) };
    if doc.get("resourceType").and_then(Value::as_str) != Some("Subscription") {
        return Err(invalid("resourceType must be Subscription"));
    }
    match doc.get("status").and_then(Value::as_str) {
        None | Some("requested") => {}
        Some(other) => return Err(invalid(format!("a new Subscription must have status requested (not {other:?})"))),
    }
    let criteria = doc
        .get("criteria")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("criteria is required: the topic's canonical URL"))?;
    let topic = topics::by_url(criteria).ok_or_else(|| {
        let known: Vec<String> = topics::TOPICS.iter().map(Topic::url).collect();
        invalid(format!("criteria {criteria:?} is not a topic of this server (topics: {})", known.join(", ")))
    })?;
    if ctx.access.restriction(topic.resource_type, Interaction::Search).is_err() {
        return Err(SubscriptionError::Forbidden(format!(
            "the token's scopes ({}) do not allow searching {}, which this topic notifies about",
            ctx.access.scopes, topic.resource_type
        )));
    }
    let filters = filters(doc.get("_criteria"), topic, ctx)?;

    let channel = doc.get("channel").and_then(Value::as_object).ok_or_else(|| invalid("channel is required"))?;
    match channel.get("type").and_then(Value::as_str) {
        Some("rest-hook") => {}
        Some(other) => return Err(invalid(format!("channel.type {other:?} is not supported (rest-hook)"))),
        None => return Err(invalid("channel.type is required (rest-hook)")),
    }
    let endpoint =
        channel.get("endpoint").and_then(Value::as_str).ok_or_else(|| invalid("channel.endpoint is required"))?;
    check_endpoint(endpoint, ctx.allow_loopback_http)?;
    match channel.get("payload").and_then(Value::as_str) {
        None | Some("application/fhir+json") | Some("application/json") => {}
        Some(other) => {
            return Err(invalid(format!("channel.payload {other:?} is not supported (application/fhir+json)")))
        }
    }
    let payload = match extension_value(channel.get("_payload"), "backport-payload-content").first() {
        None => "id-only".to_owned(),
        Some(e) => match e.get("valueCode").and_then(Value::as_str) {
            Some(code @ ("empty" | "id-only" | "full-resource")) => code.to_owned(),
            other => return Err(invalid(format!("payload content {other:?} is not empty, id-only or full-resource"))),
        },
    };
    let headers: Vec<String> = match channel.get("header") {
        None => Vec::new(),
        Some(Value::Array(list)) => {
            let mut out = Vec::new();
            for h in list {
                let text = h.as_str().ok_or_else(|| invalid("channel.header entries must be strings"))?;
                let (name, value) =
                    text.split_once(':').ok_or_else(|| invalid("a channel.header must be \"Name: value\""))?;
                let valid_name = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
                if !valid_name || value.chars().any(char::is_control) {
                    return Err(invalid(format!("channel.header {name:?} is not a valid HTTP header")));
                }
                out.push(text.to_owned());
            }
            out
        }
        Some(_) => return Err(invalid("channel.header must be a list of strings")),
    };
    let bounded = |name: &str, default: i64, lo: i64| -> Result<i64, SubscriptionError> {
        match extension_value(doc.get("channel"), name).first() {
            None => Ok(default),
            Some(e) => {
                let v = int_value(e).ok_or_else(|| invalid(format!("{name} needs an integer value")))?;
                if v < lo || v > ctx.max_timeout_s.max(lo) * 60 {
                    return Err(invalid(format!("{name} {v} is out of range")));
                }
                Ok(v)
            }
        }
    };
    let heartbeat = extension_value(doc.get("channel"), "backport-heartbeat-period")
        .first()
        .map(|e| int_value(e).ok_or_else(|| invalid("backport-heartbeat-period needs an unsignedInt")))
        .transpose()?;
    if heartbeat.is_some_and(|h| !(1..=86_400).contains(&h)) {
        return Err(invalid("the heartbeat period must be 1 to 86400 seconds"));
    }
    let timeout = bounded("backport-timeout", 10, 1)?.min(ctx.max_timeout_s);
    let max_count = bounded("backport-max-count", 20, 1)?.min(100);

    // The end: as asked, never beyond the grant.
    let asked_end = match doc.get("end").and_then(Value::as_str) {
        None => None,
        Some(text) => {
            let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| invalid(format!("end {text:?} is not an instant")))?;
            let secs = t.unix_timestamp();
            if secs <= ctx.now {
                return Err(invalid("end is in the past"));
            }
            Some(secs)
        }
    };
    let end_at = match (asked_end, ctx.grant.expires_at) {
        (Some(a), Some(g)) => Some(a.min(g)),
        (a, g) => a.or(g),
    };
    let clamped = ctx.grant.expires_at.is_some_and(|g| asked_end.is_none_or(|a| a > g));

    let mut kept: Map<String, Value> = doc.clone();
    kept.remove("id");
    kept.remove("meta");
    kept.remove("status");
    kept.remove("error");
    kept.remove("end");
    if clamped {
        kept.insert("_end".into(), json!({ "extension": [{ "url": CLAMPED_EXTENSION, "valueString": "end is the expiry of the authorization this subscription was created under; it cannot outlive it" }] }));
    }
    let resource =
        serde_json::to_string(&Value::Object(kept)).map_err(|e| SubscriptionError::Internal(e.to_string()))?;
    Ok(SubscriptionRecord {
        sub_id: new_id(),
        grant_id: ctx.grant.grant_id.clone(),
        client_id: ctx.grant.client_id.clone(),
        scopes: ctx.token_scopes.clone(),
        topic: topic.url(),
        filters,
        endpoint: endpoint.to_owned(),
        headers,
        payload,
        heartbeat_s: heartbeat,
        timeout_s: timeout,
        max_count,
        end_at,
        status: SubscriptionStatus::Requested,
        error: None,
        resource,
        since_seq: 0,
        events_count: 0,
        delivered_through: 0,
        failures: 0,
        next_attempt_ms: 0,
        last_sent_ms: 0,
        created_at: ctx.now,
    })
}

/// The filter criteria (`Type?param=value&...` per the backport's filter-criteria extension):
/// only parameters the topic allows; a patient token's own patient is the only one it may name
/// (and is implied when none is named).
fn filters(
    criteria_element: Option<&Value>,
    topic: &Topic,
    ctx: &CreateContext<'_>,
) -> Result<Vec<(String, String)>, SubscriptionError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for ext in extension_value(criteria_element, "backport-filter-criteria") {
        let text = ext
            .get("valueString")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("filter-criteria needs a valueString"))?;
        let query = text
            .strip_prefix(topic.resource_type)
            .and_then(|q| q.strip_prefix('?'))
            .ok_or_else(|| invalid(format!("filter {text:?} must be {}?param=value", topic.resource_type)))?;
        for (name, value) in form_urlencoded_pairs(query) {
            if !topic.filters.contains(&name.as_str()) {
                return Err(invalid(format!(
                    "the topic cannot filter by {name:?} (it allows {})",
                    topic.filters.join(", ")
                )));
            }
            if value.is_empty() {
                return Err(invalid(format!("filter {name} has no value")));
            }
            out.push((name, value));
        }
    }
    let named_patients: Vec<String> = out
        .iter()
        .filter(|(n, _)| n == "patient")
        .map(|(_, v)| v.strip_prefix("Patient/").unwrap_or(v).to_owned())
        .collect();
    if let Some(own) = &ctx.access.patient {
        if named_patients.iter().any(|p| p != own) {
            return Err(SubscriptionError::Forbidden(format!(
                "this token is for patient {own}; it can subscribe only to that patient's records"
            )));
        }
        if named_patients.is_empty() {
            out.push(("patient".into(), format!("Patient/{own}")));
        }
    } else if let Some(list) = &ctx.access.user_patients {
        if let Some(p) = named_patients.iter().find(|p| !list.contains(p)) {
            return Err(SubscriptionError::Forbidden(format!("patient {p} is not among the patients you may see")));
        }
    }
    Ok(out)
}

fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

fn check_endpoint(endpoint: &str, allow_loopback_http: bool) -> Result<(), SubscriptionError> {
    let url =
        reqwest::Url::parse(endpoint).map_err(|_| invalid(format!("channel.endpoint {endpoint:?} is not a URL")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("channel.endpoint must not carry credentials (use channel.header)"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_loopback_http && is_loopback(&url) => Ok(()),
        "http" => {
            Err(invalid("channel.endpoint must be https (http is accepted only for loopback addresses in development)"))
        }
        other => Err(invalid(format!("channel.endpoint scheme {other:?} is not supported (https)"))),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else { return false };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A new subscription id: 128 random bits, hex.
fn new_id() -> String {
    GrantId::generate().to_string().chars().filter(char::is_ascii_alphanumeric).take(32).collect()
}

fn instant(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// The Subscription as served: what was accepted, with its id, current status, end and error.
pub fn render(record: &SubscriptionRecord) -> Value {
    let mut doc: Map<String, Value> = serde_json::from_str(&record.resource).unwrap_or_default();
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("Subscription"));
    out.insert("id".into(), json!(record.sub_id));
    out.insert("meta".into(), json!({ "profile": [format!("{BACKPORT}backport-subscription")] }));
    doc.remove("resourceType");
    out.insert("status".into(), json!(record.status.as_str()));
    if let Some(end) = record.end_at {
        out.insert("end".into(), json!(instant(end)));
    }
    if let Some(error) = &record.error {
        out.insert("error".into(), json!(error));
    }
    for (k, v) in doc {
        out.entry(k).or_insert(v);
    }
    Value::Object(out)
}
