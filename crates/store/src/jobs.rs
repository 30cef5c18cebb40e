//! The jobs table (see migration 0010): durable asynchronous work claimed under a lease.
//! Only the bookkeeping lives here; what a job does belongs to its crate (`bulk` for exports).

use crate::db::{Col, Dialect, RowExt, Sql, SqlValue};
use crate::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    fn parse(text: &str) -> Option<JobStatus> {
        Some(match text {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "completed" => JobStatus::Completed,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_active(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// One job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub job_id: String,
    pub kind: String,
    pub status: JobStatus,
    pub client_id: String,
    pub grant_id: Option<String>,
    pub spec: String,
    pub checkpoint: Option<String>,
    pub result: Option<String>,
    pub progress: Option<String>,
    pub error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub finished_ms: Option<i64>,
    pub expires_ms: Option<i64>,
    pub last_poll_ms: Option<i64>,
    pub attempts: i64,
}

/// A new job, queued.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub job_id: &'a str,
    pub kind: &'a str,
    pub client_id: &'a str,
    pub grant_id: Option<&'a str>,
    pub spec: &'a str,
}

const COLS: &str = "job_id, kind, status, client_id, grant_id, spec, checkpoint, result, progress, error, \
    created_ms, updated_ms, finished_ms, expires_ms, last_poll_ms, attempts";
const KINDS: [Col; 16] = [
    Col::Text,
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
    Col::Int,
    Col::Int,
];

fn opt_int(row: &[SqlValue], i: usize) -> Option<i64> {
    match row.get(i) {
        Some(SqlValue::Int(v)) => Some(*v),
        _ => None,
    }
}

fn decode(mut row: Vec<SqlValue>) -> Result<JobRecord, StoreError> {
    let broken = |what: &str| StoreError::Config(format!("stored job has no valid {what}"));
    let job_id = row.take_text(0).ok_or_else(|| broken("id"))?;
    let kind = row.take_text(1).ok_or_else(|| broken("kind"))?;
    let status = row.take_text(2).as_deref().and_then(JobStatus::parse).ok_or_else(|| broken("status"))?;
    let client_id = row.take_text(3).ok_or_else(|| broken("client"))?;
    Ok(JobRecord {
        job_id,
        kind,
        status,
        client_id,
        grant_id: row.take_text(4),
        spec: row.take_text(5).ok_or_else(|| broken("spec"))?,
        checkpoint: row.take_text(6),
        result: row.take_text(7),
        progress: row.take_text(8),
        error: row.take_text(9),
        created_ms: row.int(10),
        updated_ms: row.int(11),
        finished_ms: opt_int(&row, 12),
        expires_ms: opt_int(&row, 13),
        last_poll_ms: opt_int(&row, 14),
        attempts: row.int(15),
    })
}

/// `AND lease_owner = … AND status = 'running'`: the caller still holds the job.
fn held_by(sql: &mut Sql, job_id: &str, owner: &str) {
    sql.push(" WHERE job_id = ").bind(job_id).push(" AND lease_owner = ").bind(owner).push(" AND status = 'running'");
}

impl Store {
    fn now_ms(&self) -> i64 {
        crate::clock::epoch_ms(self.clock.now())
    }

    /// Queue a job. Refused (`Conflict`) when its grant has ended.
    pub async fn create_job(&self, job: NewJob<'_>) -> Result<JobRecord, StoreError> {
        let now = self.now_ms();
        let mut tx = self.pool.begin_write().await?;
        let mut conn = tx.conn();
        if let Some(grant) = job.grant_id {
            let mut sql = Sql::new(conn.dialect());
            sql.push("SELECT grant_id FROM grants WHERE grant_id = ").bind(grant).push(" AND revoked_at IS NULL");
            if conn.dialect() == Dialect::Postgres {
                // Serialises with a revocation of the grant (which cancels its jobs).
                sql.push(" FOR UPDATE");
            }
            if conn.fetch(&sql, &[Col::Text]).await?.is_empty() {
                return Err(StoreError::Conflict("the authorization behind this token has ended".into()));
            }
        }
        let mut sql = Sql::new(conn.dialect());
        sql.push("INSERT INTO jobs (job_id, kind, status, client_id, grant_id, spec, created_ms, updated_ms) VALUES (")
            .bind(job.job_id)
            .push(", ")
            .bind(job.kind)
            .push(", 'queued', ")
            .bind(job.client_id)
            .push(", ")
            .bind(job.grant_id)
            .push(", ")
            .bind(job.spec)
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(now)
            .push(") RETURNING ")
            .push(COLS);
        let row = conn.fetch(&sql, &KINDS).await?.into_iter().next();
        tx.commit().await?;
        decode(row.ok_or_else(|| StoreError::Config("inserting a job returned no row".into()))?)
    }

    pub async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ").push(COLS).push(" FROM jobs WHERE job_id = ").bind(job_id);
        let mut lease = self.pool.read_conn().await?;
        lease.conn().fetch(&sql, &KINDS).await?.into_iter().next().map(decode).transpose()
    }

    /// Record a status request at `now`; returns the previous one (for the polling limit). The
    /// read and the write are separate statements: a read-then-write transaction cannot wait for
    /// another process's SQLite write lock, and two polls racing only make the limit a little
    /// lenient.
    pub async fn note_job_poll(&self, job_id: &str) -> Result<Option<i64>, StoreError> {
        let now = self.now_ms();
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT last_poll_ms FROM jobs WHERE job_id = ").bind(job_id);
        let before = {
            let mut lease = self.pool.read_conn().await?;
            lease.conn().fetch(&sql, &[Col::Int]).await?.into_iter().next().and_then(|r| opt_int(&r, 0))
        };
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE jobs SET last_poll_ms = ").bind(now).push(" WHERE job_id = ").bind(job_id);
        let mut tx = self.pool.begin_write().await?;
        tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(before)
    }

    /// Claim the oldest job of `kind` that is queued, or running under a lease that ran out.
    pub async fn claim_job(&self, kind: &str, owner: &str, lease_ms: i64) -> Result<Option<JobRecord>, StoreError> {
        let now = self.now_ms();
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE jobs SET status = 'running', lease_owner = ")
            .bind(owner)
            .push(", lease_until = ")
            .bind(now + lease_ms)
            .push(", attempts = attempts + 1, updated_ms = ")
            .bind(now)
            .push(" WHERE job_id = (SELECT job_id FROM jobs WHERE kind = ")
            .bind(kind)
            .push(" AND (status = 'queued' OR (status = 'running' AND lease_until < ")
            .bind(now)
            .push(")) ORDER BY created_ms LIMIT 1");
        if self.dialect() == Dialect::Postgres {
            sql.push(" FOR UPDATE SKIP LOCKED");
        }
        sql.push(") RETURNING ").push(COLS);
        let mut tx = self.pool.begin_write().await?;
        let row = tx.conn().fetch(&sql, &KINDS).await?.into_iter().next();
        tx.commit().await?;
        row.map(decode).transpose()
    }

    /// Store how far the job got and extend its lease. False when the caller no longer holds the
    /// job (cancelled, revoked, or its lease ran out and another process took it): stop.
    pub async fn checkpoint_job(
        &self,
        job_id: &str,
        owner: &str,
        lease_ms: i64,
        checkpoint: Option<&str>,
        progress: &str,
    ) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE jobs SET lease_until = ").bind(now + lease_ms).push(", updated_ms = ").bind(now);
        sql.push(", progress = ").bind(progress);
        if let Some(checkpoint) = checkpoint {
            sql.push(", checkpoint = ").bind(checkpoint);
        }
        held_by(&mut sql, job_id, owner);
        let mut tx = self.pool.begin_write().await?;
        let changed = tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    /// Finish a job the caller holds: completed with its result, or failed with an error. Its
    /// output is kept until `expires_ms`. False when the caller no longer held it.
    pub async fn finish_job(
        &self,
        job_id: &str,
        owner: &str,
        outcome: Result<&str, &str>,
        expires_ms: i64,
    ) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let mut sql = Sql::new(self.dialect());
        match outcome {
            Ok(result) => sql.push("UPDATE jobs SET status = 'completed', result = ").bind(result),
            Err(error) => sql.push("UPDATE jobs SET status = 'failed', error = ").bind(error),
        };
        sql.push(", finished_ms = ")
            .bind(now)
            .push(", updated_ms = ")
            .bind(now)
            .push(", expires_ms = ")
            .bind(expires_ms)
            .push(", lease_until = NULL");
        held_by(&mut sql, job_id, owner);
        let mut tx = self.pool.begin_write().await?;
        let changed = tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    /// Cancel a job (queued, running or completed); its output is removed by the sweeper.
    /// False when it was already over (failed, cancelled, expired) or unknown.
    pub async fn cancel_job(&self, job_id: &str, reason: &str) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE jobs SET status = 'cancelled', error = ")
            .bind(reason)
            .push(", finished_ms = ")
            .bind(now)
            .push(", updated_ms = ")
            .bind(now)
            .push(", expires_ms = ")
            .bind(now)
            .push(", lease_until = NULL WHERE job_id = ")
            .bind(job_id)
            .push(" AND status IN ('queued', 'running', 'completed')");
        let mut tx = self.pool.begin_write().await?;
        let changed = tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(changed > 0)
    }

    /// Jobs whose output is due for removal (expired, cancelled or failed, past `expires_ms`),
    /// oldest first.
    pub async fn jobs_to_sweep(&self, kind: &str, limit: i64) -> Result<Vec<JobRecord>, StoreError> {
        let now = self.now_ms();
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ")
            .push(COLS)
            .push(" FROM jobs WHERE kind = ")
            .bind(kind)
            .push(" AND status IN ('completed', 'failed', 'cancelled') AND expires_ms <= ")
            .bind(now)
            .push(" ORDER BY expires_ms LIMIT ")
            .bind(limit);
        let mut lease = self.pool.read_conn().await?;
        lease.conn().fetch(&sql, &KINDS).await?.into_iter().map(decode).collect()
    }

    /// After its output was removed the job is forgotten: its status URL answers 404 from then
    /// on, as after a DELETE.
    pub async fn job_swept(&self, job_id: &str) -> Result<(), StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("DELETE FROM jobs WHERE job_id = ")
            .bind(job_id)
            .push(" AND status IN ('completed', 'failed', 'cancelled')");
        let mut tx = self.pool.begin_write().await?;
        tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Active jobs (queued or running) a client has now, for the per-client limit.
    pub async fn active_jobs_of_client(&self, kind: &str, client_id: &str) -> Result<i64, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT COUNT(*) FROM jobs WHERE kind = ")
            .bind(kind)
            .push(" AND client_id = ")
            .bind(client_id)
            .push(" AND status IN ('queued', 'running')");
        let mut lease = self.pool.read_conn().await?;
        Ok(lease.conn().fetch(&sql, &[Col::Int]).await?.first().map_or(0, |r| r.int(0)))
    }
}
