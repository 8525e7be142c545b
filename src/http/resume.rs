//! `?since=` on `/`: the first message of each coin holds every candle opened after
//! the client's newest, from the window when it reaches back that far, otherwise
//! from one bounded store read per coin.

use axum::extract::ws::Utf8Bytes;

use super::AppState;
use super::subscription::MAX_RESUME;
use crate::candle::Indicator;
use crate::hub::{CandleEntry, CandlesMessage, IndicatorValues, Snapshot, View};
use crate::metrics::SourceLabel;
use crate::store::{StoreError, read_buckets};

/// The resume message of the coin at `position`: candles opened after `since` (ms
/// since the epoch, UTC) up to the newest one in `snapshot`, newest first, in the
/// `candles` format with `view`'s indicators.
///
/// # Errors
/// [`StoreError`] when the window does not reach back to `since` and the store
/// cannot be read.
pub(super) async fn resume_message(
    state: &AppState,
    snapshot: &Snapshot,
    position: usize,
    view: &View,
    since: i64,
) -> Result<Utf8Bytes, StoreError> {
    let hub = &state.parts.hub;
    if let Some(message) = hub.message_after(snapshot, position, view, since) {
        state
            .parts
            .metrics
            .serving
            .resumes
            .get_or_create(&SourceLabel { source: "memory" })
            .inc();
        return Ok(message);
    }
    state
        .parts
        .metrics
        .serving
        .resumes
        .get_or_create(&SourceLabel { source: "store" })
        .inc();
    // The store fills in what lies before the window; the window gives the rest,
    // so candles still on their way to the store are not missed.
    let held = hub.window_candles(snapshot, view.interval, position);
    let symbol = &hub.symbols()[position];
    let interval = &hub.intervals()[view.interval];
    let before = held.first().map(|c| c.open_time);
    let until = before.unwrap_or_else(|| interval.open_time_containing(state.parts.clock.now_ms()));
    let wanted = usize::try_from(((until - since) / interval.millis()).clamp(0, MAX_RESUME))
        .unwrap_or(0)
        + 1;
    let warmup = view
        .indicators
        .iter()
        .map(Indicator::warmup)
        .max()
        .unwrap_or(0);
    // Store reads are bounded service-wide: a burst of resuming clients queues here
    // rather than on the database.
    let _reading = state
        .reads
        .acquire()
        .await
        .expect("the read semaphore is never closed");
    let mut candles = read_buckets(
        state.parts.store.as_ref(),
        symbol,
        &hub.intervals()[0],
        interval,
        wanted + warmup,
        before,
    )
    .await?;
    candles.extend(held);
    let values = IndicatorValues::over(&candles, &view.indicators);
    let message = CandlesMessage {
        coin: symbol,
        interval: interval.name(),
        candles: candles
            .iter()
            .enumerate()
            .rev()
            .take_while(|(_, candle)| candle.open_time > since)
            .map(|(index, candle)| {
                let mut entry = CandleEntry::from(candle);
                entry.indicators = values.get(index).cloned();
                entry
            })
            .collect(),
    };
    Ok(Utf8Bytes::from(message.to_json()))
}
