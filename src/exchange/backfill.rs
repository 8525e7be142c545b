//! REST backfill: after every connect, and after the write queue dropped candles,
//! fetch every closed candle after the newest one held.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::{Exchange, Overlap, ResumePoint};
use crate::candle::Candle;
use crate::hub::Newest;
use crate::telemetry::Chain;

impl Exchange {
    /// Each time the store had to drop queued candles and then wrote again, fetches
    /// everything after the store's newest candle so the store has no hole.
    pub(super) async fn repair_store_gaps(self: Arc<Self>, cancel: CancellationToken) {
        let lost = self.writer.lost_candles();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = lost.notified() => {}
            }
            self.metrics.store_repairs.inc();
            let mut resume = Vec::with_capacity(self.market.symbols.len());
            for symbol in &self.market.symbols {
                let held = match self
                    .store
                    .latest(symbol, self.market.interval.name(), 1)
                    .await
                {
                    // A full window: it is held in memory; only the store needs filling.
                    Ok(newest) => newest.first().map(|c| Newest {
                        open_time: c.open_time,
                        window_full: true,
                    }),
                    Err(err) => {
                        error!(symbol, error = %Chain(&err), "cannot read the store's newest candle; repairing from the window");
                        self.hub.newest(symbol)
                    }
                };
                resume.push(ResumePoint {
                    symbol: symbol.clone(),
                    held,
                });
            }
            warn!(
                "the store dropped queued candles; refetching everything after its newest candle"
            );
            self.backfill(resume, Overlap::FetchAll, &cancel)
                .instrument(info_span!("backfill", reason = "store"))
                .await;
        }
    }

    /// Fetches, per symbol, every closed candle after the newest one held up to now;
    /// while a window is not yet full, at least the last `HISTORY_MAX + 1`.
    pub(super) async fn backfill(
        &self,
        resume: Vec<ResumePoint>,
        overlap: Overlap,
        cancel: &CancellationToken,
    ) {
        let jobs = resume
            .into_iter()
            .filter_map(|ResumePoint { symbol, held }| {
                {
                    let mut in_flight = self.in_flight.lock().expect("in_flight lock");
                    let running = in_flight.entry(symbol.clone()).or_default();
                    if *running > 0 && overlap == Overlap::SkipInFlight {
                        debug!(symbol, "backfill already running; it covers this gap too");
                        return None;
                    }
                    *running += 1;
                }
                Some(async move {
                    self.backfill_symbol(&symbol, held, cancel).await;
                    if let Some(running) = self
                        .in_flight
                        .lock()
                        .expect("in_flight lock")
                        .get_mut(&symbol)
                    {
                        *running -= 1;
                    }
                })
            });
        futures_util::future::join_all(jobs.collect::<Vec<_>>()).await;
    }

    async fn backfill_symbol(
        &self,
        symbol: &str,
        held: Option<Newest>,
        cancel: &CancellationToken,
    ) {
        let interval = &self.market.interval;
        let step = interval.millis();
        let now = chrono::Utc::now().timestamp_millis();
        let enough_history =
            interval.open_time_containing(now) - step * (self.market.window_len as i64 + 1);
        let mut start = match held {
            Some(newest) if newest.window_full => newest.open_time + step,
            Some(newest) => (newest.open_time + step).min(enough_history),
            None => enough_history,
        };
        let mut fetched = 0usize;
        loop {
            let now = chrono::Utc::now().timestamp_millis();
            let still_open = interval.open_time_containing(now);
            if start >= still_open {
                break;
            }
            let Some(page) = self
                .rest
                .fetch_with_retry(
                    symbol,
                    start,
                    still_open - 1,
                    self.options.backoff_max,
                    cancel,
                )
                .await
            else {
                return; // shutting down
            };
            let Some(last_open) = page.last().map(|c| c.open_time) else {
                break;
            };
            if last_open < start {
                break; // a server that does not honour startTime: stop rather than loop
            }
            start = last_open + step;
            let closed: Vec<Candle> = page.into_iter().filter(|c| c.close_time < now).collect();
            fetched += closed.len();
            self.metrics.backfilled.inc_by(closed.len() as u64);
            self.deliver(closed);
        }
        if fetched > 0 {
            info!(symbol, candles = fetched, "backfill done");
        } else {
            debug!(symbol, "backfill: nothing missing");
        }
    }
}
