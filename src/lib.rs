//! candlecast: a persisted, live window of Binance USD-M futures candles, fanned out to
//! any number of websocket clients. `run` wires the parts; see DESIGN.md for the map.

pub mod candle;
pub mod config;
pub mod http;
pub mod hub;
pub mod protocol;
pub mod store;
pub mod telemetry;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::config::Config;
use crate::hub::Hub;
use crate::store::{CandleStore, MongoStore, SqliteStore, StoreWriter};
use crate::telemetry::Counters;
use crate::upstream::Upstream;

/// How long shutdown waits for clients to take their close frames.
const CLIENTS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long shutdown waits for queued candles to reach the store.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the configured store: MongoDB when `MONGO_URI` is set, else SQLite.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn CandleStore>> {
    Ok(match &config.mongo_uri {
        Some(uri) => {
            let store = MongoStore::connect(uri, &config.mongo_database, &config.mongo_collection)
                .await
                .with_context(|| format!("cannot open MongoDB store at {uri}"))?;
            info!(uri = %uri, database = %config.mongo_database, collection = %config.mongo_collection, "using MongoDB store");
            Arc::new(store)
        }
        None => {
            let store =
                SqliteStore::open(&config.data_dir).context("cannot open the embedded store")?;
            info!(
                path = %config.data_dir.join(store::SQLITE_FILE).display(),
                "MONGO_URI is not set: using the embedded SQLite store"
            );
            Arc::new(store)
        }
    })
}

/// Runs the service on `listener` until `shutdown` completes, then closes clients,
/// stops the upstream and flushes queued writes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_counters(config, listener, shutdown, Arc::new(Counters::default())).await
}

/// [`run`], counting into `counters`, which the caller can read meanwhile.
pub async fn run_with_counters(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let store = open_store(&config).await?;

    let hub = Hub::new(
        &config.symbols,
        config.interval.name(),
        config.history_len,
        config.window_len(),
        config.time_zone,
    );
    for symbol in &config.symbols {
        let candles = store
            .latest(symbol, config.interval.name(), config.window_len() + 1)
            .await
            .with_context(|| format!("cannot load the stored window of {symbol}"))?;
        hub.apply(&candles);
    }

    let cancel = CancellationToken::new();
    let signal = cancel.clone();
    tokio::spawn(async move {
        shutdown.await;
        info!("shutdown requested");
        signal.cancel();
    });

    let (writer, writer_task) = StoreWriter::spawn(
        Arc::clone(&store),
        config.write_queue_batches,
        Arc::clone(&counters),
        cancel.clone(),
    );
    let upstream_store = Arc::clone(&store);
    let upstream = Arc::new(Upstream::new(
        &config,
        hub.clone(),
        store,
        writer,
        Arc::clone(&counters),
    )?);
    let (startup_done, startup_backfill) = oneshot::channel();
    let upstream_task = tokio::spawn(
        upstream
            .run(cancel.clone(), startup_done)
            .instrument(info_span!("upstream")),
    );

    // Serve full windows from the first connection when the exchange answers in time.
    tokio::select! {
        _ = cancel.cancelled() => {}
        waited = tokio::time::timeout(config.startup_backfill_timeout, startup_backfill) => {
            if waited.is_err() {
                warn!(timeout = ?config.startup_backfill_timeout, "startup backfill still running; serving what is stored");
            }
        }
    }

    let address = listener.local_addr()?;
    info!(%address, symbols = ?config.symbols, interval = %config.interval, "serving websocket clients on /");
    let state = http::AppState::new(
        hub,
        upstream_store,
        cancel.clone(),
        Arc::clone(&counters),
        http::ClientPolicy::from_config(&config),
    );
    let clients = state.clients.clone();
    let app = http::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.clone().cancelled_owned())
        .await;
    cancel.cancel();

    // Shutdown fits in 10 s: clients get their 1001 close frames, the upstream
    // closes its socket, then queued candles are flushed to the store.
    clients.close();
    if tokio::time::timeout(CLIENTS_TIMEOUT, clients.wait())
        .await
        .is_err()
    {
        warn!(
            clients = clients.len(),
            "some clients did not close in time"
        );
    }
    if let Err(err) = upstream_task.await {
        warn!(error = %err, "upstream task failed");
    }
    // The upstream held the last queue senders; the writer now drains and ends.
    if tokio::time::timeout(FLUSH_TIMEOUT, writer_task)
        .await
        .is_err()
    {
        warn!(
            pending = Counters::get(&counters.pending_writes),
            "store writes still pending at exit"
        );
    }
    info!("stopped");
    served.context("http server failed")
}
