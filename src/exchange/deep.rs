//! The deep history longer intervals need: after the startup backfill, once, the base
//! candles that fill `HISTORY_MAX` buckets of the longest served interval (for `1d`,
//! a hundred days of minutes), fetched oldest first, paced with every other request
//! of the exchange client ([`super::INGEST_WEIGHT_PER_MINUTE`]), in the background;
//! later starts find them stored and fetch nothing. With `SYMBOLS=*` none: the
//! windows come from [`super::seed`], and the buckets open now are built from the
//! exchange's closed candles of the interval below them (`Hub::seed_building`).

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Exchange;
use super::backfill::Page;
use crate::telemetry::Chain;

/// Rows per deep request: a 1,000-row klines request weighs 5 (Binance USD-M docs,
/// "Kline/Candlestick Data"), the most rows per unit of weight.
const DEEP_PAGE: usize = 1000;
/// Its request weight.
const DEEP_PAGE_WEIGHT: u32 = 5;
/// The weight per minute the deep backfill allows itself: half of Binance's 2,400
/// per IP, leaving the rest to anything else on the same address.
pub const DEEP_WEIGHT_PER_MINUTE: u32 = super::INGEST_WEIGHT_PER_MINUTE;
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl Exchange {
    /// The open time (ms since the epoch, UTC) from which the deep history is kept:
    /// `HISTORY_MAX + 1` whole buckets of the longest served interval before the one
    /// open now.
    pub fn deep_history_start(&self) -> i64 {
        let longest = &self.market.longest;
        let buckets = i64::try_from(self.market.window_len).unwrap_or(i64::MAX) + 1;
        longest.open_time_containing(self.exchange_now()) - longest.millis() * buckets
    }

    /// Fetches, per symbol, the base candles between the deep history start and the
    /// oldest one held (in the store or the window). Nothing when the longest served
    /// interval is the base one: the startup backfill covered its window. Not run
    /// when the longer windows are seeded (`SYMBOLS=*`).
    pub(super) async fn deep_backfill(&self, cancel: &CancellationToken) {
        if self.market.longest == self.market.interval {
            return;
        }
        let start = self.deep_history_start();
        let pause = Duration::from_millis(
            60_000 * u64::from(DEEP_PAGE_WEIGHT) / u64::from(DEEP_WEIGHT_PER_MINUTE),
        );
        let mut plan = Vec::new();
        for symbol in &self.followed() {
            if self.health.is_refused(symbol) {
                continue;
            }
            let stored = match self
                .store
                .oldest_open_time(symbol, self.market.interval.name())
                .await
            {
                Ok(stored) => stored,
                Err(err) => {
                    warn!(symbol, error = %Chain(&err), "cannot read the oldest stored candle; skipping the deep history until the next start");
                    continue;
                }
            };
            let held = self.hub.oldest(symbol);
            if let Some(until) = stored.into_iter().chain(held).min()
                && until > start
            {
                plan.push((symbol.clone(), until));
            }
        }
        if plan.is_empty() {
            return;
        }
        let step = self.market.interval.millis();
        let total: i64 = plan.iter().map(|(_, until)| (until - start) / step).sum();
        let minutes = (total as f64 / DEEP_PAGE as f64 * pause.as_secs_f64() / 60.0).ceil();
        // The pause is what the pacer allows a page; it only estimates here.
        info!(
            symbols = plan.len(),
            candles = total,
            from = start,
            longest = %self.market.longest,
            "fetching the deep history longer intervals need, paced at {DEEP_WEIGHT_PER_MINUTE} weight a minute: about {minutes} min"
        );
        let mut fetched = 0usize;
        let mut last_log = Instant::now();
        for (symbol, until) in plan {
            let mut from = start;
            while from < until {
                match self
                    .fetch_page(&symbol, from, until, DEEP_PAGE, cancel)
                    .await
                {
                    Page::Delivered { next, candles } => {
                        from = next;
                        fetched += candles;
                    }
                    Page::End => break,
                    Page::Cancelled => return,
                }
                if last_log.elapsed() >= PROGRESS_EVERY {
                    last_log = Instant::now();
                    info!(
                        symbol,
                        fetched,
                        of = total,
                        "deep history backfill: {}%",
                        fetched as i64 * 100 / total.max(1)
                    );
                }
                // The client's pacer spaces the pages: no pause of its own here.
            }
        }
        info!(candles = fetched, "deep history backfill done");
    }
}
