//! The dispatcher and the rest-hook deliverer, run by one process at a time (a lease in the
//! database; another process takes over when the holder stops renewing it).
//!
//! **Dispatch.** The outbox is the version history: the dispatcher reads changes of the watched
//! types after its cursor in commit-sequence order, asks for each subscription of a matching
//! topic whether the trigger fires and whether the resource is one the subscription's grant may
//! see right now — a search for that one resource with the topic's criteria and the subscriber's
//! filters, under the same `Access` (scopes, compartment, patient list, withheld categories) a
//! request with the creating token would get — and records the events it finds together with
//! the cursor, in one transaction. An event the grant may not see is never recorded, so not even
//! an `empty` notification reveals it.
//!
//! **Delivery.** Per subscription, in event order: the handshake first, then the events (up to
//! `max-count` per notification), heartbeats when idle. A failure backs off exponentially; after
//! a few the subscription says `error` but is still retried, and the first success makes it
//! `active` again. Before every send the grant must be live and the end not reached, else the
//! subscription is turned off.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use auth::{Interaction, ScopeSet};
use oauth::access::Access;
use oauth::AuthServer;
use serde_json::Value;
use store::subscriptions::{NewEvent, SubscriptionRecord, SubscriptionStatus};
use store::{ReadOutcome, Store};

use crate::notify::{self, EventPayload, NotificationType};
use crate::topics;
use crate::SubscriptionError;

const LEASE: &str = "subscriptions";
const BATCH: i64 = 500;

/// How the worker behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifierConfig {
    /// How long a lease lasts without renewal (milliseconds): the longest another process waits
    /// to take over from one that died.
    pub lease_ms: i64,
    /// How often to look for work when nothing wakes the worker (milliseconds).
    pub poll_ms: u64,
    /// Consecutive failures before a subscription says `error`.
    pub failures_before_error: i64,
    /// The longest wait between retries (milliseconds).
    pub max_backoff_ms: i64,
    /// Subscriptions delivered at once.
    pub concurrency: usize,
    /// The largest notification body read back from an endpoint is none: answers are dropped
    /// unread. This bounds what a request may send (bytes).
    pub max_notification_bytes: usize,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            lease_ms: 5_000,
            poll_ms: 250,
            failures_before_error: 3,
            max_backoff_ms: 60_000,
            concurrency: 32,
            max_notification_bytes: 8 << 20,
        }
    }
}

struct Inner {
    store: Store,
    auth: AuthServer,
    http: reqwest::Client,
    base: String,
    config: NotifierConfig,
    holder: String,
    /// Until when this process holds the lease (epoch ms; 0: not held). Renewed only once half
    /// of it has passed, so an idle worker writes to the database rarely (SQLite has one writer).
    lease_until: std::sync::atomic::AtomicI64,
}

/// The running worker (cheap to clone).
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl Notifier {
    pub fn new(
        store: Store,
        auth: AuthServer,
        base: String,
        config: NotifierConfig,
    ) -> Result<Notifier, SubscriptionError> {
        let http = reqwest::Client::builder()
            // A notification goes where the subscription says, nowhere else.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| SubscriptionError::Internal(e.to_string()))?;
        let holder = auth::GrantId::generate().to_string();
        Ok(Notifier {
            inner: Arc::new(Inner {
                store,
                auth,
                http,
                base,
                config,
                holder,
                lease_until: std::sync::atomic::AtomicI64::new(0),
            }),
        })
    }

    /// Run until the task is dropped.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.run().await })
    }

    fn now_ms(&self) -> i64 {
        store::clock::epoch_ms(self.inner.store.clock().now())
    }

    async fn run(&self) {
        let signal = self.inner.store.commit_signal();
        let config = &self.inner.config;
        loop {
            let now = self.now_ms();
            let held_until = self.inner.lease_until.load(std::sync::atomic::Ordering::SeqCst);
            let holds = if now < held_until - config.lease_ms / 2 {
                Ok(true)
            } else {
                let taken = self.inner.store.acquire_lease(LEASE, &self.inner.holder, now, config.lease_ms).await;
                let until = if matches!(taken, Ok(true)) { now + config.lease_ms } else { 0 };
                self.inner.lease_until.store(until, std::sync::atomic::Ordering::SeqCst);
                taken
            };
            match holds {
                Ok(true) => {
                    if let Err(e) = self.pass().await {
                        tracing::warn!(error = %e, "subscription pass failed; retrying");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot take the subscription lease"),
            }
            tokio::select! {
                _ = signal.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(config.poll_ms)) => {}
            }
        }
    }

    /// One round: match new changes, then deliver what is due.
    pub async fn pass(&self) -> Result<(), SubscriptionError> {
        self.dispatch().await?;
        self.deliver_due().await
    }

    async fn dispatch(&self) -> Result<(), SubscriptionError> {
        let store = &self.inner.store;
        let types = topics::watched_types();
        let mut cursor = store.subscription_cursor().await?;
        loop {
            let mut changes = store.changes_after(cursor, None, &types, BATCH).await?;
            let Some(last) = changes.last().map(|c| c.seq) else { return Ok(()) };
            if changes.len() as i64 == BATCH {
                // Never split one commit across batches: take its rows whole.
                changes.retain(|c| c.seq < last);
                if changes.is_empty() {
                    changes = store.changes_after(last - 1, Some(last), &types, i64::MAX).await?;
                }
            }
            let through = changes.last().map_or(last, |c| c.seq);
            // Loaded after the changes: a subscription created since starts after them anyway.
            let subs = store.live_subscriptions().await?;
            let now_s = self.now_ms() / 1000;
            let mut accesses: HashMap<(String, String), Option<Arc<Access>>> = HashMap::new();
            let mut events = Vec::new();
            for change in &changes {
                let relevant: Vec<(&SubscriptionRecord, &topics::Topic)> = subs
                    .iter()
                    .filter(|s| change.seq > s.since_seq && s.end_at.is_none_or(|e| e > now_s))
                    .filter_map(|s| topics::by_url(&s.topic).map(|t| (s, t)))
                    .filter(|(_, t)| t.resource_type == change.resource_type)
                    .collect();
                if relevant.is_empty() {
                    continue;
                }
                let current: Option<Value> = change.body.as_deref().and_then(|b| serde_json::from_str(b).ok());
                let previous: Option<Value> = if change.version > 1 {
                    store
                        .version_body(change.rkey, change.version - 1)
                        .await?
                        .and_then(|b| serde_json::from_str(&b).ok())
                } else {
                    None
                };
                for (sub, topic) in relevant {
                    if !topics::fires(topic, current.as_ref(), previous.as_ref()) {
                        continue;
                    }
                    let key = (sub.grant_id.to_string(), sub.scopes.clone());
                    if !accesses.contains_key(&key) {
                        let access = self
                            .inner
                            .auth
                            .access_for_grant(&sub.grant_id, ScopeSet::parse(&sub.scopes).0)
                            .await?
                            .map(Arc::new);
                        accesses.insert(key.clone(), access);
                    }
                    let Some(Some(access)) = accesses.get(&key) else { continue };
                    if self.matches(access, topic, sub, &change.resource_type, &change.id).await? {
                        events.push(NewEvent {
                            sub_id: sub.sub_id.clone(),
                            resource_type: change.resource_type.clone(),
                            id: change.id.clone(),
                            version: change.version,
                            seq: change.seq,
                            at_ms: change.last_updated_ms,
                        });
                    }
                }
            }
            store.record_events(&events, through).await?;
            cursor = through;
        }
    }

    /// Is `rtype/id` a resource the subscription's access may search, meeting the topic's
    /// criteria and the subscriber's filters? One search for that id, enforced in SQL.
    async fn matches(
        &self,
        access: &Access,
        topic: &topics::Topic,
        sub: &SubscriptionRecord,
        rtype: &str,
        id: &str,
    ) -> Result<bool, SubscriptionError> {
        let Ok(restriction) = access.restriction(rtype, Interaction::Search) else { return Ok(false) };
        let mut pairs: Vec<(String, String)> = vec![("_id".into(), id.into())];
        pairs.extend(topic.criteria.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        pairs.extend(sub.filters.iter().cloned());
        let request = match fhir::search::parse(fhir::Registry::r4(), rtype, &pairs, fhir::search::Handling::Strict) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(subscription = %sub.sub_id, error = %e, "subscription filter does not parse");
                return Ok(false);
            }
        };
        let page = self.inner.store.search(&request, &restriction).await?;
        Ok(!page.matches.is_empty())
    }

    async fn deliver_due(&self) -> Result<(), SubscriptionError> {
        let subs = self.inner.store.live_subscriptions().await?;
        let now = self.now_ms();
        let mut running = tokio::task::JoinSet::new();
        for sub in subs {
            if !self.due(&sub, now) {
                continue;
            }
            while running.len() >= self.inner.config.concurrency.max(1) {
                running.join_next().await;
            }
            let me = self.clone();
            running.spawn(async move {
                let id = sub.sub_id.clone();
                if let Err(e) = me.deliver(sub).await {
                    tracing::warn!(subscription = %id, error = %e, "delivery step failed");
                }
            });
        }
        while running.join_next().await.is_some() {}
        Ok(())
    }

    fn due(&self, sub: &SubscriptionRecord, now: i64) -> bool {
        if sub.end_at.is_some_and(|e| e * 1000 <= now) {
            return true; // to turn it off
        }
        if sub.next_attempt_ms > now {
            return false;
        }
        match sub.status {
            SubscriptionStatus::Requested => true,
            SubscriptionStatus::Off => false,
            SubscriptionStatus::Error => true,
            SubscriptionStatus::Active => {
                sub.events_count > sub.delivered_through
                    || sub.heartbeat_s.is_some_and(|h| now - sub.last_sent_ms >= h * 1000)
            }
        }
    }

    async fn deliver(&self, sub: SubscriptionRecord) -> Result<(), SubscriptionError> {
        let store = &self.inner.store;
        let now = self.now_ms();
        if sub.end_at.is_some_and(|e| e * 1000 <= now) {
            store
                .set_subscription_status(&sub.sub_id, SubscriptionStatus::Off, Some("the subscription reached its end"))
                .await?;
            return Ok(());
        }
        if store.live_grant(&sub.grant_id).await?.is_none() {
            store
                .set_subscription_status(&sub.sub_id, SubscriptionStatus::Off, Some("the authorization ended"))
                .await?;
            return Ok(());
        }
        let never_reached = sub.last_sent_ms == 0;
        let pending = sub.events_count > sub.delivered_through;
        let (kind, events) = if sub.status == SubscriptionStatus::Requested || never_reached {
            (NotificationType::Handshake, Vec::new())
        } else if pending {
            let from = sub.delivered_through + 1;
            let events = store.subscription_events(&sub.sub_id, from, from + sub.max_count - 1, sub.max_count).await?;
            (NotificationType::EventNotification, events)
        } else {
            (NotificationType::Heartbeat, Vec::new())
        };
        let mut payloads = Vec::with_capacity(events.len());
        for event in &events {
            let body = if sub.payload == "full-resource" {
                match store.vread(&event.resource_type, &event.id, event.version).await? {
                    ReadOutcome::Found(stored) => Some(stored.body.to_string()),
                    _ => None,
                }
            } else {
                None
            };
            payloads.push(EventPayload { event, body });
        }
        let bundle_id = auth::GrantId::generate().to_string();
        let bundle = notify::bundle(&sub, kind, &payloads, &self.inner.base, now, &bundle_id);
        let through = events.last().map_or(sub.delivered_through, |e| e.event_number);
        match self.post(&sub, &bundle).await {
            Ok(()) => {
                store.subscription_delivered(&sub.sub_id, through, self.now_ms()).await?;
                if kind == NotificationType::Handshake && pending {
                    // Events waited for the handshake: send them without waiting for a poll.
                    self.inner.store.commit_signal().notify_one();
                }
            }
            Err(why) => {
                let failures = sub.failures + 1;
                let shift = u32::try_from(failures.clamp(1, 20) - 1).unwrap_or(0);
                let backoff = (500_i64 << shift).min(self.inner.config.max_backoff_ms);
                let to_error = failures >= self.inner.config.failures_before_error;
                tracing::info!(subscription = %sub.sub_id, failures, error = %why, "notification not delivered; will retry");
                store.subscription_failed(&sub.sub_id, failures, now + backoff, to_error, &why).await?;
            }
        }
        Ok(())
    }

    /// POST one notification. The endpoint's answer is not read beyond its status.
    async fn post(&self, sub: &SubscriptionRecord, bundle: &Value) -> Result<(), String> {
        let body = serde_json::to_vec(bundle).map_err(|e| e.to_string())?;
        if body.len() > self.inner.config.max_notification_bytes {
            return Err("the notification is larger than the configured limit".into());
        }
        let mut request = self
            .inner
            .http
            .post(&sub.endpoint)
            .timeout(Duration::from_secs(sub.timeout_s.clamp(1, 300) as u64))
            .header("Content-Type", "application/fhir+json");
        for h in &sub.headers {
            if let Some((name, value)) = h.split_once(':') {
                request = request.header(name.trim(), value.trim());
            }
        }
        match request.body(body).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            // Never log the endpoint's answer or the headers (they may carry credentials).
            Ok(r) => Err(format!("the endpoint answered {}", r.status().as_u16())),
            Err(e) if e.is_timeout() => Err("the endpoint did not answer in time".into()),
            Err(_) => Err("the endpoint could not be reached".into()),
        }
    }
}
