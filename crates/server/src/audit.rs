//! The audit trail writer. Requests hand their record to a channel and go on; one task writes
//! records in batches (up to 1,000 per transaction, at least every 100 ms), so auditing every read
//! costs a channel send on the request path, not a database transaction. When the writer falls
//! behind, requests wait for room in the channel rather than lose records.
//!
//! Records are in the database within about 100 ms of the answer; [`AuditLog::flush`] waits for
//! everything sent so far (tests, shutdown).

use std::time::Duration;

use store::{AuditRecord, Store};
use tokio::sync::{mpsc, oneshot};

const BATCH: usize = 1000;
const EVERY: Duration = Duration::from_millis(100);
const QUEUE: usize = 50_000;

enum Message {
    Record(Box<AuditRecord>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct AuditLog {
    sender: mpsc::Sender<Message>,
}

impl AuditLog {
    pub fn start(store: Store) -> AuditLog {
        let (sender, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(store, receiver));
        AuditLog { sender }
    }

    /// Queue a record. Never fails the request: if the writer is gone (shutting down), the record
    /// is logged instead.
    pub fn record(&self, record: AuditRecord) {
        match self.sender.try_send(Message::Record(Box::new(record))) {
            Ok(()) => {}
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
            let _ = wait.await;
        }
    }
}

async fn write_batches(store: Store, mut receiver: mpsc::Receiver<Message>) {
    let mut batch: Vec<AuditRecord> = Vec::with_capacity(BATCH);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        let first = match receiver.recv().await {
            Some(m) => m,
            None => return,
        };
        let deadline = tokio::time::Instant::now() + EVERY;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Record(r) => batch.push(*r),
                Message::Flush(done) => {
                    waiting.push(done);
                    break;
                }
            }
            if batch.len() >= BATCH {
                break;
            }
            next = match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(m)) => Some(m),
                _ => None,
            };
        }
        if !batch.is_empty() {
            if let Err(e) = store.record_audit(&batch).await {
                tracing::error!(error = %e, records = batch.len(), "could not store audit records");
            }
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}
