//! The exporter: kick-off, status, cancel and download on one side; workers that run the jobs
//! and a sweeper that removes expired output on the other.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::Interaction;
use bytes::Bytes;
use fhir::search::{Handling, SearchTerm};
use futures::stream::{BoxStream, StreamExt};
use oauth::access::{Access, Refusal};
use object_store::buffered::BufWriter;
use object_store::ObjectStore;
use serde_json::Value;
use store::{ExportRow, ExportSlice, JobRecord, JobStatus, NewJob, ReadOutcome, Restriction, TypeRule};
use tokio::io::AsyncWriteExt;

use crate::access::{job_access, type_restriction};
use crate::associated::{Association, PROVENANCE, SCAN_PAGE};
use crate::manifest::{self, Checkpoint, JobSpec, OutputFile, Stage, ERROR_FILE};
use crate::objects;
use crate::request::{parse_type_filter, ExportRequest, Level};
use crate::{BulkConfig, BulkError, Deps, Objects, Result, JOB_KIND};

/// Claims beyond this many are given up as failed (a job that kills its worker every time).
const MAX_ATTEMPTS: i64 = 5;
/// How often the sweeper looks for expired output.
const SWEEP_EVERY: Duration = Duration::from_secs(30);
/// The client id recorded for jobs started without a token (`--dev-open-access`).
const DEV_OPEN_OWNER: &str = "dev-open-access";

/// An export job's id (a UUID).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobId(String);

impl JobId {
    fn new() -> JobId {
        JobId(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for JobId {
    type Err = BulkError;
    fn from_str(s: &str) -> Result<JobId> {
        uuid::Uuid::parse_str(s).map(|u| JobId(u.to_string())).map_err(|_| BulkError::NotFound("no such export".into()))
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a status request gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    InProgress {
        progress: String,
        retry_after_s: i64,
    },
    /// Polled sooner than the configured interval.
    TooFast {
        retry_after_s: i64,
    },
    Complete {
        manifest: Value,
        expires_ms: Option<i64>,
    },
    Failed {
        message: String,
    },
}

/// An export file's bytes, streamed from the object store.
pub struct Download {
    pub size: u64,
    pub stream: BoxStream<'static, Result<Bytes, object_store::Error>>,
}

#[derive(Clone)]
pub struct Exporter {
    inner: Arc<Inner>,
}

struct Inner {
    deps: Deps,
    config: BulkConfig,
    objects: Objects,
    /// This process's name in job leases.
    instance: String,
    wake: tokio::sync::Notify,
}

/// The owner a job is recorded under: the client of the token.
fn owner_of(access: &Access) -> String {
    access.token.as_ref().map_or_else(|| DEV_OPEN_OWNER.to_owned(), |t| t.grant.client_id.to_string())
}

impl Exporter {
    /// `storage` is where files go (see [`BulkConfig::storage`]; the caller resolves `None`).
    pub fn new(deps: Deps, config: BulkConfig, storage: &str) -> Result<Exporter> {
        let objects = objects::open(storage)?;
        Ok(Exporter {
            inner: Arc::new(Inner {
                deps,
                config,
                objects,
                instance: uuid::Uuid::new_v4().to_string(),
                wake: tokio::sync::Notify::new(),
            }),
        })
    }

    fn deps(&self) -> &Deps {
        &self.inner.deps
    }

    fn config(&self) -> &BulkConfig {
        &self.inner.config
    }

    fn file_url(&self, job: &str, name: &str) -> String {
        format!("{}/bulk/files/{job}/{name}", self.deps().origin)
    }

    /// The status URL of a job (the kick-off's `Content-Location`).
    pub fn status_url(&self, job: &JobId) -> String {
        format!("{}/bulk/jobs/{job}", self.deps().origin)
    }

    /// Start the workers and the sweeper.
    pub fn spawn(&self) {
        for _ in 0..self.config().workers.max(1) {
            let me = self.clone();
            tokio::spawn(async move { me.work().await });
        }
        let me = self.clone();
        tokio::spawn(async move { me.sweep_forever().await });
    }

    // ----- requests -------------------------------------------------------------------------

    /// Accept an export: everything is checked here, so a job that starts can finish.
    pub async fn kick_off(
        &self,
        access: &Access,
        level: Level,
        request: ExportRequest,
        request_url: String,
        handling: Handling,
    ) -> Result<JobId> {
        let registry = fhir::Registry::r4();
        access.restriction_any(Interaction::Search).map_err(|r| refusal(r, "export"))?;
        let owner = owner_of(access);
        let active = self.deps().store.active_jobs_of_client(JOB_KIND, &owner).await?;
        if active >= self.config().max_active_jobs_per_client {
            return Err(BulkError::TooManyJobs(format!(
                "this client already has {active} exports queued or running; wait for one to finish or cancel one"
            )));
        }
        let mut notes = request.ignored.clone();
        let mut types = request.types.clone();
        if let Some(list) = &mut types {
            let mut kept = Vec::new();
            for t in list.drain(..) {
                let problem = if level != Level::System && registry.patient_compartment_params(&t).is_empty() {
                    Some(format!(
                        "{t} is not in the Patient compartment, so not part of a {} export",
                        level_name(&level)
                    ))
                } else {
                    access.restriction(&t, Interaction::Search).err().map(|r| match r {
                        Refusal::Scope(why) => why,
                        Refusal::Hidden => format!("{t} is not visible to this client"),
                    })
                };
                match (problem, handling) {
                    (None, _) => kept.push(t),
                    (Some(why), Handling::Strict) => {
                        return Err(BulkError::Forbidden(format!(
                            "_type {t}: {why} (Prefer: handling=lenient skips it)"
                        )))
                    }
                    (Some(why), Handling::Lenient) => notes.push(format!("_type {t} skipped: {why}")),
                }
            }
            *list = kept;
        }
        let mut associated = request.associated;
        if associated.is_some() {
            if let Err(r) = access.restriction(PROVENANCE, Interaction::Search) {
                let why = match r {
                    Refusal::Scope(why) => why,
                    Refusal::Hidden => "Provenance is not visible to this client".to_owned(),
                };
                match handling {
                    Handling::Strict => {
                        return Err(BulkError::Forbidden(format!(
                            "includeAssociatedData adds Provenance: {why} (Prefer: handling=lenient skips it)"
                        )))
                    }
                    Handling::Lenient => {
                        notes.push(format!("includeAssociatedData skipped: {why}"));
                        associated = None;
                    }
                }
            }
        }
        let patients = match &level {
            Level::Group(id) => Some(self.group_members(access, id).await?),
            _ => request.patients.clone(),
        };
        let spec = JobSpec {
            level,
            request: request_url,
            transaction_time_ms: store::clock::epoch_ms(self.deps().store.clock().now()),
            types,
            type_filters: request.type_filters.clone(),
            since_ms: request.since_ms,
            elements: request.elements.clone(),
            patients,
            associated,
            scopes: access.scopes.to_string(),
            notes,
        };
        let job_id = JobId::new();
        let spec_text = serde_json::to_string(&spec)?;
        let grant = access.token.as_ref().map(|t| t.grant.grant_id.to_string());
        self.deps()
            .store
            .create_job(NewJob {
                job_id: job_id.as_str(),
                kind: JOB_KIND,
                client_id: &owner,
                grant_id: grant.as_deref(),
                spec: &spec_text,
            })
            .await
            .map_err(|e| match e {
                store::StoreError::Conflict(why) => BulkError::Forbidden(why),
                other => BulkError::Store(other),
            })?;
        self.inner.wake.notify_one();
        Ok(job_id)
    }

    /// The patients of `Group/{id}` (active members that are Patients), if the caller may read it.
    async fn group_members(&self, access: &Access, id: &str) -> Result<Vec<String>> {
        let not_known = || BulkError::NotFound(format!("Group/{id} is not known"));
        if !fhir::search::is_valid_id(id) {
            return Err(not_known());
        }
        let restriction = access.restriction("Group", Interaction::Read).map_err(|r| refusal(r, "the Group"))?;
        if !self.deps().store.visible("Group", id, &restriction).await? {
            return Err(not_known());
        }
        let ReadOutcome::Found(group) = self.deps().store.read("Group", id).await? else { return Err(not_known()) };
        let doc: Value = serde_json::from_str(&group.body)?;
        let base = format!("{}/", self.deps().fhir_base);
        let mut members = Vec::new();
        for member in doc.get("member").and_then(Value::as_array).into_iter().flatten() {
            if member.get("inactive").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let Some(reference) = member.pointer("/entity/reference").and_then(Value::as_str) else { continue };
            let local = reference.strip_prefix(base.as_str()).unwrap_or(reference);
            if let Some(patient) = local.strip_prefix("Patient/").filter(|p| fhir::search::is_valid_id(p)) {
                if !members.iter().any(|m| m == patient) {
                    members.push(patient.to_owned());
                }
            }
        }
        Ok(members)
    }

    /// A job of this caller's client (others' jobs are not known to it).
    async fn own_job(&self, access: &Access, job: &JobId) -> Result<JobRecord> {
        let record = self.deps().store.job(job.as_str()).await?;
        let now = store::clock::epoch_ms(self.deps().store.clock().now());
        match record {
            Some(r)
                if r.kind == JOB_KIND
                    && r.client_id == owner_of(access)
                    && r.status != JobStatus::Cancelled
                    // Past its expiry a job is gone, whether or not the sweeper has been by.
                    && r.expires_ms.is_none_or(|e| e > now) =>
            {
                Ok(r)
            }
            _ => Err(BulkError::NotFound("no such export (finished exports expire; cancelled ones are gone)".into())),
        }
    }

    pub async fn status(&self, access: &Access, job: &JobId) -> Result<Status> {
        let record = self.own_job(access, job).await?;
        let interval_ms = self.config().min_poll_interval_ms.max(0);
        let retry_after_s = (interval_ms + 999) / 1000;
        match record.status {
            JobStatus::Queued | JobStatus::Running => {
                let before = self.deps().store.note_job_poll(job.as_str()).await?;
                let now = store::clock::epoch_ms(self.deps().store.clock().now());
                if before.is_some_and(|b| now - b < interval_ms) {
                    return Ok(Status::TooFast { retry_after_s: retry_after_s.max(1) });
                }
                let progress = record.progress.unwrap_or_else(|| "queued".to_owned());
                Ok(Status::InProgress { progress, retry_after_s: retry_after_s.max(1) })
            }
            JobStatus::Completed => {
                let manifest = serde_json::from_str(record.result.as_deref().unwrap_or("{}"))?;
                Ok(Status::Complete { manifest, expires_ms: record.expires_ms })
            }
            JobStatus::Failed | JobStatus::Cancelled => {
                Ok(Status::Failed { message: record.error.unwrap_or_else(|| "the export failed".to_owned()) })
            }
        }
    }

    /// `DELETE` on the status URL: stop the job and remove its files.
    pub async fn cancel(&self, access: &Access, job: &JobId) -> Result<()> {
        let record = self.own_job(access, job).await?;
        if !self.deps().store.cancel_job(&record.job_id, "cancelled by the client").await? {
            return Err(BulkError::NotFound("the export is already over".into()));
        }
        self.remove_output(&record.job_id).await;
        Ok(())
    }

    /// A finished job's file, for a token of the job's client.
    pub async fn download(&self, access: &Access, job: &JobId, name: &str) -> Result<Download> {
        let record = self.own_job(access, job).await?;
        let gone = || BulkError::NotFound(format!("no file '{name}' in this export"));
        if record.status != JobStatus::Completed {
            return Err(gone());
        }
        let done: Checkpoint = serde_json::from_str(record.checkpoint.as_deref().unwrap_or("{}"))?;
        let listed = done.output.iter().chain(&done.deleted).any(|f| f.name == name)
            || (name == ERROR_FILE && record.result.as_deref().is_some_and(|r| r.contains(ERROR_FILE)));
        if !listed {
            return Err(gone());
        }
        let got = match self.inner.objects.get(&objects::path(&record.job_id, name)).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Err(gone()),
            Err(e) => return Err(e.into()),
        };
        let size = got.meta.size;
        Ok(Download { size, stream: got.into_stream() })
    }

    // ----- workers --------------------------------------------------------------------------

    async fn work(&self) {
        loop {
            match self.deps().store.claim_job(JOB_KIND, &self.inner.instance, self.config().lease_ms).await {
                Ok(Some(job)) => {
                    let id = job.job_id.clone();
                    if job.attempts > MAX_ATTEMPTS {
                        tracing::error!(job = %id, "export abandoned after repeated attempts");
                        let _ = self.finish(&id, Err("the export failed repeatedly")).await;
                        continue;
                    }
                    match self.run_job(job).await {
                        Ok(()) => tracing::info!(job = %id, "export job stopped or finished"),
                        // Left to its lease: another claim retries it from its checkpoint.
                        Err(e) => tracing::error!(job = %id, error = %e, "export job interrupted"),
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "claiming an export job"),
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.wake.notified()).await;
        }
    }

    async fn finish(&self, job: &str, outcome: Result<&str, &str>) -> Result<bool> {
        let expires =
            store::clock::epoch_ms(self.deps().store.clock().now()) + self.config().file_expiry_seconds.max(1) * 1000;
        Ok(self.deps().store.finish_job(job, &self.inner.instance, outcome, expires).await?)
    }

    async fn run_job(&self, job: JobRecord) -> Result<()> {
        let spec: JobSpec = match serde_json::from_str(&job.spec) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::error!(job = %job.job_id, error = %e, "stored export request is unreadable");
                self.finish(&job.job_id, Err("the export request could not be read back")).await?;
                return Ok(());
            }
        };
        let mut cp: Checkpoint = match &job.checkpoint {
            Some(text) => serde_json::from_str(text)?,
            None => Checkpoint::default(),
        };
        let Some(access) = job_access(self.deps(), job.grant_id.as_deref(), &job.client_id, &spec.scopes).await? else {
            self.deps().store.cancel_job(&job.job_id, "the authorization behind the export has ended").await?;
            self.remove_output(&job.job_id).await;
            return Ok(());
        };
        if cp.types.is_none() {
            cp.types = Some(self.types_to_export(&spec, &access).await?);
        }
        let filters = self.filters_by_type(&spec)?;
        let patients = spec.patients.clone().map(Arc::new);
        let types = cp.types.clone().unwrap_or_default();
        let mut run = Run {
            exporter: self,
            job: &job.job_id,
            spec: &spec,
            started: Instant::now(),
            exported: 0,
            renewed: Instant::now(),
        };
        while let Some(t) = types.get(cp.type_index) {
            let wanted = filters.get(t.as_str()).map_or(&[][..], Vec::as_slice);
            match type_restriction(&access, t, patients.as_ref(), wanted) {
                Ok(restriction) => {
                    if !run.export_type(&mut cp, t, &restriction).await? {
                        return Ok(()); // no longer ours
                    }
                }
                Err(why) => {
                    cp.notes.push(format!("{t} was not exported: {why}"));
                    cp.type_index += 1;
                }
            }
        }
        if let (Some(mode), false) = (spec.associated, cp.associated_done) {
            let association = Association {
                deps: self.deps(),
                access: &access,
                mode,
                patients: patients.as_ref(),
                filters: &filters,
                exported: &types,
                since_ms: spec.since_ms,
                in_a_compartment: spec.level != Level::System,
            };
            if !run.export_associated(&mut cp, &association).await? {
                return Ok(()); // no longer ours
            }
        }
        let notes: Vec<&String> = spec.notes.iter().chain(&cp.notes).collect();
        if !notes.is_empty() {
            let mut text = String::new();
            for note in &notes {
                text.push_str(&manifest::outcome_line(note));
                text.push('\n');
            }
            self.inner.objects.put(&objects::path(&job.job_id, ERROR_FILE), text.into_bytes().into()).await?;
        }
        let manifest =
            manifest::manifest(&spec, &cp, |name| self.file_url(&job.job_id, name), !notes.is_empty()).to_string();
        let final_cp = serde_json::to_string(&cp)?;
        let held = self
            .deps()
            .store
            .checkpoint_job(&job.job_id, &self.inner.instance, self.config().lease_ms, Some(&final_cp), "finishing")
            .await?;
        if held && self.finish(&job.job_id, Ok(&manifest)).await? {
            tracing::info!(job = %job.job_id, resources = cp.exported, "export completed");
        }
        Ok(())
    }

    /// The types a job exports, fixed on its first run.
    async fn types_to_export(&self, spec: &JobSpec, access: &Access) -> Result<Vec<String>> {
        let registry = fhir::Registry::r4();
        let candidates = match &spec.types {
            Some(types) => types.clone(),
            None => self.deps().store.stored_types().await?,
        };
        Ok(candidates
            .into_iter()
            .filter(|t| registry.is_resource_type(t))
            .filter(|t| spec.level == Level::System || !registry.patient_compartment_params(t).is_empty())
            .filter(|t| {
                // Without `_type`, types the client may not search are left out silently (an
                // export of "everything" is everything the client may see).
                spec.types.is_some()
                    || access.restriction(t, Interaction::Search).is_ok_and(|r| r.type_visible(registry, t))
            })
            .collect())
    }

    fn filters_by_type(&self, spec: &JobSpec) -> Result<HashMap<String, Vec<Vec<SearchTerm>>>> {
        let mut by_type: HashMap<String, Vec<Vec<SearchTerm>>> = HashMap::new();
        for filter in &spec.type_filters {
            let (t, search) = parse_type_filter(fhir::Registry::r4(), filter)?;
            by_type.entry(t).or_default().push(search.terms);
        }
        Ok(by_type)
    }

    // ----- the sweeper ----------------------------------------------------------------------

    async fn sweep_forever(&self) {
        loop {
            if let Err(e) = self.sweep().await {
                tracing::error!(error = %e, "removing expired export files");
            }
            tokio::time::sleep(SWEEP_EVERY).await;
        }
    }

    /// Remove the output of jobs past their expiry (finished, failed or cancelled) and forget them.
    pub async fn sweep(&self) -> Result<usize> {
        let due = self.deps().store.jobs_to_sweep(JOB_KIND, 100).await?;
        for job in &due {
            self.remove_output(&job.job_id).await;
            self.deps().store.job_swept(&job.job_id).await?;
        }
        Ok(due.len())
    }

    async fn remove_output(&self, job: &str) {
        let objects = &self.inner.objects;
        let listed: Vec<_> = objects.list(Some(&objects::job_prefix(job))).collect().await;
        for meta in listed.into_iter().flatten() {
            if let Err(e) = objects.delete(&meta.location).await {
                tracing::warn!(job, error = %e, "removing an export file");
            }
        }
    }
}

/// One run of one job (from a claim to its end or the loss of its lease).
struct Run<'a> {
    exporter: &'a Exporter,
    job: &'a str,
    spec: &'a JobSpec,
    started: Instant,
    exported: u64,
    renewed: Instant,
}

impl Run<'_> {
    fn config(&self) -> &BulkConfig {
        self.exporter.config()
    }

    /// Export one type from the checkpoint on, a file at a time. False: the job is no longer
    /// this worker's (cancelled, revoked, or taken over after a lost lease).
    async fn export_type(&mut self, cp: &mut Checkpoint, t: &str, restriction: &Restriction) -> Result<bool> {
        let deleted_allowed = self.spec.since_ms.is_some()
            && self.spec.level == Level::System
            && restriction.patients.is_none()
            && restriction.withheld.is_empty()
            && *restriction.types.rule(t) == TypeRule::All;
        let keep = elements_for(self.spec.elements.as_deref(), t);
        let per_file = self.config().resources_per_file.max(1);
        let page = self.config().page_size.max(1);
        loop {
            let stage = cp.stage;
            // (The associated stage comes after every type, never here.)
            let name = match stage {
                Stage::Resources | Stage::Associated => format!("{t}-{}.ndjson", cp.part),
                Stage::Deleted => format!("{t}-deleted-{}.ndjson", cp.part),
            };
            let path = objects::path(self.job, &name);
            let mut writer = BufWriter::new(self.exporter.inner.objects.clone(), path.clone());
            let written = match stage {
                Stage::Resources | Stage::Associated => {
                    self.write_resources(&mut writer, t, restriction, keep.as_deref(), cp, per_file, page).await?
                }
                Stage::Deleted => self.write_deleted(&mut writer, t, cp, per_file, page).await?,
            };
            let Some(FileWritten { count, after, exhausted }) = written else {
                let _ = writer.abort().await;
                return Ok(false);
            };
            self.close_file(cp, writer, OutputFile { resource_type: t.to_owned(), name, count }, stage).await?;
            let type_done = exhausted && (stage == Stage::Deleted || !deleted_allowed);
            if type_done {
                cp.type_index += 1;
                cp.stage = Stage::Resources;
                cp.after_rkey = 0;
                cp.part = 0;
            } else if exhausted {
                cp.stage = Stage::Deleted;
                cp.after_rkey = 0;
                cp.part = 0;
            } else {
                cp.after_rkey = after;
                cp.part += 1;
            }
            if !self.save(cp, &path).await? {
                return Ok(false);
            }
            if type_done {
                return Ok(true);
            }
        }
    }

    /// Finish the file just written: uploaded and listed when it has lines, dropped when not.
    async fn close_file(
        &mut self,
        cp: &mut Checkpoint,
        mut writer: BufWriter,
        file: OutputFile,
        stage: Stage,
    ) -> Result<()> {
        if file.count == 0 {
            let _ = writer.abort().await;
            return Ok(());
        }
        writer.shutdown().await?;
        match stage {
            Stage::Resources | Stage::Associated => {
                cp.exported += file.count;
                cp.output.push(file);
            }
            Stage::Deleted => cp.deleted.push(file),
        }
        Ok(())
    }

    /// Store the checkpoint after a file. False: the job is no longer this worker's, and the
    /// file just written (at `path`) belongs to no job any more.
    async fn save(&mut self, cp: &Checkpoint, path: &object_store::path::Path) -> Result<bool> {
        let text = serde_json::to_string(cp)?;
        let held = self
            .exporter
            .deps()
            .store
            .checkpoint_job(
                self.job,
                &self.exporter.inner.instance,
                self.config().lease_ms,
                Some(&text),
                &cp.progress(),
            )
            .await?;
        self.renewed = Instant::now();
        if !held {
            let _ = self.exporter.inner.objects.delete(path).await;
        }
        Ok(held)
    }

    /// Write the Provenance of `includeAssociatedData`, a file at a time from the checkpoint
    /// on. False as for [`Run::export_type`].
    async fn export_associated(&mut self, cp: &mut Checkpoint, association: &Association<'_>) -> Result<bool> {
        if cp.stage != Stage::Associated {
            (cp.stage, cp.after_rkey, cp.part) = (Stage::Associated, 0, 0);
        }
        let scan = match association.scan_restriction() {
            Ok(scan) => scan,
            Err(why) => {
                cp.notes.push(format!("associated Provenance was not exported: {why}"));
                cp.associated_done = true;
                return Ok(true);
            }
        };
        let keep = elements_for(self.spec.elements.as_deref(), PROVENANCE);
        let per_file = self.config().resources_per_file.max(1);
        let page = self.config().page_size.clamp(1, SCAN_PAGE);
        while !cp.associated_done {
            let name = format!("{PROVENANCE}-associated-{}.ndjson", cp.part);
            let path = objects::path(self.job, &name);
            let mut writer = BufWriter::new(self.exporter.inner.objects.clone(), path.clone());
            let (mut count, mut after) = (0i64, cp.after_rkey);
            let exhausted = loop {
                // Never more rows scanned than the file may still take, so a file keeps to
                // `resources_per_file` lines.
                let limit = page.min(per_file - count);
                let slice = ExportSlice {
                    resource_type: PROVENANCE,
                    since_ms: None,
                    in_a_compartment: false,
                    after_rkey: after,
                    limit,
                };
                let rows = self.exporter.deps().store.export_page(&slice, &scan).await?;
                for row in association.select(&rows, &scan).await? {
                    writer.write_all(line(&row.body, keep.as_deref()).as_bytes()).await?;
                    writer.write_all(b"\n").await?;
                    count += 1;
                }
                after = rows.last().map_or(after, |r| r.rkey);
                if !self.renew_if_due(cp, count).await? {
                    let _ = writer.abort().await;
                    return Ok(false);
                }
                if (rows.len() as i64) < limit {
                    break true;
                }
                if count >= per_file {
                    break false;
                }
            };
            let file = OutputFile { resource_type: PROVENANCE.to_owned(), name, count };
            self.close_file(cp, writer, file, Stage::Associated).await?;
            cp.after_rkey = after;
            cp.part += 1;
            cp.associated_done = exhausted;
            if !self.save(cp, &path).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Write up to `per_file` resources after the checkpoint into `writer`, or `None` when the
    /// job stopped being this worker's. The next page is read
    /// while this one is written, so the database and this process work at the same time.
    #[allow(clippy::too_many_arguments)]
    async fn write_resources(
        &mut self,
        writer: &mut BufWriter,
        t: &str,
        restriction: &Restriction,
        keep: Option<&[String]>,
        cp: &Checkpoint,
        per_file: i64,
        page: i64,
    ) -> Result<Option<FileWritten>> {
        let reader = PageReader {
            store: self.exporter.deps().store.clone(),
            restriction: Arc::new(restriction.clone()),
            resource_type: t.to_owned(),
            since_ms: self.spec.since_ms,
            in_a_compartment: self.spec.level != Level::System,
        };
        let (mut count, mut after) = (0i64, cp.after_rkey);
        let mut limit = page.min(per_file);
        let mut pending = Some(reader.read(after, limit));
        while let Some(reading) = pending.take() {
            let rows = reading.await??;
            let n = rows.len() as i64;
            count += n;
            after = rows.last().map_or(after, |r| r.rkey);
            let exhausted = n < limit;
            if !exhausted && count < per_file {
                limit = page.min(per_file - count);
                pending = Some(reader.read(after, limit));
            }
            for row in &rows {
                writer.write_all(line(&row.body, keep).as_bytes()).await?;
                writer.write_all(b"\n").await?;
            }
            drop(rows); // before a throttle's sleep
            self.exported += n as u64;
            self.throttle().await;
            if !self.renew_if_due(cp, count).await? {
                if let Some(reading) = pending {
                    reading.abort();
                }
                return Ok(None);
            }
            if exhausted {
                return Ok(Some(FileWritten { count, after, exhausted: true }));
            }
        }
        Ok(Some(FileWritten { count, after, exhausted: false }))
    }

    /// The `deleted` file of a `_since` export: tombstones after the checkpoint, as
    /// [`Run::write_resources`] writes resources.
    async fn write_deleted(
        &mut self,
        writer: &mut BufWriter,
        t: &str,
        cp: &Checkpoint,
        per_file: i64,
        page: i64,
    ) -> Result<Option<FileWritten>> {
        let (mut count, mut after) = (0i64, cp.after_rkey);
        while count < per_file {
            let limit = page.min(per_file - count);
            let slice = ExportSlice {
                resource_type: t,
                since_ms: self.spec.since_ms,
                in_a_compartment: self.spec.level != Level::System,
                after_rkey: after,
                limit,
            };
            let rows = self.exporter.deps().store.export_deleted_page(&slice).await?;
            for row in &rows {
                writer.write_all(manifest::deleted_line(t, &row.id, row.deleted_ms).as_bytes()).await?;
                writer.write_all(b"\n").await?;
            }
            let n = rows.len() as i64;
            count += n;
            after = rows.last().map_or(after, |r| r.rkey);
            if !self.renew_if_due(cp, count).await? {
                return Ok(None);
            }
            if n < limit {
                return Ok(Some(FileWritten { count, after, exhausted: true }));
            }
        }
        Ok(Some(FileWritten { count, after, exhausted: false }))
    }

    /// Renew the lease (and show progress) a few times per lease period.
    async fn renew_if_due(&mut self, cp: &Checkpoint, in_file: i64) -> Result<bool> {
        if self.renewed.elapsed() < Duration::from_millis((self.config().lease_ms / 3).max(50) as u64) {
            return Ok(true);
        }
        self.renewed = Instant::now();
        let mut progress = cp.progress();
        progress.push_str(&format!(" (+{in_file} in the current file)"));
        Ok(self
            .exporter
            .deps()
            .store
            .checkpoint_job(self.job, &self.exporter.inner.instance, self.config().lease_ms, None, &progress)
            .await?)
    }

    /// Keep to `max_resources_per_second`.
    async fn throttle(&self) {
        let rate = self.config().max_resources_per_second;
        if rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(self.exported as f64 / rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// What went into one export file.
struct FileWritten {
    count: i64,
    /// The last rkey written (where the next file resumes).
    after: i64,
    /// The type (or its tombstones) has nothing more.
    exhausted: bool,
}

/// Reads pages of one type on a task of their own (so a read overlaps the writing of the page
/// before it).
struct PageReader {
    store: store::Store,
    restriction: Arc<Restriction>,
    resource_type: String,
    since_ms: Option<i64>,
    in_a_compartment: bool,
}

impl PageReader {
    fn read(&self, after_rkey: i64, limit: i64) -> tokio::task::JoinHandle<Result<Vec<ExportRow>>> {
        let (store, restriction, resource_type) =
            (self.store.clone(), self.restriction.clone(), self.resource_type.clone());
        let (since_ms, in_a_compartment) = (self.since_ms, self.in_a_compartment);
        tokio::spawn(async move {
            let slice = ExportSlice { resource_type: &resource_type, since_ms, in_a_compartment, after_rkey, limit };
            Ok(store.export_page(&slice, &restriction).await?)
        })
    }
}

/// The `_elements` that apply to type `t` (`None`: the whole resource).
fn elements_for(elements: Option<&[String]>, t: &str) -> Option<Vec<String>> {
    let elements = elements?;
    let keep: Vec<String> = elements
        .iter()
        .filter_map(|e| match e.split_once('.') {
            Some((ty, name)) if ty == t => Some(name.to_owned()),
            Some(_) => None,
            None => Some(e.clone()),
        })
        .collect();
    (!keep.is_empty()).then_some(keep)
}

/// One NDJSON line: the stored text as it is (one line already), or cut to `keep`.
fn line<'a>(body: &'a str, keep: Option<&[String]>) -> std::borrow::Cow<'a, str> {
    let reshape = |keep: Option<&[String]>| -> Option<String> {
        let Ok(Value::Object(mut doc)) = serde_json::from_str::<Value>(body) else { return None };
        if let Some(keep) = keep {
            let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
            fhir::elements::retain(&mut doc, &keep);
        }
        Some(Value::Object(doc).to_string())
    };
    if keep.is_some() || memchr::memchr(b'\n', body.as_bytes()).is_some() {
        if let Some(text) = reshape(keep) {
            return std::borrow::Cow::Owned(text);
        }
    }
    std::borrow::Cow::Borrowed(body)
}

fn refusal(r: Refusal, what: &str) -> BulkError {
    match r {
        Refusal::Scope(why) => BulkError::Forbidden(why),
        Refusal::Hidden => BulkError::NotFound(format!("{what} is not known")),
    }
}

fn level_name(level: &Level) -> &'static str {
    match level {
        Level::System => "system",
        Level::Patient => "Patient",
        Level::Group(_) => "Group",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_apply_per_type() {
        let e = vec!["id".to_string(), "Observation.code".to_string(), "Patient.name".to_string()];
        assert_eq!(elements_for(Some(&e), "Observation"), Some(vec!["id".to_string(), "code".to_string()]));
        let only_other = vec!["Patient.name".to_string()];
        assert_eq!(elements_for(Some(&only_other), "Observation"), None);
    }

    #[test]
    fn lines_are_single_lines() {
        assert_eq!(line("{\"a\":1}", None), "{\"a\":1}");
        assert_eq!(line("{\"a\":\n1}", None), "{\"a\":1}");
    }
}
