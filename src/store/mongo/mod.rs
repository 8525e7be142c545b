//! The MongoDB backend: one document per closed candle (DESIGN.md §4), upserted
//! under a unique index, plus the ingesters' heartbeat documents.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::{self, Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

pub(super) mod clock;
mod range;

use super::{CandleStore, CandleStream, MongoUri, StoreError};
use crate::candle::Candle;

/// A MongoDB driver error whose text has the connection string's password removed.
/// The driver's own error is kept for inspection but not offered as a `source`: its
/// causes are not redacted.
pub struct DriverError {
    redacted: String,
    driver: mongodb::error::Error,
}

impl DriverError {
    pub(super) fn new(driver: mongodb::error::Error, uri: &MongoUri) -> Self {
        Self {
            redacted: uri.scrub(&driver.to_string()),
            driver,
        }
    }

    /// The driver's error, to ask what kind it is (never to print it).
    pub fn driver(&self) -> &mongodb::error::Error {
        &self.driver
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DriverError({})", self.redacted)
    }
}

impl std::error::Error for DriverError {}

/// The DESIGN.md §4 document.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CandleDocument {
    symbol: String,
    interval: String,
    open_time: bson::DateTime,
    close_time: bson::DateTime,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    quote_volume: f64,
    taker_buy_volume: f64,
    taker_buy_quote_volume: f64,
    trades: i64,
}

impl From<&Candle> for CandleDocument {
    fn from(c: &Candle) -> Self {
        Self {
            symbol: c.symbol.clone(),
            interval: c.interval.clone(),
            open_time: bson::DateTime::from_millis(c.open_time),
            close_time: bson::DateTime::from_millis(c.close_time),
            open: c.open,
            high: c.high,
            low: c.low,
            close: c.close,
            volume: c.volume,
            quote_volume: c.quote_volume,
            taker_buy_volume: c.taker_buy_volume,
            taker_buy_quote_volume: c.taker_buy_quote_volume,
            trades: c.trades,
        }
    }
}

impl From<CandleDocument> for Candle {
    fn from(d: CandleDocument) -> Self {
        Self {
            symbol: d.symbol,
            interval: d.interval,
            open_time: d.open_time.timestamp_millis(),
            close_time: d.close_time.timestamp_millis(),
            open: d.open,
            high: d.high,
            low: d.low,
            close: d.close,
            volume: d.volume,
            quote_volume: d.quote_volume,
            taker_buy_volume: d.taker_buy_volume,
            taker_buy_quote_volume: d.taker_buy_quote_volume,
            trades: d.trades,
        }
    }
}

/// 9999-12-31T23:59:59.999Z: servers that keep dates as calendar dates refuse later
/// ones, so an open-ended range stops here.
pub(super) const LAST_DATE_MS: i64 = 253_402_300_799_999;

/// How long a read may wait for MongoDB; a read that takes longer fails (the history
/// API answers 503, a repair tries again later) rather than hang a caller.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Upserts of one batch sent to MongoDB at once.
const MONGO_WRITES_IN_FLIGHT: usize = 16;

/// Candles in a MongoDB collection, one document per closed candle.
#[derive(Clone)]
pub struct MongoStore {
    pub(super) collection: Collection<CandleDocument>,
    /// Documents that did not parse as candles (a manual insert, another version's
    /// schema): counted here, the first one logged.
    bad_documents: Counter,
    logged_bad_document: Arc<AtomicBool>,
    /// Set once the unique index exists.
    index: Arc<tokio::sync::OnceCell<()>>,
    /// `{collection}_ingesters`: one heartbeat document per running ingester.
    pub(super) heartbeats: Collection<Document>,
    pub(super) uri: MongoUri,
}

impl MongoStore {
    /// Connects and ensures the unique index exists; fails if the server cannot be
    /// reached within the driver's server-selection timeout.
    pub async fn connect(
        uri: &MongoUri,
        database: &str,
        collection: &str,
    ) -> Result<Self, StoreError> {
        let store = Self::open(uri, database, collection).await?;
        store.ensure_index().await?;
        Ok(store)
    }

    /// A handle that has not talked to the server yet: the unique index is created
    /// before the first write ([`MongoStore::ensure_index`]), so the service can
    /// start while the database is away.
    ///
    /// # Errors
    /// [`StoreError::Mongo`] when the options cannot be read (a `mongodb+srv://`
    /// name that does not resolve).
    pub async fn open(
        uri: &MongoUri,
        database: &str,
        collection: &str,
    ) -> Result<Self, StoreError> {
        let failed = |err| StoreError::Mongo {
            operation: "connect",
            source: DriverError::new(err, uri),
        };
        let mut options = ClientOptions::parse(uri.expose()).await.map_err(failed)?;
        options
            .app_name
            .get_or_insert_with(|| "candlecast".to_owned());
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(10));
        let client = Client::with_options(options).map_err(failed)?;
        Ok(Self {
            collection: client.database(database).collection(collection),
            heartbeats: client
                .database(database)
                .collection(&format!("{collection}_ingesters")),
            uri: uri.clone(),
            bad_documents: Counter::default(),
            logged_bad_document: Arc::new(AtomicBool::new(false)),
            index: Arc::new(tokio::sync::OnceCell::new()),
        })
    }

    /// Creates the unique index on `(symbol, interval, open_time)` once; every write
    /// waits for it, since without it two writers could insert the same candle twice.
    ///
    /// # Errors
    /// [`StoreError::Mongo`] when the server cannot be reached or refuses.
    pub async fn ensure_index(&self) -> Result<(), StoreError> {
        self.index
            .get_or_try_init(|| async {
                self.collection
                    .create_index(
                        IndexModel::builder()
                            .keys(doc! {"symbol": 1, "interval": 1, "open_time": 1})
                            .options(
                                IndexOptions::builder()
                                    .unique(true)
                                    .name("symbol_interval_open_time".to_owned())
                                    .build(),
                            )
                            .build(),
                    )
                    .await
                    .map(drop)
                    .map_err(|err| self.error("create index", err))
            })
            .await
            .copied()
    }

    /// Counts skipped documents into `counter` (the service's metric) from now on.
    pub fn count_bad_documents_in(mut self, counter: Counter) -> Self {
        self.bad_documents = counter;
        self
    }

    /// The candle in `document`, or `None` (counted; the first one logged) when it
    /// is not one.
    pub(super) fn candle_from(&self, document: Document) -> Option<Candle> {
        match bson::from_document::<CandleDocument>(document.clone()) {
            Ok(parsed) => Some(parsed.into()),
            Err(err) => {
                self.bad_documents.inc();
                if !self.logged_bad_document.swap(true, Ordering::Relaxed) {
                    let id = document
                        .get("_id")
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    tracing::warn!(id, error = %err, "skipping a document that is not a candle (logged once; see store_skipped_documents)");
                }
                None
            }
        }
    }

    pub(super) fn error(&self, operation: &'static str, err: mongodb::error::Error) -> StoreError {
        StoreError::Mongo {
            operation,
            source: DriverError::new(err, &self.uri),
        }
    }

    async fn upsert_one(&self, candle: &Candle) -> Result<(), mongodb::error::Error> {
        let filter = doc! {
            "symbol": &candle.symbol,
            "interval": &candle.interval,
            "open_time": bson::DateTime::from_millis(candle.open_time),
        };
        let fields: Document = bson::to_document(&CandleDocument::from(candle))?;
        let update = doc! {"$set": fields};
        match self
            .collection
            .update_one(filter.clone(), update.clone())
            .upsert(true)
            .await
        {
            // Two concurrent upserts of a new key can both try to insert; the loser
            // gets a duplicate-key error and succeeds as an update on retry.
            Err(err) if is_duplicate_key(&err) => self
                .collection
                .update_one(filter, update)
                .upsert(true)
                .await
                .map(drop),
            other => other.map(drop),
        }
    }
}

fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        _ => false,
    }
}

#[async_trait]
impl CandleStore for MongoStore {
    async fn upsert(&self, candles: &[Candle]) -> Result<(), StoreError> {
        self.ensure_index().await?;
        // Independent keys: a backfill page of hundreds of candles goes out as
        // concurrent upserts over the driver's pool instead of one round trip each.
        let writes: Vec<_> = candles
            .iter()
            .map(|candle| self.upsert_one(candle))
            .collect();
        futures_util::stream::iter(writes)
            .buffer_unordered(MONGO_WRITES_IN_FLIGHT)
            .try_collect::<()>()
            .await
            .map_err(|err| self.error("upsert", err))
    }

    async fn page(
        &self,
        symbol: &str,
        interval: &str,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<Candle>, StoreError> {
        let mut filter = doc! {"symbol": symbol, "interval": interval};
        if let Some(before) = before {
            filter.insert(
                "open_time",
                doc! {"$lt": bson::DateTime::from_millis(before.clamp(0, LAST_DATE_MS))},
            );
        }
        // Read as plain documents: one that does not parse is skipped, not fatal.
        let read = async {
            let cursor = self
                .collection
                .clone_with_type::<Document>()
                .find(filter)
                .sort(doc! {"open_time": -1})
                .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                .await?;
            cursor.try_collect::<Vec<Document>>().await
        };
        let documents = tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .map_err(|_| StoreError::Timeout {
                operation: "find",
                timeout: READ_TIMEOUT,
            })?
            .map_err(|err| self.error("find", err))?;
        Ok(documents
            .into_iter()
            .filter_map(|document| self.candle_from(document))
            .collect())
    }

    fn range(&self, symbol: &str, interval: &str, from: i64, to: i64) -> CandleStream {
        self.range_cursor(symbol, interval, from, to)
    }

    async fn oldest_open_time(
        &self,
        symbol: &str,
        interval: &str,
    ) -> Result<Option<i64>, StoreError> {
        let documents = self.collection.clone_with_type::<Document>();
        let find = documents
            .find_one(doc! {"symbol": symbol, "interval": interval})
            .sort(doc! {"open_time": 1})
            .projection(doc! {"open_time": 1, "_id": 0});
        let found = tokio::time::timeout(READ_TIMEOUT, find)
            .await
            .map_err(|_| StoreError::Timeout {
                operation: "find",
                timeout: READ_TIMEOUT,
            })?
            .map_err(|err| self.error("find", err))?;
        Ok(found.and_then(|document| {
            document
                .get_datetime("open_time")
                .ok()
                .map(|t| t.timestamp_millis())
        }))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let admin = self.collection.client().database("admin");
        let ping = admin.run_command(doc! {"ping": 1});
        match tokio::time::timeout(Duration::from_secs(2), ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(self.error("ping", err)),
            Err(_) => Err(StoreError::Timeout {
                operation: "ping",
                timeout: Duration::from_secs(2),
            }),
        }
    }
}
