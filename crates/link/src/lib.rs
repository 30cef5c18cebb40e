//! Link: what an app developer runs to reach a patient's records at many SMART on FHIR portals
//! through one API. A directory of portals, a broker that runs the patient's login at any of
//! them, a vault that keeps and refreshes their tokens (encrypted at rest), a fetch engine with
//! durable jobs, and signed webhooks. Link reaches every portal, Portico included, only over
//! HTTP as a SMART client; nothing here depends on a portal being Portico.
//!
//! This crate is the domain: it has no HTTP server (the routes are in the server crate).

pub mod apps;
pub mod broker;
pub mod config;
pub mod connections;
mod db;
pub mod directory;
pub mod discovery;
pub mod error;
pub mod fetch;
pub mod health;
pub mod ids;
pub mod import;
pub mod jobs;
pub mod portal;
mod refresh;
pub mod vault;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use config::LinkConfig;
pub use error::{LinkError, Result};
use store::Clock;

use crate::db::{Col, Db, RowExt};
use crate::health::HealthRecorder;
use crate::ids::{AppId, ConnectionId};
use crate::portal::PortalClient;
use crate::vault::Vault;

/// Link's shared state; cheap to clone.
#[derive(Clone)]
pub struct Link {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    config: LinkConfig,
    clock: Arc<dyn Clock>,
    vault: Vault,
    portals: PortalClient,
    health: HealthRecorder,
    webhook_http: reqwest::Client,
    /// This process, as lease owner.
    instance: String,
    job_wake: tokio::sync::Notify,
    outbox_wake: tokio::sync::Notify,
    refresh_locks: Mutex<HashMap<ConnectionId, Arc<tokio::sync::Mutex<()>>>>,
    token_cache: Mutex<HashMap<ConnectionId, refresh::CachedToken>>,
    rates: Mutex<HashMap<AppId, (f64, Instant)>>,
    /// Synchronous fetches running here: their parts stay in memory.
    collectors: Mutex<HashMap<ids::JobId, Arc<fetch::run::Collector>>>,
    health_writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Background work one Link process does.
pub struct Workers {
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    pub fn abort(&self) {
        for h in &self.handles {
            h.abort();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.abort();
    }
}

impl Link {
    /// Open Link's database (migrating it) and start the health writer.
    pub async fn open(database_url: &str, config: LinkConfig, vault: Vault, clock: Arc<dyn Clock>) -> Result<Link> {
        let db = Db::open(database_url, 8).await?;
        let (health, receiver) = HealthRecorder::channel(clock.clone());
        let portals = PortalClient::new(config.portal.clone(), health.clone())
            .map_err(|e| LinkError::Config(format!("HTTP client: {e}")))?;
        let webhook_http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(config.webhooks.timeout_ms.min(5_000)))
            .timeout(Duration::from_millis(config.webhooks.timeout_ms))
            .user_agent(concat!("Portico-Link-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LinkError::Config(format!("HTTP client: {e}")))?;
        let writer = tokio::spawn(health::run_writer(receiver, db.clone(), clock.clone()));
        Ok(Link {
            inner: Arc::new(Inner {
                db,
                config,
                clock,
                vault,
                portals,
                health,
                webhook_http,
                instance: format!("link-{}", uuid::Uuid::new_v4().simple()),
                job_wake: tokio::sync::Notify::new(),
                outbox_wake: tokio::sync::Notify::new(),
                refresh_locks: Mutex::default(),
                token_cache: Mutex::default(),
                rates: Mutex::default(),
                collectors: Mutex::default(),
                health_writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// Start the job workers, the webhook sender, the discovery schedule and the clean-up.
    pub fn start_workers(&self) -> Workers {
        let mut handles = Vec::new();
        for _ in 0..self.config().job_workers.max(1) {
            let link = self.clone();
            handles.push(tokio::spawn(async move { link.run_job_worker().await }));
        }
        let link = self.clone();
        handles.push(tokio::spawn(async move { link.run_webhook_sender().await }));
        let link = self.clone();
        handles.push(tokio::spawn(async move { link.run_maintenance().await }));
        let interval = self.config().discovery_interval_seconds;
        if interval > 0 {
            let link = self.clone();
            handles.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(interval)).await;
                    match link.rediscover_all().await {
                        Ok((ok, failed)) => tracing::info!(ok, failed, "scheduled discovery"),
                        Err(e) => tracing::error!(error = %e, "scheduled discovery"),
                    }
                }
            }));
        }
        Workers { handles }
    }

    /// Every minute: expire results, prune health events, old logins, codes and sent webhooks.
    async fn run_maintenance(&self) {
        loop {
            if let Err(e) = self.maintain().await {
                tracing::error!(error = %e, "Link maintenance");
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    }

    /// One round of clean-up (also run by tests).
    pub async fn maintain(&self) -> Result<()> {
        let now = self.now_ms();
        self.expire_results().await?;
        health::prune(self.db(), now).await?;
        let day = 86_400_000;
        for (table, column, age) in [
            ("link_flows", "expires_at", day),
            ("link_codes", "expires_at", day),
            ("link_outbox", "delivered_at", 7 * day),
        ] {
            let mut sql = self.db().sql();
            sql.push("DELETE FROM ").push(table).push(" WHERE ").push(column).push(" < ").bind(now - age);
            self.db().execute(&sql).await?;
        }
        Ok(())
    }

    /// Store what is queued and stop the background writer (for a clean exit).
    pub async fn close(&self) {
        self.health().flush().await;
        let writer = self.inner.health_writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = writer {
            w.abort();
        }
        self.inner.db.close().await;
    }

    pub fn config(&self) -> &LinkConfig {
        &self.inner.config
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    pub(crate) fn vault(&self) -> &Vault {
        &self.inner.vault
    }

    pub(crate) fn portals(&self) -> &PortalClient {
        &self.inner.portals
    }

    pub fn health(&self) -> &HealthRecorder {
        &self.inner.health
    }

    pub fn now_ms(&self) -> i64 {
        store::clock::epoch_ms(self.inner.clock.now())
    }

    /// Re-encrypt every sealed value under the vault's first key (after a rotation put a new key
    /// first). Returns how many values were re-encrypted.
    pub async fn reencrypt_all(&self) -> Result<usize> {
        let active = self.vault().active_kid().to_owned();
        let mut count = 0;
        // (table, key columns, sealed column, context from the key columns)
        type Context = fn(&[String]) -> String;
        let columns: [(&str, &[&str], &str, Context); 7] = [
            ("link_apps", &["app_id"], "webhook_secret", |k| format!("app:{}:webhook-secret", k[0])),
            ("link_endpoints", &["endpoint_id"], "client_secret", |k| format!("endpoint:{}:client-secret", k[0])),
            ("link_endpoints", &["endpoint_id"], "private_key", |k| format!("endpoint:{}:private-key", k[0])),
            ("link_connections", &["connection_id"], "tokens", |k| format!("connection:{}:tokens", k[0])),
            ("link_flows", &["state_hash"], "verifier", |k| format!("flow:{}:verifier", k[0])),
            ("link_job_parts", &["job_id", "connection_id", "part"], "body", |k| {
                format!("job:{}:{}:{}", k[0], k[1], k[2])
            }),
            ("link_job_parts", &["job_id", "connection_id", "part"], "meta", |k| {
                format!("job:{}:{}:{}:meta", k[0], k[1], k[2])
            }),
        ];
        for (table, keys, column, context) in columns {
            let mut sql = self.db().sql();
            sql.push("SELECT ").push(&keys.join(", ")).push(", ").push(column).push(" FROM ").push(table);
            sql.push(" WHERE ").push(column).push(" IS NOT NULL");
            let kinds = vec![Col::Text; keys.len() + 1];
            let rows = self.db().rows(&sql, &kinds).await?;
            for mut row in rows {
                let key_values: Vec<String> = (0..keys.len()).map(|i| row.take_text(i).unwrap_or_default()).collect();
                let Some(sealed) = row.take_text(keys.len()) else { continue };
                if Vault::kid_of(&sealed) == Some(active.as_str()) {
                    continue;
                }
                let ctx = context(&key_values);
                let plain = self.vault().open(&ctx, &sealed)?;
                let resealed = self.vault().seal(&ctx, &plain)?;
                let mut sql = self.db().sql();
                sql.push("UPDATE ").push(table).push(" SET ").push(column).push(" = ").bind(resealed).push(" WHERE ");
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        sql.push(" AND ");
                    }
                    sql.push(k).push(" = ").bind(key_values[i].as_str());
                }
                self.db().execute(&sql).await?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// Sealed values per key id (to show what a rotation left behind).
    pub async fn sealed_by_key(&self) -> Result<HashMap<String, usize>> {
        let mut out = HashMap::new();
        for (table, column) in [
            ("link_apps", "webhook_secret"),
            ("link_endpoints", "client_secret"),
            ("link_endpoints", "private_key"),
            ("link_connections", "tokens"),
            ("link_flows", "verifier"),
            ("link_job_parts", "body"),
            ("link_job_parts", "meta"),
        ] {
            let mut sql = self.db().sql();
            sql.push("SELECT ")
                .push(column)
                .push(" FROM ")
                .push(table)
                .push(" WHERE ")
                .push(column)
                .push(" IS NOT NULL");
            for row in self.db().rows(&sql, &[Col::Text]).await? {
                if let Some(kid) = row.text(0).and_then(Vault::kid_of) {
                    *out.entry(kid.to_owned()).or_insert(0) += 1;
                }
            }
        }
        Ok(out)
    }
}
