//! Notification Bundles in the backport IG's R4 shape: a `history` Bundle whose first entry is
//! the SubscriptionStatus as `Parameters`, then one entry per event's focus (a reference only for
//! `id-only`, the resource too for `full-resource`, nothing for `empty`). `$status` and `$events`
//! answer with the same Parameters.

use serde_json::{json, Value};
use store::subscriptions::{SubscriptionEvent, SubscriptionRecord};

use crate::resource::BACKPORT;

/// Which kind of status a Bundle carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationType {
    Handshake,
    Heartbeat,
    EventNotification,
    QueryStatus,
    QueryEvent,
}

impl NotificationType {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationType::Handshake => "handshake",
            NotificationType::Heartbeat => "heartbeat",
            NotificationType::EventNotification => "event-notification",
            NotificationType::QueryStatus => "query-status",
            NotificationType::QueryEvent => "query-event",
        }
    }
}

/// One event with what its payload may carry.
pub struct EventPayload<'a> {
    pub event: &'a SubscriptionEvent,
    /// The focus version's JSON, for `full-resource`.
    pub body: Option<String>,
}

pub fn instant_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

fn focus_url(base: &str, e: &SubscriptionEvent) -> String {
    format!("{base}/{}/{}/_history/{}", e.resource_type, e.id, e.version)
}

/// The SubscriptionStatus (R4: `Parameters` with the backport profile).
pub fn status_parameters(
    record: &SubscriptionRecord,
    kind: NotificationType,
    events: &[EventPayload<'_>],
    base: &str,
) -> Value {
    let mut parameter = vec![
        json!({ "name": "subscription", "valueReference": { "reference": format!("{base}/Subscription/{}", record.sub_id) } }),
        json!({ "name": "topic", "valueCanonical": record.topic }),
        json!({ "name": "status", "valueCode": record.status.as_str() }),
        json!({ "name": "type", "valueCode": kind.as_str() }),
        json!({ "name": "events-since-subscription-start", "valueString": record.events_count.to_string() }),
    ];
    for p in events {
        let mut part = vec![
            json!({ "name": "event-number", "valueString": p.event.event_number.to_string() }),
            json!({ "name": "timestamp", "valueInstant": instant_ms(p.event.at_ms) }),
        ];
        if record.payload != "empty" {
            part.push(json!({ "name": "focus", "valueReference": { "reference": focus_url(base, p.event) } }));
        }
        parameter.push(json!({ "name": "notification-event", "part": part }));
    }
    if let Some(error) = &record.error {
        parameter.push(json!({ "name": "error", "valueCodeableConcept": { "text": error } }));
    }
    json!({
        "resourceType": "Parameters",
        "meta": { "profile": [format!("{BACKPORT}backport-subscription-status-r4")] },
        "parameter": parameter,
    })
}

/// A notification Bundle (`history`).
pub fn bundle(
    record: &SubscriptionRecord,
    kind: NotificationType,
    events: &[EventPayload<'_>],
    base: &str,
    now_ms: i64,
    bundle_id: &str,
) -> Value {
    let status = status_parameters(record, kind, events, base);
    let mut entry = vec![json!({
        "fullUrl": format!("urn:uuid:{bundle_id}"),
        "resource": status,
        "request": { "method": "GET", "url": format!("{base}/Subscription/{}/$status", record.sub_id) },
        "response": { "status": "200" },
    })];
    if record.payload != "empty" {
        for p in events {
            let mut e = json!({
                "fullUrl": format!("{base}/{}/{}", p.event.resource_type, p.event.id),
                "request": {
                    "method": if p.event.version == 1 { "POST" } else { "PUT" },
                    "url": if p.event.version == 1 { p.event.resource_type.clone() } else { format!("{}/{}", p.event.resource_type, p.event.id) },
                },
                "response": {
                    "status": if p.event.version == 1 { "201" } else { "200" },
                    "etag": format!("W/\"{}\"", p.event.version),
                },
            });
            if record.payload == "full-resource" {
                if let Some(body) = p.body.as_deref().and_then(|b| serde_json::from_str::<Value>(b).ok()) {
                    e["resource"] = body;
                }
            }
            entry.push(e);
        }
    }
    json!({
        "resourceType": "Bundle",
        "id": bundle_id,
        "type": "history",
        "timestamp": instant_ms(now_ms),
        "entry": entry,
    })
}
