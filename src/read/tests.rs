//! The read path's seams on a real SQLite file: candles split between a window
//! smaller than the range, the write queue and the store come back once each, in
//! order; what memory covers is answered with the store broken.

use std::sync::Arc;

use futures_util::StreamExt;

use super::*;
use crate::hub::WindowOptions;
use crate::store::SqliteStore;

const MINUTE: i64 = 60_000;
/// 2025-11-22 06:00 UTC, a multiple of an hour.
const START: i64 = 1_763_791_200_000;

fn minute(index: i64) -> Candle {
    let close = 100.0 + index as f64;
    Candle {
        symbol: "BTCUSDT".into(),
        interval: "1m".into(),
        open_time: START + index * MINUTE,
        close_time: START + (index + 1) * MINUTE - 1,
        open: close - 0.5,
        high: close + 1.0,
        low: close - 1.0,
        close,
        volume: 1.0,
        quote_volume: 2.0,
        taker_buy_volume: 0.5,
        taker_buy_quote_volume: 1.0,
        trades: 3,
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    store: Arc<SqliteStore>,
    hub: Hub,
    queued: Unacknowledged,
    reader: CandleReader,
}

/// Windows of `window` candles at 1m and 5m over an empty SQLite store.
fn fixture(window: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    let hub = Hub::new(
        &["BTCUSDT".to_owned()],
        &[
            Interval::parse("1m").unwrap(),
            Interval::parse("5m").unwrap(),
        ],
        &WindowOptions {
            history_len: window,
            history_max: window,
            time_zone: chrono_tz::Tz::UTC,
            seeded: false,
        },
    );
    let queued = Unacknowledged::default();
    let as_store: Arc<dyn CandleStore> = store.clone();
    Fixture {
        path: dir.path().join(crate::store::SQLITE_FILE),
        _dir: dir,
        reader: CandleReader::new(hub.clone(), queued.clone(), as_store),
        store,
        hub,
        queued,
    }
}

impl Fixture {
    /// 60 minutes accepted as the service does: each into the hub and the queue;
    /// the first `acknowledged` of them written, the rest still queued.
    async fn accept(&self, minutes: i64, acknowledged: i64) -> Vec<Candle> {
        let candles: Vec<Candle> = (0..minutes).map(minute).collect();
        for candle in &candles {
            self.hub.apply(std::slice::from_ref(candle));
        }
        let (written, waiting) = candles.split_at(usize::try_from(acknowledged).unwrap());
        self.store.upsert(written).await.unwrap();
        self.queued.hold(waiting);
        candles
    }

    /// Makes every store read fail, as a database that is gone would.
    fn break_store(&self) {
        rusqlite::Connection::open(&self.path)
            .unwrap()
            .execute_batch("DROP TABLE candles")
            .unwrap();
    }

    async fn latest(&self, interval: usize, count: usize) -> Result<Read, ReadError> {
        let snapshot = self.hub.snapshot();
        self.reader
            .latest(&snapshot, 0, interval, count, None, Admission::Wait)
            .await
    }

    async fn range(&self, interval: usize, from: i64, to: i64) -> Vec<Result<Candle, String>> {
        let snapshot = self.hub.snapshot();
        let stream = self
            .reader
            .range(&snapshot, 0, interval, from, to, Admission::Wait)
            .await
            .map_err(|err| err.to_string())
            .unwrap();
        stream
            .map(|c| c.map_err(|err| err.to_string()))
            .collect()
            .await
    }
}

fn open_times(candles: &[Candle]) -> Vec<i64> {
    candles
        .iter()
        .map(|c| (c.open_time - START) / MINUTE)
        .collect()
}

#[tokio::test]
async fn a_burst_longer_than_the_window_reads_back_whole_across_queue_and_store() {
    let f = fixture(10);
    let candles = f.accept(60, 25).await;
    let read = f.latest(0, 60).await.unwrap();
    assert_eq!(open_times(&read.candles), (0..60).collect::<Vec<_>>());
    assert_eq!(read.candles, candles, "the values as accepted");
    assert_eq!(read.source, Source::Store);

    // Twelve 5-minute buckets: the window's, then buckets of queued and stored minutes.
    let read = f.latest(1, 12).await.unwrap();
    assert_eq!(
        open_times(&read.candles),
        (0..12).map(|b| b * 5).collect::<Vec<_>>()
    );
    let third = &read.candles[2];
    assert_eq!(third.volume, 5.0, "every minute of the bucket summed once");
    assert_eq!((third.open, third.close), (109.5, 114.0));
}

#[tokio::test]
async fn what_memory_covers_is_answered_with_the_store_gone() {
    let f = fixture(4);
    f.accept(60, 25).await;
    f.break_store();
    // The window (5 minutes, 5 buckets) and the queued run behind it (minutes 25 to 54).
    let read = f.latest(0, 35).await.unwrap();
    assert_eq!(open_times(&read.candles), (25..60).collect::<Vec<_>>());
    assert_eq!(read.source, Source::Memory);
    let read = f.latest(1, 7).await.unwrap();
    assert_eq!(
        open_times(&read.candles),
        (5..12).map(|b| b * 5).collect::<Vec<_>>()
    );
    assert_eq!(read.source, Source::Memory);
    let ranged = f.range(0, START + 30 * MINUTE, START + 60 * MINUTE).await;
    assert_eq!(ranged.len(), 30, "{ranged:?}");
    assert!(ranged.iter().all(Result::is_ok));
    // One candle more than memory holds needs the store, which says why not.
    let err = f.latest(0, 36).await.unwrap_err();
    assert!(matches!(err, ReadError::Store(_)), "{err}");
}

#[tokio::test]
async fn a_queued_version_replaces_the_stored_one_once() {
    let f = fixture(5);
    f.accept(30, 30).await;
    let mut corrected = minute(3);
    corrected.close = 1.0;
    f.queued.hold(std::slice::from_ref(&corrected));
    let read = f.latest(0, 30).await.unwrap();
    assert_eq!(open_times(&read.candles), (0..30).collect::<Vec<_>>());
    assert_eq!(read.candles[3].close, 1.0);
    let ranged: Vec<Candle> = f
        .range(0, START, START + 30 * MINUTE)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(open_times(&ranged), (0..30).collect::<Vec<_>>());
    assert_eq!(ranged[3].close, 1.0);
}

#[tokio::test]
async fn a_range_spans_store_queue_and_window_in_whole_buckets() {
    let f = fixture(4);
    let candles = f.accept(60, 20).await;
    let ranged: Vec<Candle> = f
        .range(0, START + 7 * MINUTE, START + 58 * MINUTE)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ranged, candles[7..58]);
    // From 7 to 58: the buckets opened at 10, 15, … 55.
    let buckets: Vec<Candle> = f
        .range(1, START + 7 * MINUTE, START + 58 * MINUTE)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        open_times(&buckets),
        (2..12).map(|b| b * 5).collect::<Vec<_>>()
    );
    let oldest = f.reader.oldest_open_time(0, Admission::Wait).await.unwrap();
    assert_eq!(oldest, Some(START));
}

#[tokio::test]
async fn an_empty_service_reads_nothing_without_error() {
    let f = fixture(10);
    let read = f.latest(1, 5).await.unwrap();
    assert!(read.candles.is_empty());
    assert!(f.range(0, START, START + MINUTE).await.is_empty());
}
