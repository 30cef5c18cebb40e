//! Fetch jobs: every fetch, synchronous or not, is a row in `link_jobs` with its parts in
//! `link_job_parts`. A job is claimed with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL, the
//! single writer on SQLite) that its worker renews; when a process dies the lease runs out and
//! any Link process takes the job up again, doing only the parts not yet stored. A second
//! identical request while one runs finds the first (a unique index over running jobs).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::db::{opt_int, Col, Dialect, RowExt};
use crate::error::{LinkError, Result};
use crate::fetch::request::FetchRequest;
use crate::fetch::run::{PART_CONNECTION, PART_EVERYTHING, PART_REFERENCES};
use crate::ids::{AppId, ConnectionId, JobId};
use crate::webhooks::{self, EventType};
use crate::Link;

/// What a job fetches, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub connections: Vec<ConnectionId>,
    /// Run within its request (its result is the answer, not kept).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
    pub fetch: FetchRequest,
}

/// Who a fetch is for.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Connection(ConnectionId),
    Person(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    Partial,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Partial => "partial",
            JobStatus::Failed => "failed",
        }
    }
    fn parse(text: &str) -> JobStatus {
        match text {
            "running" => JobStatus::Running,
            "done" => JobStatus::Done,
            "partial" => JobStatus::Partial,
            "failed" => JobStatus::Failed,
            _ => JobStatus::Queued,
        }
    }
    pub fn finished(self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Partial | JobStatus::Failed)
    }
}

/// A job after it was started.
#[derive(Debug, Clone)]
pub struct Started {
    pub job: JobId,
}

struct JobRow {
    id: JobId,
    app: AppId,
    spec: JobSpec,
    status: JobStatus,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    result_expires_at: Option<i64>,
    expired: bool,
    attempts: i64,
}

/// Give up on a job that has been taken up this many times (it keeps killing its process).
const MAX_ATTEMPTS: i64 = 5;

fn request_key(connections: &[ConnectionId], fetch: &FetchRequest) -> String {
    let mut ids: Vec<&str> = connections.iter().map(ConnectionId::as_str).collect();
    ids.sort_unstable();
    let mut fetch = fetch.clone();
    if let Some(r) = fetch.resources.as_mut() {
        r.sort();
        r.dedup();
    }
    let canonical = json!({"connections": ids, "fetch": fetch}).to_string();
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn is_unique_violation(e: &LinkError) -> bool {
    matches!(e, LinkError::Storage(store::StoreError::Database(sqlx::Error::Database(d))) if d.is_unique_violation())
}

impl Link {
    /// Start a fetch: checks the app's rate, the request and the connections, refuses a
    /// duplicate of a running job, and stores the job. With `claim` the caller runs it now
    /// (a synchronous fetch); otherwise a worker will.
    pub async fn start_fetch(&self, app: &AppId, target: &Target, fetch: FetchRequest, claim: bool) -> Result<Started> {
        self.check_rate(app)?;
        fetch.plan()?;
        let connections: Vec<ConnectionId> = match target {
            Target::Connection(id) => {
                let record = self.app_connection(app, id).await?;
                if record.status != crate::connections::ACTIVE {
                    return Err(LinkError::ReauthorizationRequired);
                }
                vec![record.id]
            }
            Target::Person(person) => {
                let all = self.connection_records(app, Some(person)).await?;
                let active: Vec<ConnectionId> =
                    all.iter().filter(|c| c.status == crate::connections::ACTIVE).map(|c| c.id.clone()).collect();
                if active.is_empty() {
                    return Err(LinkError::not_found(format!("person '{person}' has no active connections")));
                }
                active
            }
        };
        let person = match target {
            Target::Person(p) => Some(p.clone()),
            Target::Connection(_) => None,
        };
        let key = request_key(&connections, &fetch);
        let spec = JobSpec { connections, person, fetch, sync: claim };
        let job = JobId::generate();
        let now = self.now_ms();
        let db = self.db();
        let mut sql = db.sql();
        let (status, owner, lease) = if claim {
            ("running", Some(self.inner.instance.clone()), Some(now + self.config().job_lease_seconds * 1000))
        } else {
            ("queued", None, None)
        };
        sql.push(
            "INSERT INTO link_jobs (job_id, app_id, request_key, request, status, created_at, updated_at, started_at, \
             lease_owner, lease_until, attempts) VALUES (",
        )
        .bind(job.as_str())
        .push(", ")
        .bind(app.as_str())
        .push(", ")
        .bind(key.as_str())
        .push(", ")
        .bind(serde_json::to_string(&spec).unwrap_or_default())
        .push(", ")
        .bind(status)
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(crate::db::int_value(claim.then_some(now)))
        .push(", ")
        .bind(owner)
        .push(", ")
        .bind(crate::db::int_value(lease))
        .push(", ")
        .bind(i64::from(claim))
        .push(")");
        match db.execute(&sql).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                let mut sql = db.sql();
                sql.push("SELECT job_id FROM link_jobs WHERE app_id = ")
                    .bind(app.as_str())
                    .push(" AND request_key = ")
                    .bind(key.as_str())
                    .push(" AND status IN ('queued', 'running')");
                let running = db.rows(&sql, &[Col::Text]).await?;
                return match running.first().and_then(|r| r.text(0)).and_then(|j| j.parse::<JobId>().ok()) {
                    Some(j) => Err(LinkError::Transient(j)),
                    None => Err(LinkError::Conflict("the same fetch just finished; try again".into())),
                };
            }
            Err(e) => return Err(e),
        }
        if !claim {
            self.inner.job_wake.notify_waiters();
        }
        Ok(Started { job })
    }

    /// Per-app fetch rate (a token bucket per process).
    fn check_rate(&self, app: &AppId) -> Result<()> {
        let per_minute = f64::from(self.config().app_fetches_per_minute.max(1));
        let mut buckets = self.inner.rates.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = buckets.entry(app.clone()).or_insert((per_minute, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * per_minute / 60.0).min(per_minute);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - *tokens) * 60.0 / per_minute).ceil() as u64;
            Err(LinkError::Throttled { retry_after_seconds: wait.max(1) })
        }
    }

    /// Run a job this process has claimed, to its end.
    pub async fn run_job(&self, job: &JobId) -> Result<JobStatus> {
        let row = self.job_row(job).await?.ok_or_else(|| LinkError::not_found("job"))?;
        let renew = self.renew_lease_while(job);
        let work = async {
            let plan = row.spec.fetch.plan()?;
            let runs = row.spec.connections.iter().map(|c| self.fetch_connection(job, c, &plan));
            for r in futures::future::join_all(runs).await {
                r?;
            }
            self.finish_job(&row).await
        };
        tokio::pin!(renew);
        tokio::select! {
            outcome = work => outcome,
            () = &mut renew => Err(LinkError::Conflict("the job's lease was lost".into())),
        }
    }

    /// Renew the lease every third of its length; returns only if it was lost.
    async fn renew_lease_while(&self, job: &JobId) {
        let lease_ms = self.config().job_lease_seconds * 1000;
        let period = Duration::from_millis((lease_ms / 3).max(100) as u64);
        loop {
            tokio::time::sleep(period).await;
            let db = self.db();
            let mut sql = db.sql();
            sql.push("UPDATE link_jobs SET lease_until = ")
                .bind(self.now_ms() + lease_ms)
                .push(" WHERE job_id = ")
                .bind(job.as_str())
                .push(" AND lease_owner = ")
                .bind(self.inner.instance.as_str())
                .push(" AND status = 'running'");
            match db.execute(&sql).await {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => tracing::warn!(job = %job, error = %e, "renewing a job lease"),
            }
        }
    }

    async fn finish_job(&self, row: &JobRow) -> Result<JobStatus> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT connection_id, part, status FROM link_job_parts WHERE job_id = ").bind(row.id.as_str());
        let parts = db.rows(&sql, &[Col::Text, Col::Text, Col::Text]).await?;
        let mut failed_connections = 0;
        let mut failed_parts = 0;
        for c in &row.spec.connections {
            let mine: Vec<_> = parts.iter().filter(|p| p.text(0) == Some(c.as_str())).collect();
            failed_parts += mine.iter().filter(|p| p.text(2) == Some("failed")).count();
            // A connection failed when none of its records came (the references alone are not
            // records).
            let records_ok = mine.iter().any(|p| p.text(1) != Some(PART_REFERENCES) && p.text(2) == Some("done"));
            if !records_ok {
                failed_connections += 1;
            }
        }
        let status = if failed_parts == 0 {
            JobStatus::Done
        } else if failed_connections == row.spec.connections.len() {
            JobStatus::Failed
        } else {
            JobStatus::Partial
        };
        let now = self.now_ms();
        let mut tx = db.begin().await?;
        let mut sql = db.sql();
        sql.push("UPDATE link_jobs SET status = ")
            .bind(status.as_str())
            .push(", finished_at = ")
            .bind(now)
            .push(", updated_at = ")
            .bind(now)
            .push(", lease_until = NULL, result_expires_at = ")
            .bind(now + self.config().result_seconds * 1000)
            .push(" WHERE job_id = ")
            .bind(row.id.as_str())
            .push(" AND status = 'running'");
        let changed = tx.conn().execute(&sql).await?;
        if changed > 0 {
            let event = if status == JobStatus::Failed { EventType::FetchFailed } else { EventType::FetchCompleted };
            let data = json!({"transactionId": row.id, "status": status, "connections": row.spec.connections,
                "person": row.spec.person, "resultUrl": self.result_url(&row.id)});
            webhooks::enqueue(db, &mut tx, &row.app, event, data, now).await?;
        }
        tx.commit().await?;
        self.wake_webhooks();
        Ok(status)
    }

    fn result_url(&self, job: &JobId) -> String {
        format!("{}/link/v1/jobs/{job}/result", self.config().base_url)
    }

    /// Claim the oldest job that is queued, or running under a lease that ran out.
    pub async fn claim_job(&self) -> Result<Option<JobId>> {
        let now = self.now_ms();
        let db = self.db();
        let mut sql = db.sql();
        sql.push("UPDATE link_jobs SET status = 'running', lease_owner = ")
            .bind(self.inner.instance.as_str())
            .push(", lease_until = ")
            .bind(now + self.config().job_lease_seconds * 1000)
            .push(", attempts = attempts + 1, started_at = COALESCE(started_at, ")
            .bind(now)
            .push("), updated_at = ")
            .bind(now)
            .push(
                " WHERE job_id = (SELECT job_id FROM link_jobs WHERE status = 'queued' OR (status = 'running' AND \
                 lease_until < ",
            )
            .bind(now)
            .push(") ORDER BY created_at LIMIT 1");
        if db.dialect() == Dialect::Postgres {
            sql.push(" FOR UPDATE SKIP LOCKED");
        }
        sql.push(") RETURNING job_id, attempts");
        let rows = db.write_rows(&sql, &[Col::Text, Col::Int]).await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let Some(job) = row.text(0).and_then(|j| j.parse::<JobId>().ok()) else { return Ok(None) };
        if row.int(1) > MAX_ATTEMPTS {
            let mut sql = db.sql();
            sql.push("UPDATE link_jobs SET status = 'failed', finished_at = ")
                .bind(now)
                .push(", lease_until = NULL, result_expires_at = ")
                .bind(now + self.config().result_seconds * 1000)
                .push(" WHERE job_id = ")
                .bind(job.as_str());
            db.execute(&sql).await?;
            tracing::error!(job = %job, "job abandoned after repeated attempts");
            return Ok(None);
        }
        Ok(Some(job))
    }

    /// One job worker: claim, run, repeat; sleeps until woken or a second passes.
    pub async fn run_job_worker(&self) {
        loop {
            match self.claim_job().await {
                Ok(Some(job)) => {
                    if let Err(e) = self.fail_if_abandoned(&job).await {
                        tracing::error!(job = %job, error = %e, "checking a claimed job");
                        continue;
                    }
                    if self.job_row(&job).await.ok().flatten().is_some_and(|r| r.status.finished()) {
                        continue;
                    }
                    match self.run_job(&job).await {
                        Ok(status) => tracing::info!(job = %job, status = status.as_str(), "fetch job finished"),
                        Err(e) => tracing::error!(job = %job, error = %e, "fetch job stopped"),
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "claiming a fetch job"),
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.job_wake.notified()).await;
        }
    }

    /// A synchronous fetch whose request went away (its process died, or the client left)
    /// cannot answer anyone: it ends `failed` instead of running in the background.
    async fn fail_if_abandoned(&self, job: &JobId) -> Result<()> {
        let Some(row) = self.job_row(job).await? else { return Ok(()) };
        if !row.spec.sync {
            return Ok(());
        }
        let now = self.now_ms();
        let db = self.db();
        let mut tx = db.begin().await?;
        let mut sql = db.sql();
        sql.push("UPDATE link_jobs SET status = 'failed', finished_at = ")
            .bind(now)
            .push(", updated_at = ")
            .bind(now)
            .push(", lease_until = NULL, result_expires_at = ")
            .bind(now + self.config().result_seconds * 1000)
            .push(" WHERE job_id = ")
            .bind(job.as_str())
            .push(" AND status = 'running'");
        if tx.conn().execute(&sql).await? > 0 {
            let data = json!({"transactionId": job, "status": JobStatus::Failed, "connections": row.spec.connections,
                "person": row.spec.person, "reason": "the synchronous request was abandoned"});
            webhooks::enqueue(db, &mut tx, &row.app, EventType::FetchFailed, data, now).await?;
        }
        tx.commit().await?;
        self.wake_webhooks();
        Ok(())
    }

    async fn job_row(&self, job: &JobId) -> Result<Option<JobRow>> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push(
            "SELECT job_id, app_id, request, status, created_at, started_at, finished_at, result_expires_at, expired, \
             attempts FROM link_jobs WHERE job_id = ",
        )
        .bind(job.as_str());
        let cols =
            [Col::Text, Col::Text, Col::Text, Col::Text, Col::Int, Col::Int, Col::Int, Col::Int, Col::Int, Col::Int];
        let Some(row) = db.rows(&sql, &cols).await?.into_iter().next() else { return Ok(None) };
        let (Some(id), Some(app)) =
            (row.text(0).and_then(|j| j.parse().ok()), row.text(1).and_then(|a| a.parse().ok()))
        else {
            return Ok(None);
        };
        let spec: JobSpec = serde_json::from_str(row.text(2).unwrap_or_default())
            .map_err(|_| LinkError::Config(format!("job {job} has a damaged request")))?;
        Ok(Some(JobRow {
            id,
            app,
            spec,
            status: JobStatus::parse(row.text(3).unwrap_or_default()),
            created_at: row.int(4),
            started_at: opt_int(&row, 5),
            finished_at: opt_int(&row, 6),
            result_expires_at: opt_int(&row, 7),
            expired: row.int(8) != 0,
            attempts: row.int(9),
        }))
    }

    /// The app's job, or 404; 410 once its result has expired.
    async fn app_job(&self, app: &AppId, job: &JobId) -> Result<JobRow> {
        let row = match self.job_row(job).await? {
            Some(r) if &r.app == app => r,
            _ => return Err(LinkError::not_found(format!("job {job} is not known"))),
        };
        if row.expired || row.result_expires_at.is_some_and(|t| t < self.now_ms()) {
            return Err(LinkError::Gone(format!("job {job}'s result has expired")));
        }
        Ok(row)
    }

    /// `GET /link/v1/jobs/{id}`: status, progress per connection and part, errors.
    pub async fn job_status(&self, app: &AppId, job: &JobId) -> Result<Value> {
        let row = self.app_job(app, job).await?;
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT connection_id, part, status, resources, error FROM link_job_parts WHERE job_id = ")
            .bind(job.as_str())
            .push(" ORDER BY connection_id, part");
        let parts = db.rows(&sql, &[Col::Text, Col::Text, Col::Text, Col::Int, Col::Text]).await?;
        let plan = row.spec.fetch.plan()?;
        let endpoints: HashMap<_, _> = self.endpoints(None).await?.into_iter().map(|e| (e.id.clone(), e)).collect();
        let mut progress = Vec::new();
        let mut errors = Vec::new();
        for c in &row.spec.connections {
            let record = self.connection_record(c).await?;
            let endpoint = record.as_ref().and_then(|r| endpoints.get(&r.endpoint));
            let mine: Vec<_> = parts.iter().filter(|p| p.text(0) == Some(c.as_str())).collect();
            let mut part_views = Vec::new();
            for p in &mine {
                let (part, status) = (p.text(1).unwrap_or_default(), p.text(2).unwrap_or_default());
                part_views.push(json!({"part": part, "status": status, "resources": p.int(3)}));
                if status == "failed" {
                    let outcome: Value = p.text(4).and_then(|e| serde_json::from_str(e).ok()).unwrap_or(Value::Null);
                    errors.push(json!({"connectionId": c, "endpointId": endpoint.map(|e| &e.id), "part": part, "outcome": outcome}));
                }
            }
            let finished_all =
                mine.iter().any(|p| p.text(1) == Some(PART_REFERENCES) || p.text(1) == Some(PART_CONNECTION));
            let failed = mine.iter().filter(|p| p.text(2) == Some("failed")).count();
            let state = if !finished_all {
                if row.status.finished() {
                    "failed"
                } else {
                    "running"
                }
            } else if failed == 0 {
                "done"
            } else if failed == mine.len() {
                "failed"
            } else {
                "partial"
            };
            let expected: Vec<&str> = if mine.iter().any(|p| p.text(1) == Some(PART_EVERYTHING)) {
                vec![PART_EVERYTHING, PART_REFERENCES]
            } else {
                plan.groups.iter().map(|g| g.name()).chain([PART_REFERENCES]).collect()
            };
            progress.push(json!({
                "connectionId": c,
                "endpointId": endpoint.map(|e| &e.id),
                "endpointName": endpoint.map(|e| &e.name),
                "status": state,
                "partsDone": mine.len(),
                "partsExpected": expected.len(),
                "parts": part_views,
            }));
        }
        let mut answer = json!({
            "transactionId": row.id,
            "status": row.status,
            "person": row.spec.person,
            "request": row.spec.fetch,
            "created": store::clock::instant_text(row.created_at),
            "started": row.started_at.map(store::clock::instant_text),
            "finished": row.finished_at.map(store::clock::instant_text),
            "expires": row.result_expires_at.map(store::clock::instant_text),
            // How many times a worker took the job up (more than one: a process died running it).
            "attempts": row.attempts,
            "progress": progress,
            "errors": errors,
        });
        if row.status.finished() {
            answer["resultUrl"] = json!(self.result_url(&row.id));
        }
        Ok(answer)
    }

    /// `GET /link/v1/jobs/{id}/result`: the R4 Bundle of a finished job, as JSON text.
    pub async fn job_result(&self, app: &AppId, job: &JobId) -> Result<String> {
        let row = self.app_job(app, job).await?;
        if !row.status.finished() {
            return Err(LinkError::Conflict(format!("job {job} is still {}", row.status.as_str())));
        }
        if row.spec.sync {
            return Err(LinkError::Gone(format!(
                "job {job} was a synchronous fetch: its result was its answer and is not kept"
            )));
        }
        self.result_bundle(&row.id, &row.spec).await
    }

    /// A synchronous fetch: the job is stored and run in this request; its result returned.
    pub async fn fetch_now(
        &self,
        app: &AppId,
        target: &Target,
        fetch: FetchRequest,
    ) -> Result<(JobId, JobStatus, String)> {
        let started = self.start_fetch(app, target, fetch, true).await?;
        let job = started.job;
        self.inner.collectors.lock().unwrap_or_else(|p| p.into_inner()).insert(job.clone(), Arc::default());
        // The collector goes however this ends (an error, or the request being dropped).
        struct Forget<'a>(&'a Link, JobId);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.inner.collectors.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
            }
        }
        let _forget = Forget(self, job.clone());
        let status = self.run_job(&job).await?;
        let row = self.job_row(&job).await?.ok_or_else(|| LinkError::not_found("job"))?;
        let bundle = self.result_bundle(&row.id, &row.spec).await?;
        Ok((job, status, bundle))
    }

    /// The result Bundle's text, assembled from the stored entries without parsing them (so a
    /// fan-out over many portals holds one copy of its result, not a tree of it).
    async fn result_bundle(&self, job: &JobId, spec: &JobSpec) -> Result<String> {
        self.assemble_result(job, spec).await
    }

    /// Forget the results of expired jobs (their rows stay, answering 410).
    pub async fn expire_results(&self) -> Result<u64> {
        let now = self.now_ms();
        let db = self.db();
        let mut tx = db.begin().await?;
        let mut sql = db.sql();
        sql.push("DELETE FROM link_job_parts WHERE job_id IN (SELECT job_id FROM link_jobs WHERE result_expires_at < ")
            .bind(now)
            .push(")");
        let n = tx.conn().execute(&sql).await?;
        let mut sql = db.sql();
        sql.push("UPDATE link_jobs SET expired = 1 WHERE expired = 0 AND result_expires_at < ").bind(now);
        tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(n)
    }
}
