//! The history behind the windows, read from the store in the background after
//! startup: the stored base candles that the longer intervals' windows and every
//! indicator's warm-up need, so a restart serves them as full as before it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::candle::Interval;
use crate::config::Config;
use crate::hub::{Hub, INDICATOR_WARMUP};
use crate::store::CandleStore;
use crate::telemetry::Chain;

/// How long startup waits for the stored closes behind the base windows.
const HISTORY_PATIENCE: Duration = Duration::from_secs(10);
/// Base candles read per store query.
const PAGE: usize = 5_000;

/// The open time (ms since the epoch, UTC) from which base closes are kept: the
/// window plus [`INDICATOR_WARMUP`] candles, so every indicator shown agrees with
/// TA-Lib from the first connection. Loaded before serving.
pub fn closes_start(base: &Interval, window_len: usize, now_ms: i64) -> i64 {
    let closes = i64::try_from(window_len + 1 + INDICATOR_WARMUP).unwrap_or(i64::MAX);
    base.open_time_containing(now_ms) - base.millis() * closes
}

/// The open time from which the longest served interval's window is full:
/// `window_len + 1` of its buckets. Loaded in the background.
pub fn buckets_start(longest: &Interval, window_len: usize, now_ms: i64) -> i64 {
    let buckets = i64::try_from(window_len).unwrap_or(i64::MAX) + 1;
    longest.open_time_containing(now_ms) - longest.millis() * buckets
}

/// Loads the stored base window (the newest `window_len + 1` candles closed by
/// `now`, ms since the epoch) of each of `symbols`, and with `seeds` (`SYMBOLS=*`)
/// the longer intervals' windows, which ingesters store whole (seeded by the
/// exchange, then built from minutes): at start, for a contract newly listed, and
/// when a follower reloads after a fresh change stream. The store's candles replace
/// held ones ([`Hub::apply_stored`]). A window whose read fails keeps what it holds;
/// new candles fill it.
pub(super) async fn load_windows(
    store: &Arc<dyn CandleStore>,
    hub: &Hub,
    (symbols, base, seeds): (&[String], &Interval, bool),
    window_len: usize,
    now: i64,
) {
    for symbol in symbols {
        for (k, interval) in hub.intervals().iter().enumerate().skip(1).filter(|_| seeds) {
            match store
                .latest_until(symbol, interval.name(), window_len + 1, now)
                .await
            {
                Ok(candles) => {
                    hub.apply_stored(k, &candles);
                }
                Err(err) => {
                    warn!(symbol, %interval, error = %Chain(&err), "cannot load the stored window; new candles fill it");
                }
            }
        }
        match store
            .latest_until(symbol, base.name(), window_len + 1, now)
            .await
        {
            Ok(candles) => {
                hub.apply(&candles);
            }
            Err(err) => {
                warn!(symbol, error = %Chain(&err), "cannot load the stored window; new candles fill it");
            }
        }
    }
}

/// Loads the stored history behind the windows: the base interval's closes (what
/// indicators need) before serving, within [`HISTORY_PATIENCE`]; the longer
/// intervals' buckets on `tasks` in the background. `now` is ms since the epoch
/// on the clock candles are judged by (the database's when there is one).
pub(super) async fn load(
    store: &Arc<dyn CandleStore>,
    hub: &Hub,
    config: &Config,
    window_len: usize,
    now: i64,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) {
    let base = &config.interval;
    let closes_from = closes_start(base, window_len, now);
    let loading = load_history(
        Arc::clone(store),
        hub.clone(),
        base.clone(),
        closes_from,
        cancel.clone(),
    );
    if tokio::time::timeout(HISTORY_PATIENCE, loading)
        .await
        .is_err()
    {
        warn!(timeout = ?HISTORY_PATIENCE, "the stored history loads slowly; serving meanwhile");
    }
    let longest = config.intervals.last().unwrap_or(base);
    // With SYMBOLS=* the longer windows are stored whole (seeded, then built and
    // stored as they close) and loaded with the base windows: no minutes behind them.
    let buckets_from = if config.follow_all {
        closes_from
    } else {
        buckets_start(longest, window_len, now)
    };
    if buckets_from < closes_from {
        tasks.spawn(
            load_history(
                Arc::clone(store),
                hub.clone(),
                base.clone(),
                buckets_from,
                cancel.clone(),
            )
            .instrument(info_span!("history")),
        );
    }
}

/// Feeds `hub` the stored base candles from before its oldest one back to `start`,
/// newest first, a page at a time.
pub async fn load_history(
    store: Arc<dyn CandleStore>,
    hub: Hub,
    base: Interval,
    start: i64,
    cancel: CancellationToken,
) {
    let mut loaded = 0usize;
    for symbol in hub.symbols().to_vec() {
        let mut before = hub.oldest(&symbol);
        while before.is_none_or(|before| before > start) {
            let page = tokio::select! {
                _ = cancel.cancelled() => return,
                page = store.page(&symbol, base.name(), PAGE, before) => page,
            };
            let page = match page {
                Ok(page) => page,
                Err(err) => {
                    warn!(symbol, error = %Chain(&err), "cannot read the stored history; longer intervals fill as candles close");
                    break;
                }
            };
            let Some(oldest) = page.last().map(|c| c.open_time) else {
                break;
            };
            let short = page.len() < PAGE;
            loaded += page.len();
            hub.apply(&page);
            before = Some(oldest);
            if short {
                break;
            }
        }
        debug!(symbol, "stored history loaded");
    }
    if loaded > 0 {
        info!(
            candles = loaded,
            "stored history loaded for the longer intervals and indicators"
        );
    }
}
