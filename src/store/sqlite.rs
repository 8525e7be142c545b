//! The embedded backend: candles in one SQLite file under `DATA_DIR`, with the
//! same fields and the same key as the MongoDB documents.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;

use futures_util::StreamExt;

use super::{CandleStore, CandleStream, StoreError};
use crate::candle::Candle;

/// Candles in a SQLite file, for running without MongoDB. Same fields, same key.
#[derive(Clone)]
pub struct SqliteStore {
    /// Writes go through this connection.
    connection: Arc<Mutex<rusqlite::Connection>>,
    /// Reads have their own (WAL lets them run beside a write), so a history
    /// request never queues behind the writer, nor the writer behind it.
    reader: Arc<Mutex<rusqlite::Connection>>,
    path: Arc<PathBuf>,
    /// Rows whose values are not a candle's (written by hand): skipped, counted.
    bad_rows: Counter,
}

/// The file name of the embedded store inside `DATA_DIR`.
pub const SQLITE_FILE: &str = "candlecast.sqlite3";

impl SqliteStore {
    /// Counts skipped rows into `counter` (the service's metric) from now on.
    pub fn count_bad_rows_in(mut self, counter: Counter) -> Self {
        self.bad_rows = counter;
        self
    }

    /// Opens (creating if needed) `dir/candlecast.sqlite3`.
    ///
    /// # Errors
    /// [`StoreError::NotWritable`] naming the path and the user id when the
    /// directory or file does not let this user write; [`StoreError::DataDir`] or
    /// [`StoreError::Sqlite`] for anything else.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| match source.kind() {
            std::io::ErrorKind::PermissionDenied => StoreError::not_writable(dir),
            _ => StoreError::DataDir {
                path: dir.to_owned(),
                source,
            },
        })?;
        let path = dir.join(SQLITE_FILE);
        let sqlite = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let connection = rusqlite::Connection::open(&path).map_err(|source| {
            if is_permission(&source) || !writable(dir) {
                StoreError::not_writable(dir)
            } else {
                sqlite(source)
            }
        })?;
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
            .map_err(|source| {
                if is_permission(&source) {
                    StoreError::not_writable(&path)
                } else {
                    sqlite(source)
                }
            })?;
        // A file this user can read but not write opens read-only: say so now, with
        // the fix; the service still serves, and readiness fails once writes do.
        if connection.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            tracing::error!(error = %crate::telemetry::Chain(&StoreError::not_writable(&path)), "the embedded store is read-only; candles are served but not kept");
        }
        let reader = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        reader
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        Ok(Self {
            reader: Arc::new(Mutex::new(reader)),
            connection: Arc::new(Mutex::new(connection)),
            path: Arc::new(path),
            bad_rows: Counter::default(),
        })
    }

    /// Runs blocking SQLite work off the async threads, on the write connection.
    async fn with_connection<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.run_on(Arc::clone(&self.connection), work).await
    }

    /// Runs a read on the read connection, giving up after [`super::READ_TIMEOUT`].
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(
            super::READ_TIMEOUT,
            self.run_on(Arc::clone(&self.reader), work),
        )
        .await
        .map_err(|_| StoreError::Timeout {
            operation: "read",
            timeout: super::READ_TIMEOUT,
        })?
    }

    async fn run_on<T: Send + 'static>(
        &self,
        connection: Arc<Mutex<rusqlite::Connection>>,
        work: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let path = Arc::clone(&self.path);
        tokio::task::spawn_blocking(move || {
            let mut connection = connection
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&mut connection)
        })
        .await
        .map_err(StoreError::Worker)?
        .map_err(|source| StoreError::Sqlite {
            path: path.as_ref().clone(),
            source,
        })
    }
}

#[async_trait]
impl CandleStore for SqliteStore {
    fn range(&self, symbol: &str, interval: &str, from: i64, to: i64) -> CandleStream {
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        let path = Arc::clone(&self.path);
        let bad_rows = self.bad_rows.clone();
        let query = (symbol.to_owned(), interval.to_owned(), from, to);
        tokio::task::spawn_blocking(move || {
            if let Err(source) = send_range(&path, query, &sender, &bad_rows) {
                let path = path.as_ref().clone();
                let _ = sender.blocking_send(Err(StoreError::Sqlite { path, source }));
            }
        });
        let batches = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|batch| (batch, receiver))
        });
        Box::pin(batches.flat_map(|batch| {
            futures_util::stream::iter(match batch {
                Ok(candles) => candles.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(err) => vec![Err(err)],
            })
        }))
    }

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
        self.read(|connection| connection.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    async fn oldest_open_time(
        &self,
        symbol: &str,
        interval: &str,
    ) -> Result<Option<i64>, StoreError> {
        let (symbol, interval) = (symbol.to_owned(), interval.to_owned());
        self.read(move |connection| {
            connection.query_row(
                "SELECT MIN(open_time) FROM candles WHERE symbol = ?1 AND interval = ?2",
                rusqlite::params![symbol, interval],
                |row| row.get::<_, Option<i64>>(0),
            )
        })
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
        let bad_rows = self.bad_rows.clone();
        self.read(move |connection| {
            let mut statement = connection.prepare_cached(
                "SELECT symbol, interval, open_time, close_time, open, high, low, close, volume,
                        quote_volume, taker_buy_volume, taker_buy_quote_volume, trades
                 FROM candles WHERE symbol = ?1 AND interval = ?2 AND open_time < ?4
                 ORDER BY open_time DESC LIMIT ?3",
            )?;
            let rows = statement.query_map(
                rusqlite::params![symbol, interval, limit, before],
                candle_from_row,
            )?;
            // A row that does not read as a candle is skipped, not fatal.
            let (candles, bad): (Vec<_>, Vec<_>) = rows.partition(Result::is_ok);
            if let Some(Err(err)) = bad.first() {
                bad_rows.inc_by(bad.len() as u64);
                tracing::warn!(rows = bad.len(), error = %err, "skipping rows that are not candles");
            }
            Ok(candles.into_iter().flatten().collect())
        })
        .await
    }
}

/// The columns every candle query selects, in [`candle_from_row`]'s order.
const CANDLE_COLUMNS: &str = "symbol, interval, open_time, close_time, open, high, low, close, \
     volume, quote_volume, taker_buy_volume, taker_buy_quote_volume, trades";

/// A row of [`CANDLE_COLUMNS`] as a candle.
fn candle_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Candle> {
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
}

/// Reads `[from, to)` oldest first on a connection of its own (WAL lets it read
/// beside the service's), sending batches until the receiver goes away.
fn send_range(
    path: &Path,
    (symbol, interval, from, to): (String, String, i64, i64),
    batches: &tokio::sync::mpsc::Sender<Result<Vec<Candle>, StoreError>>,
    bad_rows: &Counter,
) -> rusqlite::Result<()> {
    let connection = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(std::time::Duration::from_secs(5))?;
    let mut statement = connection.prepare(&format!(
        "SELECT {CANDLE_COLUMNS} FROM candles
         WHERE symbol = ?1 AND interval = ?2 AND open_time >= ?3 AND open_time < ?4
         ORDER BY open_time"
    ))?;
    let rows = statement.query_map(
        rusqlite::params![symbol, interval, from, to],
        candle_from_row,
    )?;
    let mut batch = Vec::with_capacity(RANGE_BATCH);
    for row in rows {
        match row {
            Ok(candle) => batch.push(candle),
            Err(_) => {
                bad_rows.inc();
            }
        }
        if batch.len() == RANGE_BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(RANGE_BATCH));
            if batches.blocking_send(Ok(full)).is_err() {
                return Ok(()); // the reader is gone
            }
        }
    }
    if !batch.is_empty() {
        let _ = batches.blocking_send(Ok(batch));
    }
    Ok(())
}

/// Candles per batch of a range read.
const RANGE_BATCH: usize = 1000;

/// Whether SQLite failed for want of permission (or of a writable file).
fn is_permission(err: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode;
    matches!(
        err.sqlite_error_code(),
        Some(ErrorCode::PermissionDenied | ErrorCode::ReadOnly | ErrorCode::CannotOpen)
    )
}

/// Whether this user may create files in `dir`.
fn writable(dir: &Path) -> bool {
    let probe = dir.join(".candlecast-write-probe");
    let created = std::fs::File::create(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    created
}
