//! What can stop the service from starting, and the checks that say so: the
//! configured symbols against the exchange's list, opening the store, and the
//! first backfill that serving waits for.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, ConfigError};
use crate::exchange::{RestError, SymbolCheck, check_symbols, trading_symbols};
use crate::health::UpstreamHealth;
use crate::metrics::Metrics;
use crate::store::{Reachable, StoreBackend, StoreError};
use crate::telemetry::Chain;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration asks for something the store cannot do (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// MongoDB could not be reached, or its index created.
    #[error("cannot open MongoDB store at {uri}")]
    Mongo {
        /// The `MONGO_URI`, password redacted.
        uri: String,
        #[source]
        source: StoreError,
    },
    /// The embedded store's file could not be opened.
    #[error("cannot open the embedded store")]
    Embedded(#[source] StoreError),
    /// The exchange client could not be built.
    #[error("cannot build the exchange client")]
    Exchange(#[source] RestError),
    /// The listener has no local address.
    #[error("cannot read the listening address")]
    Listener(#[source] std::io::Error),
    /// The stop token fired during start-up: a requested stop, not a failure
    /// ([`crate::app::run_until`] returns `Ok` for it, the binary exits 0).
    #[error("stopped during startup")]
    Stopped,
}

/// The longest REST ban the startup backfill is waited through.
const STARTUP_BAN_PATIENCE: Duration = Duration::from_secs(5);

/// Why the service stopped other than by a shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("candlecast cannot start")]
    Start(#[from] StartError),
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

impl AppError {
    /// The configuration error behind this one, if any: the binary exits with 2.
    pub fn config_error(&self) -> Option<&ConfigError> {
        match self {
            AppError::Start(StartError::Config(err)) => Some(err),
            _ => None,
        }
    }
}

/// The coins to hold at start, in position order: `SYMBOLS` as configured (an
/// ingester checks them, [`check_symbols_listed`]); with `SYMBOLS=*`, the five
/// majors (plain `/` sends them whatever the exchange says) and then every other
/// contract it lists as `TRADING`. When the list cannot be read, the majors alone:
/// the listing task adds the rest once the exchange answers.
pub(super) async fn symbols_at_start(config: &Config) -> Result<Vec<String>, StartError> {
    if !config.follow_all {
        if config.ingest {
            check_symbols_listed(config).await?;
        }
        return Ok(config.symbols.clone());
    }
    let health = Arc::new(UpstreamHealth::default());
    let mut symbols = config.symbols.clone();
    match trading_symbols(&config.exchange, &config.interval, health).await {
        Ok(trading) => {
            symbols.extend(trading.into_iter().filter(|s| !config.symbols.contains(s)));
            info!(
                symbols = symbols.len(),
                "SYMBOLS=*: following every contract the exchange lists as TRADING"
            );
        }
        Err(err) => {
            warn!(error = %Chain(&err), "SYMBOLS=*: cannot read the exchange's list yet; starting with the five majors, the rest follow once it answers");
        }
    }
    Ok(symbols)
}

/// Checks `SYMBOLS` against the exchange's list: one it does not list is a
/// configuration error naming it. When the list cannot be read, startup goes on.
async fn check_symbols_listed(config: &Config) -> Result<(), StartError> {
    if let SymbolCheck::Unlisted(unlisted) =
        check_symbols(&config.exchange, &config.interval, &config.symbols).await
    {
        return Err(ConfigError::new(
                "SYMBOLS",
                format!(
                    "the exchange does not list {} (GET /fapi/v1/exchangeInfo); check the spelling, e.g. BTCUSDT or BTCUSDT_260626",
                    unlisted.join(", ")
                ),
            )
            .into());
    }
    Ok(())
}

/// Opens the configured store, for the service and the backfill command alike.
/// MongoDB refusing the credentials is a configuration error (exit 2), with a hint
/// when `MONGO_URI` came from `.env`.
pub(crate) async fn open_store(
    config: &Config,
    metrics: &Metrics,
) -> Result<(StoreBackend, Reachable), StartError> {
    let (backend, reachable) = StoreBackend::open(&config.store).await.map_err(|source| {
        match &config.store.mongo_uri {
            Some(uri) if source.is_auth_failure() => {
                // Named as the operator set it: MONGO_URI or the alias used.
                let var = config.store.mongo_uri_variable;
                let hint = if config.store.mongo_uri_from_dotenv {
                    format!(
                        "; {var} came from .env, where `$NAME` in an unquoted or double-quoted \
                         value is replaced by a variable: if the password has a `$`, single-quote \
                         the value ({var}='mongodb://user:pa$word@host/')"
                    )
                } else {
                    String::new()
                };
                StartError::Config(ConfigError::new(
                    var,
                    format!(
                        "MongoDB at {uri} refused the credentials ({}){hint}",
                        Chain(&source)
                    ),
                ))
            }
            Some(uri) => StartError::Mongo {
                uri: uri.to_string(),
                source,
            },
            None => StartError::Embedded(source),
        }
    })?;
    Ok((
        backend.count_skipped_in(metrics.skipped_documents.clone()),
        reachable,
    ))
}

/// Waits for the first backfill (`done`), so the first clients get full windows
/// when the exchange answers in time: at most `timeout`, not while REST has banned
/// us (which can last minutes), and not past a cancelled `stop`.
pub(super) async fn wait_for_backfill(
    mut done: oneshot::Receiver<()>,
    timeout: Duration,
    health: &UpstreamHealth,
    stop: &CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = &mut done => break,
            _ = tokio::time::sleep_until(deadline) => {
                warn!(?timeout, "startup backfill still running; serving what is stored");
                break;
            }
            _ = poll.tick() => {
                // A few seconds' Retry-After is waited out; a longer ban is not
                // (Binance's 418s last minutes to days).
                let banned_for = health.rest_ban_remaining().unwrap_or_default();
                if banned_for > STARTUP_BAN_PATIENCE {
                    warn!(?banned_for, "the exchange's REST API banned us; serving what is stored meanwhile");
                    break;
                }
            }
        }
    }
}
