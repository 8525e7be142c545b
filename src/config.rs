//! Typed configuration, read once from the environment (after `.env`); the only place
//! that looks at environment variables. A bad value stops startup naming the variable.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use url::Url;

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
    fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self {
            var,
            reason: reason.into(),
        }
    }
}

/// Everything the service needs to know, parsed and validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// `PORT`: the listening port.
    pub port: u16,
    /// `BIND_ADDR`: the listening address.
    pub bind_addr: IpAddr,
    /// `MONGO_URI`: `None` selects the embedded SQLite store.
    pub mongo_uri: Option<MongoUri>,
    /// `INGEST`: connect to the exchange and write (true), or only follow the
    /// database's change stream (false; needs `MONGO_URI`).
    pub ingest: bool,
    /// `MONGO_DATABASE`.
    pub mongo_database: String,
    /// `MONGO_COLLECTION`.
    pub mongo_collection: String,
    /// `DATA_DIR`: where the embedded store keeps its file.
    pub data_dir: PathBuf,
    /// `SYMBOLS`: upper case, in the order clients receive them.
    pub symbols: Vec<String>,
    /// `INTERVAL`: the kline interval.
    pub interval: Interval,
    /// `HISTORY_LEN`: candles per coin in each client message.
    pub history_len: usize,
    /// `HISTORY_MAX`: candles per coin kept in memory, the most `?limit=` may ask for
    /// (never less than `HISTORY_LEN`).
    pub history_max: usize,
    /// `BINANCE_WS_URL`: the combined-stream endpoint, without the `streams` query.
    pub binance_ws_url: Url,
    /// `BINANCE_REST_URL`: the REST base URL.
    pub binance_rest_url: Url,
    /// `TIME_ZONE`: the zone of the `time` strings sent to clients.
    pub time_zone: Tz,
    /// `RUST_LOG`: the tracing filter.
    pub log_filter: String,
    /// `LOG_FORMAT`: `pretty` (default) or `json`, one object per line.
    pub log_format: crate::telemetry::LogFormat,
    /// How long startup waits for the first backfill before serving anyway.
    pub startup_backfill_timeout: Duration,
    /// `UPSTREAM_STALE_SECS`: no data frame for this long means the stream is dead.
    pub upstream_stale_after: Duration,
    /// `UPSTREAM_BACKOFF_MAX_SECS`: the longest wait between reconnect attempts.
    pub upstream_backoff_max: Duration,
    /// `UPSTREAM_MAX_AGE_SECS`: a connection is renewed (make before break) at this
    /// age, ahead of Binance's 24-hour cut.
    pub upstream_max_age: Duration,
    /// `CLIENT_SEND_TIMEOUT_SECS`: a client whose send has not completed in this
    /// time is closed (code 1013).
    pub client_send_timeout: Duration,
    /// `CLIENT_PING_SECS`: how often clients are pinged; one silent for two
    /// intervals is closed (code 1008).
    pub client_ping_every: Duration,
    /// `MAX_CONNECTIONS`: websocket clients served at once; more get HTTP 503.
    pub max_connections: usize,
    /// Batches of candles that may wait for the store before new ones are dropped
    /// (and later recovered by a gap repair).
    pub write_queue_batches: usize,
}

const DEFAULT_SYMBOLS: &str = "BTCUSDT,BNBUSDT,ETHUSDT,SOLUSDT,XRPUSDT";
const DEFAULT_WS_URL: &str = "wss://fstream.binance.com/market/stream";
const DEFAULT_REST_URL: &str = "https://fapi.binance.com";
/// Binance returns at most 1500 klines per request; a window longer than that could
/// not be backfilled in one page and is far beyond what a client message should carry.
const MAX_HISTORY_LEN: usize = 1000;

impl Config {
    /// Reads the process environment. Call `dotenvy::dotenv()` first to honour `.env`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any variable source; tests pass a map.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let source = Source(&lookup);
        Self {
            port: source.parse_or("PORT", 8080, parse_port)?,
            bind_addr: source.parse_or("BIND_ADDR", IpAddr::from([0, 0, 0, 0]), |raw| {
                IpAddr::from_str(raw)
                    .map_err(|_| format!("expected an IP address such as 0.0.0.0 or ::, got {raw:?}"))
            })?,
            mongo_uri: match lookup("MONGO_URI").filter(|raw| !raw.trim().is_empty()) {
                None => None,
                Some(raw) => Some(MongoUri::parse(raw.trim()).map_err(|reason| ConfigError::new("MONGO_URI", reason))?),
            },
            ingest: source.parse_or("INGEST", true, |raw| match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("expected true or false, got {raw:?}")),
            })?,
            mongo_database: source.parse_or("MONGO_DATABASE", "candlecast".to_owned(), parse_name)?,
            mongo_collection: source.parse_or("MONGO_COLLECTION", "candles".to_owned(), parse_name)?,
            data_dir: source.parse_or("DATA_DIR", PathBuf::from("./data"), |raw| Ok(PathBuf::from(raw)))?,
            symbols: source.parse_or("SYMBOLS", parse_symbols(DEFAULT_SYMBOLS).expect("default symbols are valid"), parse_symbols)?,
            interval: source.parse_or("INTERVAL", Interval::parse("1m").expect("1m is valid"), Interval::parse)?,
            history_len: source.parse_or("HISTORY_LEN", 10, |raw| match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_HISTORY_LEN).contains(&n) => Ok(n),
                _ => Err(format!("expected a whole number from 1 to {MAX_HISTORY_LEN}, got {raw:?}")),
            })?,
            history_max: source.parse_or("HISTORY_MAX", 100, |raw| match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_HISTORY_LEN).contains(&n) => Ok(n),
                _ => Err(format!("expected a whole number from 1 to {MAX_HISTORY_LEN}, got {raw:?}")),
            })?,
            binance_ws_url: source.parse_or("BINANCE_WS_URL", Url::parse(DEFAULT_WS_URL).expect("valid"), |raw| {
                parse_url(raw, &["ws", "wss"])
            })?,
            binance_rest_url: source.parse_or("BINANCE_REST_URL", Url::parse(DEFAULT_REST_URL).expect("valid"), |raw| {
                parse_url(raw, &["http", "https"])
            })?,
            time_zone: source.parse_or("TIME_ZONE", Tz::UTC, |raw| {
                Tz::from_str(raw).map_err(|_| {
                    format!("unknown time zone {raw:?}; expected an IANA name such as UTC or Europe/Berlin")
                })
            })?,
            log_filter: match lookup("RUST_LOG").filter(|raw| !raw.trim().is_empty()) {
                None => "info".to_owned(),
                Some(raw) => {
                    tracing_subscriber::EnvFilter::try_new(&raw)
                        .map_err(|err| ConfigError::new("RUST_LOG", format!("not a valid log filter ({err}), e.g. info or candlecast=debug")))?;
                    raw
                }
            },
            log_format: source.parse_or("LOG_FORMAT", crate::telemetry::LogFormat::Pretty, |raw| {
                match raw.to_ascii_lowercase().as_str() {
                    "pretty" | "text" => Ok(crate::telemetry::LogFormat::Pretty),
                    "json" => Ok(crate::telemetry::LogFormat::Json),
                    _ => Err(format!("expected pretty or json, got {raw:?}")),
                }
            })?,
            startup_backfill_timeout: Duration::from_secs(15),
            upstream_stale_after: source.parse_or("UPSTREAM_STALE_SECS", Duration::from_secs(30), |raw| {
                parse_seconds(raw, 1, 3600)
            })?,
            upstream_backoff_max: source.parse_or("UPSTREAM_BACKOFF_MAX_SECS", Duration::from_secs(30), |raw| {
                parse_seconds(raw, 1, 3600)
            })?,
            upstream_max_age: source.parse_or("UPSTREAM_MAX_AGE_SECS", Duration::from_secs(82_800), |raw| {
                parse_seconds(raw, 1, 86_000)
            })?,
            client_send_timeout: source.parse_or("CLIENT_SEND_TIMEOUT_SECS", Duration::from_secs(10), |raw| {
                parse_seconds(raw, 1, 3600)
            })?,
            client_ping_every: source.parse_or("CLIENT_PING_SECS", Duration::from_secs(30), |raw| {
                parse_seconds(raw, 1, 3600)
            })?,
            max_connections: source.parse_or("MAX_CONNECTIONS", 10_000, |raw| match raw.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(format!("expected a whole number of at least 1, got {raw:?}")),
            })?,
            write_queue_batches: crate::store::WRITE_QUEUE_BATCHES,
        }
        .check()
    }

    fn check(self) -> Result<Self, ConfigError> {
        if !self.ingest && self.mongo_uri.is_none() {
            return Err(ConfigError::new(
                "INGEST",
                "INGEST=false needs MONGO_URI: a follower reads the candles ingesters write to MongoDB",
            ));
        }
        Ok(self)
    }

    /// Candles kept in memory per coin: `HISTORY_MAX`, or `HISTORY_LEN` if larger.
    pub fn window_len(&self) -> usize {
        self.history_max.max(self.history_len)
    }

    /// Every setting as `NAME=value`, for the startup log line; the MongoDB password
    /// is shown as `***`.
    pub fn summary(&self) -> String {
        let mongo = self
            .mongo_uri
            .as_ref()
            .map_or_else(|| "(unset: embedded store)".to_owned(), ToString::to_string);
        let format = match self.log_format {
            crate::telemetry::LogFormat::Pretty => "pretty",
            crate::telemetry::LogFormat::Json => "json",
        };
        [
            format!("PORT={}", self.port),
            format!("BIND_ADDR={}", self.bind_addr),
            format!("INGEST={}", self.ingest),
            format!("MONGO_URI={mongo}"),
            format!("MONGO_DATABASE={}", self.mongo_database),
            format!("MONGO_COLLECTION={}", self.mongo_collection),
            format!("DATA_DIR={}", self.data_dir.display()),
            format!("SYMBOLS={}", self.symbols.join(",")),
            format!("INTERVAL={}", self.interval),
            format!("HISTORY_LEN={}", self.history_len),
            format!("HISTORY_MAX={}", self.window_len()),
            format!("BINANCE_WS_URL={}", self.binance_ws_url),
            format!("BINANCE_REST_URL={}", self.binance_rest_url),
            format!("TIME_ZONE={}", self.time_zone),
            format!("RUST_LOG={}", self.log_filter),
            format!("LOG_FORMAT={format}"),
            format!(
                "UPSTREAM_BACKOFF_MAX_SECS={}",
                self.upstream_backoff_max.as_secs()
            ),
            format!(
                "UPSTREAM_STALE_SECS={}",
                self.upstream_stale_after.as_secs()
            ),
            format!("UPSTREAM_MAX_AGE_SECS={}", self.upstream_max_age.as_secs()),
            format!(
                "CLIENT_SEND_TIMEOUT_SECS={}",
                self.client_send_timeout.as_secs()
            ),
            format!("CLIENT_PING_SECS={}", self.client_ping_every.as_secs()),
            format!("MAX_CONNECTIONS={}", self.max_connections),
        ]
        .join(" ")
    }
}

/// Wraps the lookup so each variable is parsed the same way: unset means the default,
/// set-but-blank is an error (an explicit empty value is a mistake, not a wish).
struct Source<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Source<'_> {
    fn parse_or<T>(
        &self,
        var: &'static str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match (self.0)(var) {
            None => Ok(default),
            Some(raw) => {
                let raw = raw.trim();
                if raw.is_empty() {
                    return Err(ConfigError::new(
                        var,
                        "is set but empty; unset it to use the default",
                    ));
                }
                parse(raw).map_err(|reason| ConfigError::new(var, reason))
            }
        }
    }
}

fn parse_port(raw: &str) -> Result<u16, String> {
    raw.parse::<u16>()
        .map_err(|_| format!("expected a port number from 0 to 65535, got {raw:?}"))
}

fn parse_seconds(raw: &str, min: u64, max: u64) -> Result<Duration, String> {
    match raw.parse::<u64>() {
        Ok(secs) if (min..=max).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "expected whole seconds from {min} to {max}, got {raw:?}"
        )),
    }
}

fn parse_name(raw: &str) -> Result<String, String> {
    if raw.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
        Err(format!(
            "{raw:?} is not a valid MongoDB name (no / \\ . space \" $)"
        ))
    } else {
        Ok(raw.to_owned())
    }
}

fn parse_symbols(raw: &str) -> Result<Vec<String>, String> {
    let mut symbols: Vec<String> = Vec::new();
    for symbol in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let symbol = symbol.to_ascii_uppercase();
        if !symbol.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "{symbol:?} is not a symbol; expected letters and digits such as BTCUSDT"
            ));
        }
        if symbols.contains(&symbol) {
            return Err(format!("{symbol} is listed twice"));
        }
        symbols.push(symbol);
    }
    if symbols.is_empty() {
        return Err(
            "the list is empty; expected comma-separated symbols such as BTCUSDT,ETHUSDT".into(),
        );
    }
    Ok(symbols)
}

fn parse_url(raw: &str, schemes: &[&str]) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|err| format!("{raw:?} is not a URL ({err})"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!("{raw:?} must use {}", schemes.join(" or ")));
    }
    if url.host_str().is_none() {
        return Err(format!("{raw:?} has no host"));
    }
    Ok(url)
}

/// A Binance kline interval with a fixed length (`1m` … `1w`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    name: String,
    millis: i64,
}

impl Interval {
    /// Parses Binance's interval names; `1M` (a calendar month) has no fixed length
    /// and is not supported.
    pub fn parse(raw: &str) -> Result<Self, String> {
        const MINUTE: i64 = 60_000;
        let millis = match raw {
            "1m" => MINUTE,
            "3m" => 3 * MINUTE,
            "5m" => 5 * MINUTE,
            "15m" => 15 * MINUTE,
            "30m" => 30 * MINUTE,
            "1h" => 60 * MINUTE,
            "2h" => 120 * MINUTE,
            "4h" => 240 * MINUTE,
            "6h" => 360 * MINUTE,
            "8h" => 480 * MINUTE,
            "12h" => 720 * MINUTE,
            "1d" => 1440 * MINUTE,
            "3d" => 3 * 1440 * MINUTE,
            "1w" => 7 * 1440 * MINUTE,
            _ => {
                return Err(format!(
                    "unsupported interval {raw:?}; expected one of 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w"
                ));
            }
        };
        Ok(Self {
            name: raw.to_owned(),
            millis,
        })
    }

    /// Binance's name for the interval, e.g. `1m`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The interval's length in milliseconds.
    pub fn millis(&self) -> i64 {
        self.millis
    }

    /// Open time of the candle that contains `now_ms` (the one still open).
    pub fn open_time_containing(&self, now_ms: i64) -> i64 {
        // Weekly candles open on Mondays; the epoch was a Thursday.
        let offset = if self.name == "1w" { 4 * 86_400_000 } else { 0 };
        (now_ms - offset).div_euclid(self.millis) * self.millis + offset
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// A MongoDB connection string. `Display` and `Debug` hide the password; only
/// [`MongoUri::expose`] gives the real string, for the driver.
///
/// Redaction works on the string's structure (the password component of the
/// userinfo, `scheme://user:password@hosts/…` per the MongoDB connection-string
/// spec), never by searching for the password's text, which could also be the user
/// name, the host or a piece of the scheme.
#[derive(Clone, PartialEq, Eq)]
pub struct MongoUri {
    raw: String,
}

impl MongoUri {
    /// Validates the connection string without contacting any server.
    ///
    /// # Errors
    /// A message (already redacted) when the string is not `mongodb://` or
    /// `mongodb+srv://`, or the driver cannot parse it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let uri = Self {
            raw: raw.to_owned(),
        };
        if !(raw.starts_with("mongodb://") || raw.starts_with("mongodb+srv://")) {
            return Err(format!(
                "{uri} is not a MongoDB connection string; expected mongodb://host:port or mongodb+srv://host"
            ));
        }
        mongodb::options::ConnectionString::parse(raw).map_err(|err| {
            uri.scrub(&format!(
                "{uri} is not a valid connection string: {}",
                err.kind
            ))
        })?;
        Ok(uri)
    }

    /// The connection string with its password, for the driver only.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The password as written in the string (percent-encoded), if any.
    fn password(&self) -> Option<&str> {
        password_span(&self.raw).map(|(start, end)| &self.raw[start..end])
    }

    /// `text` with the password hidden: every connection string in it has its
    /// password component replaced by `***`, and any other appearance of the
    /// password (as written or percent-decoded) standing as a word of its own is
    /// replaced too, so a driver error can be logged safely.
    pub fn scrub(&self, text: &str) -> String {
        let password = self.password();
        let decoded = password.map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy());
        redact_uris(text, |prose| {
            let mut prose = prose.to_owned();
            if let (Some(password), Some(decoded)) = (password, &decoded) {
                prose = replace_word(&prose, password);
                prose = replace_word(&prose, decoded);
            }
            prose
        })
    }
}

/// Byte range of the password in a `mongodb://` or `mongodb+srv://` string: after
/// the first `:` of the userinfo, which ends at the last `@` of the authority.
fn password_span(uri: &str) -> Option<(usize, usize)> {
    let authority_start = uri.find("://")? + 3;
    let rest = &uri[authority_start..];
    // The authority ends at the path or the options; a password must percent-encode
    // both `/` and `?`, so neither can hide inside one.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let colon = rest[..at].find(':')?;
    let (start, end) = (authority_start + colon + 1, authority_start + at);
    (start < end).then_some((start, end))
}

/// `text` with the password of every `mongodb://` or `mongodb+srv://` string in it
/// replaced by `***`, and the text between those strings passed through `prose`.
fn redact_uris(text: &str, prose: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("mongodb") {
        let (before, candidate) = rest.split_at(found);
        out.push_str(&prose(before));
        // The string runs to the first character that cannot be part of it.
        let len = candidate
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(candidate.len());
        let uri = &candidate[..len];
        match password_span(uri)
            .filter(|_| uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://"))
        {
            Some((start, end)) => {
                out.push_str(&uri[..start]);
                out.push_str("***");
                out.push_str(&uri[end..]);
            }
            None => out.push_str(uri),
        }
        rest = &candidate[len..];
        if len == 0 {
            // Not reachable ("mongodb" is never empty), but never loop forever.
            break;
        }
    }
    out.push_str(&prose(rest));
    out
}

/// `text` with each occurrence of `word` that is not part of a longer run of
/// letters and digits replaced by `***`.
fn replace_word(text: &str, word: &str) -> String {
    if word.is_empty() {
        return text.to_owned();
    }
    let is_word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in text.match_indices(word) {
        if at < last {
            continue; // overlaps the previous replacement
        }
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        if is_word(before) || is_word(after) {
            continue;
        }
        out.push_str(&text[last..at]);
        out.push_str("***");
        last = at + word.len();
    }
    out.push_str(&text[last..]);
    out
}

impl fmt::Display for MongoUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match password_span(&self.raw) {
            Some((start, end)) => {
                write!(f, "{}***{}", &self.raw[..start], &self.raw[end..])
            }
            None => f.write_str(&self.raw),
        }
    }
}

impl fmt::Debug for MongoUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MongoUri({self})")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config_with(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_design() {
        let config = config_with(&[]).unwrap();
        assert_eq!(config.port, 8080);
        assert_eq!(config.bind_addr.to_string(), "0.0.0.0");
        assert!(config.mongo_uri.is_none());
        assert_eq!(config.mongo_database, "candlecast");
        assert_eq!(config.mongo_collection, "candles");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(
            config.symbols,
            ["BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
        );
        assert_eq!(config.interval.name(), "1m");
        assert_eq!(config.interval.millis(), 60_000);
        assert_eq!(config.history_len, 10);
        assert_eq!(config.history_max, 100);
        assert_eq!(
            config.binance_ws_url.as_str(),
            "wss://fstream.binance.com/market/stream"
        );
        assert_eq!(
            config.binance_rest_url.as_str(),
            "https://fapi.binance.com/"
        );
        assert_eq!(config.time_zone, Tz::UTC);
        assert_eq!(config.log_filter, "info");
        assert_eq!(config.upstream_stale_after, Duration::from_secs(30));
        assert_eq!(config.upstream_backoff_max, Duration::from_secs(30));
        assert_eq!(config.upstream_max_age, Duration::from_secs(82_800));
        assert_eq!(config.client_send_timeout, Duration::from_secs(10));
        assert_eq!(config.client_ping_every, Duration::from_secs(30));
        assert_eq!(config.max_connections, 10_000);
    }

    #[test]
    fn symbols_are_case_insensitive_and_keep_their_order() {
        let config = config_with(&[("SYMBOLS", " ethusdt, BtcUsdt ,,xrpusdt")]).unwrap();
        assert_eq!(config.symbols, ["ETHUSDT", "BTCUSDT", "XRPUSDT"]);
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        let cases = [
            ("PORT", "eighty"),
            ("PORT", "70000"),
            ("PORT", "-1"),
            ("BIND_ADDR", "somewhere"),
            ("SYMBOLS", " , ,"),
            ("SYMBOLS", "BTC-USDT"),
            ("SYMBOLS", "btcusdt,BTCUSDT"),
            ("INTERVAL", "7m"),
            ("HISTORY_LEN", "0"),
            ("HISTORY_LEN", "ten"),
            ("TIME_ZONE", "Mars/Olympus"),
            ("MONGO_URI", "postgres://localhost"),
            ("MONGO_URI", "mongodb://"),
            (
                "BINANCE_WS_URL",
                "https://fstream.binance.com/market/stream",
            ),
            ("BINANCE_REST_URL", "not a url"),
            ("MONGO_DATABASE", "a.b"),
            ("RUST_LOG", "info,[[["),
            ("PORT", "  "),
            ("UPSTREAM_STALE_SECS", "0"),
            ("UPSTREAM_BACKOFF_MAX_SECS", "1.5"),
            ("UPSTREAM_MAX_AGE_SECS", "90000"),
            ("CLIENT_SEND_TIMEOUT_SECS", "0"),
            ("CLIENT_PING_SECS", "soon"),
            ("MAX_CONNECTIONS", "0"),
            ("LOG_FORMAT", "xml"),
            ("HISTORY_MAX", "0"),
        ];
        for (var, value) in cases {
            let err = config_with(&[(var, value)])
                .expect_err(&format!("{var}={value:?} should be rejected"));
            assert_eq!(err.var, var, "{var}={value:?} gave {err}");
            assert!(err.to_string().contains(var), "{err}");
        }
    }

    #[test]
    fn a_follower_needs_mongodb() {
        let err = config_with(&[("INGEST", "false")]).unwrap_err();
        assert_eq!(err.var, "INGEST");
        assert!(err.to_string().contains("MONGO_URI"), "{err}");
        let follower =
            config_with(&[("INGEST", "false"), ("MONGO_URI", "mongodb://db:27017")]).unwrap();
        assert!(!follower.ingest);
        assert!(config_with(&[]).unwrap().ingest);
        assert_eq!(
            config_with(&[("INGEST", "maybe")]).unwrap_err().var,
            "INGEST"
        );
    }

    #[test]
    fn blank_mongo_uri_means_the_embedded_store() {
        let config = config_with(&[("MONGO_URI", "")]).unwrap();
        assert!(config.mongo_uri.is_none());
    }

    #[test]
    fn the_mongo_password_never_shows() {
        let config = config_with(&[(
            "MONGO_URI",
            "mongodb://alice:s3cr%40t@db.example:27017/?authSource=admin",
        )])
        .unwrap();
        let uri = config.mongo_uri.as_ref().unwrap();
        assert_eq!(
            uri.expose(),
            "mongodb://alice:s3cr%40t@db.example:27017/?authSource=admin"
        );
        assert_eq!(
            uri.to_string(),
            "mongodb://alice:***@db.example:27017/?authSource=admin"
        );
        assert!(!format!("{config:?}").contains("s3cr"));
        assert!(
            config
                .summary()
                .contains("MONGO_URI=mongodb://alice:***@db.example:27017/")
        );
        assert!(!config.summary().contains("s3cr"));
        assert_eq!(
            uri.scrub("auth failed for s3cr@t and s3cr%40t"),
            "auth failed for *** and ***"
        );

        let err = config_with(&[("MONGO_URI", "mongodb://bob:hunter2@host:notaport")]).unwrap_err();
        assert_eq!(err.var, "MONGO_URI");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn the_password_is_redacted_by_position_not_by_text() {
        // The password equal to the user name, or a piece of the scheme.
        for (raw, shown) in [
            ("mongodb://admin:admin@h", "mongodb://admin:***@h"),
            ("mongodb://svc:go@h", "mongodb://svc:***@h"),
            (
                "mongodb://db:db@db:27017/db?authSource=db",
                "mongodb://db:***@db:27017/db?authSource=db",
            ),
            (
                "mongodb+srv://u:mongodb@cluster.example/",
                "mongodb+srv://u:***@cluster.example/",
            ),
            (
                "mongodb://a:p%40ss@h1:1,h2:2/?replicaSet=rs",
                "mongodb://a:***@h1:1,h2:2/?replicaSet=rs",
            ),
            ("mongodb://onlyuser@h", "mongodb://onlyuser@h"),
        ] {
            let uri = MongoUri::parse(raw).unwrap();
            assert_eq!(uri.to_string(), shown, "{raw}");
            assert_eq!(format!("{uri:?}"), format!("MongoUri({shown})"));
        }
        let config = config_with(&[("MONGO_URI", "mongodb://admin:admin@h")]).unwrap();
        assert!(
            config
                .summary()
                .contains("MONGO_URI=mongodb://admin:***@h "),
            "{}",
            config.summary()
        );
    }

    #[test]
    fn driver_errors_lose_the_password_but_keep_their_words() {
        let uri = MongoUri::parse("mongodb://svc:go@h").unwrap();
        assert_eq!(
            uri.scrub("cannot reach mongodb://svc:go@h: going away; pw go, (go)"),
            "cannot reach mongodb://svc:***@h: going away; pw ***, (***)"
        );
        let uri = MongoUri::parse("mongodb://admin:admin@h").unwrap();
        assert_eq!(
            uri.scrub("Kind: Authentication failed, labels: {}, uri mongodb://admin:admin@h/x"),
            "Kind: Authentication failed, labels: {}, uri mongodb://admin:***@h/x"
        );
    }

    #[test]
    fn a_uri_without_password_is_shown_as_is() {
        let uri = MongoUri::parse("mongodb://127.0.0.1:27017").unwrap();
        assert_eq!(uri.to_string(), "mongodb://127.0.0.1:27017");
    }

    #[test]
    fn intervals_align_open_times() {
        let minute = Interval::parse("1m").unwrap();
        assert_eq!(
            minute.open_time_containing(1_763_791_559_999),
            1_763_791_500_000
        );
        assert_eq!(
            minute.open_time_containing(1_763_791_560_000),
            1_763_791_560_000
        );
        let week = Interval::parse("1w").unwrap();
        // 2025-11-17 was a Monday.
        assert_eq!(
            week.open_time_containing(1_763_791_560_000),
            1_763_337_600_000
        );
        assert!(Interval::parse("1M").is_err());
    }
}
