//! Configuration, read once from the environment (after `.env`): the only place that
//! looks at environment variables. It reads and validates each variable into the
//! options struct of the area that owns it, nothing more; a bad value stops startup
//! naming the variable.

pub mod dotenv;
mod mongo_env;
mod parse;

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use url::Url;

use crate::candle::Interval;
use crate::exchange::ExchangeOptions;
use crate::http::ProxyProtocol;
use crate::http::{CorsOrigins, FeedOptions};
use crate::hub::WindowOptions;
use crate::store::{Platform, StoreOptions, WRITE_QUEUE_BATCHES};
use crate::telemetry::{LogFormat, LogOptions};
pub use mongo_env::{MONGO_URI_VARIABLES, chosen_variable};
use parse::{
    Expected, Source, default_intervals, expected, parse_intervals, parse_name, parse_port,
    parse_seconds, parse_symbols, parse_url,
};

/// A configuration value that could not be used; `Display` is the one-line message
/// printed before the process exits with code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault, e.g. `PORT`.
    pub var: &'static str,
    /// What was wrong and what was expected.
    pub reason: String,
}

impl ConfigError {
    /// An error naming `var`.
    pub fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self {
            var,
            reason: reason.into(),
        }
    }
}

/// A command-line argument that cannot be used: one line naming it, as
/// [`ConfigError`] names a variable, printed before the process exits with code 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid argument: {arg}: {reason}")]
pub struct ArgumentError {
    /// The argument at fault, e.g. `--from`.
    pub arg: String,
    /// What was wrong and what was expected.
    pub reason: String,
}

impl ArgumentError {
    /// An error naming `arg`.
    pub fn new(arg: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            arg: arg.into(),
            reason: reason.into(),
        }
    }
}

/// A comma-separated list of symbols read as `SYMBOLS` is: upper-cased, each listed
/// once, none with a character no symbol has. The error says what was expected.
pub fn parse_symbol_list(raw: &str) -> Result<Vec<String>, String> {
    parse_symbols(raw).map_err(|Expected(reason)| reason)
}

/// Everything the service needs to know, parsed and validated, grouped by the area
/// that uses it.
#[derive(Debug, Clone)]
pub struct Config {
    /// `PORT`: the listening port.
    pub port: u16,
    /// `BIND_ADDR`: the listening address; `::` (the default) is dual stack.
    pub bind_addr: IpAddr,
    /// `PROXY_PROTOCOL`: whether connections start with a PROXY protocol header
    /// (from a load balancer) giving the client's address.
    pub proxy_protocol: ProxyProtocol,
    /// `CORS_ALLOW_ORIGINS`: which origins' pages may read the HTTP API.
    pub cors: CorsOrigins,
    /// `INGEST`: connect to the exchange and write (true), or only follow the
    /// database's change stream (false; needs `MONGO_URI`).
    pub ingest: bool,
    /// `SYMBOLS`: upper case, in the order clients receive them; with `SYMBOLS=*`,
    /// the five majors plain `/` keeps sending ([`MAJORS`]).
    pub symbols: Vec<String>,
    /// `SYMBOLS=*`: follow every contract the exchange lists as `TRADING`.
    pub follow_all: bool,
    /// `SYMBOLS_REFRESH_SECS`: how often the exchange's list is read again when
    /// following all of it (default 300).
    pub symbols_refresh: Duration,
    /// `INTERVAL`: the kline interval ingested, the base every other is built from.
    pub interval: Interval,
    /// `INTERVALS`: the intervals served, shortest first; the first is `INTERVAL`.
    pub intervals: Vec<Interval>,
    /// `HISTORY_LEN`, `HISTORY_MAX`, `TIME_ZONE`.
    pub windows: WindowOptions,
    /// `MONGO_URI` (or an alias, [`MONGO_URI_VARIABLES`]), `MONGO_DATABASE`,
    /// `MONGO_COLLECTION`, `DATA_DIR`; `RAILWAY_*` for the platform.
    pub store: StoreOptions,
    /// `BINANCE_WS_URL`, `BINANCE_REST_URL`, `UPSTREAM_*`.
    pub exchange: ExchangeOptions,
    /// `CLIENT_SEND_TIMEOUT_SECS`, `CLIENT_PING_SECS`, `MAX_CONNECTIONS`.
    pub feed: FeedOptions,
    /// `RUST_LOG`, `LOG_FORMAT`.
    pub log: LogOptions,
    /// `MIRROR_WEIGHT_PER_MINUTE`: request weight the Binance mirror may spend on
    /// the exchange per minute.
    pub mirror_weight_per_minute: u32,
}

const DEFAULT_SYMBOLS: &str = "BTCUSDT,BNBUSDT,ETHUSDT,SOLUSDT,XRPUSDT";
/// The five majors, in client order: `SYMBOLS`' default, and what plain `/` sends
/// when `SYMBOLS=*` follows the whole exchange.
pub const MAJORS: [&str; 5] = ["BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"];
const DEFAULT_WS_URL: &str = "wss://fstream.binance.com/market/stream";
const DEFAULT_REST_URL: &str = "https://fapi.binance.com";
/// Binance returns at most 1500 klines per request; a window longer than that could
/// not be backfilled in one page and is far beyond what a client message should carry.
const MAX_HISTORY_LEN: usize = 1000;

fn parse_count(raw: &str, min: usize, max: usize) -> Result<usize, Expected> {
    match raw.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ if max == usize::MAX => Err(expected(format!(
            "expected a whole number of at least {min}, got {raw:?}"
        ))),
        _ => Err(expected(format!(
            "expected a whole number from {min} to {max}, got {raw:?}"
        ))),
    }
}

impl Config {
    /// Reads the process environment. Call `dotenvy::dotenv()` first to honour `.env`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first variable that is invalid.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable source; tests pass a map.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first variable that is invalid.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let source = Source(&lookup);
        let seconds = |var, default, max| {
            source.parse_or(var, Duration::from_secs(default), |raw| {
                parse_seconds(raw, 1, max)
            })
        };
        let mongo = mongo_env::choose(&lookup)?;
        let (mongo_uri, mongo_uri_variable) = match mongo.chosen {
            Some((uri, variable)) => (Some(uri), variable),
            None => (None, "MONGO_URI"),
        };
        let interval = source.parse_or(
            "INTERVAL",
            Interval::parse("1m").expect("1m is valid"),
            |raw| Interval::parse(raw).map_err(|err| expected(err.to_string())),
        )?;
        let intervals = source.parse_or("INTERVALS", default_intervals(&interval), |raw| {
            parse_intervals(raw, &interval)
        })?;
        let follow_all = lookup("SYMBOLS").is_some_and(|raw| raw.trim() == "*");
        let config = Self {
            port: source.parse_or("PORT", 8080, parse_port)?,
            bind_addr: source.parse_or("BIND_ADDR", IpAddr::from([0u16; 8]), |raw| {
                IpAddr::from_str(raw).map_err(|_| {
                    expected(format!("expected an IP address such as 0.0.0.0 or ::, got {raw:?}"))
                })
            })?,
            // Set but empty means "no CORS", not "use the default".
            proxy_protocol: source.parse_or("PROXY_PROTOCOL", ProxyProtocol::Off, |raw| {
                ProxyProtocol::parse(raw).map_err(expected)
            })?,
            cors: match lookup("CORS_ALLOW_ORIGINS") {
                None => CorsOrigins::Any,
                Some(raw) => CorsOrigins::parse(&raw)
                    .map_err(|reason| ConfigError::new("CORS_ALLOW_ORIGINS", reason.to_string()))?,
            },
            ingest: source.parse_or("INGEST", true, |raw| match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(expected(format!("expected true or false, got {raw:?}"))),
            })?,
            symbols: if follow_all {
                MAJORS.map(str::to_owned).to_vec()
            } else {
                source.parse_or(
                    "SYMBOLS",
                    parse_symbols(DEFAULT_SYMBOLS).unwrap_or_default(),
                    parse_symbols,
                )?
            },
            follow_all,
            symbols_refresh: seconds("SYMBOLS_REFRESH_SECS", 300, 86_400)?,
            interval,
            intervals,
            windows: WindowOptions {
                history_len: source.parse_or("HISTORY_LEN", 10, |raw| parse_count(raw, 1, MAX_HISTORY_LEN))?,
                history_max: source.parse_or("HISTORY_MAX", 100, |raw| parse_count(raw, 1, MAX_HISTORY_LEN))?,
                time_zone: source.parse_or("TIME_ZONE", Tz::UTC, |raw| {
                    Tz::from_str(raw).map_err(|_| {
                        expected(format!(
                            "unknown time zone {raw:?}; expected an IANA name such as UTC or Europe/Berlin"
                        ))
                    })
                })?,
                seeded: follow_all,
            },
            store: StoreOptions {
                mongo_uri,
                mongo_uri_variable,
                mongo_alias_warnings: mongo.warnings,
                platform: Platform::from_lookup(&lookup),
                mongo_database: source.parse_or("MONGO_DATABASE", "candlecast".to_owned(), parse_name)?,
                mongo_collection: source.parse_or("MONGO_COLLECTION", "candles".to_owned(), parse_name)?,
                data_dir: source.parse_or("DATA_DIR", PathBuf::from("./data"), |raw| Ok(PathBuf::from(raw)))?,
                write_queue_batches: WRITE_QUEUE_BATCHES,
                mongo_uri_from_dotenv: false,
            },
            exchange: ExchangeOptions {
                ws_url: source.parse_or("BINANCE_WS_URL", Url::parse(DEFAULT_WS_URL).expect("valid"), |raw| {
                    parse_url(raw, &["ws", "wss"])
                })?,
                rest_url: source.parse_or("BINANCE_REST_URL", Url::parse(DEFAULT_REST_URL).expect("valid"), |raw| {
                    parse_url(raw, &["http", "https"])
                })?,
                stale_after: seconds("UPSTREAM_STALE_SECS", 30, 3600)?,
                backoff_max: seconds("UPSTREAM_BACKOFF_MAX_SECS", 30, 3600)?,
                max_age: seconds("UPSTREAM_MAX_AGE_SECS", 82_800, 86_000)?,
                startup_backfill_timeout: Duration::from_secs(15),
                streams_per_connection: crate::exchange::MAX_STREAMS_PER_CONNECTION,
            },
            mirror_weight_per_minute: source.parse_or(
                "MIRROR_WEIGHT_PER_MINUTE",
                crate::mirror::DEFAULT_WEIGHT_PER_MINUTE,
                |raw| parse_count(raw, 1, 2400).map(|n| u32::try_from(n).unwrap_or(2400)),
            )?,
            feed: FeedOptions {
                send_timeout: seconds("CLIENT_SEND_TIMEOUT_SECS", 10, 3600)?,
                ping_every: seconds("CLIENT_PING_SECS", 30, 3600)?,
                max_connections: source.parse_or("MAX_CONNECTIONS", 10_000, |raw| parse_count(raw, 1, usize::MAX))?,
                live_interval: source.parse_or("LIVE_INTERVAL_MS", Duration::from_millis(250), |raw| {
                    match raw.parse::<u64>() {
                        Ok(ms) if ms <= 60_000 => Ok(Duration::from_millis(ms)),
                        _ => Err(expected(format!(
                            "expected milliseconds from 0 (every update) to 60000, got {raw:?}"
                        ))),
                    }
                })?,
            },
            log: LogOptions {
                filter: match lookup("RUST_LOG").filter(|raw| !raw.trim().is_empty()) {
                    None => "info".to_owned(),
                    Some(raw) => {
                        tracing_subscriber::EnvFilter::try_new(&raw).map_err(|err| {
                            ConfigError::new(
                                "RUST_LOG",
                                format!("not a valid log filter ({err}), e.g. info or candlecast=debug"),
                            )
                        })?;
                        raw
                    }
                },
                format: source.parse_or("LOG_FORMAT", LogFormat::Pretty, |raw| {
                    match raw.to_ascii_lowercase().as_str() {
                        "pretty" | "text" => Ok(LogFormat::Pretty),
                        "json" => Ok(LogFormat::Json),
                        _ => Err(expected(format!("expected pretty or json, got {raw:?}"))),
                    }
                })?,
            },
        };
        config.check()
    }

    fn check(self) -> Result<Self, ConfigError> {
        if !self.ingest && self.store.mongo_uri.is_none() {
            return Err(ConfigError::new(
                "INGEST",
                "INGEST=false needs MONGO_URI (or an alias such as MONGO_URL): a follower reads the candles ingesters write to MongoDB",
            ));
        }
        Ok(self)
    }

    /// Every setting as `NAME=value`, for the startup log line; the MongoDB password
    /// is shown as `***`.
    pub fn summary(&self) -> String {
        let mongo = self
            .store
            .mongo_uri
            .as_ref()
            .map_or_else(|| "(unset: embedded store)".to_owned(), ToString::to_string);
        let format = match self.log.format {
            LogFormat::Pretty => "pretty",
            LogFormat::Json => "json",
        };
        let exchange = &self.exchange;
        [
            format!("PORT={}", self.port),
            format!("BIND_ADDR={}", self.bind_addr),
            format!("PROXY_PROTOCOL={}", self.proxy_protocol),
            format!("CORS_ALLOW_ORIGINS={}", self.cors),
            format!("INGEST={}", self.ingest),
            // The variable the string came from: MONGO_URI or the alias used.
            format!("{}={mongo}", self.store.mongo_uri_variable),
            format!("MONGO_DATABASE={}", self.store.mongo_database),
            format!("MONGO_COLLECTION={}", self.store.mongo_collection),
            format!("DATA_DIR={}", self.store.data_dir.display()),
            if self.follow_all {
                format!(
                    "SYMBOLS=* SYMBOLS_REFRESH_SECS={}",
                    self.symbols_refresh.as_secs()
                )
            } else {
                format!("SYMBOLS={}", self.symbols.join(","))
            },
            format!("INTERVAL={}", self.interval),
            format!(
                "INTERVALS={}",
                self.intervals
                    .iter()
                    .map(Interval::name)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            format!("HISTORY_LEN={}", self.windows.history_len),
            format!("HISTORY_MAX={}", self.windows.window_len()),
            format!("BINANCE_WS_URL={}", exchange.ws_url),
            format!("BINANCE_REST_URL={}", exchange.rest_url),
            format!("TIME_ZONE={}", self.windows.time_zone),
            format!("RUST_LOG={}", self.log.filter),
            format!("LOG_FORMAT={format}"),
            format!(
                "UPSTREAM_BACKOFF_MAX_SECS={}",
                exchange.backoff_max.as_secs()
            ),
            format!("UPSTREAM_STALE_SECS={}", exchange.stale_after.as_secs()),
            format!("UPSTREAM_MAX_AGE_SECS={}", exchange.max_age.as_secs()),
            format!(
                "CLIENT_SEND_TIMEOUT_SECS={}",
                self.feed.send_timeout.as_secs()
            ),
            format!("CLIENT_PING_SECS={}", self.feed.ping_every.as_secs()),
            format!("MAX_CONNECTIONS={}", self.feed.max_connections),
            format!("LIVE_INTERVAL_MS={}", self.feed.live_interval.as_millis()),
        ]
        .join(" ")
    }
}

#[cfg(test)]
mod star_tests;
#[cfg(test)]
mod tests;
