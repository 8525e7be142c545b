//! `?since=` on `/`: the first message of each coin holds every candle opened after
//! the client's newest, from the window when it reaches back that far, otherwise
//! through the read path (write queue and store below the window).

use axum::extract::ws::Utf8Bytes;

use super::AppState;
use super::subscription::MAX_RESUME;
use crate::candle::Indicator;
use crate::hub::{CandleEntry, CandlesMessage, IndicatorValues, Snapshot, View};
use crate::metrics::SourceLabel;
use crate::read::{Admission, ReadError, Source};

/// The resume message of the coin at `position`: candles opened after `since` (ms
/// since the epoch, UTC) up to the newest one in `snapshot`, newest first, in the
/// `candles` format with `view`'s indicators.
///
/// # Errors
/// [`ReadError`] when the window does not reach back to `since`, memory does not
/// cover the rest and the store cannot be read.
pub(super) async fn resume_message(
    state: &AppState,
    snapshot: &Snapshot,
    position: usize,
    view: &View,
    since: i64,
) -> Result<Utf8Bytes, ReadError> {
    let parts = &state.parts;
    let hub = &parts.hub;
    let count = |source: &'static str| {
        parts
            .metrics
            .serving
            .resumes
            .get_or_create(&SourceLabel { source })
            .inc();
    };
    if let Some(message) = hub.message_after(snapshot, position, view, since) {
        count("memory");
        return Ok(message);
    }
    let symbol = &hub.symbols()[position];
    let interval = &hub.intervals()[view.interval];
    let newest = snapshot.frame(view.interval, position).newest_open_time;
    let until = newest.unwrap_or_else(|| interval.open_time_containing(state.parts.clock.now_ms()));
    // Candles opened in (since, until]: no more, so that what memory holds is enough
    // whenever it holds them all.
    let after = (until - since).max(0);
    let wanted = usize::try_from(
        (after / interval.millis() + i64::from(after % interval.millis() != 0)).min(MAX_RESUME),
    )
    .unwrap_or(0);
    let warmup = view
        .indicators
        .iter()
        .map(Indicator::warmup)
        .max()
        .unwrap_or(0);
    // A burst of resuming clients waits its turn at the store rather than failing.
    let read = parts
        .reader
        .latest(
            snapshot,
            position,
            view.interval,
            wanted + warmup,
            None,
            Admission::Wait,
        )
        .await?;
    count(match read.source {
        Source::Memory => "memory",
        Source::Store => "store",
    });
    let candles = read.candles;
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
