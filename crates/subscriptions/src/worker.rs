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

use std::collections::{HashMap, HashSet};
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
/// Batches of changes matched in one pass before the pass delivers what is due.
const MAX_BATCHES_PER_PASS: usize = 4;

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
    /// Wakes the deliverer: events were recorded.
    deliveries: tokio::sync::Notify,
    /// The live subscriptions as last read for matching (see [`Notifier::matchers`]).
    matchers: std::sync::Mutex<Option<Matchers>>,
}

/// A cached list of the live subscriptions, with how many subscriptions existed when it was
/// read and when.
struct Matchers {
    created: i64,
    read_at: std::time::Instant,
    subs: Arc<Vec<SubscriptionRecord>>,
}

/// The longest a cached list is used before it is read again (dropping subscriptions that went
/// off; matching one of those records nothing, as events are recorded only for live ones).
const MATCHERS_FOR: Duration = Duration::from_secs(5);

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
                deliveries: tokio::sync::Notify::new(),
                matchers: std::sync::Mutex::new(None),
            }),
        })
    }

    /// Run until the task is dropped: the dispatcher (which also keeps the lease) and the
    /// deliverer side by side, so that matching new changes never waits for a slow delivery
    /// and delivery never waits for a sweep of changes.
    pub fn spawn(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::join!(me.run(), me.deliver_loop());
        })
    }

    async fn deliver_loop(&self) {
        let poll = Duration::from_millis(self.inner.config.poll_ms);
        loop {
            let held_until = self.inner.lease_until.load(std::sync::atomic::Ordering::SeqCst);
            if self.now_ms() < held_until {
                if let Err(e) = self.deliver_due().await {
                    tracing::warn!(error = %e, "subscription delivery failed; retrying");
                }
            }
            tokio::select! {
                _ = self.inner.deliveries.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
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
                Ok(true) => match self.dispatch().await {
                    Ok(caught_up) => {
                        self.inner.deliveries.notify_one();
                        if !caught_up {
                            // A backlog (an import, a restart): go on without waiting.
                            continue;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "subscription matching failed; retrying"),
                },
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot take the subscription lease"),
            }
            tokio::select! {
                _ = signal.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(config.poll_ms)) => {}
            }
        }
    }

    /// The live subscriptions for matching: read again when one was created since the cached
    /// list was read (a count of all subscriptions, one cheap query a pass) or when it is older
    /// than [`MATCHERS_FOR`].
    async fn matchers(&self) -> Result<Arc<Vec<SubscriptionRecord>>, SubscriptionError> {
        let store = &self.inner.store;
        let created = store.subscriptions_created().await?;
        if let Ok(cached) = self.inner.matchers.lock() {
            if let Some(m) = cached.as_ref().filter(|m| m.created == created && m.read_at.elapsed() < MATCHERS_FOR) {
                return Ok(m.subs.clone());
            }
        }
        let subs = Arc::new(store.live_subscriptions_for_matching().await?);
        if let Ok(mut cached) = self.inner.matchers.lock() {
            *cached = Some(Matchers { created, read_at: std::time::Instant::now(), subs: subs.clone() });
        }
        Ok(subs)
    }

    /// Match committed changes to subscriptions, at most [`MAX_BATCHES_PER_PASS`] batches of
    /// them. True when every change committed so far has been matched.
    async fn dispatch(&self) -> Result<bool, SubscriptionError> {
        let store = &self.inner.store;
        let types = topics::watched_types();
        let mut cursor = store.subscription_cursor().await?;
        // A bounded sweep: under a steady stream of writes there is always another change, and
        // delivery (after this) must not wait for a pause in the writes.
        for _ in 0..MAX_BATCHES_PER_PASS {
            let mut changes = store.changes_after(cursor, None, &types, BATCH).await?;
            let Some(last) = changes.last().map(|c| c.seq) else { return Ok(true) };
            let caught_up = (changes.len() as i64) < BATCH;
            if !caught_up {
                // Never split one commit across batches: take its rows whole.
                changes.retain(|c| c.seq < last);
                if changes.is_empty() {
                    changes = store.changes_after(last - 1, Some(last), &types, i64::MAX).await?;
                }
            }
            let through = changes.last().map_or(last, |c| c.seq);
            // Loaded after the changes: a subscription created since starts after them anyway.
            let subs = self.matchers().await?;
            let now_s = self.now_ms() / 1000;
            let index = SubIndex::new(&subs);
            let mut accesses: HashMap<(String, String), Option<Arc<Access>>> = HashMap::new();
            let mut events = Vec::new();
            for change in &changes {
                if !index.watches(&change.resource_type) {
                    continue;
                }
                let current: Option<Value> = change.body.as_deref().and_then(|b| serde_json::from_str(b).ok());
                // The patients the change refers to: a subscription (or token) limited to a
                // patient the change never mentions cannot match it, so no search is run for it.
                let mentioned = current.as_ref().map(|c| mentioned_patients(&change.resource_type, &change.id, c));
                let relevant: Vec<(&SubscriptionRecord, &topics::Topic)> = index
                    .candidates(&change.resource_type, mentioned.as_ref())
                    .into_iter()
                    .map(|(i, topic)| (&subs[i], topic))
                    .filter(|(s, _)| change.seq > s.since_seq && s.end_at.is_none_or(|e| e > now_s))
                    .collect();
                if relevant.is_empty() {
                    continue;
                }
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
                    if let (Some(patient), Some(mentioned)) = (&access.patient, &mentioned) {
                        if !mentioned.contains(patient.as_str()) {
                            continue;
                        }
                    }
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
            if caught_up {
                return Ok(true);
            }
        }
        Ok(false)
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
        let now = self.now_ms();
        let subs = self.inner.store.due_subscriptions(now).await?;
        let mut running = tokio::task::JoinSet::new();
        let mut acks: Vec<(String, i64)> = Vec::new();
        let mut wake = false;
        for sub in subs {
            if !self.due(&sub, now) {
                continue;
            }
            while running.len() >= self.inner.config.concurrency.max(1) {
                collect(running.join_next().await, &mut acks, &mut wake);
            }
            let me = self.clone();
            running.spawn(async move {
                let id = sub.sub_id.clone();
                me.deliver(sub).await.unwrap_or_else(|e| {
                    tracing::warn!(subscription = %id, error = %e, "delivery step failed");
                    None
                })
            });
        }
        while let Some(done) = running.join_next().await {
            collect(Some(done), &mut acks, &mut wake);
        }
        // One transaction for the pass's successful deliveries (a crash before it sends them
        // again: delivery is at least once).
        self.inner.store.subscriptions_delivered(&acks, self.now_ms()).await?;
        if wake {
            // Events waited for a handshake: send them without waiting for a poll.
            self.inner.deliveries.notify_one();
        }
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

    /// One delivery step for `sub`. On success returns what to acknowledge (the subscription,
    /// the last event number sent, and whether events are waiting behind a handshake).
    async fn deliver(&self, sub: SubscriptionRecord) -> Result<Option<Delivered>, SubscriptionError> {
        let store = &self.inner.store;
        let now = self.now_ms();
        if sub.end_at.is_some_and(|e| e * 1000 <= now) {
            store
                .set_subscription_status(&sub.sub_id, SubscriptionStatus::Off, Some("the subscription reached its end"))
                .await?;
            return Ok(None);
        }
        if store.live_grant(&sub.grant_id).await?.is_none() {
            store
                .set_subscription_status(&sub.sub_id, SubscriptionStatus::Off, Some("the authorization ended"))
                .await?;
            return Ok(None);
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
                return Ok(Some(Delivered {
                    sub_id: sub.sub_id.clone(),
                    through,
                    events_waiting: kind == NotificationType::Handshake && pending,
                }))
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
        Ok(None)
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

/// The live subscriptions by the resource type of their topic and by the patient their
/// `patient` filter names, so that a change is compared with the subscriptions that could
/// match it rather than with all of them.
struct SubIndex<'a> {
    by_type: HashMap<&'static str, TypeIndex<'a>>,
}

#[derive(Default)]
struct TypeIndex<'a> {
    by_patient: HashMap<&'a str, Vec<usize>>,
    /// Subscriptions without a `patient` filter.
    any_patient: Vec<usize>,
    topics: HashMap<usize, &'static topics::Topic>,
}

impl<'a> SubIndex<'a> {
    fn new(subs: &'a [SubscriptionRecord]) -> SubIndex<'a> {
        let mut by_type: HashMap<&'static str, TypeIndex<'a>> = HashMap::new();
        for (i, sub) in subs.iter().enumerate() {
            let Some(topic) = topics::by_url(&sub.topic) else { continue };
            let entry = by_type.entry(topic.resource_type).or_default();
            entry.topics.insert(i, topic);
            match patient_filter(sub) {
                Some(patients) => {
                    for p in patients {
                        entry.by_patient.entry(p).or_default().push(i);
                    }
                }
                None => entry.any_patient.push(i),
            }
        }
        SubIndex { by_type }
    }

    fn watches(&self, rtype: &str) -> bool {
        self.by_type.contains_key(rtype)
    }

    /// The subscriptions (index, topic) that could match a change of `rtype` mentioning
    /// `mentioned` patients (`None`: unknown, e.g. a deletion: every one of the type), in order.
    fn candidates(&self, rtype: &str, mentioned: Option<&HashSet<String>>) -> Vec<(usize, &'static topics::Topic)> {
        let Some(index) = self.by_type.get(rtype) else { return Vec::new() };
        let mut found: Vec<usize> = match mentioned {
            None => index.topics.keys().copied().collect(),
            Some(patients) => {
                let mut found = index.any_patient.clone();
                for p in patients {
                    if let Some(subs) = index.by_patient.get(p.as_str()) {
                        found.extend(subs);
                    }
                }
                found
            }
        };
        found.sort_unstable();
        found.dedup();
        found.into_iter().filter_map(|i| index.topics.get(&i).map(|t| (i, *t))).collect()
    }
}

/// A notification that reached its endpoint.
struct Delivered {
    sub_id: String,
    through: i64,
    events_waiting: bool,
}

fn collect(
    done: Option<Result<Option<Delivered>, tokio::task::JoinError>>,
    acks: &mut Vec<(String, i64)>,
    wake: &mut bool,
) {
    if let Some(Ok(Some(d))) = done {
        *wake |= d.events_waiting;
        acks.push((d.sub_id, d.through));
    }
}

/// The ids of the patients a resource refers to anywhere (`Patient/{id}` references, relative or
/// absolute), and itself when it is a Patient. A resource is in a patient's compartment only
/// through such a reference, so this is a superset of the compartments it belongs to.
fn mentioned_patients(rtype: &str, id: &str, resource: &Value) -> HashSet<String> {
    fn walk(value: &Value, out: &mut HashSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    if key == "reference" {
                        if let Some(id) = v.as_str().and_then(patient_id_of) {
                            out.insert(id.to_owned());
                        }
                    } else {
                        walk(v, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = HashSet::new();
    if rtype == "Patient" {
        out.insert(id.to_owned());
    }
    walk(resource, &mut out);
    out
}

/// `p1` from `Patient/p1`, `https://…/fhir/Patient/p1` or (as a search value) `p1`.
fn patient_id_of(reference: &str) -> Option<&str> {
    let (_, rest) = reference.rsplit_once("Patient/")?;
    // A versioned reference (`Patient/p1/_history/2`) is about the same patient.
    let id = rest.split('/').next().unwrap_or_default();
    (!id.is_empty()).then_some(id)
}

/// The patients a subscription's `patient` filter names (a comma means "any of"), or None when
/// it has no such filter.
fn patient_filter(sub: &SubscriptionRecord) -> Option<Vec<&str>> {
    let mut wanted: Option<Vec<&str>> = None;
    for (name, value) in &sub.filters {
        if name == "patient" {
            let ids = value.split(',').map(|v| patient_id_of(v).unwrap_or(v));
            wanted.get_or_insert_with(Vec::new).extend(ids);
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patients_a_change_mentions() {
        let obs = serde_json::json!({ "resourceType": "Observation", "subject": { "reference": "Patient/p1" },
            "performer": [{ "reference": "https://x.org/fhir/Patient/p2" }, { "reference": "Practitioner/d" }],
            "note": [{ "text": "Patient/p3 is not a reference" }] });
        let got = mentioned_patients("Observation", "o1", &obs);
        assert_eq!(got, HashSet::from(["p1".to_owned(), "p2".to_owned()]));
        assert!(mentioned_patients("Patient", "p9", &serde_json::json!({})).contains("p9"));
        assert_eq!(patient_id_of("Patient/"), None);
        assert_eq!(patient_id_of("Patient/p1/_history/2"), Some("p1"));
    }
}
