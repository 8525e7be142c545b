//! The write queue between the ingest path and the store: bounded, never blocking
//! the exchange reader, retrying each batch with backoff until it lands. What it
//! holds stays visible to readers through [`Unacknowledged`] until the store
//! acknowledges it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::unacked::BatchId;
use super::{CandleStore, StoreError, Unacknowledged};
use crate::candle::Candle;
use crate::health::StoreHealth;
use crate::metrics::Metrics;
use crate::retry::{Backoff, FIRST_RETRY_DELAY};
use crate::telemetry::Chain;

/// How many batches of candles may wait for the database by default. A batch is one
/// closed candle from the stream or one page from REST, so at five symbols that is
/// about 13 hours of outage; past it new candles are dropped from the queue (not from
/// clients' windows) and refetched from the exchange once the store writes again.
pub const WRITE_QUEUE_BATCHES: usize = 4096;

/// The sending side of the write queue; cheap to clone, never blocks.
#[derive(Clone)]
pub struct StoreWriter {
    queue: mpsc::Sender<(BatchId, Vec<Candle>)>,
    unacknowledged: Unacknowledged,
    metrics: Arc<Metrics>,
    overflowed: Arc<AtomicBool>,
    lost_candles: Arc<Notify>,
    /// Per symbol, the oldest open time the queue dropped since the last repair.
    first_dropped: Arc<Mutex<HashMap<String, i64>>>,
}

impl StoreWriter {
    /// Starts the task that drains the queue (at most `capacity` batches) into
    /// `store`, retrying each batch with backoff until it lands. Each queued batch is
    /// held in `unacknowledged` until the store acknowledged it. The task ends when
    /// every `StoreWriter` is dropped and the queue is empty, or, once `cancel` fires,
    /// at the first write that fails.
    pub fn spawn(
        store: Arc<dyn CandleStore>,
        unacknowledged: Unacknowledged,
        capacity: usize,
        metrics: Arc<Metrics>,
        health: Arc<StoreHealth>,
        cancel: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, mut pending) = mpsc::channel::<(BatchId, Vec<Candle>)>(capacity.max(1));
        let writer = Self {
            queue,
            unacknowledged: unacknowledged.clone(),
            metrics: Arc::clone(&metrics),
            overflowed: Arc::new(AtomicBool::new(false)),
            lost_candles: Arc::new(Notify::new()),
            first_dropped: Arc::default(),
        };
        let (overflowed, lost_candles) = (
            Arc::clone(&writer.overflowed),
            Arc::clone(&writer.lost_candles),
        );
        let task = tokio::spawn(async move {
            let mut unwritten = Unwritten::default();
            while let Some((id, batch)) = pending.recv().await {
                metrics.pending_writes.dec_by(batch.len() as i64);
                // Shutting down with a store that already failed: what is left is
                // reported, not tried one by one past the exit deadline.
                if !unwritten.is_empty() {
                    metrics.dropped_writes.inc_by(batch.len() as u64);
                    unwritten.add(&batch);
                    continue;
                }
                let stored =
                    write_with_retry(store.as_ref(), &batch, &metrics, &health, &cancel).await;
                if stored {
                    // Acknowledged: readers find it in the store from now on.
                    unacknowledged.release(id, &batch);
                } else {
                    unwritten.add(&batch);
                }
                // Once the backlog is written, whatever did not fit is fetched again.
                if stored && pending.is_empty() && overflowed.swap(false, Ordering::SeqCst) {
                    lost_candles.notify_one();
                }
            }
            unwritten.report();
        });
        (writer, task)
    }

    /// Queues closed candles for the store without waiting.
    pub fn enqueue(&self, candles: Vec<Candle>) {
        if candles.is_empty() {
            return;
        }
        let count = candles.len();
        self.metrics.pending_writes.inc_by(count as i64);
        // Held before it is queued, so no reader can miss it between the two.
        let id = self.unacknowledged.hold(&candles);
        if let Err(err) = self.queue.try_send((id, candles)) {
            self.metrics.pending_writes.dec_by(count as i64);
            self.metrics.dropped_writes.inc_by(count as u64);
            let (_, candles) = err.into_inner();
            self.unacknowledged.release(id, &candles);
            let mut first = self.first_dropped.lock().expect("dropped lock");
            for candle in candles {
                let oldest = first.entry(candle.symbol).or_insert(candle.open_time);
                *oldest = (*oldest).min(candle.open_time);
            }
            drop(first);
            // Logged once per overflow, not once per candle.
            if !self.overflowed.swap(true, Ordering::SeqCst) {
                tracing::error!(
                    candles = count,
                    "store write queue full; dropping candles until the store catches up, then refetching them"
                );
            }
        }
    }

    /// Per symbol, the oldest open time (ms since the epoch) dropped since the last
    /// call: where a repair must start, even behind newer candles already written.
    pub fn take_first_dropped(&self) -> HashMap<String, i64> {
        std::mem::take(&mut *self.first_dropped.lock().expect("dropped lock"))
    }

    /// Notified when the store wrote again after the queue had dropped candles.
    pub fn lost_candles(&self) -> Arc<Notify> {
        Arc::clone(&self.lost_candles)
    }
}

/// How long a write may still take once shutdown began.
const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(1);

/// Candles that could not be written before the process ends, per symbol: the
/// range of open times (ms since the epoch) and how many.
#[derive(Default)]
struct Unwritten(BTreeMap<String, (i64, i64, usize)>);

impl Unwritten {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn add(&mut self, batch: &[Candle]) {
        for candle in batch {
            let entry = self.0.entry(candle.symbol.clone()).or_insert((
                candle.open_time,
                candle.open_time,
                0,
            ));
            entry.0 = entry.0.min(candle.open_time);
            entry.1 = entry.1.max(candle.open_time);
            entry.2 += 1;
        }
    }

    /// One line per symbol: never silently lost. The next start's gap scan and
    /// backfill fetch them again from the exchange.
    fn report(&self) {
        for (symbol, (first, last, count)) in &self.0 {
            tracing::error!(
                symbol,
                candles = count,
                first_open_time = first,
                last_open_time = last,
                "candles not written before exit; the next start fetches them again"
            );
        }
    }
}

/// Writes `batch`, retrying with backoff; false if it gave up during shutdown.
async fn write_with_retry(
    store: &dyn CandleStore,
    batch: &[Candle],
    metrics: &Metrics,
    health: &StoreHealth,
    cancel: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(FIRST_RETRY_DELAY, Duration::from_secs(30));
    let mut attempt = 1u32;
    loop {
        let started = std::time::Instant::now();
        // Once shutdown began, a write gets a short grace, not the driver's timeouts.
        let after_shutdown = async {
            cancel.cancelled().await;
            tokio::time::sleep(SHUTDOWN_WRITE_GRACE).await;
        };
        let written = tokio::select! {
            written = store.upsert(batch) => written,
            _ = after_shutdown => Err(StoreError::Timeout {
                operation: "write during shutdown",
                timeout: SHUTDOWN_WRITE_GRACE,
            }),
        };
        match written {
            Ok(()) => {
                health.write_succeeded();
                metrics.stored.inc_by(batch.len() as u64);
                metrics
                    .store_write_seconds
                    .observe(started.elapsed().as_secs_f64());
                if attempt > 1 {
                    tracing::info!(
                        candles = batch.len(),
                        attempt,
                        "store write succeeded after retrying"
                    );
                }
                return true;
            }
            Err(err) => {
                health.write_failed();
                metrics.store_errors.inc();
                if cancel.is_cancelled() {
                    metrics.dropped_writes.inc_by(batch.len() as u64);
                    tracing::debug!(candles = batch.len(), error = %Chain(&err), "store write failed during shutdown; giving up");
                    return false;
                }
                let delay = backoff.next_delay();
                // One line per failed attempt: an outage is visible, and so is its end.
                tracing::warn!(candles = batch.len(), attempt, retry_in = ?delay, error = %Chain(&err), "store write failed; will retry");
                metrics.store_retries.inc();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => {}
                }
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn candle() -> Candle {
        Candle {
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            open_time: 1_763_791_500_000,
            close_time: 1_763_791_559_999,
            open: 1.0,
            high: 2.0,
            low: 0.5,
            close: 1.5,
            volume: 1.0,
            quote_volume: 1.0,
            taker_buy_volume: 0.5,
            taker_buy_quote_volume: 0.5,
            trades: 1,
        }
    }

    /// Time is paused: the backoff's sleeps pass at once, so minutes of retrying
    /// take no wall time. The store is a real SQLite file whose table is gone.
    #[tokio::test(start_paused = true)]
    async fn a_failing_store_is_retried_with_backoff_until_it_heals() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let path = dir.path().join(crate::store::SQLITE_FILE);
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("DROP TABLE candles")
            .unwrap();
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(StoreHealth::default());
        let unacknowledged = Unacknowledged::default();
        let (writer, task) = StoreWriter::spawn(
            Arc::new(store),
            unacknowledged.clone(),
            8,
            Arc::clone(&metrics),
            Arc::clone(&health),
            CancellationToken::new(),
        );
        writer.enqueue(vec![candle()]);
        // 0.5 + 1 + 2 + 4 s of backoff at most, with jitter.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(
            metrics.store_retries.get() >= 3,
            "{}",
            metrics.store_retries.get()
        );
        assert_eq!(metrics.stored.get(), 0);
        assert!(health.failing_for().is_some());
        assert_eq!(
            unacknowledged.len(),
            1,
            "readers still see the candle while its write fails"
        );

        SqliteStore::open(dir.path()).unwrap(); // makes the table again
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            metrics.stored.get(),
            1,
            "the batch lands once the store heals"
        );
        assert!(health.failing_for().is_none());
        assert!(unacknowledged.is_empty(), "released once acknowledged");
        drop(writer);
        task.await.unwrap();
        assert_eq!(metrics.pending_writes.get(), 0);
    }
}
