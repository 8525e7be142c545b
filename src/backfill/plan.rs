//! Which candles of the range the store lacks: the open times on the interval's grid
//! (candles open at multiples of the interval since the epoch) that no stored candle
//! has, as holes read from the store oldest first in constant memory; and the
//! klines requests that fetch exactly those holes.

use futures_util::StreamExt;

use crate::candle::Interval;
use crate::exchange::klines_weight;
use crate::store::{CandleStore, StoreError};

/// The most rows one request asks for: 1,000 weighs 5, above that 10 (Binance USD-M
/// docs), so a page of 1,000 is the most candles per unit of weight.
pub const PAGE_ROWS: usize = 1000;

/// The grid open times of a range that are closed on the exchange: `first`,
/// `first + step`, … up to `end`, exclusive (ms since the epoch, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: i64,
    pub end: i64,
    pub step: i64,
}

impl Span {
    /// The candles of `interval` opening in `[from, to)` that had closed at
    /// `exchange_now` (the exchange's clock): the candle still open is left out.
    pub fn new(interval: &Interval, from: i64, to: i64, exchange_now: i64) -> Self {
        let step = interval.millis();
        let on_or_after = |t: i64| {
            let open = interval.open_time_containing(t);
            if open < t { open + step } else { open }
        };
        let first = on_or_after(from);
        let end = on_or_after(to).min(interval.open_time_containing(exchange_now));
        Self {
            first,
            end: end.max(first),
            step,
        }
    }

    /// How many candles the span holds.
    pub fn len(&self) -> u64 {
        ((self.end - self.first) / self.step) as u64
    }

    /// The first grid open time after `open_time`.
    pub fn grid_after(&self, open_time: i64) -> i64 {
        open_time + self.step - (open_time - self.first).rem_euclid(self.step)
    }

    /// Whether `open_time` is one of the span's.
    pub fn holds(&self, open_time: i64) -> bool {
        (self.first..self.end).contains(&open_time)
            && (open_time - self.first).rem_euclid(self.step) == 0
    }
}

/// Open times the store lacks: `[start, end)`, ms since the epoch, on the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hole {
    pub start: i64,
    pub end: i64,
}

/// What the store holds of one symbol's span, and what it lacks.
#[derive(Debug, Clone)]
pub struct SymbolPlan {
    pub symbol: String,
    pub span: Span,
    /// Candles of the span the store holds already.
    pub present: u64,
    /// The rest, oldest first.
    pub holes: Vec<Hole>,
}

/// One klines request: the open times `[start, end)` of one hole, at most
/// [`PAGE_ROWS`] of them, asking for no more rows than that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub start: i64,
    pub end: i64,
    pub limit: usize,
}

impl SymbolPlan {
    /// Candles to fetch.
    pub fn missing(&self) -> u64 {
        self.span.len() - self.present
    }

    /// The request for the first missing open times at or after `cursor`: from there
    /// to the end of its hole, at most a page; `None` when nothing is left.
    pub fn request_from(&self, cursor: i64) -> Option<Request> {
        let step = self.span.step;
        let index = self.holes.partition_point(|hole| hole.end <= cursor);
        let hole = self.holes.get(index)?;
        let start = hole.start.max(cursor);
        let end = hole.end.min(start + step * PAGE_ROWS as i64);
        Some(Request {
            start,
            end,
            limit: ((end - start) / step) as usize,
        })
    }

    /// The end of the hole holding `open_time` (or of the next one).
    pub fn hole_end(&self, open_time: i64) -> i64 {
        let index = self.holes.partition_point(|hole| hole.end <= open_time);
        self.holes.get(index).map_or(self.span.end, |hole| hole.end)
    }

    /// How many requests, of how much weight in all, fetch every hole when the
    /// exchange answers each in full.
    pub fn estimate(&self) -> (u64, u64) {
        let (mut requests, mut weight) = (0, 0);
        let mut cursor = self.span.first;
        while let Some(request) = self.request_from(cursor) {
            requests += 1;
            weight += u64::from(klines_weight(request.limit));
            cursor = request.end;
        }
        (requests, weight)
    }
}

/// Reads what the store holds of `symbol` in `span`, oldest first, a batch at a
/// time, and returns the plan for it.
///
/// # Errors
/// [`StoreError`] when the store cannot be read.
pub async fn read_plan(
    store: &dyn CandleStore,
    symbol: &str,
    interval: &Interval,
    span: Span,
) -> Result<SymbolPlan, StoreError> {
    let mut stored = store.range(symbol, interval.name(), span.first, span.end);
    let mut holes = Holes::new(span);
    while let Some(candle) = stored.next().await {
        holes.saw(candle?.open_time);
    }
    let (present, holes) = holes.finish();
    Ok(SymbolPlan {
        symbol: symbol.to_owned(),
        span,
        present,
        holes,
    })
}

/// Holes found while walking stored open times in ascending order.
struct Holes {
    span: Span,
    expected: i64,
    present: u64,
    holes: Vec<Hole>,
}

impl Holes {
    fn new(span: Span) -> Self {
        Self {
            span,
            expected: span.first,
            present: 0,
            holes: Vec::new(),
        }
    }

    /// A stored open time; one off the grid (written by hand) fills no hole.
    fn saw(&mut self, open_time: i64) {
        if open_time < self.expected || !self.span.holds(open_time) {
            return;
        }
        if open_time > self.expected {
            self.holes.push(Hole {
                start: self.expected,
                end: open_time,
            });
        }
        self.present += 1;
        self.expected = open_time + self.span.step;
    }

    fn finish(mut self) -> (u64, Vec<Hole>) {
        if self.expected < self.span.end {
            self.holes.push(Hole {
                start: self.expected,
                end: self.span.end,
            });
        }
        (self.present, self.holes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    fn minute() -> Interval {
        Interval::parse("1m").unwrap()
    }

    fn plan(span: Span, stored: &[i64]) -> SymbolPlan {
        let mut holes = Holes::new(span);
        for &t in stored {
            holes.saw(t);
        }
        let (present, holes) = holes.finish();
        SymbolPlan {
            symbol: "BTCUSDT".into(),
            span,
            present,
            holes,
        }
    }

    #[test]
    fn the_span_is_the_grid_inside_the_range_closed_on_the_exchange() {
        let m = MINUTE;
        // From 00:00:30 to 00:10:00: the candles opening 00:01 … 00:09.
        let span = Span::new(&minute(), 30_000, 10 * m, 100 * m);
        assert_eq!((span.first, span.end, span.len()), (m, 10 * m, 9));
        // An end inside a minute keeps the candle opening before it.
        assert_eq!(Span::new(&minute(), 0, 10 * m + 1, 100 * m).end, 11 * m);
        // The candle open on the exchange's clock (00:05) is not in it.
        assert_eq!(Span::new(&minute(), 0, 10 * m, 5 * m + 10).end, 5 * m);
        // A range with no grid point is empty, never negative.
        assert_eq!(Span::new(&minute(), 1_000, 2_000, 100 * m).len(), 0);
        let hour = Interval::parse("1h").unwrap();
        let span = Span::new(&hour, 90 * m, 300 * m, 1_000 * m);
        assert_eq!((span.first, span.end), (120 * m, 300 * m));
    }

    #[test]
    fn holes_are_the_open_times_nothing_stored_has() {
        let span = Span::new(&minute(), 0, 10 * MINUTE, 100 * MINUTE);
        let stored: Vec<i64> = [2, 3, 5, 6, 7].iter().map(|m| m * MINUTE).collect();
        let plan = plan(span, &stored);
        assert_eq!(plan.present, 5);
        assert_eq!(plan.missing(), 5);
        let holes: Vec<(i64, i64)> = plan
            .holes
            .iter()
            .map(|h| (h.start / MINUTE, h.end / MINUTE))
            .collect();
        assert_eq!(holes, [(0, 2), (4, 5), (8, 10)]);
    }

    #[test]
    fn a_full_store_has_no_holes_and_off_grid_rows_fill_none() {
        let span = Span::new(&minute(), 0, 5 * MINUTE, 100 * MINUTE);
        let all: Vec<i64> = (0..5).map(|m| m * MINUTE).collect();
        let full = plan(span, &all);
        assert!(full.holes.is_empty());
        assert_eq!(full.request_from(0), None);
        assert_eq!(full.estimate(), (0, 0));
        let off_grid = plan(span, &[MINUTE + 1, 2 * MINUTE + 30_000]);
        assert_eq!(off_grid.present, 0);
        assert_eq!(
            off_grid.holes,
            [Hole {
                start: 0,
                end: 5 * MINUTE
            }]
        );
    }

    #[test]
    fn requests_cover_only_holes_a_page_at_a_time() {
        let span = Span::new(&minute(), 0, 3_000 * MINUTE, 10_000 * MINUTE);
        // Stored: minutes 10..20 and 2,600..3,000.
        let stored: Vec<i64> = (10..20).chain(2_600..3_000).map(|m| m * MINUTE).collect();
        let plan = plan(span, &stored);
        let mut cursor = span.first;
        let mut requests = Vec::new();
        while let Some(request) = plan.request_from(cursor) {
            requests.push((request.start / MINUTE, request.end / MINUTE, request.limit));
            cursor = request.end;
        }
        assert_eq!(
            requests,
            [
                (0, 10, 10),
                (20, 1_020, 1000),
                (1_020, 2_020, 1000),
                (2_020, 2_600, 580)
            ]
        );
        assert_eq!(plan.estimate(), (4, 1 + 5 + 5 + 5));
        // A cursor inside a hole starts there; past the last hole, nothing.
        assert_eq!(plan.request_from(5 * MINUTE).unwrap().start, 5 * MINUTE);
        assert_eq!(plan.hole_end(25 * MINUTE), 2_600 * MINUTE);
        assert_eq!(plan.request_from(2_600 * MINUTE), None);
    }
}
