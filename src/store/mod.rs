//! Persistence of closed candles: the [`CandleStore`] trait and its MongoDB and
//! embedded SQLite backends, the [`StoreWriter`] queue that keeps the ingest path
//! from ever waiting on the database, and the change stream ([`CandleChanges`])
//! through which replicas see what any ingester wrote.

mod changes;
mod disk;
mod heartbeat;
mod mongo;
mod sqlite;
mod unacked;
mod uri;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::candle::Candle;

pub use changes::{CandleChanges, Change, ResumeToken};
pub use disk::{Platform, ephemeral_reason, persistent_mount_covers};
pub use heartbeat::{IngesterReport, heartbeat, ingesters_unhealthy, watch_ingesters};
pub use mongo::clock::follow_database_clock;
pub use mongo::{DriverError, MongoStore, READ_TIMEOUT};
pub use sqlite::{SQLITE_FILE, SqliteStore};
pub use unacked::{BatchId, Unacknowledged};
pub use uri::{InvalidMongoUri, MongoUri};
pub use writer::{StoreWriter, WRITE_QUEUE_BATCHES};

/// Why the store could not do what was asked. Safe to log: no variant carries a
/// connection-string secret. Log it with [`crate::telemetry::Chain`] to show its cause.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The MongoDB driver failed.
    #[error("MongoDB {operation} failed")]
    Mongo {
        /// What was being done: `connect`, `upsert`, `find`, `watch`, …
        operation: &'static str,
        #[source]
        source: DriverError,
    },
    /// MongoDB did not answer in time.
    #[error("MongoDB did not answer {operation} within {timeout:?}")]
    Timeout {
        operation: &'static str,
        timeout: Duration,
    },
    /// The embedded store's directory could not be created.
    #[error("cannot create the data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The embedded store's directory or file does not let this user write.
    #[error(
        "{} is not writable by user id {uid}: permission denied; give it to that user \
         (e.g. chown -R {uid} on the volume) or set DATA_DIR to a directory it can write",
        path.display()
    )]
    NotWritable { path: PathBuf, uid: String },
    /// SQLite failed on the embedded store's file.
    #[error("the embedded store {} failed", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The blocking task running a SQLite call panicked or was cancelled.
    #[error("the embedded store's worker task failed")]
    Worker(#[source] tokio::task::JoinError),
}

impl StoreError {
    /// [`StoreError::NotWritable`] for `path`, with this process's user id.
    pub fn not_writable(path: &std::path::Path) -> Self {
        StoreError::NotWritable {
            path: path.to_owned(),
            uid: effective_uid(),
        }
    }

    /// Whether MongoDB refused the credentials: a configuration error, not an
    /// outage to wait out.
    pub fn is_auth_failure(&self) -> bool {
        use mongodb::error::ErrorKind;
        match self {
            StoreError::Mongo { source, .. } => match source.driver().kind.as_ref() {
                ErrorKind::Authentication { .. } => true,
                // 18: AuthenticationFailed, 13: Unauthorized.
                ErrorKind::Command(err) => err.code == 18 || err.code == 13,
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether MongoDB said it has no change streams (a standalone server answers
    /// `IllegalOperation`, code 40573): a fact about the deployment, not a passing
    /// failure.
    pub fn change_streams_unsupported(&self) -> bool {
        use mongodb::error::ErrorKind;
        let StoreError::Mongo { source, .. } = self else {
            return false;
        };
        match source.driver().kind.as_ref() {
            ErrorKind::Command(err) => err.code == 40573,
            _ => false,
        }
    }
}

/// How far past now a stored candle may open and still be read (ms): room for a
/// clock a few minutes off, none for a candle from the far future.
pub const STORED_FUTURE_TOLERANCE_MS: i64 = 10 * 60_000;

/// Stored candles read one at a time, oldest first; errors end it.
pub type CandleStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Candle, StoreError>> + Send>>;

/// Where closed candles are kept. Every write is an idempotent upsert keyed by
/// `(symbol, interval, open_time)` (DESIGN.md §4).
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

    /// Up to `limit` candles of `symbol` at `interval`, newest first, leaving out
    /// any opened more than [`STORED_FUTURE_TOLERANCE_MS`] after `now_ms` (ms since
    /// the epoch, UTC): a candle stored with an impossible future open time (a
    /// manual insert, a clock gone wrong) never poses as the newest, which every
    /// window and repair starts from.
    async fn latest_until(
        &self,
        symbol: &str,
        interval: &str,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<Candle>, StoreError> {
        self.page(
            symbol,
            interval,
            limit,
            Some(now_ms + STORED_FUTURE_TOLERANCE_MS),
        )
        .await
    }

    /// Up to `limit` candles opened before `before` (ms since the epoch, UTC;
    /// `None`: up to the newest), newest first.
    async fn page(
        &self,
        symbol: &str,
        interval: &str,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<Candle>, StoreError>;

    /// Every stored candle of `symbol` at `interval` opened in `[from, to)` (ms since
    /// the epoch, UTC), oldest first, read from the database a batch at a time:
    /// memory stays constant however long the range (an export, a backfill's scan).
    fn range(&self, symbol: &str, interval: &str, from: i64, to: i64) -> CandleStream;

    /// The open time (ms since the epoch, UTC) of the oldest stored candle of
    /// `symbol` at `interval`, if any: where the deep history backfill stops.
    async fn oldest_open_time(
        &self,
        symbol: &str,
        interval: &str,
    ) -> Result<Option<i64>, StoreError>;

    /// Checks that the store answers.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Where candles are kept, from `MONGO_URI`, `MONGO_DATABASE`, `MONGO_COLLECTION`
/// and `DATA_DIR`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `None` selects the embedded SQLite store.
    pub mongo_uri: Option<MongoUri>,
    /// The variable `mongo_uri` came from: `MONGO_URI` or one of its aliases
    /// (`MONGO_URL`, `MONGODB_URI`, …), named in the startup line and in errors.
    pub mongo_uri_variable: &'static str,
    /// One line each for the aliases passed over (set, but not to a MongoDB
    /// string), logged as warnings when the store is opened.
    pub mongo_alias_warnings: Vec<String>,
    /// The platform the service runs on, to warn when the embedded store's disk
    /// will not survive a redeploy.
    pub platform: Platform,
    pub mongo_database: String,
    pub mongo_collection: String,
    /// Where the embedded store keeps its file.
    pub data_dir: PathBuf,
    /// Batches of candles that may wait for the store before new ones are dropped
    /// (and later recovered by a gap repair).
    pub write_queue_batches: usize,
    /// Whether the connection string's variable came from `.env` (where `$` is
    /// substituted unless the value is single-quoted): said when MongoDB refuses the
    /// credentials.
    pub mongo_uri_from_dotenv: bool,
}

/// How long startup waits for MongoDB before serving without it.
const STARTUP_PROBE: Duration = Duration::from_secs(3);

/// Whether the store answered when it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachable {
    Yes,
    /// Not now: reads are skipped at startup, writes wait in the queue.
    No,
}

/// Checks every `every` whether `store` answers a ping, for readiness to read
/// without waiting on the database itself.
///
/// `recovered` is notified each time the store answers again after it did not: the
/// exchange client then refetches what the store missed meanwhile.
pub async fn watch_reachability(
    store: Arc<dyn CandleStore>,
    health: Arc<crate::health::StoreHealth>,
    every: Duration,
    recovered: Option<Arc<tokio::sync::Notify>>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut ticks = crate::retry::Every::new(every, cancel);
    while ticks.next().await {
        let Some(answered) = ticks.unless_stopped(store.ping()).await else {
            break;
        };
        match answered {
            Ok(()) => {
                if health.set_reachable(true) {
                    tracing::info!("the store answers again");
                    if let Some(recovered) = &recovered {
                        recovered.notify_one();
                    }
                }
            }
            Err(err) => {
                if health.set_reachable(false) {
                    tracing::warn!(error = %crate::telemetry::Chain(&err), "the store does not answer");
                }
            }
        }
    }
}

/// The opened store: MongoDB (whose change stream replicas follow) or SQLite.
#[derive(Clone)]
pub enum StoreBackend {
    Mongo(MongoStore),
    Sqlite(SqliteStore),
}

impl StoreBackend {
    /// Opens the configured store: MongoDB when `MONGO_URI` is set, else SQLite.
    /// MongoDB need not be reachable: its writes wait in the queue.
    ///
    /// # Errors
    /// [`StoreError`] when MongoDB refuses the credentials or the connection string
    /// cannot be resolved, or the SQLite file cannot be created or opened.
    pub async fn open(options: &StoreOptions) -> Result<(Self, Reachable), StoreError> {
        let mut reachable = Reachable::Yes;
        for warning in &options.mongo_alias_warnings {
            tracing::warn!("{warning}");
        }
        let backend = match &options.mongo_uri {
            Some(uri) => {
                let store =
                    MongoStore::open(uri, &options.mongo_database, &options.mongo_collection)
                        .await?;
                let variable = options.mongo_uri_variable;
                tracing::info!(variable, uri = %uri, database = %options.mongo_database, collection = %options.mongo_collection, "using MongoDB store (connection string from {variable})");
                // A database that is away is waited for (writes queue meanwhile);
                // one that refuses the credentials is a configuration error.
                match tokio::time::timeout(STARTUP_PROBE, store.ensure_index()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) if err.is_auth_failure() => return Err(err),
                    Ok(Err(err)) => {
                        reachable = Reachable::No;
                        tracing::warn!(uri = %uri, error = %crate::telemetry::Chain(&err), "MongoDB is not reachable; serving from the exchange and queueing writes until it is");
                    }
                    Err(_) => {
                        reachable = Reachable::No;
                        tracing::warn!(uri = %uri, timeout = ?STARTUP_PROBE, "MongoDB is not reachable (no answer); serving from the exchange and queueing writes until it is");
                    }
                }
                Self::Mongo(store)
            }
            None => {
                let store = SqliteStore::open(&options.data_dir)?;
                tracing::info!(
                    path = %options.data_dir.join(SQLITE_FILE).display(),
                    "MONGO_URI is not set: using the embedded SQLite store"
                );
                disk::warn_if_ephemeral(&options.platform, &options.data_dir);
                Self::Sqlite(store)
            }
        };
        Ok((backend, reachable))
    }

    /// Counts documents that do not read as candles into `counter`.
    pub fn count_skipped_in(self, counter: prometheus_client::metrics::counter::Counter) -> Self {
        match self {
            Self::Mongo(store) => Self::Mongo(store.count_bad_documents_in(counter)),
            Self::Sqlite(store) => Self::Sqlite(store.count_bad_rows_in(counter)),
        }
    }

    /// The store as the trait every reader and the writer use.
    pub fn candles(&self) -> Arc<dyn CandleStore> {
        match self {
            Self::Mongo(store) => Arc::new(store.clone()),
            Self::Sqlite(store) => Arc::new(store.clone()),
        }
    }

    /// The MongoDB handle, for change streams and heartbeats.
    pub fn mongo(&self) -> Option<&MongoStore> {
        match self {
            Self::Mongo(store) => Some(store),
            Self::Sqlite(_) => None,
        }
    }
}

/// This process's effective user id, as text ("unknown" off Linux): `/proc/self`
/// belongs to it, which spares an `unsafe` call for one number in one message.
fn effective_uid() -> String {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(meta) = std::fs::metadata("/proc/self") {
            return meta.uid().to_string();
        }
    }
    "unknown".to_owned()
}
