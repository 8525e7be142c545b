//! Fetching one symbol's holes: a paced klines request at a time, each page
//! upserted before the next request, so an interruption keeps everything fetched.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::plan::{Request, SymbolPlan};
use super::progress::SymbolProgress;
use crate::candle::{Candle, Interval};
use crate::exchange::{GaveUp, RestClient};
use crate::retry::{Backoff, FIRST_RETRY_DELAY};
use crate::store::{CandleStore, StoreError};
use crate::telemetry::Chain;

/// How many times a page is offered to the store before the symbol fails.
const STORE_ATTEMPTS: u32 = 5;

/// How one symbol's fetch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every hole was asked for; what the exchange had is stored.
    Complete,
    /// Stopped by a signal; what was fetched is stored.
    Interrupted,
    /// The exchange refuses the symbol (`-1121 Invalid symbol`), with its answer.
    Refused(String),
    /// The store did not take a page, with its error.
    StoreFailed(String),
}

/// What one symbol's fetch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Rows the exchange sent for the holes.
    pub fetched: u64,
    /// Candles written.
    pub stored: u64,
    /// Missing open times the exchange has no candle for (before a listing, an
    /// exchange outage).
    pub unavailable: u64,
}

/// What the fetch of every symbol shares.
pub struct Fetcher<'a> {
    pub rest: &'a RestClient,
    pub store: &'a dyn CandleStore,
    pub interval: &'a Interval,
    /// Retries of failed requests back off up to this.
    pub backoff_max: Duration,
    /// No new request once this fires.
    pub stop: &'a CancellationToken,
    /// A request or write in flight is abandoned once this fires.
    pub abort: &'a CancellationToken,
}

impl Fetcher<'_> {
    /// Fetches `plan`'s holes oldest first, writing each page before asking for the
    /// next, until they are done, a signal stops it, or it fails.
    pub async fn fetch(&self, plan: &SymbolPlan, progress: &SymbolProgress) -> (Outcome, Tally) {
        let symbol = plan.symbol.as_str();
        let step = plan.span.step;
        let mut tally = Tally::default();
        let mut cursor = plan.span.first;
        // After an empty page in a long hole: ask for its next candle alone (weight
        // 1), rather than walk empty pages up to a listing date.
        let mut probe = false;
        loop {
            if self.stop.is_cancelled() {
                return (Outcome::Interrupted, tally);
            }
            let Some(mut request) = plan.request_from(cursor) else {
                return (Outcome::Complete, tally);
            };
            if probe {
                request = Request {
                    end: plan.hole_end(request.start),
                    limit: 1,
                    ..request
                };
            }
            let page = match self
                .rest
                .fetch_with_retry(
                    symbol,
                    request.start,
                    request.end - 1,
                    request.limit,
                    self.backoff_max,
                    self.abort,
                )
                .await
            {
                Ok(page) => page,
                Err(GaveUp::Cancelled) => return (Outcome::Interrupted, tally),
                Err(GaveUp::Refused(err)) => {
                    return (Outcome::Refused(Chain(&err).to_string()), tally);
                }
            };
            // Only this request's open times: the exchange may add the candle open now.
            let rows: Vec<Candle> = page
                .into_iter()
                .filter(|c| (request.start..request.end).contains(&c.open_time))
                .collect();
            tally.fetched += rows.len() as u64;
            let next = rows
                .last()
                .map_or(request.end, |c| plan.span.grid_after(c.open_time));
            let keep: Vec<Candle> = rows.into_iter().filter(|c| self.belongs(plan, c)).collect();
            if !keep.is_empty() {
                match self.write(&keep).await {
                    Ok(()) => {}
                    Err(None) => return (Outcome::Interrupted, tally),
                    Err(Some(err)) => {
                        return (Outcome::StoreFailed(Chain(&err).to_string()), tally);
                    }
                }
            }
            let covered = ((next - request.start) / step) as u64;
            let unavailable = covered.saturating_sub(keep.len() as u64);
            tally.stored += keep.len() as u64;
            tally.unavailable += unavailable;
            progress.stored(keep.len() as u64);
            progress.unavailable(unavailable);
            probe = keep.is_empty() && next < plan.hole_end(request.start);
            cursor = next;
        }
    }

    /// Whether a row is one of the plan's candles: on the grid, of this symbol and
    /// interval, closed on the exchange's clock when the run began (the span ends
    /// there), and possible.
    fn belongs(&self, plan: &SymbolPlan, candle: &Candle) -> bool {
        plan.span.holds(candle.open_time)
            && candle.symbol == plan.symbol
            && candle.interval == self.interval.name()
            && candle.close_time == candle.open_time + plan.span.step - 1
            && candle.validate().is_ok()
    }

    /// Upserts `candles`, retrying with backoff a few times; `Err(None)` when
    /// aborted.
    async fn write(&self, candles: &[Candle]) -> Result<(), Option<StoreError>> {
        let mut backoff = Backoff::new(FIRST_RETRY_DELAY, self.backoff_max);
        let mut attempt = 1;
        loop {
            let written = tokio::select! {
                written = self.store.upsert(candles) => written,
                _ = self.abort.cancelled() => return Err(None),
            };
            let err = match written {
                Ok(()) => return Ok(()),
                Err(err) if attempt >= STORE_ATTEMPTS => return Err(Some(err)),
                Err(err) => err,
            };
            let wait = backoff.next_delay();
            warn!(symbol = %candles[0].symbol, attempt, error = %Chain(&err), retry_in = ?wait, "cannot write to the store");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.abort.cancelled() => return Err(None),
            }
            attempt += 1;
        }
    }
}
