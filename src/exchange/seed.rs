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
                let backoff_max = self.options.backoff_max;
                let page = self
                    .rest
                    .fetch_with_retry_at(interval, symbol, range, backoff_max, cancel)
                    .await;
                let candles = match page {
                    Ok(candles) => candles,
                    Err(GaveUp::Cancelled) => return seeded,
                    Err(GaveUp::Refused(err)) => {
                        error!(symbol, %interval, error = %Chain(&err), "the exchange refuses this symbol; not asking for it again");
                        self.health.refuse_symbol(symbol, err.to_string());
                        break;
                    }
                };
                let now = self.exchange_now();
                let closed: Vec<_> = candles.into_iter().filter(|c| c.close_time < now).collect();
                debug!(symbol, %interval, candles = closed.len(), "window seeded by the exchange");
                seeded += closed.len();
                let mut built = Vec::new();
                self.hub.seed_building(k, &closed, &mut built);
                self.writer.enqueue(closed);
                if !built.is_empty() {
                    self.writer.enqueue(built);
                }
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
}
