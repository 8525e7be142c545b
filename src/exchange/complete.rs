//! `SYMBOLS=*`: buckets of a longer interval that ended incomplete in base
//! candles, filled with the exchange's own candle of that bucket. A contract listed
//! at 10:17 has no minutes before then, so its `1h` bucket of 10:00, its `4h` of
//! 08:00 and its day never complete from minutes, yet Binance serves a candle for
//! each; nor does a bucket whose minute was never delivered and never repaired.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::Exchange;
use super::seed::NoCandles;

/// How often the hub is asked for buckets that ended incomplete: in memory, cheap.
const SCAN_EVERY: Duration = Duration::from_secs(10);

impl Exchange {
    /// Until `cancel`: every [`SCAN_EVERY`], fetches the exchange's candle of each
    /// bucket the hub reports ended incomplete ([`crate::hub::Hub::closed_incomplete`])
    /// with one klines request of weight 1 on the pacer, seeds it (which hands it
    /// up to the intervals built from it) and stores it with what it completes.
    /// Each bucket is asked for once: one the exchange has no candle for (before
    /// the contract's first trade) is not asked for again.
    pub(super) async fn complete_buckets(self: Arc<Self>, cancel: CancellationToken) {
        let mut asked: HashSet<(String, usize, i64)> = HashSet::new();
        let mut scans = tokio::time::interval(SCAN_EVERY);
        scans.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = scans.tick() => {}
            }
            let missing = self.hub.closed_incomplete();
            // Forget buckets no longer reported (seeded, or too old to matter).
            asked.retain(|bucket| missing.contains(bucket));
            let fresh: Vec<_> = missing.into_iter().filter(|b| !asked.contains(b)).collect();
            if !fresh.is_empty() {
                info!(
                    buckets = fresh.len(),
                    "buckets ended incomplete in base candles; asking the exchange for its own"
                );
            }
            for bucket in fresh {
                match self.complete_bucket(&bucket, &cancel).await {
                    Asked::Settled => {
                        asked.insert(bucket);
                    }
                    Asked::NotClosed => {}
                    Asked::Cancelled => return,
                }
            }
        }
    }

    /// Fetches and seeds one bucket.
    async fn complete_bucket(
        &self,
        (symbol, level, open_time): &(String, usize, i64),
        cancel: &CancellationToken,
    ) -> Asked {
        let Some(interval) = self.hub.intervals().get(*level) else {
            return Asked::Settled;
        };
        if self.health.is_refused(symbol) {
            return Asked::Settled;
        }
        let range = (*open_time, open_time + interval.millis() - 1, 1);
        let candles = match self.fetch_longer(interval, symbol, range, cancel).await {
            Ok(candles) => candles,
            Err(NoCandles::Cancelled) => return Asked::Cancelled,
            Err(NoCandles::Refused) => return Asked::Settled,
        };
        let Some(candle) = candles.into_iter().find(|c| c.open_time == *open_time) else {
            debug!(symbol, %interval, open_time, "the exchange has no candle for this bucket");
            return Asked::Settled;
        };
        // Our clock ahead of the exchange's: it is not closed there yet.
        if candle.close_time >= self.exchange_now() {
            return Asked::NotClosed;
        }
        debug!(symbol, %interval, open_time, "bucket completed with the exchange's own candle");
        self.seed_and_store(*level, vec![candle]);
        Asked::Settled
    }
}

/// What came of asking the exchange for a bucket's candle.
enum Asked {
    /// Seeded, or the exchange has none (or refuses the symbol): not asked again.
    Settled,
    /// The exchange's candle is not closed yet by its clock: asked again later.
    NotClosed,
    Cancelled,
}
