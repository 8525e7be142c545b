//! Base candles the service does not hold, fetched from the exchange once: each
//! page request is paced by the weight budget, identical concurrent ones share one
//! exchange request, and the closed rows go through the store writer's queue (the
//! one write path), which makes them visible to every read at once. What a page
//! shows does not exist on the exchange (before a listing, inside an outage) is
//! remembered, so asking again costs nothing either.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use tracing::warn;

use super::MirrorState;
use super::error::BinanceError;
use crate::candle::Candle;
use crate::exchange::{RestError, klines_weight};
use crate::telemetry::Chain;

/// How long a fetch waits for the next minute's budget before answering 429.
const BUDGET_PATIENCE: Duration = Duration::from_secs(10);

type Page = Result<Arc<Vec<Candle>>, BinanceError>;
/// (symbol, startTime, endTime, limit) of one exchange request.
type PageKey = (String, i64, i64, usize);

/// Page requests under way, and the spans known to hold no candle, per symbol.
#[derive(Default)]
pub(super) struct Fetches {
    in_flight: Mutex<HashMap<PageKey, Shared<BoxFuture<'static, Page>>>>,
    empty: Mutex<HashMap<String, Vec<(i64, i64)>>>,
}

impl Fetches {
    /// A span `[from, to)` known to hold no candle of `symbol` that overlaps
    /// `[start, end)`.
    pub(super) fn empty_within(&self, symbol: &str, start: i64, end: i64) -> Option<(i64, i64)> {
        let empty = self.empty.lock().expect("empty spans lock");
        empty
            .get(symbol)?
            .iter()
            .find(|(from, to)| *from < end && start < *to)
            .copied()
    }

    /// Whether spans known empty cover all of `[start, end)` (`Some(true)`), part of
    /// it (`Some(false)`) or none of it.
    pub(super) fn empty_cover(&self, symbol: &str, start: i64, end: i64) -> Option<bool> {
        // Spans are merged, so one covers the whole or none does.
        self.empty_within(symbol, start, end)
            .map(|(from, to)| from <= start && end <= to)
    }

    /// Remembers that `symbol` has no candle opened in `[from, to)`.
    fn learn_empty(&self, symbol: &str, from: i64, to: i64) {
        if from >= to {
            return;
        }
        let mut empty = self.empty.lock().expect("empty spans lock");
        let spans = empty.entry(symbol.to_owned()).or_default();
        spans.push((from, to));
        spans.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
        for (from, to) in spans.drain(..) {
            match merged.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(to),
                _ => merged.push((from, to)),
            }
        }
        *spans = merged;
    }
}

impl MirrorState {
    /// Up to `limit` base candles of `symbol` opened in `[from, to]` from the
    /// exchange (one request, shared with identical ones under way); the closed
    /// rows are queued for the store before this returns.
    ///
    /// # Errors
    /// [`BinanceError::TooMuchWeight`] when the budget has nothing left within
    /// [`BUDGET_PATIENCE`]; [`BinanceError::Unavailable`] when the exchange fails.
    pub(super) async fn fetch_page(&self, symbol: &str, from: i64, to: i64, limit: usize) -> Page {
        let key: PageKey = (symbol.to_owned(), from, to, limit);
        let shared = {
            let mut in_flight = self.inner.fetches.in_flight.lock().expect("fetch lock");
            in_flight
                .entry(key.clone())
                .or_insert_with(|| {
                    let task = tokio::spawn(self.clone().fetch_and_store(key));
                    async move { task.await.unwrap_or(Err(BinanceError::Unavailable)) }
                        .boxed()
                        .shared()
                })
                .clone()
        };
        shared.await
    }

    async fn fetch_and_store(self, key: PageKey) -> Page {
        let fetched = self.fetch_uncached(&key).await;
        self.inner
            .fetches
            .in_flight
            .lock()
            .expect("fetch lock")
            .remove(&key);
        fetched
    }

    async fn fetch_uncached(&self, (symbol, from, to, limit): &PageKey) -> Page {
        let inner = &self.inner;
        self.check_ban()?;
        let clock = inner.clock.clone();
        inner
            .budget
            .spend(klines_weight(*limit), || clock.now_ms(), BUDGET_PATIENCE)
            .await?;
        let rows = inner
            .rest
            .fetch_page(symbol, *from, *to, *limit)
            .await
            .map_err(|err| {
                warn!(symbol, error = %Chain(&err), "mirror: cannot fetch klines from the exchange");
                if let RestError::Status { status, retry_after, .. } = &err {
                    self.banned(*status, retry_after.map(|d| d.as_secs()));
                }
                self.check_ban().err().unwrap_or(BinanceError::Unavailable)
            })?;
        let base = inner.reader.hub().intervals()[0].millis();
        // Binance answers the first rows at or after startTime: none opened between.
        let mut expected = *from;
        for row in &rows {
            inner.fetches.learn_empty(symbol, expected, row.open_time);
            expected = row.open_time + base;
        }
        let now = inner.clock.now_ms();
        if rows.is_empty() && *to < now - 2 * base {
            inner.fetches.learn_empty(symbol, *from, to + 1);
        }
        let hub = inner.reader.hub();
        // Closed on the exchange's clock, and never over a candle the stream
        // delivered as final (DESIGN.md §4).
        let closed: Vec<Candle> = rows
            .iter()
            .filter(|c| c.close_time < now && hub.candle_at(symbol, c.open_time).is_none())
            .cloned()
            .collect();
        if let Some(writer) = &inner.writer {
            writer.enqueue(closed);
        }
        Ok(Arc::new(rows))
    }
}
