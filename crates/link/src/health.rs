//! Each portal's health, in the open: every request Link makes, every login and refresh, is an
//! event; the directory reports the last success and failure, the error rate over the last day,
//! the median response time, the login success rate, whether refresh tokens were issued and the
//! token lifetimes seen. The status (`active` → `degraded` → `down` and back) follows the recent
//! events; a change is announced to apps by the `endpoint.status_changed` webhook.
//!
//! Events are queued in memory and written in batches by one task, so a fan-out fetch does not
//! pay a database write per portal request.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::Clock;
use tokio::sync::{mpsc, oneshot};

use crate::db::{Col, Db, RowExt, SqlValue};
use crate::error::Result;
use crate::ids::EndpointId;
use crate::webhooks::{self, EventType};

/// What an event was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A FHIR request (search, read, `$everything`).
    Request,
    /// `.well-known/smart-configuration` and `metadata`.
    Discovery,
    /// A person's login, from the connect redirect to tokens stored.
    Login,
    /// The code exchange at the token endpoint.
    Token,
    /// A refresh at the token endpoint.
    Refresh,
    /// A revocation at the portal.
    Revoke,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Request => "request",
            EventKind::Discovery => "discovery",
            EventKind::Login => "login",
            EventKind::Token => "token",
            EventKind::Refresh => "refresh",
            EventKind::Revoke => "revoke",
        }
    }
}

/// An endpoint's status as the directory shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Degraded,
    Down,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Degraded => "degraded",
            Status::Down => "down",
        }
    }
    pub fn parse(text: &str) -> Status {
        match text {
            "degraded" => Status::Degraded,
            "down" => Status::Down,
            _ => Status::Active,
        }
    }
}

struct Event {
    endpoint: EndpointId,
    at: i64,
    kind: EventKind,
    ok: bool,
    millis: Option<i64>,
    detail: Option<String>,
}

enum Message {
    Event(Event),
    Flush(oneshot::Sender<()>),
}

/// The sending side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct HealthRecorder {
    tx: mpsc::UnboundedSender<Message>,
    clock: Arc<dyn Clock>,
}

impl HealthRecorder {
    /// A recorder and the receiving end, which [`run_writer`] drains.
    pub fn channel(clock: Arc<dyn Clock>) -> (HealthRecorder, HealthReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (HealthRecorder { tx, clock }, HealthReceiver { rx })
    }

    pub fn record(&self, endpoint: &EndpointId, kind: EventKind, ok: bool, millis: Option<i64>, detail: Option<Value>) {
        let at = store::clock::epoch_ms(self.clock.now());
        let event = Event { endpoint: endpoint.clone(), at, kind, ok, millis, detail: detail.map(|d| d.to_string()) };
        // A closed channel means the process is stopping; health is best effort then.
        let _ = self.tx.send(Message::Event(event));
    }

    /// Wait until every event recorded so far is stored (and statuses updated).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

pub struct HealthReceiver {
    rx: mpsc::UnboundedReceiver<Message>,
}

fn take(m: Message, batch: &mut Vec<Event>, waiting: &mut Vec<oneshot::Sender<()>>) {
    match m {
        Message::Event(e) => batch.push(e),
        Message::Flush(done) => waiting.push(done),
    }
}

/// Store queued events in batches and keep statuses current, until every recorder is dropped.
pub async fn run_writer(mut receiver: HealthReceiver, db: Db, clock: Arc<dyn Clock>) {
    let mut batch: Vec<Event> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let first = match receiver.rx.recv().await {
            Some(m) => m,
            None => break,
        };
        take(first, &mut batch, &mut waiting);
        // Gather what else is queued (a short pause lets a burst arrive as one batch).
        if waiting.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        while let Ok(m) = receiver.rx.try_recv() {
            take(m, &mut batch, &mut waiting);
        }
        if !batch.is_empty() {
            if let Err(e) = store_events(&db, clock.as_ref(), &batch).await {
                tracing::error!(error = %e, events = batch.len(), "portal health events could not be stored");
            }
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

async fn store_events(db: &Db, clock: &dyn Clock, events: &[Event]) -> Result<()> {
    let mut tx = db.begin().await?;
    for chunk in events.chunks(200) {
        let mut sql = db.sql();
        sql.push("INSERT INTO link_endpoint_events (endpoint_id, at, kind, ok, millis, detail) VALUES ");
        for (i, e) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("(")
                .bind(e.endpoint.as_str())
                .push(", ")
                .bind(e.at)
                .push(", ")
                .bind(e.kind.as_str())
                .push(", ")
                .bind(i64::from(e.ok))
                .push(", ")
                .bind(crate::db::int_value(e.millis))
                .push(", ")
                .bind(e.detail.clone())
                .push(")");
        }
        tx.conn().execute(&sql).await?;
    }
    let touched: BTreeSet<&EndpointId> = events.iter().map(|e| &e.endpoint).collect();
    let now = store::clock::epoch_ms(clock.now());
    for endpoint in touched {
        update_status(db, &mut tx, endpoint, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Events within this window decide the status.
const STATUS_WINDOW_MS: i64 = 3_600_000;
/// This many failures in a row, with no success after them: `down`.
const DOWN_AFTER: usize = 3;
/// At least this share of failures in the window (with enough events): `degraded`.
const DEGRADED_RATE: f64 = 0.2;
const DEGRADED_MIN_EVENTS: usize = 5;

/// Work out an endpoint's status from its recent events; store it and announce a change.
pub async fn update_status(db: &Db, tx: &mut crate::db::Tx, endpoint: &EndpointId, now: i64) -> Result<()> {
    let mut sql = db.sql();
    sql.push("SELECT ok FROM link_endpoint_events WHERE endpoint_id = ")
        .bind(endpoint.as_str())
        .push(" AND at >= ")
        .bind(now - STATUS_WINDOW_MS)
        .push(" AND kind IN ('request', 'discovery', 'token', 'refresh') ORDER BY at DESC LIMIT 200");
    let rows = tx.conn().fetch(&sql, &[Col::Int]).await?;
    let recent: Vec<bool> = rows.iter().map(|r| r.int(0) != 0).collect();
    let status = status_of(&recent);
    let mut sql = db.sql();
    sql.push("SELECT status FROM link_endpoints WHERE endpoint_id = ").bind(endpoint.as_str());
    let rows = tx.conn().fetch(&sql, &[Col::Text]).await?;
    let Some(current) = rows.first().and_then(|r| r.text(0)).map(Status::parse) else { return Ok(()) };
    if current == status {
        return Ok(());
    }
    let mut sql = db.sql();
    sql.push("UPDATE link_endpoints SET status = ")
        .bind(status.as_str())
        .push(", updated_at = ")
        .bind(now)
        .push(" WHERE endpoint_id = ")
        .bind(endpoint.as_str());
    tx.conn().execute(&sql).await?;
    tracing::info!(endpoint = %endpoint, from = current.as_str(), to = status.as_str(), "endpoint status changed");
    let data = json!({"endpointId": endpoint, "previousStatus": current, "status": status});
    webhooks::enqueue_for_all(db, tx, EventType::EndpointStatusChanged, data, now).await
}

/// The status for recent outcomes, newest first.
pub fn status_of(recent: &[bool]) -> Status {
    if recent.len() >= DOWN_AFTER && recent.iter().take(DOWN_AFTER).all(|ok| !ok) {
        return Status::Down;
    }
    let failures = recent.iter().filter(|ok| !**ok).count();
    if recent.first() == Some(&false)
        || (recent.len() >= DEGRADED_MIN_EVENTS && failures as f64 / recent.len() as f64 >= DEGRADED_RATE)
    {
        return Status::Degraded;
    }
    Status::Active
}

/// The figures the directory publishes for one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthSummary {
    pub last_success: Option<String>,
    pub last_failure: Option<String>,
    /// Failed share of the last day's requests (None without requests).
    pub error_rate_24h: Option<f64>,
    pub requests_24h: i64,
    /// Median of the last day's successful requests (at most the latest 200).
    pub median_response_ms: Option<i64>,
    pub login_success_rate: Option<f64>,
    pub logins_24h: i64,
    /// Whether the portal gave refresh tokens at logins seen (None: no login seen).
    pub refresh_tokens_issued: Option<bool>,
    /// Distinct access-token lifetimes (`expires_in`) the portal gave.
    pub token_lifetimes_seconds: Vec<i64>,
}

const DAY_MS: i64 = 86_400_000;

/// Health figures for the given endpoints (all three queries bounded by the last day).
pub async fn summaries(db: &Db, endpoints: &[EndpointId], now: i64) -> Result<HashMap<EndpointId, HealthSummary>> {
    let mut out: HashMap<EndpointId, HealthSummary> = HashMap::new();
    if endpoints.is_empty() {
        return Ok(out);
    }
    let since = now - DAY_MS;
    let ids: Vec<&str> = endpoints.iter().map(EndpointId::as_str).collect();
    // Counts and last times per kind and outcome.
    let mut sql = db.sql();
    sql.push("SELECT endpoint_id, kind, ok, COUNT(*), MAX(at) FROM link_endpoint_events WHERE at >= ")
        .bind(since)
        .push(" AND endpoint_id IN ")
        .bind_list(ids.iter().copied())
        .push(" GROUP BY endpoint_id, kind, ok");
    let rows = db.rows(&sql, &[Col::Text, Col::Text, Col::Int, Col::Int, Col::Int]).await?;
    let mut last_ok: HashMap<String, i64> = HashMap::new();
    let mut last_fail: HashMap<String, i64> = HashMap::new();
    let mut requests: HashMap<String, (i64, i64)> = HashMap::new();
    let mut logins: HashMap<String, (i64, i64)> = HashMap::new();
    for row in &rows {
        let (Some(id), Some(kind)) = (row.text(0), row.text(1)) else { continue };
        let ok = row.int(2) != 0;
        let (count, at) = (row.int(3), row.int(4));
        if kind != "login" {
            let slot = if ok { &mut last_ok } else { &mut last_fail };
            let e = slot.entry(id.to_owned()).or_insert(at);
            *e = (*e).max(at);
        }
        let tally = match kind {
            "request" => Some(&mut requests),
            "login" => Some(&mut logins),
            _ => None,
        };
        if let Some(tally) = tally {
            let e = tally.entry(id.to_owned()).or_default();
            if ok {
                e.0 += count;
            } else {
                e.1 += count;
            }
        }
    }
    // Response times of the latest successful requests.
    let mut sql = db.sql();
    sql.push(
        "SELECT endpoint_id, millis FROM (SELECT endpoint_id, millis, ROW_NUMBER() OVER \
         (PARTITION BY endpoint_id ORDER BY at DESC) AS rn FROM link_endpoint_events WHERE kind = 'request' \
         AND ok = 1 AND millis IS NOT NULL AND at >= ",
    )
    .bind(since)
    .push(" AND endpoint_id IN ")
    .bind_list(ids.iter().copied())
    .push(") latest WHERE rn <= 200");
    let rows = db.rows(&sql, &[Col::Text, Col::Int]).await?;
    let mut times: HashMap<String, Vec<i64>> = HashMap::new();
    for row in &rows {
        if let Some(id) = row.text(0) {
            times.entry(id.to_owned()).or_default().push(row.int(1));
        }
    }
    // What the code exchanges said about tokens.
    let mut sql = db.sql();
    sql.push("SELECT endpoint_id, detail FROM link_endpoint_events WHERE kind = 'token' AND ok = 1 AND at >= ")
        .bind(since)
        .push(" AND endpoint_id IN ")
        .bind_list(ids.iter().copied())
        .push(" ORDER BY at DESC LIMIT 1000");
    let rows = db.rows(&sql, &[Col::Text, Col::Text]).await?;
    let mut tokens: HashMap<String, (Option<bool>, BTreeSet<i64>)> = HashMap::new();
    for row in &rows {
        let (Some(id), Some(detail)) = (row.text(0), row.text(1)) else { continue };
        let Ok(detail) = serde_json::from_str::<Value>(detail) else { continue };
        let e = tokens.entry(id.to_owned()).or_default();
        if let Some(refresh) = detail.get("refreshToken").and_then(Value::as_bool) {
            e.0 = Some(e.0.unwrap_or(false) || refresh);
        }
        if let Some(seconds) = detail.get("expiresIn").and_then(Value::as_i64) {
            e.1.insert(seconds);
        }
    }
    for endpoint in endpoints {
        let id = endpoint.as_str();
        let (ok, failed) = requests.get(id).copied().unwrap_or_default();
        let (logins_ok, logins_failed) = logins.get(id).copied().unwrap_or_default();
        let mut median = times.remove(id).unwrap_or_default();
        median.sort_unstable();
        let (refresh, lifetimes) = tokens.remove(id).unwrap_or_default();
        out.insert(
            endpoint.clone(),
            HealthSummary {
                last_success: last_ok.get(id).map(|t| store::clock::instant_text(*t)),
                last_failure: last_fail.get(id).map(|t| store::clock::instant_text(*t)),
                error_rate_24h: (ok + failed > 0).then(|| failed as f64 / (ok + failed) as f64),
                requests_24h: ok + failed,
                median_response_ms: median.get(median.len() / 2).copied().filter(|_| !median.is_empty()),
                login_success_rate: (logins_ok + logins_failed > 0)
                    .then(|| logins_ok as f64 / (logins_ok + logins_failed) as f64),
                logins_24h: logins_ok + logins_failed,
                refresh_tokens_issued: refresh,
                token_lifetimes_seconds: lifetimes.into_iter().collect(),
            },
        );
    }
    Ok(out)
}

/// Drop events older than two days (the figures look back one).
pub async fn prune(db: &Db, now: i64) -> Result<u64> {
    let mut sql = db.sql();
    sql.push("DELETE FROM link_endpoint_events WHERE at < ").bind(SqlValue::Int(now - 2 * DAY_MS));
    db.execute(&sql).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_recent_outcomes() {
        assert_eq!(status_of(&[]), Status::Active);
        assert_eq!(status_of(&[true, true, false]), Status::Active);
        assert_eq!(status_of(&[false, true, true]), Status::Degraded, "the latest failed");
        assert_eq!(status_of(&[false, false, false, true]), Status::Down);
        assert_eq!(
            status_of(&[true, false, false, false, true]),
            Status::Degraded,
            "recovering: a success after the failures"
        );
        let mostly_ok = [true, true, true, true, false, true, true, true, true, true];
        assert_eq!(status_of(&mostly_ok), Status::Active, "20% needs at least that share");
        let flaky = [true, false, true, false, true, true, true, true, true];
        assert_eq!(status_of(&flaky), Status::Degraded);
    }
}
