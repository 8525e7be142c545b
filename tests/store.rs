//! One contract, two stores: MongoDB (on a real wire server) and the embedded SQLite
//! file must behave the same.

mod common;

use std::sync::Arc;

use candlecast::candle::Candle;
use candlecast::store::MongoUri;
use candlecast::store::{CandleStore, MongoStore, SqliteStore};
use common::*;
use futures_util::TryStreamExt;
use mongodb::bson::Document;

const T0: i64 = 1_763_791_500_000;

fn candle(symbol: &str, interval: &str, minute: i64, close: f64) -> Candle {
    Candle {
        symbol: symbol.into(),
        interval: interval.into(),
        open_time: T0 + minute * MINUTE,
        close_time: T0 + (minute + 1) * MINUTE - 1,
        open: close - 1.0,
        high: close + 2.0,
        low: close - 3.0,
        close,
        volume: 12.5,
        quote_volume: 12.5 * close,
        taker_buy_volume: 6.25,
        taker_buy_quote_volume: 6.25 * close,
        trades: 4_000_000_000, // beyond i32
    }
}

/// Opens a second, independent store on the same data (a restart or another replica).
type Reopen = Box<dyn Fn() -> futures_util::future::BoxFuture<'static, Arc<dyn CandleStore>>>;

async fn store_contract(store: Arc<dyn CandleStore>, reopen: Reopen) {
    assert!(store.latest("BTCUSDT", "1m", 10).await.unwrap().is_empty());

    let first: Vec<Candle> = (0..5)
        .map(|m| candle("BTCUSDT", "1m", m, 100.0 + m as f64))
        .collect();
    store.upsert(&first).await.unwrap();
    store
        .upsert(&[
            candle("ETHUSDT", "1m", 2, 5.0),
            candle("BTCUSDT", "5m", 0, 7.0),
        ])
        .await
        .unwrap();

    let latest = store.latest("BTCUSDT", "1m", 3).await.unwrap();
    assert_eq!(
        latest,
        vec![first[4].clone(), first[3].clone(), first[2].clone()],
        "newest first, limited"
    );

    // The same candles again, and one corrected: still one record per minute.
    store.upsert(&first).await.unwrap();
    let corrected = candle("BTCUSDT", "1m", 1, 99.5);
    store
        .upsert(std::slice::from_ref(&corrected))
        .await
        .unwrap();
    let all = store.latest("BTCUSDT", "1m", 100).await.unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[3], corrected);

    // Paging: `before` is an exclusive open time, newest first.
    let before = first[3].open_time;
    assert_eq!(
        store.page("BTCUSDT", "1m", 2, Some(before)).await.unwrap(),
        vec![first[2].clone(), corrected.clone()]
    );
    assert!(
        store
            .page("BTCUSDT", "1m", 10, Some(first[0].open_time))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.page("BTCUSDT", "1m", 10, None).await.unwrap(), all);
    store.ping().await.unwrap();

    // Symbols and intervals are kept apart.
    assert_eq!(
        store.latest("ETHUSDT", "1m", 100).await.unwrap(),
        vec![candle("ETHUSDT", "1m", 2, 5.0)]
    );
    assert_eq!(
        store.latest("BTCUSDT", "5m", 100).await.unwrap(),
        vec![candle("BTCUSDT", "5m", 0, 7.0)]
    );

    // A second store on the same data sees it, and concurrent writers of the same
    // candles (two replicas) still leave one record each.
    let other = reopen().await;
    assert_eq!(other.latest("BTCUSDT", "1m", 100).await.unwrap(), all);
    let burst: Vec<Candle> = (10..40)
        .map(|m| candle("SOLUSDT", "1m", m, m as f64))
        .collect();
    let (a, b) = tokio::join!(store.upsert(&burst), other.upsert(&burst));
    a.unwrap();
    b.unwrap();
    let stored = store.latest("SOLUSDT", "1m", 1000).await.unwrap();
    assert_eq!(stored.len(), burst.len());
    assert_eq!(stored.into_iter().rev().collect::<Vec<_>>(), burst);

    // Ranges: [from, to), oldest first, across more than one read batch.
    let many: Vec<Candle> = (0..2500)
        .map(|m| candle("XRPUSDT", "1m", m, 1.0 + m as f64))
        .collect();
    for chunk in many.chunks(500) {
        store.upsert(chunk).await.unwrap();
    }
    let read: Vec<Candle> = store
        .range("XRPUSDT", "1m", many[3].open_time, many[2203].open_time)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(read, many[3..2203], "[from, to), oldest first");
    let none: Vec<Candle> = store
        .range("XRPUSDT", "5m", many[0].open_time, i64::MAX)
        .try_collect()
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(
        store.oldest_open_time("XRPUSDT", "1m").await.unwrap(),
        Some(many[0].open_time)
    );
    assert_eq!(store.oldest_open_time("XRPUSDT", "5m").await.unwrap(), None);
}

#[tokio::test]
async fn mongo_store_keeps_the_contract() {
    let uri = MongoUri::parse(&mongo_test_uri()).unwrap();
    let database = unique_database("candlecast_store");
    let store = MongoStore::connect(&uri, &database, "candles")
        .await
        .unwrap();
    let reopen: Reopen = {
        let (uri, database) = (uri.clone(), database.clone());
        Box::new(move || {
            let (uri, database) = (uri.clone(), database.clone());
            Box::pin(async move {
                Arc::new(
                    MongoStore::connect(&uri, &database, "candles")
                        .await
                        .unwrap(),
                ) as Arc<dyn CandleStore>
            })
        })
    };
    store_contract(Arc::new(store), reopen).await;
}

#[tokio::test]
async fn mongo_store_has_the_unique_index_and_documented_types() {
    let uri = MongoUri::parse(&mongo_test_uri()).unwrap();
    let database = unique_database("candlecast_index");
    let store = MongoStore::connect(&uri, &database, "prices")
        .await
        .unwrap();
    store
        .upsert(&[candle("BTCUSDT", "1m", 0, 1.5)])
        .await
        .unwrap();

    let client = mongodb::Client::with_uri_str(uri.expose()).await.unwrap();
    let collection = client.database(&database).collection::<Document>("prices");
    let indexes: Vec<_> = collection
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let unique = indexes
        .iter()
        .find(|index| index.options.as_ref().and_then(|o| o.unique) == Some(true))
        .expect("a unique index");
    let keys: Vec<(&String, i32)> = unique
        .keys
        .iter()
        .map(|(k, v)| (k, v.as_i32().unwrap_or(0)))
        .collect();
    assert_eq!(
        keys,
        [
            (&"symbol".to_string(), 1),
            (&"interval".to_string(), 1),
            (&"open_time".to_string(), 1)
        ]
    );

    // The index itself rejects a second document for the same candle.
    let document = collection.find_one(Document::new()).await.unwrap().unwrap();
    let mut copy = document.clone();
    copy.remove("_id");
    assert!(
        collection.insert_one(copy).await.is_err(),
        "a duplicate insert must fail"
    );

    assert!(document.get_datetime("open_time").is_ok());
    assert!(document.get_datetime("close_time").is_ok());
    assert_eq!(document.get_i64("trades").unwrap(), 4_000_000_000);
    assert_eq!(document.get_f64("close").unwrap(), 1.5);
    assert_eq!(document.get_str("symbol").unwrap(), "BTCUSDT");
    assert_eq!(document.get_str("interval").unwrap(), "1m");
}

#[tokio::test]
async fn sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/data");
    let store = SqliteStore::open(&path).unwrap();
    let reopen: Reopen = {
        let path = path.clone();
        Box::new(move || {
            let path = path.clone();
            Box::pin(
                async move { Arc::new(SqliteStore::open(&path).unwrap()) as Arc<dyn CandleStore> },
            )
        })
    };
    store_contract(Arc::new(store), reopen).await;
    assert!(path.join(candlecast::store::SQLITE_FILE).is_file());
}

#[tokio::test]
async fn sqlite_store_reports_an_unusable_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = SqliteStore::open(&file)
        .err()
        .expect("a file is not a data directory");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}
