//! The audit trail writer. Requests hand their record to a channel and go on; one task writes
//! what has queued up in one transaction about once a second (sooner once 30,000 records wait),
//! so auditing every read costs a channel send on the request path, not a database
//! transaction. When the writer falls behind, requests wait for room in the channel rather than
//! lose records.
//!
//! Records are in the database within about a second of the answer; [`AuditLog::flush`] waits
//! for everything sent so far (tests, shutdown).

use std::sync::Arc;
use std::time::Duration;

use store::{AuditRecord, Store};
use tokio::sync::{mpsc, oneshot, Notify};

const BATCH: usize = 1000;
const EVERY: Duration = Duration::from_secs(1);
const QUEUE: usize = 100_000;
/// Records waiting that wake the writer before its pause ends: this bounds the memory held by
/// queued records (about 10 MB) while keeping commits large. Each commit rewrites every index
/// page it touched, about one per patient seen, so fewer, larger commits cost less per record
/// (30,000 rather than 8,000; see BENCHMARKS.md).
const WAKE_AT: usize = 30_000;

enum Message {
    Record(Box<AuditRecord>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditLog {
    sender: mpsc::Sender<Message>,
    /// Wakes the writer before its pause ends when someone waits in [`AuditLog::flush`].
    hurry: Arc<Notify>,
}

impl AuditLog {
    pub fn start(store: Store) -> AuditLog {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let hurry = Arc::new(Notify::new());
        tokio::spawn(write_batches(store, receiver, hurry.clone()));
        AuditLog { sender, hurry }
    }

    /// Queue a record. Never fails the request: if the writer is gone (shutting down), the record
    /// is logged instead.
    pub fn record(&self, record: AuditRecord) {
        match self.sender.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {
                if self.sender.capacity() < QUEUE - WAKE_AT {
                    self.hurry.notify_one();
                }
            }
            Err(mpsc::error::TrySendError::Full(Message::Record(record))) => {
                // Back-pressure without blocking the response: a task waits for room.
                let sender = self.sender.clone();
                tokio::spawn(async move {
                    let _ = sender.send(Message::Record(record)).await;
                });
            }
            Err(e) => tracing::warn!(error = %e, "audit writer stopped; record not stored"),
        }
    }

    /// Wait until every record sent before this call is stored.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            self.hurry.notify_one();
            let _ = wait.await;
        }
    }
}

/// The writer wakes on the first record, then pauses (up to [`EVERY`]; less when a flush is
/// waiting or [`WAKE_AT`] records are queued) and stores everything queued meanwhile in one transaction.
/// Committing rarely is what makes auditing every request affordable: each commit rewrites every
/// index page it touched, and the per-patient index is touched at one page per patient, however
/// few rows each got. Waking per record, with a timer per receive, cost more still.
async fn write_batches(store: Store, mut receiver: mpsc::Receiver<Message>, hurry: Arc<Notify>) {
    let mut messages: Vec<Message> = Vec::with_capacity(BATCH);
    let mut batch: Vec<AuditRecord> = Vec::with_capacity(BATCH);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        if receiver.recv_many(&mut messages, BATCH).await == 0 {
            return;
        }
        let flush_waiting = messages.iter().any(|m| matches!(m, Message::Flush(_)));
        if !flush_waiting {
            tokio::select! {
                () = tokio::time::sleep(EVERY) => {}
                () = hurry.notified() => {}
            }
        }
        // Everything queued by now (bounded, so a flush is answered under constant load too), in
        // order: a flush is answered once the records sent before it are stored.
        loop {
            for message in messages.drain(..) {
                match message {
                    Message::Record(r) => batch.push(*r),
                    Message::Flush(done) => waiting.push(done),
                }
            }
            if batch.len() >= QUEUE {
                break;
            }
            match receiver.try_recv() {
                Ok(m) => messages.push(m),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            store_with_retries(&store, &mut batch).await;
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// A batch holds up to a second of the trail, so a passing database failure (a restart, a
/// failover) is retried a few times before the records are given up, loudly.
async fn store_with_retries(store: &Store, batch: &mut [AuditRecord]) {
    for (attempt, pause) in [1, 2, 4, 0].into_iter().enumerate() {
        match store.record_audit(batch).await {
            Ok(()) => return,
            Err(e) if pause > 0 => {
                tracing::warn!(error = %e, records = batch.len(), attempt = attempt + 1, "storing audit records failed; retrying");
                tokio::time::sleep(Duration::from_secs(pause)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "could not store audit records; they are lost")
            }
        }
    }
}
