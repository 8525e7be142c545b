//! candlecast: a persisted, live window of Binance USD-M futures candles, fanned out to
//! any number of websocket clients. `run` wires the parts; see DESIGN.md for the map.

pub mod candle;
pub mod config;
pub mod follow;
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

use crate::config::{Config, ConfigError};
use crate::follow::Follower;
use crate::hub::Hub;
use crate::store::{CandleStore, MongoStore, SqliteStore, StoreWriter};
use crate::telemetry::Counters;
use crate::upstream::Upstream;

/// How long shutdown waits for clients to take their close frames.
const CLIENTS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long shutdown waits for queued candles to reach the store.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The store the service uses, and the MongoDB handle when it is MongoDB (whose
/// change stream a replica can follow).
pub struct Stores {
    pub store: Arc<dyn CandleStore>,
    pub mongo: Option<MongoStore>,
}

/// Opens the configured store: MongoDB when `MONGO_URI` is set, else SQLite.
pub async fn open_store(config: &Config) -> anyhow::Result<Stores> {
    Ok(match &config.mongo_uri {
        Some(uri) => {
            let store = MongoStore::connect(uri, &config.mongo_database, &config.mongo_collection)
                .await
                .with_context(|| format!("cannot open MongoDB store at {uri}"))?;
            info!(uri = %uri, database = %config.mongo_database, collection = %config.mongo_collection, "using MongoDB store");
            Stores {
                store: Arc::new(store.clone()),
                mongo: Some(store),
            }
        }
        None => {
            let store =
                SqliteStore::open(&config.data_dir).context("cannot open the embedded store")?;
            info!(
                path = %config.data_dir.join(store::SQLITE_FILE).display(),
                "MONGO_URI is not set: using the embedded SQLite store"
            );
            Stores {
                store: Arc::new(store),
                mongo: None,
            }
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
    let Stores { store, mongo } = open_store(&config).await?;
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

    // Every replica on MongoDB follows the change stream: a follower's only source,
    // and an ingester's view of what other ingesters write.
    let follower_task = match mongo.clone() {
        Some(mongo) => match mongo.watch(None).await {
            Ok(changes) => {
                let follower = Follower {
                    mongo,
                    store: Arc::clone(&store),
                    hub: hub.clone(),
                    interval: config.interval.name().to_owned(),
                    window_len: config.window_len(),
                    backoff_max: config.upstream_backoff_max,
                    counters: Arc::clone(&counters),
                };
                Some(tokio::spawn(
                    follower
                        .run(Some(changes), cancel.clone())
                        .instrument(info_span!("follow")),
                ))
            }
            Err(err) if !config.ingest => {
                let uri = config
                    .mongo_uri
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                return Err(ConfigError {
                    var: "MONGO_URI",
                    reason: format!(
                        "INGEST=false needs a MongoDB replica set (change streams), but {uri} cannot open one: {err}"
                    ),
                }
                .into());
            }
            Err(err) => {
                warn!(error = %err, "MongoDB has no change streams (standalone?): this ingester serves only what it ingests");
                None
            }
        },
        None => None,
    };

    let ingest = if config.ingest {
        let (writer, writer_task) = StoreWriter::spawn(
            Arc::clone(&store),
            config.write_queue_batches,
            Arc::clone(&counters),
            cancel.clone(),
        );
        let upstream = Arc::new(Upstream::new(
            &config,
            hub.clone(),
            Arc::clone(&store),
            writer,
            Arc::clone(&counters),
        )?);
        if let Some(mongo) = mongo.clone() {
            let every = (config.upstream_stale_after / 2).max(Duration::from_millis(500));
            tokio::spawn(follow::heartbeat(
                mongo,
                Arc::clone(&counters),
                every,
                cancel.clone(),
            ));
        }
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
        Some((upstream_task, writer_task))
    } else {
        info!("INGEST=false: following the candle collection; not connecting to the exchange");
        None
    };

    let address = listener.local_addr()?;
    info!(%address, symbols = ?config.symbols, interval = %config.interval, "serving websocket clients on /");
    let state = http::AppState::new(
        hub,
        store,
        mongo,
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
    if let Some(follower) = follower_task {
        let _ = follower.await;
    }
    if let Some((upstream_task, writer_task)) = ingest {
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
    }
    info!("stopped");
    served.context("http server failed")
}
