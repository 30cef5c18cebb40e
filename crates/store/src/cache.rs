//! An in-process cache of reads and finished search answers.
//!
//! Correctness rests on one number, the write epoch: every entry records the epoch at which its
//! database read *started*, and is served only while the epoch is unchanged. This process bumps
//! the epoch after each of its own commits; a background poller bumps it when the database's
//! commit sequence moves for any other reason (another Portico process, `portico import` into
//! a live SQLite file). So this process's own writes are visible at once, and writes from other
//! processes within `POLL_INTERVAL`. Any write invalidates everything, which is crude but
//! cannot serve stale data; a read-mostly workload is the one that benefits.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::StoredResource;

pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub(crate) enum Cached {
    Read(Option<StoredResource>),
    /// A yes/no answer (is a resource visible under a restriction).
    Flag(bool),
    /// A finished answer built from a search page (the searchset Bundle's text).
    Text(bytes::Bytes),
}

impl Cached {
    fn weight(&self) -> u32 {
        let bytes = match self {
            Cached::Read(r) => r.as_ref().map_or(64, |r| r.body.len() + 128),
            Cached::Flag(_) => 16,
            Cached::Text(t) => t.len() + 64,
        };
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

/// Weighs an entry by the bytes it holds, so the cache is bounded in memory, not entries.
#[derive(Clone)]
struct ByBytes;

impl quick_cache::Weighter<String, (u64, Cached)> for ByBytes {
    fn weight(&self, key: &String, value: &(u64, Cached)) -> u64 {
        u64::from(value.1.weight()) + key.len() as u64
    }
}

/// A typical entry's weight, for sizing the table up front.
const TYPICAL_ENTRY_BYTES: u64 = 4096;

pub(crate) struct Cache {
    /// quick_cache rather than moka: a hit is a hash, a shard's read lock and a clone, which
    /// matters when a hit is most of a request's work.
    entries: quick_cache::sync::Cache<String, (u64, Cached), ByBytes>,
    epoch: AtomicU64,
    /// The highest commit sequence known to be reflected in the epoch.
    known_seq: AtomicI64,
}

impl Cache {
    pub fn new(max_bytes: u64) -> Cache {
        Cache { entries: Self::entries(max_bytes), epoch: AtomicU64::new(0), known_seq: AtomicI64::new(-1) }
    }

    fn entries(max_bytes: u64) -> quick_cache::sync::Cache<String, (u64, Cached), ByBytes> {
        let items = usize::try_from(max_bytes / TYPICAL_ENTRY_BYTES).unwrap_or(1024).max(16);
        // Search pages run to a few hundred KB. Each shard holds its share of the budget, and
        // new entries wait in the shard's "cold" part (the rest of the budget is "hot") until a
        // second use: with the defaults (cores × 4 shards, 3% cold) that part is smaller than
        // one search page, so pages were dropped before their second use and took repeated
        // misses to be kept (the ×6 lab search ran at half speed for its first seconds).
        // Two shards with a 20% cold part hold pages of up to 3.2 MB at the default 32 MiB.
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(items)
            .weight_capacity(max_bytes.max(1))
            .shards(2)
            .hot_allocation(0.8)
            .build();
        match options {
            Ok(options) => quick_cache::sync::Cache::with_options(
                options,
                ByBytes,
                quick_cache::DefaultHashBuilder::default(),
                quick_cache::sync::DefaultLifecycle::default(),
            ),
            Err(_) => quick_cache::sync::Cache::with_weighter(items, max_bytes.max(1), ByBytes),
        }
    }

    /// Call before reading the database; pass the value to `put`.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub fn get(&self, key: &str) -> Option<Cached> {
        let (epoch, value) = self.entries.get(key)?;
        (epoch == self.epoch()).then_some(value)
    }

    pub fn put(&self, key: String, read_started_at: u64, value: Cached) {
        if read_started_at == self.epoch() {
            self.entries.insert(key, (read_started_at, value));
        }
    }

    /// After this process committed `seq`.
    pub fn committed(&self, seq: i64) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.known_seq.fetch_max(seq, Ordering::AcqRel);
    }

    /// The poller saw the database at commit sequence `seq`.
    pub fn observed(&self, seq: i64) {
        if seq > self.known_seq.fetch_max(seq, Ordering::AcqRel) {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }
}
