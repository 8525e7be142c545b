//! Persistence of closed candles: the [`CandleStore`] trait, its MongoDB and embedded
//! SQLite implementations, and the [`StoreWriter`] queue that keeps the ingest path
//! from ever waiting on the database.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::{self, Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::candle::Candle;
use crate::config::MongoUri;
use crate::telemetry::Counters;
use crate::upstream::{Backoff, FIRST_RETRY_DELAY};

/// A store error, already safe to log (no connection-string secrets).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(String);

/// Where closed candles are kept. Every write is an idempotent upsert keyed by
/// `(symbol, interval, open_time)`.
#[async_trait]
pub trait CandleStore: Send + Sync {
    /// Inserts or replaces each candle.
    async fn upsert(&self, candles: &[Candle]) -> Result<(), StoreError>;

    /// Up to `limit` candles of `symbol` at `interval`, newest first.
    async fn latest(
        &self,
        symbol: &str,
        interval: &str,
        limit: usize,
    ) -> Result<Vec<Candle>, StoreError> {
        self.page(symbol, interval, limit, None).await
    }

    /// Up to `limit` candles opened before `before` (epoch ms; `None`: up to the
    /// newest), newest first.
    async fn page(
        &self,
        symbol: &str,
        interval: &str,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<Candle>, StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The DESIGN.md §4 document.
#[derive(Debug, Serialize, Deserialize)]
struct CandleDocument {
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

/// Upserts of one batch sent to MongoDB at once.
const MONGO_WRITES_IN_FLIGHT: usize = 16;

/// Candles in a MongoDB collection, one document per closed candle.
#[derive(Clone)]
pub struct MongoStore {
    collection: Collection<CandleDocument>,
    /// `{collection}_ingesters`: one heartbeat document per running ingester.
    heartbeats: Collection<Document>,
    uri: MongoUri,
}

/// The freshest ingester heartbeat: when it was written and when that ingester last
/// had data from the exchange (epoch ms; 0 for never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub seen_ms: i64,
    pub last_data_ms: i64,
}

impl MongoStore {
    /// Connects and ensures the unique index exists; fails if the server cannot be
    /// reached within the driver's server-selection timeout.
    pub async fn connect(
        uri: &MongoUri,
        database: &str,
        collection: &str,
    ) -> Result<Self, StoreError> {
        let scrub = |err: mongodb::error::Error| StoreError(uri.scrub(&err.to_string()));
        let mut options = ClientOptions::parse(uri.expose()).await.map_err(scrub)?;
        options
            .app_name
            .get_or_insert_with(|| "candlecast".to_owned());
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(10));
        let client = Client::with_options(options).map_err(scrub)?;
        let store = Self {
            collection: client.database(database).collection(collection),
            heartbeats: client
                .database(database)
                .collection(&format!("{collection}_ingesters")),
            uri: uri.clone(),
        };
        store
            .collection
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
            .map_err(scrub)?;
        Ok(store)
    }

    /// Opens a change stream of written candles, resuming after `token` when given.
    /// Fails on a server without change streams (a standalone mongod).
    pub async fn watch(&self, token: Option<ResumeToken>) -> Result<CandleChanges, StoreError> {
        let written = [
            "insert",
            "update",
            "replace",
            "drop",
            "dropDatabase",
            "rename",
            "invalidate",
        ];
        let stream = self
            .collection
            .watch()
            .pipeline([doc! {"$match": {"operationType": {"$in": written.to_vec()}}}])
            .full_document(mongodb::options::FullDocumentType::UpdateLookup)
            .resume_after(token)
            .await
            .map_err(|err| self.error(err))?;
        Ok(CandleChanges {
            stream,
            uri: self.uri.clone(),
        })
    }

    /// Records that ingester `id` is alive and last had exchange data at `last_data_ms`.
    pub async fn beat(&self, id: &str, last_data_ms: i64) -> Result<(), StoreError> {
        let now = bson::DateTime::now();
        let update =
            doc! {"$set": {"seen": now, "last_data": bson::DateTime::from_millis(last_data_ms)}};
        self.heartbeats
            .update_one(doc! {"_id": id}, update)
            .upsert(true)
            .await
            .map(drop)
            .map_err(|err| self.error(err))
    }

    /// The most recent heartbeat of any ingester.
    pub async fn freshest_heartbeat(&self) -> Result<Option<Heartbeat>, StoreError> {
        let newest = self.heartbeats.find_one(doc! {}).sort(doc! {"seen": -1});
        let document = tokio::time::timeout(Duration::from_secs(2), newest)
            .await
            .map_err(|_| StoreError("MongoDB did not answer within 2 s".into()))?
            .map_err(|err| self.error(err))?;
        Ok(document.map(|d| Heartbeat {
            seen_ms: d.get_datetime("seen").map_or(0, |t| t.timestamp_millis()),
            last_data_ms: d
                .get_datetime("last_data")
                .map_or(0, |t| t.timestamp_millis()),
        }))
    }

    fn error(&self, err: mongodb::error::Error) -> StoreError {
        StoreError(self.uri.scrub(&err.to_string()))
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
            .map_err(|err| self.error(err))
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
                doc! {"$lt": bson::DateTime::from_millis(before)},
            );
        }
        let cursor = self
            .collection
            .find(filter)
            .sort(doc! {"open_time": -1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(|err| self.error(err))?;
        let documents: Vec<CandleDocument> =
            cursor.try_collect().await.map_err(|err| self.error(err))?;
        Ok(documents.into_iter().map(Candle::from).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let admin = self.collection.client().database("admin");
        let ping = admin.run_command(doc! {"ping": 1});
        match tokio::time::timeout(Duration::from_secs(2), ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(self.error(err)),
            Err(_) => Err(StoreError(
                "MongoDB did not answer a ping within 2 s".into(),
            )),
        }
    }
}

pub use mongodb::change_stream::event::ResumeToken;

/// What happened to the candle collection.
#[derive(Debug)]
pub enum Change {
    /// A candle was inserted or replaced.
    Written(Candle),
    /// The collection or database went away: the stream cannot go on.
    Reset,
}

/// The candle collection's change stream.
pub struct CandleChanges {
    stream: mongodb::change_stream::ChangeStream<
        mongodb::change_stream::event::ChangeStreamEvent<CandleDocument>,
    >,
    uri: MongoUri,
}

impl CandleChanges {
    /// The next change; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Result<Change, StoreError>> {
        use mongodb::change_stream::event::OperationType;
        loop {
            let event = match self.stream.next().await? {
                Ok(event) => event,
                Err(err) => return Some(Err(StoreError(self.uri.scrub(&err.to_string())))),
            };
            match event.operation_type {
                OperationType::Insert | OperationType::Update | OperationType::Replace => {
                    if let Some(document) = event.full_document {
                        return Some(Ok(Change::Written(document.into())));
                    }
                    // An update whose document is already gone: nothing to show.
                }
                OperationType::Drop
                | OperationType::DropDatabase
                | OperationType::Rename
                | OperationType::Invalidate => {
                    return Some(Ok(Change::Reset));
                }
                _ => {}
            }
        }
    }

    /// Where to resume after the last change returned.
    pub fn resume_token(&self) -> Option<ResumeToken> {
        self.stream.resume_token()
    }
}

/// Candles in a SQLite file, for running without MongoDB. Same fields, same key.
#[derive(Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<rusqlite::Connection>>,
}

/// The file name of the embedded store inside `DATA_DIR`.
pub const SQLITE_FILE: &str = "candlecast.sqlite3";

impl SqliteStore {
    /// Opens (creating if needed) `dir/candlecast.sqlite3`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|err| {
            StoreError(format!(
                "cannot create data directory {}: {err}",
                dir.display()
            ))
        })?;
        let path = dir.join(SQLITE_FILE);
        let sqlite = |err: rusqlite::Error| StoreError(format!("{}: {err}", path.display()));
        let connection = rusqlite::Connection::open(&path).map_err(sqlite)?;
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA busy_timeout = 5000;
                 CREATE TABLE IF NOT EXISTS candles (
                     symbol TEXT NOT NULL,
                     interval TEXT NOT NULL,
                     open_time INTEGER NOT NULL,
                     close_time INTEGER NOT NULL,
                     open REAL NOT NULL,
                     high REAL NOT NULL,
                     low REAL NOT NULL,
                     close REAL NOT NULL,
                     volume REAL NOT NULL,
                     quote_volume REAL NOT NULL,
                     taker_buy_volume REAL NOT NULL,
                     taker_buy_quote_volume REAL NOT NULL,
                     trades INTEGER NOT NULL,
                     PRIMARY KEY (symbol, interval, open_time)
                 ) WITHOUT ROWID;",
            )
            .map_err(sqlite)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Runs blocking SQLite work off the async threads.
    async fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            let mut connection = connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&mut connection)
        })
        .await
        .map_err(|err| StoreError(format!("sqlite task failed: {err}")))?
        .map_err(|err| StoreError(format!("sqlite: {err}")))
    }
}

#[async_trait]
impl CandleStore for SqliteStore {
    async fn upsert(&self, candles: &[Candle]) -> Result<(), StoreError> {
        let candles = candles.to_vec();
        self.with_connection(move |connection| {
            let transaction = connection.transaction()?;
            {
                let mut statement = transaction.prepare_cached(
                    "INSERT INTO candles (symbol, interval, open_time, close_time, open, high, low, close,
                                          volume, quote_volume, taker_buy_volume, taker_buy_quote_volume, trades)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                     ON CONFLICT (symbol, interval, open_time) DO UPDATE SET
                         close_time = excluded.close_time, open = excluded.open, high = excluded.high,
                         low = excluded.low, close = excluded.close, volume = excluded.volume,
                         quote_volume = excluded.quote_volume, taker_buy_volume = excluded.taker_buy_volume,
                         taker_buy_quote_volume = excluded.taker_buy_quote_volume, trades = excluded.trades",
                )?;
                for c in &candles {
                    statement.execute(rusqlite::params![
                        c.symbol,
                        c.interval,
                        c.open_time,
                        c.close_time,
                        c.open,
                        c.high,
                        c.low,
                        c.close,
                        c.volume,
                        c.quote_volume,
                        c.taker_buy_volume,
                        c.taker_buy_quote_volume,
                        c.trades
                    ])?;
                }
            }
            transaction.commit()
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with_connection(|connection| connection.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    async fn page(
        &self,
        symbol: &str,
        interval: &str,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<Candle>, StoreError> {
        let (symbol, interval) = (symbol.to_owned(), interval.to_owned());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let before = before.unwrap_or(i64::MAX);
        self.with_connection(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT symbol, interval, open_time, close_time, open, high, low, close, volume,
                        quote_volume, taker_buy_volume, taker_buy_quote_volume, trades
                 FROM candles WHERE symbol = ?1 AND interval = ?2 AND open_time < ?4
                 ORDER BY open_time DESC LIMIT ?3",
            )?;
            let rows =
                statement.query_map(rusqlite::params![symbol, interval, limit, before], |row| {
                    Ok(Candle {
                        symbol: row.get(0)?,
                        interval: row.get(1)?,
                        open_time: row.get(2)?,
                        close_time: row.get(3)?,
                        open: row.get(4)?,
                        high: row.get(5)?,
                        low: row.get(6)?,
                        close: row.get(7)?,
                        volume: row.get(8)?,
                        quote_volume: row.get(9)?,
                        taker_buy_volume: row.get(10)?,
                        taker_buy_quote_volume: row.get(11)?,
                        trades: row.get(12)?,
                    })
                })?;
            rows.collect()
        })
        .await
    }
}

/// How many batches of candles may wait for the database by default. A batch is one
/// closed candle from the stream or one page from REST, so at five symbols that is
/// about 13 hours of outage; past it new candles are dropped from the queue (not from
/// clients' windows) and refetched from the exchange once the store writes again.
pub const WRITE_QUEUE_BATCHES: usize = 4096;

/// The sending side of the write queue; cheap to clone, never blocks.
#[derive(Clone)]
pub struct StoreWriter {
    queue: mpsc::Sender<Vec<Candle>>,
    counters: Arc<Counters>,
    overflowed: Arc<AtomicBool>,
    lost_candles: Arc<Notify>,
}

impl StoreWriter {
    /// Starts the task that drains the queue (at most `capacity` batches) into
    /// `store`, retrying each batch with backoff until it lands. The task ends when
    /// every `StoreWriter` is dropped and the queue is empty, or, once `cancel` fires,
    /// at the first write that fails.
    pub fn spawn(
        store: Arc<dyn CandleStore>,
        capacity: usize,
        counters: Arc<Counters>,
        cancel: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, mut pending) = mpsc::channel::<Vec<Candle>>(capacity.max(1));
        let writer = Self {
            queue,
            counters: Arc::clone(&counters),
            overflowed: Arc::new(AtomicBool::new(false)),
            lost_candles: Arc::new(Notify::new()),
        };
        let (overflowed, lost_candles) = (
            Arc::clone(&writer.overflowed),
            Arc::clone(&writer.lost_candles),
        );
        let task = tokio::spawn(async move {
            while let Some(batch) = pending.recv().await {
                Counters::sub(&counters.pending_writes, batch.len() as u64);
                let stored = write_with_retry(store.as_ref(), &batch, &counters, &cancel).await;
                // Once the backlog is written, whatever did not fit is fetched again.
                if stored && pending.is_empty() && overflowed.swap(false, Ordering::SeqCst) {
                    lost_candles.notify_one();
                }
            }
        });
        (writer, task)
    }

    /// Queues closed candles for the store without waiting.
    pub fn enqueue(&self, candles: Vec<Candle>) {
        if candles.is_empty() {
            return;
        }
        let count = candles.len() as u64;
        Counters::add(&self.counters.pending_writes, count);
        if let Err(err) = self.queue.try_send(candles) {
            Counters::sub(&self.counters.pending_writes, count);
            Counters::add(&self.counters.dropped_writes, count);
            // Logged once per overflow, not once per candle.
            if !self.overflowed.swap(true, Ordering::SeqCst) {
                tracing::error!(candles = count, reason = %err, "store write queue full; dropping candles until the store catches up, then refetching them");
            }
        }
    }

    /// Notified when the store wrote again after the queue had dropped candles.
    pub fn lost_candles(&self) -> Arc<Notify> {
        Arc::clone(&self.lost_candles)
    }
}

/// Writes `batch`, retrying with backoff; false if it gave up during shutdown.
async fn write_with_retry(
    store: &dyn CandleStore,
    batch: &[Candle],
    counters: &Counters,
    cancel: &CancellationToken,
) -> bool {
    let mut backoff = Backoff::new(FIRST_RETRY_DELAY, Duration::from_secs(30));
    let mut attempt = 1u32;
    loop {
        let started = std::time::Instant::now();
        match store.upsert(batch).await {
            Ok(()) => {
                Counters::add(&counters.stored, batch.len() as u64);
                Counters::observe_write(counters, started.elapsed());
                if attempt > 1 {
                    tracing::info!(
                        candles = batch.len(),
                        attempt,
                        "store write succeeded after retrying"
                    );
                }
                return true;
            }
            Err(err) => {
                Counters::add(&counters.store_errors, 1);
                if cancel.is_cancelled() {
                    Counters::add(&counters.dropped_writes, batch.len() as u64);
                    tracing::error!(candles = batch.len(), error = %err, "store write failed during shutdown; giving up");
                    return false;
                }
                let delay = backoff.next_delay();
                // One line per failed attempt: an outage is visible, and so is its end.
                tracing::warn!(candles = batch.len(), attempt, retry_in = ?delay, error = %err, "store write failed; will retry");
                Counters::add(&counters.store_retries, 1);
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => {}
                }
                attempt += 1;
            }
        }
    }
}
