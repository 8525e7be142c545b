//! `candlecast backfill`: fills the store with every closed base candle of a range
//! from Binance's REST API (`GET /fapi/v1/klines`), fetching only what the store
//! lacks (`plan.rs`), paced under the exchange's request-weight limit, each page
//! upserted before the next request (`fetch.rs`), with bars or log lines on the way
//! (`progress.rs`) and a report before and after (`report.rs`).
//!
//! It writes to the store directly, not through the service's write queue, so a
//! failure is seen and reported; upserts keyed by (symbol, interval, open time)
//! make it safe beside a running service on the same database.

mod args;
mod command;
mod fetch;
mod plan;
mod progress;
mod report;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use args::{BackfillArgs, SymbolList};
pub use command::command;
pub use progress::{Console, LogLine, LogWriter};

use crate::app::signals::until_cancelled;
use crate::config::{ArgumentError, Config, ConfigError};
use crate::exchange::{
    DEEP_WEIGHT_PER_MINUTE, Pacer, RestClient, RestError, SymbolCheck, check_symbols,
};
use crate::health::UpstreamHealth;
use crate::metrics::Metrics;
use crate::retry::{Backoff, FIRST_RETRY_DELAY};
use crate::store::{CandleStore, Reachable, SQLITE_FILE};
use crate::telemetry::Chain;
use fetch::{Fetcher, Outcome, Tally};
use plan::{Span, SymbolPlan};

/// How long a request or write in flight may finish after a stop signal.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why the backfill did not complete the range. [`BackfillError::exit_code`] is
/// the process's.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// A bad argument (exit code 2).
    #[error(transparent)]
    Argument(#[from] ArgumentError),
    /// A bad setting, a symbol the exchange does not list, credentials MongoDB
    /// refuses (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store cannot be opened, read or written.
    #[error("{0}")]
    Store(String),
    /// The exchange client cannot be built.
    #[error("cannot build the exchange client: {0}")]
    Exchange(String),
    /// A signal stopped it before the range was complete.
    #[error("{}", interrupted(*missing))]
    Interrupted {
        /// Candles still missing, once the plan was made.
        missing: Option<u64>,
    },
    /// Some symbols failed (the exchange refuses them, the store failed).
    #[error("backfill incomplete: {0}")]
    Failed(String),
}

impl BackfillError {
    /// 2 for arguments and configuration, 1 for anything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            BackfillError::Argument(_) | BackfillError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// The request weight a minute the backfill allows itself: half of Binance's 2,400
/// per IP, the same budget as the service's deep history.
pub const WEIGHT_PER_MINUTE: u32 = DEEP_WEIGHT_PER_MINUTE;

/// Fills the configured store with the closed `INTERVAL` candles of `args`' range
/// and symbols, reporting on `console`, until done or `stop` fires (a request or
/// write in flight then gets [`STOP_GRACE`] to finish).
///
/// # Errors
/// [`BackfillError`] when the range is not complete at the end.
pub async fn run(
    config: Config,
    args: BackfillArgs,
    console: Console,
    stop: CancellationToken,
) -> Result<(), BackfillError> {
    let started = Instant::now();
    let (from, to) = args.range(chrono::Utc::now())?;
    let (symbols, symbols_from) = match args.symbols {
        Some(SymbolList(symbols)) => (symbols, "--symbols"),
        None => (config.symbols.clone(), "SYMBOLS"),
    };
    let abort = abort_after_grace(&stop);
    let _abort_at_return = abort.clone().drop_guard();
    // A store or exchange that does not answer before the plan is made must not
    // hold a stop signal: nothing has been fetched yet, so nothing is left to finish.
    let not_started = || BackfillError::Interrupted { missing: None };
    let store = until_cancelled(&stop, open_store(&config))
        .await
        .ok_or_else(not_started)??;
    let pacer = Arc::new(Pacer::new(WEIGHT_PER_MINUTE));
    let rest = RestClient::new(
        &config.exchange.rest_url,
        config.interval.clone(),
        Arc::new(UpstreamHealth::default()),
    )
    .map_err(|err| BackfillError::Exchange(Chain(&err).to_string()))?
    .with_pacer(Arc::clone(&pacer));
    let backoff_max = config.exchange.backoff_max;
    let Some(exchange_now) = exchange_clock(&rest, backoff_max, &stop).await else {
        return Err(not_started());
    };
    pacer.wait(1).await; // exchangeInfo, asked by a client of its own
    until_cancelled(&stop, check_listed(&config, &symbols, symbols_from))
        .await
        .ok_or_else(not_started)??;

    let span = Span::new(&config.interval, from, to, exchange_now);
    let store_name = describe_store(&config);
    console.print(&report::header(
        config.interval.name(),
        &span,
        to,
        &store_name,
    ));
    let mut plans = Vec::with_capacity(symbols.len());
    for symbol in &symbols {
        if stop.is_cancelled() {
            return Err(BackfillError::Interrupted { missing: None });
        }
        let plan = plan::read_plan(store.as_ref(), symbol, &config.interval, span)
            .await
            .map_err(|err| {
                BackfillError::Store(format!("cannot read the store: {}", Chain(&err)))
            })?;
        plans.push(plan);
    }
    console.print(&report::plan(&plans));
    if plans.iter().all(|plan| plan.holes.is_empty()) {
        return Ok(());
    }

    let fetcher = Fetcher {
        rest: &rest,
        store: store.as_ref(),
        interval: &config.interval,
        backoff_max,
        stop: &stop,
        abort: &abort,
    };
    let results = fetch_all(&fetcher, &plans, &console).await;
    console.print(&report::summary(&results, started.elapsed()));
    verdict(&results)
}

/// Fetches every plan's holes at once (the pacer shares the budget among them),
/// with a bar each; returns each plan's outcome, in the plans' order.
async fn fetch_all<'p>(
    fetcher: &Fetcher<'_>,
    plans: &'p [SymbolPlan],
    console: &Console,
) -> Vec<(&'p SymbolPlan, Outcome, Tally)> {
    let pending: Vec<&SymbolPlan> = plans.iter().filter(|p| !p.holes.is_empty()).collect();
    let counts: Vec<(String, u64)> = pending
        .iter()
        .map(|plan| (plan.symbol.clone(), plan.missing()))
        .collect();
    let progress = console.track(&counts);
    let fetching = pending
        .iter()
        .zip(progress.symbols())
        .map(|(plan, bar)| async move {
            let (outcome, tally) = fetcher.fetch(plan, bar).await;
            bar.finish(match outcome {
                Outcome::Complete => "done",
                Outcome::Interrupted => "interrupted",
                _ => "failed",
            });
            (outcome, tally)
        });
    let mut fetched = futures_util::future::join_all(fetching).await.into_iter();
    plans
        .iter()
        .map(|plan| {
            if plan.holes.is_empty() {
                return (plan, Outcome::Complete, Tally::default());
            }
            let (outcome, tally) = fetched.next().expect("one result per plan fetched");
            (plan, outcome, tally)
        })
        .collect()
}

/// Checks `symbols` against the exchange's list, as the service does at startup:
/// one it does not list is an error naming where it came from (`--symbols` or
/// `SYMBOLS`). When the list cannot be read, klines' answers decide.
async fn check_listed(
    config: &Config,
    symbols: &[String],
    from: &'static str,
) -> Result<(), BackfillError> {
    let SymbolCheck::Unlisted(unlisted) =
        check_symbols(&config.exchange, &config.interval, symbols).await
    else {
        return Ok(());
    };
    let reason = format!(
        "the exchange does not list {} (GET /fapi/v1/exchangeInfo); check the spelling, e.g. BTCUSDT or BTCUSDT_260626",
        unlisted.join(", ")
    );
    Err(match from {
        "--symbols" => ArgumentError::new(from, reason).into(),
        _ => ConfigError::new(from, reason).into(),
    })
}

fn interrupted(missing: Option<u64>) -> String {
    match missing {
        None => "interrupted before anything was fetched".to_owned(),
        Some(missing) => format!(
            "interrupted before completion, {missing} candles still missing; what was \
             fetched is stored: run the same command again to continue"
        ),
    }
}

/// A token that fires [`STOP_GRACE`] after `stop` does.
fn abort_after_grace(stop: &CancellationToken) -> CancellationToken {
    let abort = CancellationToken::new();
    let (stop, fire) = (stop.clone(), abort.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {
                tokio::time::sleep(STOP_GRACE).await;
                fire.cancel();
            }
            _ = fire.cancelled() => {}
        }
    });
    abort
}

/// Opens the configured store as the service does (MongoDB refusing the
/// credentials is a configuration error); one that does not answer is a failure:
/// nothing could be written.
async fn open_store(config: &Config) -> Result<Arc<dyn CandleStore>, BackfillError> {
    let (backend, reachable) = crate::app::open_store(config, &Metrics::new())
        .await
        .map_err(|err| match err {
            crate::StartError::Config(err) => BackfillError::Config(err),
            err => BackfillError::Store(Chain(&err).to_string()),
        })?;
    if reachable == Reachable::No {
        return Err(BackfillError::Store(format!(
            "MongoDB at {} does not answer; nothing was fetched",
            describe_store(config)
        )));
    }
    Ok(backend.candles())
}

/// The store as the report names it: the MongoDB URI with its password as `***`,
/// or the embedded store's file.
fn describe_store(config: &Config) -> String {
    let store = &config.store;
    match &store.mongo_uri {
        Some(uri) => format!(
            "MongoDB {uri} ({}.{})",
            store.mongo_database, store.mongo_collection
        ),
        None => format!(
            "embedded SQLite {}",
            store.data_dir.join(SQLITE_FILE).display()
        ),
    }
}

/// The exchange's clock (`GET /fapi/v1/time`), which decides what has closed; asked
/// again with backoff until it answers, or `None` once `stop` fires.
async fn exchange_clock(
    rest: &RestClient,
    backoff_max: Duration,
    stop: &CancellationToken,
) -> Option<i64> {
    let mut backoff = Backoff::new(FIRST_RETRY_DELAY, backoff_max);
    loop {
        let err: RestError = tokio::select! {
            answered = rest.server_time() => match answered {
                Ok(now) => return Some(now),
                Err(err) => err,
            },
            _ = stop.cancelled() => return None,
        };
        let wait = err.retry_after().unwrap_or_else(|| backoff.next_delay());
        warn!(error = %Chain(&err), retry_in = ?wait, "cannot read the exchange's clock");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// Ok when every symbol is complete; otherwise why not, failures first.
fn verdict(results: &[(&SymbolPlan, Outcome, Tally)]) -> Result<(), BackfillError> {
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(plan, outcome, _)| match outcome {
            Outcome::Refused(why) => Some(format!("the exchange refuses {}: {why}", plan.symbol)),
            Outcome::StoreFailed(why) => Some(format!(
                "{}: the store did not take a page: {why}",
                plan.symbol
            )),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        return Err(BackfillError::Failed(failed.join("; ")));
    }
    let missing: u64 = results
        .iter()
        .filter(|(_, outcome, _)| *outcome == Outcome::Interrupted)
        .map(|(plan, _, tally)| plan.missing() - tally.stored - tally.unavailable)
        .sum();
    if results
        .iter()
        .any(|(_, outcome, _)| *outcome == Outcome::Interrupted)
    {
        return Err(BackfillError::Interrupted {
            missing: Some(missing),
        });
    }
    Ok(())
}
