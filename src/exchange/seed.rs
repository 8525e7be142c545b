//! `SYMBOLS=*`: the longer intervals' windows seeded with the exchange's own
//! candles of each interval, one klines request per (contract, interval) holding
//! `HISTORY_MAX + 1` closed buckets (weight 2 for the default 101; USD-M docs,
//! "Kline/Candlestick Data"), instead of the hundred days of minutes a deep base
//! history would cost. The seeds are stored with their interval, so a restart
//! loads them and asks only for the buckets closed since.

use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use super::Exchange;
use super::rest::{GaveUp, REST_PAGE_LIMIT};
use crate::candle::{Candle, Interval};
use crate::telemetry::Chain;

impl Exchange {
    /// Seeds every served interval after the base of each of `symbols` whose window
    /// does not yet reach the last closed bucket with `HISTORY_MAX + 1` candles;
    /// only the buckets closed after the newest held are asked for. Returns how
    /// many candles were seeded.
    pub(super) async fn seed_windows(
        &self,
        symbols: &[String],
        cancel: &CancellationToken,
    ) -> usize {
        let want = self.market.window_len + 1;
        let mut seeded = 0;
        for symbol in symbols {
            if self.health.is_refused(symbol) {
                continue;
            }
            for (k, interval) in self.hub.intervals().iter().enumerate().skip(1) {
                let len = interval.millis();
                let current = interval.open_time_containing(self.exchange_now());
                let (held, newest) = self.hub.held(symbol, k);
                let start = match newest {
                    Some(newest) if newest >= current - len && held >= want => continue,
                    Some(newest) if held >= want => newest + len,
                    _ => current - len * i64::try_from(want).unwrap_or(i64::MAX),
                };
                let rows = usize::try_from((current - start) / len).unwrap_or(0);
                if rows == 0 {
                    continue;
                }
                let range = (start, current - 1, rows.min(REST_PAGE_LIMIT));
                let candles = match self.fetch_longer(interval, symbol, range, cancel).await {
                    Ok(candles) => candles,
                    Err(NoCandles::Cancelled) => return seeded,
                    Err(NoCandles::Refused) => break,
                };
                let now = self.exchange_now();
                let closed: Vec<_> = candles.into_iter().filter(|c| c.close_time < now).collect();
                debug!(symbol, %interval, candles = closed.len(), "window seeded by the exchange");
                seeded += closed.len();
                self.seed_and_store(k, closed);
            }
        }
        if seeded > 0 {
            info!(
                symbols = symbols.len(),
                candles = seeded,
                "longer intervals' windows seeded with the exchange's own candles"
            );
        }
        seeded
    }

    /// The exchange's candles of `interval` for `symbol` in `range` (first and last
    /// open time in ms since the epoch, UTC, and rows), one paced request retried
    /// with backoff. A symbol the exchange refuses is marked refused (logged once)
    /// and never asked for again.
    pub(super) async fn fetch_longer(
        &self,
        interval: &Interval,
        symbol: &str,
        range: (i64, i64, usize),
        cancel: &CancellationToken,
    ) -> Result<Vec<Candle>, NoCandles> {
        let backoff_max = self.options.backoff_max;
        let page = self
            .rest
            .fetch_with_retry_at(interval, symbol, range, backoff_max, cancel)
            .await;
        match page {
            Ok(candles) => Ok(candles),
            Err(GaveUp::Cancelled) => Err(NoCandles::Cancelled),
            Err(GaveUp::Refused(err)) => {
                error!(symbol, %interval, error = %Chain(&err), "the exchange refuses this symbol; not asking for it again");
                self.health.refuse_symbol(symbol, err.to_string());
                Err(NoCandles::Refused)
            }
        }
    }

    /// Puts the exchange's closed candles of the served interval at index `level`
    /// into their windows (handed up to the intervals built from it) and stores
    /// them with every bucket they complete.
    pub(super) fn seed_and_store(&self, level: usize, closed: Vec<Candle>) {
        let mut built = Vec::new();
        self.hub.seed_building(level, &closed, &mut built);
        self.writer.enqueue(closed);
        self.writer.enqueue(built);
    }
}

/// Why [`Exchange::fetch_longer`] brought no candles.
pub(super) enum NoCandles {
    /// Shutting down.
    Cancelled,
    /// The exchange refuses the symbol (now marked refused).
    Refused,
}
