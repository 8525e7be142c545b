//! Whole ranges through the read path, streamed in constant memory: the store's part
//! a batch at a time with the queued candles merged in, then the window's.

use futures_util::StreamExt;
use futures_util::stream;

use super::merge::{Folder, covers, overlay_stream};
use super::{Admission, CandleReader, ReadError};
use crate::candle::Interval;
use crate::hub::Snapshot;
use crate::store::CandleStream;

impl CandleReader {
    /// Every candle of the coin at `position` at the served interval `interval`
    /// opened in `[from, to)` (ms since the epoch, UTC), oldest first; for a longer
    /// interval, whole buckets only. The store is read only below what memory holds,
    /// and its turn among the bounded reads is held until the stream ends.
    ///
    /// # Errors
    /// [`ReadError::Busy`] with [`Admission::Refuse`] when the store is needed and
    /// busy; a store failure part way through ends the stream with its error.
    pub async fn range(
        &self,
        snapshot: &Snapshot,
        position: usize,
        interval: usize,
        from: i64,
        to: i64,
        admission: Admission,
    ) -> Result<CandleStream, ReadError> {
        let held = self.hub.window_candles(snapshot, interval, position);
        let boundary = held.first().map(|c| c.open_time);
        let tail: Vec<_> = held
            .into_iter()
            .filter(|c| (from..to).contains(&c.open_time))
            .map(Ok)
            .collect();
        let tail = stream::iter(tail);
        let older_to = boundary.map_or(to, |boundary| boundary.min(to));
        let symbol = &self.hub.symbols()[position];
        let base = &self.hub.intervals()[0];
        let interval = &self.hub.intervals()[interval];
        let (base_from, base_to) = whole_buckets(interval, from, older_to);
        if base_from >= base_to {
            return Ok(Box::pin(tail));
        }
        let queued =
            self.unacknowledged
                .between(symbol, base.name(), Some(base_from), Some(base_to));
        let base_candles: CandleStream = if covers(&queued, base_from, base_to, base.millis()) {
            Box::pin(stream::iter(queued.into_values().map(Ok)))
        } else {
            let turn = self.turn(admission).await?;
            let stored = self.store.range(symbol, base.name(), base_from, base_to);
            let merged = overlay_stream(stored, queued.into_values().collect());
            Box::pin(merged.map(move |candle| {
                let _held_until_the_end = &turn;
                candle
            }))
        };
        let mut folder = Folder::new(interval, base);
        let older = base_candles.filter_map(move |candle| {
            let out = match candle {
                Ok(candle) => folder
                    .add(candle)
                    .filter(|c| (from..older_to).contains(&c.open_time))
                    .map(Ok),
                Err(err) => Some(Err(err)),
            };
            std::future::ready(out)
        });
        Ok(Box::pin(older.chain(tail)))
    }

    /// Every whole candle of any `interval` that is a multiple of the base (served or
    /// not, e.g. `3m` or `2h` when `INTERVALS` lists neither) of the coin at
    /// `position`, opened in `[from, to)`, oldest first: a served interval as
    /// [`CandleReader::range`] reads it, any other folded from the base candles of
    /// its whole buckets, read through the same path (base window, queue, store).
    ///
    /// # Errors
    /// As [`CandleReader::range`].
    pub async fn range_of(
        &self,
        snapshot: &Snapshot,
        position: usize,
        interval: &Interval,
        from: i64,
        to: i64,
        admission: Admission,
    ) -> Result<CandleStream, ReadError> {
        let served = self.hub.intervals().iter().position(|i| i == interval);
        if let Some(index) = served {
            return self
                .range(snapshot, position, index, from, to, admission)
                .await;
        }
        let base = self.hub.intervals()[0].clone();
        let (base_from, base_to) = whole_buckets(interval, from, to);
        if base_from >= base_to {
            return Ok(Box::pin(stream::empty()));
        }
        let base_candles = self
            .range(snapshot, position, 0, base_from, base_to, admission)
            .await?;
        let mut folder = Folder::new(interval, &base);
        let folded = base_candles.filter_map(move |candle| {
            std::future::ready(match candle {
                Ok(candle) => folder.add(candle).map(Ok),
                Err(err) => Some(Err(err)),
            })
        });
        Ok(Box::pin(folded))
    }

    /// The open time (ms since the epoch, UTC) of the oldest base candle the service
    /// holds for the coin at `position`, in the store or in memory.
    ///
    /// # Errors
    /// [`ReadError`] when the store cannot be read.
    pub async fn oldest_open_time(
        &self,
        position: usize,
        admission: Admission,
    ) -> Result<Option<i64>, ReadError> {
        let symbol = &self.hub.symbols()[position];
        let base = self.hub.intervals()[0].name();
        let snapshot = self.hub.snapshot();
        let in_window = self
            .hub
            .window_candles(&snapshot, 0, position)
            .first()
            .map(|c| c.open_time);
        let queued = self
            .unacknowledged
            .between(symbol, base, None, None)
            .into_keys()
            .next();
        let stored = {
            let _turn = self.turn(admission).await?;
            self.store.oldest_open_time(symbol, base).await?
        };
        Ok([in_window, queued, stored].into_iter().flatten().min())
    }
}

/// The base candles of the whole buckets of `interval` opened in `[from, to)` (ms
/// since the epoch, UTC): from the first bucket opening at or after `from` to the
/// end of the last one opening before `to`.
pub(super) fn whole_buckets(interval: &Interval, from: i64, to: i64) -> (i64, i64) {
    if from >= to {
        return (from, from);
    }
    let length = interval.millis();
    let first = interval.open_time_containing(from);
    let first = if first < from { first + length } else { first };
    let last = interval.open_time_containing(to - 1);
    (first, last + length)
}
