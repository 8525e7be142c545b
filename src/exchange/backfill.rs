//! REST backfill: at startup, after every connect and after the write queue dropped
//! candles, fetch every closed candle the service lacks: the holes behind the newest
//! stored candle (the gap scan) and everything after it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::rest::{GaveUp, REST_PAGE_LIMIT};
use super::{Exchange, Overlap, ResumePoint, Source};
use crate::hub::Newest;
use crate::telemetry::Chain;

/// Holes are fetched one range each up to this many; more, and the whole span is
/// fetched in pages (fewer requests than one per hole).
const MAX_HOLE_REQUESTS: usize = 4;

impl Exchange {
    /// Each time the store had to drop queued candles and then wrote again, or came
    /// back after being unreachable, fetches its holes and everything after its
    /// newest candle (or the oldest dropped one).
    pub(super) async fn repair_store_gaps(self: Arc<Self>, cancel: CancellationToken) {
        let lost = self.writer.lost_candles();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = lost.notified() => {}
            }
            self.metrics.store_repairs.inc();
            let dropped = self.writer.take_first_dropped();
            let step = self.market.interval.millis();
            let symbols = self.followed();
            let mut resume = Vec::with_capacity(symbols.len());
            for symbol in &symbols {
                let held = match self
                    .store
                    .latest_until(symbol, self.market.interval.name(), 1, self.exchange_now())
                    .await
                {
                    // A full window: it is held in memory; only the store needs
                    // filling, from its newest candle or from before the oldest one
                    // the queue dropped, whichever is older.
                    Ok(newest) => {
                        let newest = newest.first().map(|c| c.open_time);
                        let before_dropped = dropped.get(symbol).map(|t| t - step);
                        newest
                            .into_iter()
                            .chain(before_dropped)
                            .min()
                            .map(|open_time| Newest {
                                open_time,
                                window_full: true,
                            })
                    }
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
                "the store dropped queued candles; refetching its holes and everything after its newest candle"
            );
            self.backfill(resume, Overlap::FetchAll, &cancel)
                .instrument(info_span!("backfill", reason = "store"))
                .await;
        }
    }

    /// Fetches, per symbol, the store's holes and every closed candle after the
    /// newest one held up to now; while a window is not yet full, at least the last
    /// `HISTORY_MAX + 1`. Returns how many candles were fetched.
    pub(super) async fn backfill(
        &self,
        resume: Vec<ResumePoint>,
        overlap: Overlap,
        cancel: &CancellationToken,
    ) -> usize {
        let jobs = resume
            .into_iter()
            .filter(|point| !self.health.is_refused(&point.symbol))
            .filter(|point| self.begin_backfill(&point.symbol, overlap))
            .map(|ResumePoint { symbol, held }| async move {
                let fetched = self.backfill_symbol(&symbol, held, cancel).await;
                self.end_backfill(&symbol);
                fetched
            });
        futures_util::future::join_all(jobs.collect::<Vec<_>>())
            .await
            .into_iter()
            .sum()
    }

    async fn backfill_symbol(
        &self,
        symbol: &str,
        held: Option<Newest>,
        cancel: &CancellationToken,
    ) -> usize {
        let interval = &self.market.interval;
        let step = interval.millis();
        let enough_history = interval.open_time_containing(self.exchange_now())
            - step * (self.market.window_len as i64 + 1);
        let mut fetched = self.fill_store_holes(symbol, cancel).await;
        let start = match held {
            Some(newest) if newest.window_full => newest.open_time + step,
            Some(newest) => (newest.open_time + step).min(enough_history),
            None => enough_history,
        };
        // Up to now as it is after each page, not as it was when this began: a
        // backfill that waited out a ban covers the gaps that opened meanwhile,
        // which the repairs skipped for it.
        fetched += self.fetch_range(symbol, start, None, cancel).await;
        if fetched > 0 {
            info!(symbol, candles = fetched, "backfill done");
        } else {
            debug!(symbol, "backfill: nothing missing");
        }
        fetched
    }

    /// The gap scan: finds the minutes missing from the store between the newest
    /// stored candle and `HISTORY_MAX` intervals before it, and fetches them. A hole
    /// behind the newest candle is otherwise never seen by a repair that starts
    /// after it (a dropped queue, a half-written batch, a stream that skipped one).
    async fn fill_store_holes(&self, symbol: &str, cancel: &CancellationToken) -> usize {
        let step = self.market.interval.millis();
        let window = self.market.window_len;
        let reading = self.store.latest_until(
            symbol,
            self.market.interval.name(),
            window + 1,
            self.exchange_now(),
        );
        // A database that does not answer must not hold a stop (during start-up
        // too, when serving waits for this backfill) for the read's own timeout.
        let stored = match cancel.run_until_cancelled(reading).await {
            None => return 0,
            Some(Ok(stored)) => stored,
            Some(Err(err)) => {
                warn!(symbol, error = %Chain(&err), "cannot read the store for its holes; scanning again at the next repair");
                return 0;
            }
        };
        // Newest first: the open times in ascending order, then every grid minute
        // in their span that none of them has.
        let mut held: Vec<i64> = stored.iter().map(|c| c.open_time).collect();
        held.reverse();
        let (Some(&oldest), Some(&newest)) = (held.first(), held.last()) else {
            return 0;
        };
        let from = oldest.max(newest - step * window as i64);
        let mut holes: Vec<(i64, i64)> = Vec::new();
        let mut expected = from;
        for open_time in held.into_iter().filter(|t| *t >= from) {
            if open_time > expected {
                holes.push((expected, open_time));
            }
            expected = open_time + step;
        }
        if holes.is_empty() {
            return 0;
        }
        let minutes: i64 = holes.iter().map(|(start, end)| (end - start) / step).sum();
        warn!(
            symbol,
            holes = holes.len(),
            candles = minutes,
            "the store has holes behind its newest candle; fetching them"
        );
        if holes.len() > MAX_HOLE_REQUESTS {
            holes = vec![(holes[0].0, holes[holes.len() - 1].1)];
        }
        let mut fetched = 0;
        for (start, end) in holes {
            fetched += self.fetch_range(symbol, start, Some(end), cancel).await;
        }
        fetched
    }

    /// Fetches the closed candles of `symbol` opened in `[start, until)` (ms since
    /// the epoch, UTC; `None`: up to the candle open now on the exchange's clock,
    /// read again after every page), page by page, and delivers them; returns how
    /// many. A symbol the exchange refuses is marked so and never asked for again.
    pub(super) async fn fetch_range(
        &self,
        symbol: &str,
        mut start: i64,
        until: Option<i64>,
        cancel: &CancellationToken,
    ) -> usize {
        let mut fetched = 0;
        loop {
            let until = until.unwrap_or_else(|| {
                self.market
                    .interval
                    .open_time_containing(self.exchange_now())
            });
            if start >= until {
                break;
            }
            // Binance weighs a klines request by its `limit`, not by the rows it
            // returns: ask for what the range holds (101 minutes weigh 2, not 10).
            let step = self.market.interval.millis();
            let rows =
                usize::try_from((until - start + step - 1) / step).unwrap_or(REST_PAGE_LIMIT);
            match self
                .fetch_page(symbol, start, until, rows.clamp(1, REST_PAGE_LIMIT), cancel)
                .await
            {
                Page::Delivered { next, candles } => {
                    start = next;
                    fetched += candles;
                }
                Page::End | Page::Cancelled => break,
            }
        }
        fetched
    }

    /// Fetches one page of up to `limit` klines of `symbol` opened in
    /// `[start, until)` and delivers those closed on the exchange's clock. A symbol
    /// the exchange refuses is marked so and never asked for again.
    pub(super) async fn fetch_page(
        &self,
        symbol: &str,
        start: i64,
        until: i64,
        limit: usize,
        cancel: &CancellationToken,
    ) -> Page {
        let page = match self
            .rest
            .fetch_with_retry(
                symbol,
                start,
                until - 1,
                limit,
                self.options.backoff_max,
                cancel,
            )
            .await
        {
            Ok(page) => page,
            Err(GaveUp::Cancelled) => return Page::Cancelled,
            Err(GaveUp::Refused(err)) => {
                error!(symbol, error = %Chain(&err), "the exchange refuses this symbol; not asking for it again");
                self.health.refuse_symbol(symbol, err.to_string());
                return Page::End;
            }
        };
        let Some(last_open) = page.last().map(|c| c.open_time) else {
            return Page::End;
        };
        if last_open < start {
            return Page::End; // a server that does not honour startTime: stop rather than loop
        }
        // Closed on the exchange's clock, not ours, which may be minutes off.
        let now = self.exchange_now();
        let closed = page.into_iter().filter(|c| c.close_time < now).collect();
        let closed = self.possible(closed, "rest");
        let candles = closed.len();
        self.metrics.backfilled.inc_by(candles as u64);
        self.deliver(closed, Source::Rest);
        Page::Delivered {
            next: last_open + self.market.interval.millis(),
            candles,
        }
    }
}

/// What one page of a range brought.
pub(super) enum Page {
    /// Candles delivered; the next page starts at `next` (ms since the epoch, UTC).
    Delivered { next: i64, candles: usize },
    /// Nothing more to fetch: an empty page, or a symbol the exchange refuses.
    End,
    /// Shutdown.
    Cancelled,
}
