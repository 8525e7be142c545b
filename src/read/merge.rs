//! The seams of the read path: base candles of the store and of the write queue
//! merged by open time (the queue's version wins: it is newer and will overwrite the
//! stored one), folded into whole candles of the interval asked for.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use futures_util::stream::{self, Peekable};

use crate::candle::{BucketBuilder, Candle, Interval};
use crate::store::CandleStream;

/// Base candles in, candles of one served interval out: each base candle itself when
/// the interval is the base, otherwise each bucket once every base candle of it has
/// come (in any order; a bucket missing a base candle never comes out).
pub(super) struct Folder {
    builder: Option<BucketBuilder>,
}

impl Folder {
    pub(super) fn new(interval: &Interval, base: &Interval) -> Self {
        Self {
            builder: (interval != base).then(|| BucketBuilder::new(interval.clone(), base)),
        }
    }

    pub(super) fn add(&mut self, candle: Candle) -> Option<Candle> {
        match &mut self.builder {
            None => Some(candle),
            Some(builder) => builder.add(&candle),
        }
    }
}

/// `page` (stored base candles, newest first) with `overlay` (unacknowledged ones of
/// the same span, any order) merged in, newest first: one candle per open time, the
/// overlay's where both have it.
pub(super) fn overlay_page(page: Vec<Candle>, overlay: &BTreeMap<i64, Candle>) -> Vec<Candle> {
    if overlay.is_empty() {
        return page;
    }
    let mut merged: BTreeMap<i64, Candle> = page.into_iter().map(|c| (c.open_time, c)).collect();
    merged.extend(overlay.iter().map(|(t, c)| (*t, c.clone())));
    merged.into_values().rev().collect()
}

/// The candles of `held` that follow one another without a gap, `step` ms apart,
/// down from just below `end` (ms since the epoch, exclusive): newest first. What
/// memory alone can answer below a window, with no store read.
pub(super) fn run_below(held: &BTreeMap<i64, Candle>, end: i64, step: i64) -> Vec<Candle> {
    let mut run = Vec::new();
    let mut expected = end - step;
    for (open_time, candle) in held.range(..end).rev() {
        if *open_time != expected {
            break;
        }
        run.push(candle.clone());
        expected -= step;
    }
    run
}

/// Whether `held` has every base candle in `[from, to)`, `step` ms apart.
pub(super) fn covers(held: &BTreeMap<i64, Candle>, from: i64, to: i64, step: i64) -> bool {
    let wanted = usize::try_from((to - from).div_euclid(step)).unwrap_or(usize::MAX);
    from < to && held.range(from..to).count() == wanted
}

/// `stored` (oldest first) with `overlay` (oldest first) merged in, oldest first:
/// one candle per open time, the overlay's where both have it. A store error is
/// passed on where it happens.
pub(super) fn overlay_stream(stored: CandleStream, overlay: Vec<Candle>) -> CandleStream {
    if overlay.is_empty() {
        return stored;
    }
    struct Sides {
        stored: Peekable<CandleStream>,
        overlay: std::iter::Peekable<std::vec::IntoIter<Candle>>,
    }
    let sides = Sides {
        stored: stored.peekable(),
        overlay: overlay.into_iter().peekable(),
    };
    Box::pin(stream::unfold(sides, |mut sides| async move {
        let next_stored = std::pin::Pin::new(&mut sides.stored).peek().await;
        let next = match (next_stored, sides.overlay.peek()) {
            (None, None) => return None,
            (None, Some(_)) => Ok(sides.overlay.next()?),
            (Some(Err(_)), _) => sides.stored.next().await?,
            (Some(Ok(stored)), Some(held)) if held.open_time <= stored.open_time => {
                if held.open_time == stored.open_time {
                    let _replaced = sides.stored.next().await;
                }
                Ok(sides.overlay.next()?)
            }
            (Some(Ok(_)), _) => sides.stored.next().await?,
        };
        Some((next, sides))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    const MINUTE: i64 = 60_000;

    fn minute(open_time: i64, close: f64) -> Candle {
        Candle {
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            open_time,
            close_time: open_time + MINUTE - 1,
            open: close,
            high: close,
            low: close,
            close,
            volume: 1.0,
            quote_volume: 1.0,
            taker_buy_volume: 1.0,
            taker_buy_quote_volume: 1.0,
            trades: 1,
        }
    }

    fn held(minutes: &[i64], close: f64) -> BTreeMap<i64, Candle> {
        minutes
            .iter()
            .map(|m| (m * MINUTE, minute(m * MINUTE, close)))
            .collect()
    }

    #[test]
    fn a_page_takes_the_queued_version_and_keeps_one_per_open_time() {
        let page = vec![minute(3 * MINUTE, 1.0), minute(MINUTE, 1.0)];
        let merged = overlay_page(page, &held(&[2, 3], 2.0));
        let got: Vec<(i64, f64)> = merged.iter().map(|c| (c.open_time, c.close)).collect();
        assert_eq!(
            got,
            vec![(3 * MINUTE, 2.0), (2 * MINUTE, 2.0), (MINUTE, 1.0)]
        );
    }

    #[test]
    fn a_run_stops_at_the_first_gap() {
        let held = held(&[1, 2, 4, 5, 6], 1.0);
        let run: Vec<i64> = run_below(&held, 7 * MINUTE, MINUTE)
            .iter()
            .map(|c| c.open_time / MINUTE)
            .collect();
        assert_eq!(run, vec![6, 5, 4]);
        assert!(run_below(&held, 8 * MINUTE, MINUTE).is_empty(), "7 missing");
        assert!(covers(&held, 4 * MINUTE, 7 * MINUTE, MINUTE));
        assert!(!covers(&held, 2 * MINUTE, 5 * MINUTE, MINUTE));
    }

    #[tokio::test]
    async fn a_stream_merges_in_order_and_passes_errors_on() {
        let stored: Vec<Result<Candle, StoreError>> = vec![
            Ok(minute(MINUTE, 1.0)),
            Ok(minute(3 * MINUTE, 1.0)),
            Err(StoreError::Timeout {
                operation: "find",
                timeout: std::time::Duration::ZERO,
            }),
        ];
        let merged = overlay_stream(
            Box::pin(stream::iter(stored)),
            vec![minute(2 * MINUTE, 2.0), minute(3 * MINUTE, 2.0)],
        );
        let got: Vec<Result<(i64, f64), String>> = merged
            .map(|c| c.map(|c| (c.open_time, c.close)).map_err(|e| e.to_string()))
            .collect()
            .await;
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[..3],
            [
                Ok((MINUTE, 1.0)),
                Ok((2 * MINUTE, 2.0)),
                Ok((3 * MINUTE, 2.0))
            ]
        );
        assert!(got[3].is_err());
    }
}
