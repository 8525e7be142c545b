//! `GET /fapi/v1/klines` as Binance answers it (USD-M docs, "Kline/Candlestick Data")
//! for followed symbols at any interval built from the base: rows read through the
//! one read path, closed ones not held fetched from the exchange once
//! ([`super::fetch`]) and read again, the last row the candle still forming when the
//! range reaches it. Other symbols and intervals (`3d`, `1M`) are forwarded.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::TryStreamExt;

use super::MirrorState;
use super::error::BinanceError;
use super::forward::forward;
use super::info::json;
use super::params::KlinesQuery;
use super::poll::{PollAnswer, PollKey};
use super::rows::{klines_json, with_last_row};
use crate::candle::{Candle, Interval, Notation, aggregate};
use crate::hub::{Snapshot, slot};
use crate::read::Admission;

/// Exchange pages one request may fetch before it is forwarded whole instead.
const MAX_PAGES: usize = 20;
/// The largest page the exchange serves.
const PAGE: i64 = 1500;

/// The forming base candle and its version (bumped with each update).
struct Forming {
    candle: Candle,
    version: u64,
}

/// `GET /fapi/v1/klines`.
pub(super) async fn klines(
    State(mirror): State<MirrorState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let raw = raw.unwrap_or_default();
    let query = match KlinesQuery::parse(&raw) {
        Ok(query) => query,
        Err(err) => return err.into_response(),
    };
    let hub = mirror.inner.reader.hub();
    let position = hub.position(&query.symbol);
    let interval = query.buildable_interval(&hub.intervals()[0]);
    let (Some(position), Some(interval)) = (position, interval) else {
        if position.is_none() && mirror.inner.info.lists(&query.symbol) == Some(false) {
            return BinanceError::InvalidSymbol.into_response();
        }
        return forward(&mirror, &headers, "/fapi/v1/klines", &raw).await;
    };
    // A replica that has not seen the exchange's strings yet writes decimals as
    // exchangeInfo lists them: read it first if it never was.
    if hub.notations().of(&query.symbol) == Notation::default() && mirror.inner.info.is_empty() {
        let _ = mirror.refresh_info().await;
    }
    match mirror.serve_klines(position, &interval, &query).await {
        Ok(Some(rows)) => json(rows),
        Ok(None) => forward(&mirror, &headers, "/fapi/v1/klines", &raw).await,
        Err(err) => err.into_response(),
    }
}

impl MirrorState {
    /// The rows of `query` for the coin at `position`, fetching what is not held;
    /// `None` when the request is better forwarded whole: more than [`MAX_PAGES`] to
    /// fetch, no store writer here, a longer interval not held with `SYMBOLS=*`.
    async fn serve_klines(
        &self,
        position: usize,
        interval: &Interval,
        query: &KlinesQuery,
    ) -> Result<Option<Bytes>, BinanceError> {
        let inner = &self.inner;
        let hub = inner.reader.hub();
        let base = hub.intervals()[0].clone();
        let symbol = hub.symbols()[position].clone();
        let notation = hub.notations().of(&symbol);
        let snapshot = hub.snapshot();
        let now = inner.clock.now_ms();
        let forming = self.forming(position, &snapshot, &base, now);
        // The bucket still forming: the forming base candle's, else the clock's.
        let current =
            interval.open_time_containing(forming.as_ref().map_or(now, |f| f.candle.open_time));
        let poll = (query.start_time.is_none() && query.end_time.is_none()).then(|| PollKey {
            position,
            interval: interval.name().to_owned(),
            limit: query.limit,
            current,
            closed_version: snapshot.frame(0, position).version,
            notation,
        });
        let forming_version = forming.as_ref().map_or(0, |f| f.version);
        if let Some((key, mut answer)) = poll
            .as_ref()
            .and_then(|key| Some((key, inner.polls.get(key)?)))
        {
            if answer.forming_version != forming_version {
                answer.whole = match (&forming, answer.reaches_forming) {
                    (Some(forming), true) => {
                        let bucket = self
                            .forming_bucket(&snapshot, position, interval, &base, &forming.candle)
                            .await?;
                        with_last_row(&answer.closed, &bucket, notation)
                    }
                    _ => answer.closed.clone(),
                };
                answer.forming_version = forming_version;
                inner.polls.put(key.clone(), answer.clone());
            }
            return Ok(Some(answer.whole));
        }
        let len = interval.millis();
        // Without endTime, the newest rows end at the newest candle there is: the one
        // forming, else the newest closed one held (fetched up to the exchange's
        // present at startup, then streamed), not an empty span the clock implies.
        let newest_closed = snapshot.frame(0, position).newest_open_time;
        let newest = match (&forming, newest_closed) {
            (None, Some(closed)) => interval.open_time_containing(closed).min(current),
            _ => current,
        };
        // With nothing forming, the newest bucket may be one whose last base candles
        // have not come: Binance answers it as far as it goes, like the forming one.
        let unfinished = newest_closed
            .map(|closed| closed + base.millis())
            .filter(|end| forming.is_none() && *end < newest + len);
        let mut cursor = i64::MIN;
        let mut pages = 0;
        loop {
            let (slots, mut partial) = self.slots(&symbol, interval, query, current, newest);
            if unfinished.is_some()
                && slots.last() == Some(&newest)
                && partial.last() != Some(&newest)
            {
                partial.push(newest);
            }
            let closed: Vec<i64> = slots.iter().copied().filter(|s| *s < current).collect();
            let mut candles = match (closed.first(), closed.last()) {
                (Some(first), Some(last)) => {
                    self.read(&snapshot, position, interval, *first, last + len)
                        .await?
                }
                _ => Vec::new(),
            };
            candles.retain(|c| {
                closed.binary_search(&c.open_time).is_ok()
                    && partial.binary_search(&c.open_time).is_err()
            });
            let mut incomplete = None;
            let answered_partly =
                |slot: i64| slot < current || (unfinished.is_some() && slot == newest);
            for slot in partial.iter().filter(|s| answered_partly(**s)) {
                match self
                    .partial_bucket(
                        &snapshot,
                        position,
                        (interval, &base),
                        *slot,
                        unfinished.filter(|_| *slot == newest),
                    )
                    .await?
                {
                    Some(bucket) => candles.extend(bucket),
                    None => incomplete = incomplete.or(Some(*slot)),
                }
            }
            candles.sort_by_key(|c| c.open_time);
            let held: Vec<i64> = candles.iter().map(|c| c.open_time).collect();
            let missing = closed
                .iter()
                .copied()
                .find(|s| held.binary_search(s).is_err() && partial.binary_search(s).is_err())
                .into_iter()
                .chain(incomplete)
                .min();
            let missing = missing.as_ref();
            let fetch = missing.map(|m| (*m).max(cursor)).and_then(|from| {
                let to = match (query.start_time, closed.last()) {
                    // The first rows from startTime: as far as the range may reach.
                    (Some(_), _) => query.end_time.map_or(current, |end| {
                        (interval.open_time_containing(end) + len).min(current)
                    }),
                    (None, Some(last)) => last + len,
                    (None, None) => from,
                };
                (from < to).then_some((from, to))
            });
            let Some((from, to)) = fetch else {
                let closed = klines_json(&candles, notation);
                let reaches_forming = slots.last() == Some(&current);
                let whole = match (&forming, reaches_forming) {
                    (Some(forming), true) => {
                        let bucket = self
                            .forming_bucket(&snapshot, position, interval, &base, &forming.candle)
                            .await?;
                        with_last_row(&closed, &bucket, notation)
                    }
                    _ => closed.clone(),
                };
                if let Some(key) = poll.filter(|_| missing.is_none()) {
                    let answer = PollAnswer {
                        closed,
                        reaches_forming,
                        forming_version,
                        whole: whole.clone(),
                    };
                    inner.polls.put(key, answer);
                }
                return Ok(Some(whole));
            };
            // SYMBOLS=*: one request of the interval, not 30,000 minutes per contract.
            if inner.writer.is_none() || pages >= MAX_PAGES || (hub.seeded() && *interval != base) {
                return Ok(None);
            }
            let limit = ((to - from) / base.millis()).clamp(1, PAGE);
            let page = self
                .fetch_page(&symbol, from, to - 1, usize::try_from(limit).unwrap_or(1))
                .await?;
            cursor = page.last().map_or(to, |c| c.open_time + base.millis());
            pages += 1;
        }
    }

    /// The open times of the rows `query` selects, oldest first, up to the bucket
    /// forming at `current`: from `startTime` the first `limit` (over spans the
    /// exchange has no candles in), else the `limit` ending at `endTime` or at `newest`
    /// (the newest candle there is); and those of them partly in such a span (a
    /// listing's first bucket), which Binance answers with the candles there are.
    fn slots(
        &self,
        symbol: &str,
        interval: &Interval,
        query: &KlinesQuery,
        current: i64,
        newest: i64,
    ) -> (Vec<i64>, Vec<i64>) {
        let len = interval.millis();
        let at_or_after = |t: i64| {
            let open = interval.open_time_containing(t);
            if open < t { open + len } else { open }
        };
        let last = query.end_time.map_or(current, |end| {
            interval.open_time_containing(end).min(current)
        });
        let cover = |slot: i64| self.inner.fetches.empty_cover(symbol, slot, slot + len);
        let (mut slots, mut partial) = (Vec::new(), Vec::new());
        let mut take = |slot: i64, slots: &mut Vec<i64>| match cover(slot) {
            Some(true) => false,
            Some(false) => {
                partial.push(slot);
                slots.push(slot);
                true
            }
            None => {
                slots.push(slot);
                true
            }
        };
        match query.start_time {
            Some(start) => {
                let mut slot = at_or_after(start);
                while slot <= last && slots.len() < query.limit {
                    if !take(slot, &mut slots) {
                        let skip_to = self
                            .inner
                            .fetches
                            .empty_within(symbol, slot, slot + len)
                            .map_or(slot + len, |(_, to)| interval.open_time_containing(to));
                        slot = skip_to.max(slot + len);
                        continue;
                    }
                    slot += len;
                }
            }
            // The `limit` newest rows the exchange has ending at `endTime` or now, as
            // Binance answers them: spans it has no candles in (a halt, after a
            // delisting) are passed over, not answered as fewer rows.
            None => {
                let mut slot = query.end_time.map_or(newest, |_| last);
                while slot >= 0 && slots.len() < query.limit {
                    if !take(slot, &mut slots) {
                        let skip_to = self
                            .inner
                            .fetches
                            .empty_within(symbol, slot, slot + len)
                            .map_or(slot - len, |(from, _)| at_or_after(from) - len);
                        slot = skip_to.min(slot - len);
                        continue;
                    }
                    slot -= len;
                }
                slots.reverse();
                partial.reverse();
            }
        }
        (slots, partial)
    }

    /// The bucket of `interval` opened at `open`, part of which the exchange has no
    /// candles in, or (with `until`, ms since the epoch) whose base candles from
    /// `until` on have not come yet: `Some` once every other base candle is held
    /// (`Some(None)` when there is none), `None` while some are missing.
    async fn partial_bucket(
        &self,
        snapshot: &Snapshot,
        position: usize,
        (interval, base): (&Interval, &Interval),
        open: i64,
        until: Option<i64>,
    ) -> Result<Option<Option<Candle>>, BinanceError> {
        let symbol = &self.inner.reader.hub().symbols()[position];
        let end = until.map_or(open + interval.millis(), |until| {
            until.min(open + interval.millis())
        });
        let parts = self
            .read(snapshot, position, base, open, open + interval.millis())
            .await?;
        let mut held = parts.iter().map(|c| c.open_time).peekable();
        let mut minute = open;
        while minute < end {
            let here = held.next_if_eq(&minute).is_some();
            let empty = self
                .inner
                .fetches
                .empty_cover(symbol, minute, minute + base.millis())
                == Some(true);
            if !here && !empty {
                return Ok(None);
            }
            minute += base.millis();
        }
        Ok(Some(
            (!parts.is_empty()).then(|| aggregate(interval, open, &parts)),
        ))
    }

    /// Whole candles of `interval` opened in `[from, to)` through the read path.
    async fn read(
        &self,
        snapshot: &Snapshot,
        position: usize,
        interval: &Interval,
        from: i64,
        to: i64,
    ) -> Result<Vec<Candle>, BinanceError> {
        let reader = &self.inner.reader;
        let stream = reader
            .range_of(snapshot, position, interval, from, to, Admission::Wait)
            .await
            .map_err(|_| BinanceError::Unavailable)?;
        stream
            .try_collect()
            .await
            .map_err(|_| BinanceError::Unavailable)
    }

    /// The forming base candle of the coin at `position`, unless the window already
    /// holds it closed or it is older than the minute before `now`.
    fn forming(
        &self,
        position: usize,
        snapshot: &Snapshot,
        base: &Interval,
        now: i64,
    ) -> Option<Forming> {
        let at = slot(self.inner.reader.hub().intervals().len(), 0, position);
        let frame = self.inner.forming.borrow().coins.get(at)?.clone()?;
        let candle = frame.candle();
        let closed = snapshot.frame(0, position).newest_open_time;
        let recent = candle.open_time >= base.open_time_containing(now) - base.millis();
        (recent && closed.is_none_or(|closed| candle.open_time > closed)).then(|| Forming {
            candle: candle.clone(),
            version: frame.version,
        })
    }

    /// The bucket of `interval` that `forming` (a base candle) belongs to, so far:
    /// its closed base candles, read through the read path, and `forming`.
    async fn forming_bucket(
        &self,
        snapshot: &Snapshot,
        position: usize,
        interval: &Interval,
        base: &Interval,
        forming: &Candle,
    ) -> Result<Candle, BinanceError> {
        if interval == base {
            return Ok(forming.clone());
        }
        let open = interval.open_time_containing(forming.open_time);
        let mut parts = self
            .read(snapshot, position, base, open, forming.open_time)
            .await?;
        parts.push(forming.clone());
        Ok(aggregate(interval, open, &parts))
    }
}
