//! Persistence of closed candles: the [`CandleStore`] trait and its MongoDB and
//! embedded SQLite backends, the [`StoreWriter`] queue that keeps the ingest path
//! from ever waiting on the database, and the change-stream [`Follower`] through
//! which replicas see what any ingester wrote.

mod changes;
mod follow;
mod mongo;
mod sqlite;
mod uri;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::candle::Candle;

pub use changes::{CandleChanges, Change, ResumeToken};
pub use follow::{Follower, heartbeat};
pub use mongo::{DriverError, Heartbeat, MongoStore};
pub use sqlite::{SQLITE_FILE, SqliteStore};
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

    /// Up to `limit` candles opened before `before` (ms since the epoch, UTC;
    /// `None`: up to the newest), newest first.
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

/// Where candles are kept, from `MONGO_URI`, `MONGO_DATABASE`, `MONGO_COLLECTION`
/// and `DATA_DIR`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// `None` selects the embedded SQLite store.
    pub mongo_uri: Option<MongoUri>,
    pub mongo_database: String,
    pub mongo_collection: String,
    /// Where the embedded store keeps its file.
    pub data_dir: PathBuf,
    /// Batches of candles that may wait for the store before new ones are dropped
    /// (and later recovered by a gap repair).
    pub write_queue_batches: usize,
}

/// The opened store: MongoDB (whose change stream replicas follow) or SQLite.
#[derive(Clone)]
pub enum StoreBackend {
    Mongo(MongoStore),
    Sqlite(SqliteStore),
}

impl StoreBackend {
    /// Opens the configured store: MongoDB when `MONGO_URI` is set, else SQLite.
    ///
    /// # Errors
    /// [`StoreError`] when MongoDB cannot be reached within the driver's server
    /// selection timeout, or the SQLite file cannot be created.
    pub async fn open(options: &StoreOptions) -> Result<Self, StoreError> {
        Ok(match &options.mongo_uri {
            Some(uri) => {
                let store =
                    MongoStore::connect(uri, &options.mongo_database, &options.mongo_collection)
                        .await?;
                tracing::info!(uri = %uri, database = %options.mongo_database, collection = %options.mongo_collection, "using MongoDB store");
                Self::Mongo(store)
            }
            None => {
                let store = SqliteStore::open(&options.data_dir)?;
                tracing::info!(
                    path = %options.data_dir.join(SQLITE_FILE).display(),
                    "MONGO_URI is not set: using the embedded SQLite store"
                );
                Self::Sqlite(store)
            }
        })
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
