//! Subscriptions' durable state: the subscriptions, the events matched to each, the
//! dispatcher's cursor over the version history (the outbox; see the migration's notes), and the
//! lease that keeps the dispatcher to one process.

use ::auth::{ClientId, GrantId};

use crate::db::{Col, Conn, Dialect, RowExt, Sql, SqlValue};
use crate::{Store, StoreError};

/// Where a subscription stands (the R4 `Subscription.status` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Requested,
    Active,
    Error,
    Off,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Requested => "requested",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Error => "error",
            SubscriptionStatus::Off => "off",
        }
    }

    pub fn parse(text: &str) -> Option<SubscriptionStatus> {
        Some(match text {
            "requested" => SubscriptionStatus::Requested,
            "active" => SubscriptionStatus::Active,
            "error" => SubscriptionStatus::Error,
            "off" => SubscriptionStatus::Off,
            _ => return None,
        })
    }
}

/// One subscription as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionRecord {
    pub sub_id: String,
    pub grant_id: GrantId,
    pub client_id: ClientId,
    /// The creating token's scopes.
    pub scopes: String,
    pub topic: String,
    /// Filter criteria as search parameters (`patient`, `category`, `code`, ...).
    pub filters: Vec<(String, String)>,
    pub endpoint: String,
    pub headers: Vec<String>,
    /// `empty`, `id-only` or `full-resource`.
    pub payload: String,
    pub heartbeat_s: Option<i64>,
    pub timeout_s: i64,
    pub max_count: i64,
    /// Epoch seconds.
    pub end_at: Option<i64>,
    pub status: SubscriptionStatus,
    pub error: Option<String>,
    /// The Subscription resource as accepted (JSON text).
    pub resource: String,
    pub since_seq: i64,
    pub events_count: i64,
    pub delivered_through: i64,
    pub failures: i64,
    pub next_attempt_ms: i64,
    pub last_sent_ms: i64,
    pub created_at: i64,
}

const COLS: &str = "sub_id, grant_id, client_id, scopes, topic, filters, endpoint, headers, payload, heartbeat_s, \
    timeout_s, max_count, end_at, status, error, resource, since_seq, events_count, delivered_through, failures, \
    next_attempt_ms, last_sent_ms, created_at";
/// [`COLS`] with an empty `resource`: the worker's reads, which never render the resource.
const LIGHT_COLS: &str =
    "sub_id, grant_id, client_id, scopes, topic, filters, endpoint, headers, payload, heartbeat_s, \
    timeout_s, max_count, end_at, status, error, '' AS resource, since_seq, events_count, delivered_through, failures, \
    next_attempt_ms, last_sent_ms, created_at";
const KINDS: [Col; 23] = [
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Int,
    Col::Int,
    Col::Int,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Int,
    Col::Int,
    Col::Int,
    Col::Int,
    Col::Int,
    Col::Int,
];

fn corrupt(what: &str) -> StoreError {
    StoreError::Config(format!("stored subscription has a bad {what}"))
}

fn opt_int(row: &[SqlValue], i: usize) -> Option<i64> {
    match row.get(i) {
        Some(SqlValue::Int(v)) => Some(*v),
        _ => None,
    }
}

fn decode(mut row: Vec<SqlValue>) -> Result<SubscriptionRecord, StoreError> {
    let text = |row: &mut Vec<SqlValue>, i: usize, what: &str| row.take_text(i).ok_or_else(|| corrupt(what));
    let filters: Vec<(String, String)> =
        serde_json::from_str(&text(&mut row, 5, "filters")?).map_err(|_| corrupt("filters"))?;
    let headers: Vec<String> = serde_json::from_str(&text(&mut row, 7, "headers")?).map_err(|_| corrupt("headers"))?;
    Ok(SubscriptionRecord {
        sub_id: text(&mut row, 0, "id")?,
        grant_id: text(&mut row, 1, "grant")?.parse().map_err(|_| corrupt("grant"))?,
        client_id: text(&mut row, 2, "client")?.parse().map_err(|_| corrupt("client"))?,
        scopes: text(&mut row, 3, "scopes")?,
        topic: text(&mut row, 4, "topic")?,
        filters,
        endpoint: text(&mut row, 6, "endpoint")?,
        headers,
        payload: text(&mut row, 8, "payload")?,
        heartbeat_s: opt_int(&row, 9),
        timeout_s: row.int(10),
        max_count: row.int(11),
        end_at: opt_int(&row, 12),
        status: SubscriptionStatus::parse(&text(&mut row, 13, "status")?).ok_or_else(|| corrupt("status"))?,
        error: row.take_text(14),
        resource: text(&mut row, 15, "resource")?,
        since_seq: row.int(16),
        events_count: row.int(17),
        delivered_through: row.int(18),
        failures: row.int(19),
        next_attempt_ms: row.int(20),
        last_sent_ms: row.int(21),
        created_at: row.int(22),
    })
}

fn bind_opt(sql: &mut Sql, value: Option<i64>) -> &mut Sql {
    match value {
        Some(v) => sql.bind(v),
        None => sql.bind(SqlValue::NullInt),
    }
}

/// One committed change of a topic resource type, from the version history.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub seq: i64,
    pub rkey: i64,
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    /// POST, PUT or DELETE.
    pub method: String,
    pub last_updated_ms: i64,
    /// `None` for a deletion.
    pub body: Option<String>,
}

/// An event matched to a subscription, numbered from 1 per subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionEvent {
    pub event_number: i64,
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub at_ms: i64,
}

/// An event to record: which subscription, about which version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub sub_id: String,
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub seq: i64,
    pub at_ms: i64,
}

async fn current_seq(conn: &mut Conn<'_>) -> Result<i64, StoreError> {
    let mut sql = Sql::new(conn.dialect());
    sql.push("SELECT value FROM commit_seq WHERE one = 1");
    Ok(conn.fetch(&sql, &[Col::Int]).await?.first().map_or(0, |r| r.int(0)))
}

impl Store {
    /// Record a new subscription for a live grant; its events start after the current commit
    /// sequence. Refused (`Conflict`) when the grant is no longer live.
    pub async fn create_subscription(&self, mut record: SubscriptionRecord) -> Result<SubscriptionRecord, StoreError> {
        let now = self.now_secs();
        let mut tx = self.pool.begin_write().await?;
        {
            let mut conn = tx.conn();
            let mut sql = Sql::new(conn.dialect());
            sql.push("SELECT grant_id FROM grants WHERE grant_id = ")
                .bind(record.grant_id.as_str())
                .push(" AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ")
                .bind(now)
                .push(")");
            if conn.dialect() == Dialect::Postgres {
                // Serialises with a revocation of the grant (which turns its subscriptions off).
                sql.push(" FOR UPDATE");
            }
            if conn.fetch(&sql, &[Col::Text]).await?.is_empty() {
                return Err(StoreError::Conflict("the authorization behind this token has ended".into()));
            }
            record.since_seq = current_seq(&mut conn).await?;
            record.created_at = now;
            let filters = serde_json::to_string(&record.filters).map_err(|e| StoreError::Config(e.to_string()))?;
            let headers = serde_json::to_string(&record.headers).map_err(|e| StoreError::Config(e.to_string()))?;
            let mut sql = Sql::new(conn.dialect());
            sql.push("INSERT INTO subscriptions (")
                .push(COLS)
                .push(") VALUES (")
                .bind(record.sub_id.as_str())
                .push(", ")
                .bind(record.grant_id.as_str())
                .push(", ")
                .bind(record.client_id.as_str())
                .push(", ")
                .bind(record.scopes.as_str())
                .push(", ")
                .bind(record.topic.as_str())
                .push(", ")
                .bind(filters)
                .push(", ")
                .bind(record.endpoint.as_str())
                .push(", ")
                .bind(headers)
                .push(", ")
                .bind(record.payload.as_str())
                .push(", ");
            bind_opt(&mut sql, record.heartbeat_s)
                .push(", ")
                .bind(record.timeout_s)
                .push(", ")
                .bind(record.max_count)
                .push(", ");
            bind_opt(&mut sql, record.end_at)
                .push(", ")
                .bind(record.status.as_str())
                .push(", ")
                .bind(record.error.clone().map_or(SqlValue::NullText, SqlValue::Text))
                .push(", ")
                .bind(record.resource.as_str())
                .push(", ")
                .bind(record.since_seq)
                .push(", 0, 0, 0, 0, 0, ")
                .bind(now)
                .push(")");
            conn.execute(&sql).await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    pub async fn subscription(&self, sub_id: &str) -> Result<Option<SubscriptionRecord>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ").push(COLS).push(" FROM subscriptions WHERE sub_id = ").bind(sub_id);
        let mut lease = self.pool.read_conn().await?;
        lease.conn().fetch(&sql, &KINDS).await?.into_iter().next().map(decode).transpose()
    }

    /// Subscriptions created under any of these grants, newest first.
    pub async fn subscriptions_of_grants(&self, grants: &[&str]) -> Result<Vec<SubscriptionRecord>, StoreError> {
        if grants.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ")
            .push(COLS)
            .push(" FROM subscriptions WHERE grant_id IN ")
            .bind_list(grants.iter().copied())
            .push(" ORDER BY created_at DESC, sub_id");
        let mut lease = self.pool.read_conn().await?;
        lease.conn().fetch(&sql, &KINDS).await?.into_iter().map(decode).collect()
    }

    /// Every subscription that is not off (the dispatcher's working set).
    pub async fn live_subscriptions(&self) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ").push(COLS).push(" FROM subscriptions WHERE status <> 'off' ORDER BY sub_id");
        let mut lease = self.pool.read_conn().await?;
        lease.conn().fetch(&sql, &KINDS).await?.into_iter().map(decode).collect()
    }

    /// The live subscriptions without their stored Subscription text (`resource` is empty):
    /// what the dispatcher needs to match changes, read on every pass.
    pub async fn live_subscriptions_for_matching(&self) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ").push(LIGHT_COLS).push(" FROM subscriptions WHERE status <> 'off' ORDER BY sub_id");
        let mut lease = self.pool.read_conn().await?;
        lease.conn().fetch(&sql, &KINDS).await?.into_iter().map(decode).collect()
    }

    /// How many subscriptions were ever created (off ones included: they are kept), so a
    /// growing number says a cached list of them is missing one.
    pub async fn subscriptions_created(&self) -> Result<i64, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT COUNT(*) FROM subscriptions");
        let mut lease = self.pool.read_conn().await?;
        Ok(lease.conn().fetch(&sql, &[Col::Int]).await?.first().map_or(0, |r| r.int(0)))
    }

    /// The subscriptions with something to do at `now_ms`: a handshake or retry that is due,
    /// undelivered events, a heartbeat, or an end to act on (without the stored Subscription
    /// text, as for matching).
    pub async fn due_subscriptions(&self, now_ms: i64) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ")
            .push(LIGHT_COLS)
            .push(" FROM subscriptions WHERE status <> 'off' AND ((end_at IS NOT NULL AND end_at * 1000 <= ")
            .bind(now_ms)
            .push(") OR (next_attempt_ms <= ")
            .bind(now_ms)
            .push(
                " AND (status IN ('requested', 'error') OR events_count > delivered_through \
                 OR (heartbeat_s IS NOT NULL AND last_sent_ms + heartbeat_s * 1000 <= ",
            )
            .bind(now_ms)
            .push(")))) ORDER BY sub_id");
        let mut lease = self.pool.read_conn().await?;
        lease.conn().fetch(&sql, &KINDS).await?.into_iter().map(decode).collect()
    }

    /// Notifications (or handshakes, or heartbeats) that reached their endpoints, in one
    /// transaction: for each, events through `through` are delivered, failures reset, and
    /// `requested`/`error` become `active`.
    pub async fn subscriptions_delivered(&self, acks: &[(String, i64)], now_ms: i64) -> Result<(), StoreError> {
        if acks.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin_write().await?;
        {
            let mut conn = tx.conn();
            no_flush_wait(&mut conn).await?;
            for (sub_id, through) in acks {
                conn.execute(&delivered_sql(conn.dialect(), sub_id, *through, now_ms)).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Set a subscription's status (and its error text); an `off` subscription stays off.
    pub async fn set_subscription_status(
        &self,
        sub_id: &str,
        status: SubscriptionStatus,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE subscriptions SET status = ")
            .bind(status.as_str())
            .push(", error = ")
            .bind(error.map_or(SqlValue::NullText, |e| SqlValue::Text(e.to_owned())))
            .push(" WHERE sub_id = ")
            .bind(sub_id)
            .push(" AND status <> 'off'");
        let mut tx = self.pool.begin_write().await?;
        let changed = tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    /// The dispatcher's cursor: the commit sequence it has matched through. Starts at the
    /// current sequence the first time (nothing older can concern a subscription).
    pub async fn subscription_cursor(&self) -> Result<i64, StoreError> {
        {
            // Almost always there: read it without taking the writer.
            let mut sql = Sql::new(self.dialect());
            sql.push("SELECT seq FROM subscription_cursor WHERE one = 1");
            let mut lease = self.pool.read_conn().await?;
            if let Some(row) = lease.conn().fetch(&sql, &[Col::Int]).await?.first() {
                return Ok(row.int(0));
            }
        }
        let mut tx = self.pool.begin_write().await?;
        let seq = {
            let mut conn = tx.conn();
            let mut sql = Sql::new(conn.dialect());
            sql.push("SELECT seq FROM subscription_cursor WHERE one = 1");
            match conn.fetch(&sql, &[Col::Int]).await?.first() {
                Some(row) => row.int(0),
                None => {
                    let seq = current_seq(&mut conn).await?;
                    let mut sql = Sql::new(conn.dialect());
                    sql.push("INSERT INTO subscription_cursor (one, seq) VALUES (1, ").bind(seq).push(")");
                    conn.execute(&sql).await?;
                    seq
                }
            }
        };
        tx.commit().await?;
        Ok(seq)
    }

    /// Committed changes of `types` after commit sequence `after` (and at most `upto`), in
    /// commit order.
    pub async fn changes_after(
        &self,
        after: i64,
        upto: Option<i64>,
        types: &[&str],
        limit: i64,
    ) -> Result<Vec<Change>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT seq, rkey, rtype, id, version, method, lu_ms, body FROM resource_history WHERE seq > ")
            .bind(after);
        if let Some(upto) = upto {
            sql.push(" AND seq <= ").bind(upto);
        }
        sql.push(" AND rtype IN ").bind_list(types.iter().copied()).push(" ORDER BY seq, hid LIMIT ").bind(limit);
        let kinds = [Col::Int, Col::Int, Col::Text, Col::Text, Col::Int, Col::Text, Col::Int, Col::Text];
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &kinds).await?;
        Ok(rows
            .into_iter()
            .map(|mut r| Change {
                seq: r.int(0),
                rkey: r.int(1),
                resource_type: r.take_text(2).unwrap_or_default(),
                id: r.take_text(3).unwrap_or_default(),
                version: r.int(4),
                method: r.take_text(5).unwrap_or_default(),
                last_updated_ms: r.int(6),
                body: r.take_text(7),
            })
            .collect())
    }

    /// The highest commit sequence taken so far.
    pub async fn last_commit_seq(&self) -> Result<i64, StoreError> {
        let mut lease = self.pool.read_conn().await?;
        current_seq(&mut lease.conn()).await
    }

    /// The body of an earlier version (for triggers that compare, e.g. an encounter's status).
    pub async fn version_body(&self, rkey: i64, version: i64) -> Result<Option<String>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT body FROM resource_history WHERE rkey = ").bind(rkey).push(" AND version = ").bind(version);
        let mut lease = self.pool.read_conn().await?;
        Ok(lease.conn().fetch(&sql, &[Col::Text]).await?.into_iter().next().and_then(|mut r| r.take_text(0)))
    }

    /// Record matched events and move the cursor, in one transaction: each event gets its
    /// subscription's next number (a subscription that went off meanwhile gets none).
    pub async fn record_events(&self, events: &[NewEvent], cursor: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_write().await?;
        {
            let mut conn = tx.conn();
            no_flush_wait(&mut conn).await?;
            for e in events {
                let mut sql = Sql::new(conn.dialect());
                sql.push("UPDATE subscriptions SET events_count = events_count + 1 WHERE sub_id = ")
                    .bind(e.sub_id.as_str())
                    .push(" AND status <> 'off' RETURNING events_count");
                let Some(number) = conn.fetch(&sql, &[Col::Int]).await?.first().map(|r| r.int(0)) else { continue };
                let mut sql = Sql::new(conn.dialect());
                sql.push(
                    "INSERT INTO subscription_events (sub_id, event_number, rtype, rid, version, seq, at_ms) VALUES (",
                )
                .bind(e.sub_id.as_str())
                .push(", ")
                .bind(number)
                .push(", ")
                .bind(e.resource_type.as_str())
                .push(", ")
                .bind(e.id.as_str())
                .push(", ")
                .bind(e.version)
                .push(", ")
                .bind(e.seq)
                .push(", ")
                .bind(e.at_ms)
                .push(")");
                conn.execute(&sql).await?;
            }
            let mut sql = Sql::new(conn.dialect());
            sql.push("UPDATE subscription_cursor SET seq = ")
                .bind(cursor)
                .push(" WHERE one = 1 AND seq < ")
                .bind(cursor);
            conn.execute(&sql).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A subscription's events numbered `from..=to`, in order (at most `limit`).
    pub async fn subscription_events(
        &self,
        sub_id: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<SubscriptionEvent>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT event_number, rtype, rid, version, at_ms FROM subscription_events WHERE sub_id = ")
            .bind(sub_id)
            .push(" AND event_number >= ")
            .bind(from)
            .push(" AND event_number <= ")
            .bind(to)
            .push(" ORDER BY event_number LIMIT ")
            .bind(limit);
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &[Col::Int, Col::Text, Col::Text, Col::Int, Col::Int]).await?;
        Ok(rows
            .into_iter()
            .map(|mut r| SubscriptionEvent {
                event_number: r.int(0),
                resource_type: r.take_text(1).unwrap_or_default(),
                id: r.take_text(2).unwrap_or_default(),
                version: r.int(3),
                at_ms: r.int(4),
            })
            .collect())
    }

    /// A delivery failed: count it, wait until `next_attempt_ms`, and say `error` once failures
    /// reach the threshold (delivery keeps being retried, so the endpoint can recover).
    pub async fn subscription_failed(
        &self,
        sub_id: &str,
        failures: i64,
        next_attempt_ms: i64,
        to_error: bool,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE subscriptions SET failures = ")
            .bind(failures)
            .push(", next_attempt_ms = ")
            .bind(next_attempt_ms)
            .push(", error = ")
            .bind(error);
        if to_error {
            sql.push(", status = 'error'");
        }
        sql.push(" WHERE sub_id = ").bind(sub_id).push(" AND status <> 'off'");
        let mut tx = self.pool.begin_write().await?;
        tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Take or renew the lease `name` for `holder` until `now_ms + ttl_ms`. True when `holder`
    /// holds it afterwards.
    pub async fn acquire_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_write().await?;
        let held = {
            let mut conn = tx.conn();
            let mut sql = Sql::new(conn.dialect());
            sql.push("INSERT INTO worker_leases (name, holder, expires_ms) VALUES (")
                .bind(name)
                .push(", ")
                .bind(holder)
                .push(", ")
                .bind(now_ms + ttl_ms)
                .push(") ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms WHERE worker_leases.holder = excluded.holder OR worker_leases.expires_ms < ")
                .bind(now_ms);
            conn.execute(&sql).await?;
            let mut sql = Sql::new(conn.dialect());
            sql.push("SELECT holder FROM worker_leases WHERE name = ").bind(name);
            conn.fetch(&sql, &[Col::Text]).await?.first().and_then(|r| r.text(0).map(|h| h == holder)).unwrap_or(false)
        };
        tx.commit().await?;
        Ok(held)
    }

    /// Give up the lease (at shutdown), so another process need not wait for it to lapse.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("DELETE FROM worker_leases WHERE name = ").bind(name).push(" AND holder = ").bind(holder);
        let mut tx = self.pool.begin_write().await?;
        tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn delivered_sql(dialect: Dialect, sub_id: &str, through: i64, now_ms: i64) -> Sql {
    let mut sql = Sql::new(dialect);
    sql.push("UPDATE subscriptions SET delivered_through = CASE WHEN delivered_through < ")
        .bind(through)
        .push(" THEN ")
        .bind(through)
        .push(" ELSE delivered_through END, failures = 0, next_attempt_ms = 0, error = NULL, last_sent_ms = ")
        .bind(now_ms)
        .push(", status = 'active' WHERE sub_id = ")
        .bind(sub_id)
        .push(" AND status <> 'off'");
    sql
}

/// The dispatcher's own bookkeeping (matched events with the cursor, acknowledgements) commits
/// on PostgreSQL without waiting for the WAL flush. A crash can lose only the last such
/// transactions, never a change they were about (each change committed, and was flushed, before
/// it was matched): the cursor then stands a little earlier and those changes are matched again
/// to the same event numbers, and an acknowledgement lost means a notification sent again, which
/// at-least-once delivery allows. What it saves is a disk flush on each step of every event.
async fn no_flush_wait(conn: &mut Conn<'_>) -> Result<(), StoreError> {
    if conn.dialect() == Dialect::Postgres {
        let mut sql = Sql::new(Dialect::Postgres);
        sql.push("SET LOCAL synchronous_commit = off");
        conn.execute(&sql).await?;
    }
    Ok(())
}
