//! The one read path (DESIGN.md §7): every reader of candles (the `?since=` resume,
//! the history API, the CSV export) asks [`CandleReader`], which merges the three
//! places a candle the service accepted can be — a hub window, the write queue (not
//! yet acknowledged by the database), the store — by open time, newest from memory
//! first, and asks the store only for what memory does not cover.
//!
//! The guarantee: a candle the service has accepted is visible to every read from
//! that moment on. Memory covers, per (symbol, interval), everything from the oldest
//! candle of its hub window on, and below that the unbroken run of queued base
//! candles; a read within that is answered while the database is slow, down or hung.

mod merge;
mod range;

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::candle::{Candle, Interval};
use crate::hub::{Hub, Snapshot};
use crate::store::{CandleStore, StoreError, Unacknowledged};
use merge::{Folder, overlay_page, run_below};

/// Store reads (history requests, resumes reaching past memory, exports) that may be
/// under way at once; reads memory answers alone take no part of it.
pub const MAX_CONCURRENT_READS: usize = 32;

/// Base candles read per store query at most.
const PAGE: usize = 5_000;

/// Why a read could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// [`MAX_CONCURRENT_READS`] store reads are under way and the caller would not wait.
    #[error("too many store reads under way")]
    Busy,
    /// The part memory does not cover could not be read from the store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a read's candles came from, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The hub and the write queue alone.
    Memory,
    /// The store was asked too.
    Store,
}

/// Whether a read that needs the store waits for its turn or gives up at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Wait,
    Refuse,
}

/// Candles as read: oldest first.
#[derive(Debug)]
pub struct Read {
    pub candles: Vec<Candle>,
    pub source: Source,
}

/// The read path over the hub, the write queue and the store; cheap to clone.
#[derive(Clone)]
pub struct CandleReader {
    hub: Hub,
    unacknowledged: Unacknowledged,
    store: Arc<dyn CandleStore>,
    store_reads: Arc<Semaphore>,
}

impl CandleReader {
    /// A reader over `hub`'s windows, the writer's `unacknowledged` candles (empty on
    /// a follower) and `store`.
    pub fn new(hub: Hub, unacknowledged: Unacknowledged, store: Arc<dyn CandleStore>) -> Self {
        Self {
            hub,
            unacknowledged,
            store,
            store_reads: Arc::new(Semaphore::new(MAX_CONCURRENT_READS)),
        }
    }

    /// The hub read from.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Up to `count` candles of the coin at `position` at the served interval
    /// `interval` (an index into [`Hub::intervals`]), opened before `before` (ms since
    /// the epoch, UTC, exclusive; `None`: up to the newest), oldest first, as of
    /// `snapshot`: the window's, then whole buckets of queued and stored base candles
    /// before it. Longer intervals hold whole buckets only.
    ///
    /// # Errors
    /// [`ReadError`] when memory does not cover `count` candles and the store cannot
    /// be read (or, with [`Admission::Refuse`], is busy with other reads).
    pub async fn latest(
        &self,
        snapshot: &Snapshot,
        position: usize,
        interval: usize,
        count: usize,
        before: Option<i64>,
        admission: Admission,
    ) -> Result<Read, ReadError> {
        let mut held = self.hub.window_candles(snapshot, interval, position);
        held.retain(|c| before.is_none_or(|before| c.open_time < before));
        if held.len() >= count {
            held.drain(..held.len() - count);
            return Ok(Read {
                candles: held,
                source: Source::Memory,
            });
        }
        // Memory covers from the window's oldest candle on; below it, the rest.
        let boundary = held.first().map(|c| c.open_time).or(before);
        let older = self
            .older(position, interval, count - held.len(), boundary, admission)
            .await?;
        let mut candles = older.candles;
        candles.extend(held);
        Ok(Read {
            candles,
            source: older.source,
        })
    }

    /// Up to `count` whole candles of `interval` opened before `boundary`, oldest
    /// first, from the queued base candles and, unless those alone run back far
    /// enough, the store merged with them.
    async fn older(
        &self,
        position: usize,
        interval: usize,
        count: usize,
        boundary: Option<i64>,
        admission: Admission,
    ) -> Result<Read, ReadError> {
        let symbol = &self.hub.symbols()[position];
        let base = &self.hub.intervals()[0];
        let interval = &self.hub.intervals()[interval];
        // The base candles of the newest bucket opened before `boundary` run past it.
        let base_end = boundary.map(|boundary| bucket_end(interval, boundary));
        let queued = self
            .unacknowledged
            .between(symbol, base.name(), None, base_end);
        if let Some(end) = base_end {
            let mut folder = Folder::new(interval, base);
            let run = run_below(&queued, end, base.millis());
            let buckets = whole(
                run.into_iter().filter_map(|c| folder.add(c)),
                count,
                boundary,
            );
            if buckets.len() >= count {
                return Ok(Read {
                    candles: buckets,
                    source: Source::Memory,
                });
            }
        }
        let _turn = self.turn(admission).await?;
        let candles = self
            .stored_before(symbol, base, interval, count, base_end, &queued)
            .await?;
        Ok(Read {
            candles: whole(candles.into_iter(), count, boundary),
            source: Source::Store,
        })
    }

    /// Whole candles of `interval` built from the stored base candles opened before
    /// `base_end`, with `queued` merged in page by page, newest first as built; stops
    /// once `count` are built or the store has no more.
    async fn stored_before(
        &self,
        symbol: &str,
        base: &Interval,
        interval: &Interval,
        count: usize,
        base_end: Option<i64>,
        queued: &std::collections::BTreeMap<i64, Candle>,
    ) -> Result<Vec<Candle>, StoreError> {
        let per_bucket = usize::try_from(interval.millis() / base.millis()).unwrap_or(1);
        let budget = count.saturating_add(1).saturating_mul(per_bucket);
        let mut folder = Folder::new(interval, base);
        let mut built = Vec::new();
        let mut cursor = base_end;
        let mut read = 0usize;
        while built.len() < count && read < budget {
            let want = (count - built.len() + 1)
                .saturating_mul(per_bucket)
                .clamp(1, PAGE);
            let page = self.store.page(symbol, base.name(), want, cursor).await?;
            let exhausted = page.len() < want;
            read += page.len();
            // The queued candles in the span this page covers: all below the cursor
            // once the store has nothing older.
            let lower = if exhausted {
                None
            } else {
                page.last().map(|c| c.open_time)
            };
            let span: std::collections::BTreeMap<i64, Candle> = queued
                .range(lower.unwrap_or(i64::MIN)..cursor.unwrap_or(i64::MAX))
                .map(|(t, c)| (*t, c.clone()))
                .collect();
            built.extend(
                overlay_page(page, &span)
                    .into_iter()
                    .filter_map(|c| folder.add(c)),
            );
            if exhausted {
                break;
            }
            cursor = lower;
        }
        Ok(built)
    }

    /// Takes every turn among the store reads, as a burst of slow reads would.
    #[cfg(test)]
    pub(crate) fn occupy_store_reads(&self) -> OwnedSemaphorePermit {
        let reads = u32::try_from(MAX_CONCURRENT_READS).expect("a small bound");
        Arc::clone(&self.store_reads)
            .try_acquire_many_owned(reads)
            .expect("no reads under way")
    }

    /// A turn among the bounded store reads.
    async fn turn(&self, admission: Admission) -> Result<OwnedSemaphorePermit, ReadError> {
        let reads = Arc::clone(&self.store_reads);
        match admission {
            Admission::Wait => Ok(reads
                .acquire_owned()
                .await
                .expect("the read semaphore is never closed")),
            Admission::Refuse => reads.try_acquire_owned().map_err(|_| ReadError::Busy),
        }
    }
}

/// Where the base candles of the newest bucket of `interval` opened before `boundary`
/// (ms since the epoch, UTC) end: `boundary` itself when it is a bucket's open time.
fn bucket_end(interval: &Interval, boundary: i64) -> i64 {
    interval.open_time_containing(boundary - 1) + interval.millis()
}

/// The newest `count` of `built` (any order) opened before `boundary`, oldest first,
/// each open time once.
fn whole(built: impl Iterator<Item = Candle>, count: usize, boundary: Option<i64>) -> Vec<Candle> {
    let mut candles: Vec<Candle> = built
        .filter(|c| boundary.is_none_or(|boundary| c.open_time < boundary))
        .collect();
    candles.sort_by_key(|c| c.open_time);
    candles.dedup_by_key(|c| c.open_time);
    let surplus = candles.len().saturating_sub(count);
    candles.drain(..surplus);
    candles
}

#[cfg(test)]
mod tests;
