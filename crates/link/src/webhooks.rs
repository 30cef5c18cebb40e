//! Webhooks to apps, the Standard Webhooks way: each event is a JSON body
//! `{"type", "timestamp", "data"}` sent with `webhook-id` (the event id, the same on every
//! retry), `webhook-timestamp` (Unix seconds of the attempt) and `webhook-signature:
//! v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed with the app's `whsec_` secret.
//!
//! Events are written to the outbox in the same transaction as the change that caused them and
//! sent from there: at least once, with growing delays between attempts, for a day; a process
//! that dies while sending leaves the event to be picked up again when its lease runs out.

use std::time::Duration;

use aws_lc_rs::hmac;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::db::{Col, Db, RowExt, Tx};
use crate::error::{LinkError, Result};
use crate::ids::{AppId, EventId};
use crate::Link;

/// The events Link sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    FetchCompleted,
    FetchFailed,
    ConnectionReauthorizationRequired,
    ConnectionRevoked,
    EndpointStatusChanged,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::FetchCompleted => "fetch.completed",
            EventType::FetchFailed => "fetch.failed",
            EventType::ConnectionReauthorizationRequired => "connection.reauthorization_required",
            EventType::ConnectionRevoked => "connection.revoked",
            EventType::EndpointStatusChanged => "endpoint.status_changed",
        }
    }
}

/// The prefix of a webhook signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    format!("{SECRET_PREFIX}{}", STANDARD.encode(crate::vault::new_key()))
}

/// The `webhook-signature` value for one attempt.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &str) -> Result<String> {
    let key_bytes = STANDARD
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .map_err(|_| LinkError::Vault("a webhook secret is not base64".into()))?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &key_bytes);
    let tag = hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", STANDARD.encode(tag.as_ref())))
}

/// Check a received webhook as an app would (constant-time; `tolerance` bounds the timestamp's
/// distance from `now`). Returns false for any mismatch.
pub fn verify(secret: &str, id: &str, timestamp: &str, body: &str, signatures: &str, now: i64, tolerance: i64) -> bool {
    let Ok(ts) = timestamp.parse::<i64>() else { return false };
    if (now - ts).abs() > tolerance {
        return false;
    }
    let Ok(expected) = signature(secret, id, ts, body) else { return false };
    let expected = expected.as_bytes();
    signatures.split(' ').any(|candidate| {
        candidate.len() == expected.len()
            && aws_lc_rs::constant_time::verify_slices_are_equal(candidate.as_bytes(), expected).is_ok()
    })
}

fn body(event_type: EventType, data: &Value, now_ms: i64) -> String {
    json!({"type": event_type.as_str(), "timestamp": store::clock::instant_text(now_ms), "data": data}).to_string()
}

/// Queue an event for one app (nothing when the app has no webhook URL), inside `tx`.
pub async fn enqueue(db: &Db, tx: &mut Tx, app: &AppId, event_type: EventType, data: Value, now: i64) -> Result<()> {
    let payload = body(event_type, &data, now);
    let mut sql = db.sql();
    sql.push(
        "INSERT INTO link_outbox (event_id, app_id, event_type, payload, created_at, next_attempt_at) \
         SELECT ",
    )
    .bind(EventId::generate().as_str())
    .push(", app_id, ")
    .bind(event_type.as_str())
    .push(", ")
    .bind(payload)
    .push(", ")
    .bind(now)
    .push(", ")
    .bind(now)
    .push(" FROM link_apps WHERE app_id = ")
    .bind(app.as_str())
    .push(" AND webhook_url IS NOT NULL");
    tx.conn().execute(&sql).await?;
    Ok(())
}

/// Queue an event for every app with a webhook URL, inside `tx`.
pub async fn enqueue_for_all(db: &Db, tx: &mut Tx, event_type: EventType, data: Value, now: i64) -> Result<()> {
    let mut sql = db.sql();
    sql.push("SELECT app_id FROM link_apps WHERE webhook_url IS NOT NULL ORDER BY app_id");
    let rows = tx.conn().fetch(&sql, &[Col::Text]).await?;
    for row in rows {
        if let Some(app) = row.text(0).and_then(|a| a.parse::<AppId>().ok()) {
            enqueue(db, tx, &app, event_type, data.clone(), now).await?;
        }
    }
    Ok(())
}

struct Due {
    event_id: String,
    app_id: String,
    payload: String,
    created_at: i64,
    attempts: i64,
}

impl Link {
    /// Send due webhooks until the process stops.
    pub async fn run_webhook_sender(&self) {
        loop {
            let sent = match self.send_due_webhooks().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "webhook outbox");
                    0
                }
            };
            if sent == 0 {
                let poll = Duration::from_millis(self.config().webhooks.poll_ms);
                let _ = tokio::time::timeout(poll, self.inner.outbox_wake.notified()).await;
            }
        }
    }

    /// One pass over the outbox: claim what is due, send it, record the outcomes. Returns how
    /// many events were attempted.
    pub async fn send_due_webhooks(&self) -> Result<usize> {
        let now = self.now_ms();
        let lease_until = now + 60_000;
        let db = &self.inner.db;
        let mut sql = db.sql();
        sql.push("UPDATE link_outbox SET lease_owner = ")
            .bind(self.inner.instance.as_str())
            .push(", lease_until = ")
            .bind(lease_until)
            .push(" WHERE event_id IN (SELECT event_id FROM link_outbox WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= ")
            .bind(now)
            .push(" AND (lease_until IS NULL OR lease_until < ")
            .bind(now)
            .push(") ORDER BY created_at LIMIT 32");
        if db.dialect() == crate::db::Dialect::Postgres {
            sql.push(" FOR UPDATE SKIP LOCKED");
        }
        sql.push(") RETURNING event_id, app_id, payload, created_at, attempts");
        let rows = db.write_rows(&sql, &[Col::Text, Col::Text, Col::Text, Col::Int, Col::Int]).await?;
        let due: Vec<Due> = rows
            .into_iter()
            .filter_map(|mut r| {
                Some(Due {
                    event_id: r.take_text(0)?,
                    app_id: r.take_text(1)?,
                    payload: r.take_text(2)?,
                    created_at: r.int(3),
                    attempts: r.int(4),
                })
            })
            .collect();
        let count = due.len();
        let sends = due.into_iter().map(|d| async move {
            let outcome = self.deliver(&d).await;
            if let Err(e) = self.record_delivery(&d, outcome).await {
                tracing::error!(error = %e, event = %d.event_id, "recording a webhook attempt");
            }
        });
        futures::future::join_all(sends).await;
        Ok(count)
    }

    async fn deliver(&self, due: &Due) -> std::result::Result<(), String> {
        let app: AppId = due.app_id.parse().map_err(|_| "unknown app".to_owned())?;
        let Some((url, secret)) = self.webhook_target(&app).await.map_err(|e| e.to_string())? else {
            return Err("the app has no webhook URL any more".into());
        };
        let timestamp = self.now_ms() / 1000;
        let signature = signature(&secret, &due.event_id, timestamp, &due.payload).map_err(|e| e.to_string())?;
        let response = self
            .inner
            .webhook_http
            .post(&url)
            .header("content-type", "application/json")
            .header("webhook-id", &due.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(due.payload.clone())
            .send()
            .await
            .map_err(|e| if e.is_timeout() { "timed out".to_owned() } else { "could not connect".to_owned() })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", status.as_u16()))
        }
    }

    async fn record_delivery(&self, due: &Due, outcome: std::result::Result<(), String>) -> Result<()> {
        let now = self.now_ms();
        let db = &self.inner.db;
        let mut sql = db.sql();
        match outcome {
            Ok(()) => {
                sql.push("UPDATE link_outbox SET delivered_at = ")
                    .bind(now)
                    .push(", attempts = attempts + 1, lease_until = NULL, last_error = NULL");
            }
            Err(error) => {
                let limits = &self.config().webhooks;
                let attempts = due.attempts + 1;
                let delay = limits
                    .first_backoff_seconds
                    .saturating_mul(1i64 << attempts.clamp(0, 20) as u32 >> 1)
                    .min(limits.max_backoff_seconds);
                let give_up = now - due.created_at >= limits.give_up_after_seconds * 1000;
                tracing::warn!(event = %due.event_id, attempts, error = %error, give_up, "webhook not delivered");
                sql.push("UPDATE link_outbox SET attempts = attempts + 1, lease_until = NULL, last_error = ")
                    .bind(error)
                    .push(", next_attempt_at = ")
                    .bind(now + delay * 1000);
                if give_up {
                    sql.push(", failed_at = ").bind(now);
                }
            }
        }
        sql.push(" WHERE event_id = ").bind(due.event_id.as_str());
        db.execute(&sql).await?;
        Ok(())
    }

    /// Wake the sender (an event was just queued).
    pub fn wake_webhooks(&self) {
        self.inner.outbox_wake.notify_one();
    }
}
