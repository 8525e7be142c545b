//! Tracing subscriber setup (pretty or JSON), and the counters the service keeps in
//! one place: Prometheus metrics that logs, tests and `/metrics` all read.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// Log line format, from `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (coloured at a terminal).
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber with `filter` (the validated `RUST_LOG`). Safe to
/// call more than once; later calls are ignored.
pub fn init(filter: &str) {
    init_with(filter, LogFormat::Pretty);
}

/// [`init`] with a chosen line format.
pub fn init_with(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        // Colour only for a person at a terminal; Docker and Railway logs get plain text.
        LogFormat::Pretty => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init(),
    };
}

/// Why the upstream connection had to be re-established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconnectCause {
    /// Refused, timed out, TLS or HTTP failure while connecting.
    ConnectFailed,
    /// No data frame within `UPSTREAM_STALE_SECS`.
    Stale,
    /// The server sent a close frame.
    Closed,
    /// The socket ended without a close frame.
    Eof,
    /// A read error.
    Error,
}

impl ReconnectCause {
    /// A label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            ReconnectCause::ConnectFailed => "connect_failed",
            ReconnectCause::Stale => "stale",
            ReconnectCause::Closed => "closed",
            ReconnectCause::Eof => "eof",
            ReconnectCause::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SymbolLabel {
    pub symbol: String,
}

/// Something that counts: a counter or a gauge.
pub trait Count {
    fn add(&self, n: u64);
    fn value(&self) -> u64;
}

impl Count for Counter {
    fn add(&self, n: u64) {
        self.inc_by(n);
    }
    fn value(&self) -> u64 {
        self.get()
    }
}

impl Count for Gauge {
    fn add(&self, n: u64) {
        self.inc_by(n as i64);
    }
    fn value(&self) -> u64 {
        self.get().max(0) as u64
    }
}

/// What the service has done, as Prometheus metrics. Clones share the values.
#[derive(Debug)]
pub struct Counters {
    /// Websocket frames read from the exchange.
    pub frames: Counter,
    /// Frames that did not parse as klines.
    pub parse_errors: Counter,
    /// Closed candles received on the stream.
    pub closed_from_stream: Counter,
    /// Closed candles fetched by REST backfill.
    pub backfilled: Counter,
    reconnects: Family<CauseLabel, Counter>,
    /// Connections replaced before Binance's 24-hour cut (not failures).
    pub renewals: Counter,
    /// Gap repairs started after the store lost queued candles.
    pub store_repairs: Counter,
    /// 1 while a stream connection is open.
    pub upstream_connected: Gauge,
    /// Epoch milliseconds of the last data frame from the exchange (0: none yet).
    pub last_upstream_data_ms: AtomicI64,
    /// Candles written to the store.
    pub stored: Counter,
    /// Failed store writes.
    pub store_errors: Counter,
    /// Failed store writes that were retried.
    pub store_retries: Counter,
    /// Successful store writes, by duration.
    pub store_write_seconds: Histogram,
    /// Candles that could not be queued, or written at shutdown.
    pub dropped_writes: Counter,
    /// Candles waiting in the write queue.
    pub pending_writes: Gauge,
    /// Websocket clients connected now.
    pub clients_connected: Gauge,
    /// Messages and bytes sent to clients.
    pub messages_sent: Counter,
    pub bytes_sent: Counter,
    /// Clients closed because a send did not complete within the send timeout.
    pub slow_clients_closed: Counter,
    /// Clients closed for not answering pings.
    pub unresponsive_clients_closed: Counter,
    /// Clients closed for sending a message over the size limit.
    pub oversized_messages: Counter,
    /// Upgrades refused at `MAX_CONNECTIONS`.
    pub connections_rejected: Counter,
    /// 1 while the change stream of the candle collection is open.
    pub change_stream_open: Gauge,
    /// Candles received from the change stream.
    pub followed_candles: Counter,
    /// Change stream interruptions.
    pub change_stream_errors: Counter,
    /// Age in seconds of the newest closed candle, per symbol (set at scrape time).
    pub newest_candle_age: Family<SymbolLabel, Gauge<f64, AtomicU64>>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            frames: Counter::default(),
            parse_errors: Counter::default(),
            closed_from_stream: Counter::default(),
            backfilled: Counter::default(),
            reconnects: Family::default(),
            renewals: Counter::default(),
            store_repairs: Counter::default(),
            upstream_connected: Gauge::default(),
            last_upstream_data_ms: AtomicI64::new(0),
            stored: Counter::default(),
            store_errors: Counter::default(),
            store_retries: Counter::default(),
            // 1 ms to about 16 s.
            store_write_seconds: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
            ),
            dropped_writes: Counter::default(),
            pending_writes: Gauge::default(),
            clients_connected: Gauge::default(),
            messages_sent: Counter::default(),
            bytes_sent: Counter::default(),
            slow_clients_closed: Counter::default(),
            unresponsive_clients_closed: Counter::default(),
            oversized_messages: Counter::default(),
            connections_rejected: Counter::default(),
            change_stream_open: Gauge::default(),
            followed_candles: Counter::default(),
            change_stream_errors: Counter::default(),
            newest_candle_age: Family::default(),
        }
    }
}

impl Counters {
    /// Reads a counter or gauge.
    pub fn get(metric: &impl Count) -> u64 {
        metric.value()
    }

    /// Adds `n` to a counter or gauge.
    pub fn add(metric: &impl Count, n: u64) {
        metric.add(n);
    }

    /// Subtracts `n` from a gauge.
    pub fn sub(gauge: &Gauge, n: u64) {
        gauge.dec_by(n as i64);
    }

    /// Counts one lost upstream connection.
    pub fn reconnected(&self, cause: ReconnectCause) {
        self.reconnects
            .get_or_create(&CauseLabel {
                cause: cause.label(),
            })
            .inc();
    }

    /// Lost upstream connections of one cause so far.
    pub fn reconnects(&self, cause: ReconnectCause) -> u64 {
        self.reconnects
            .get_or_create(&CauseLabel {
                cause: cause.label(),
            })
            .get()
    }

    /// Records one successful store write that took `elapsed`.
    pub fn observe_write(&self, elapsed: std::time::Duration) {
        self.store_write_seconds.observe(elapsed.as_secs_f64());
    }

    /// Notes that a data frame arrived from the exchange now.
    pub fn upstream_data_now(&self) {
        self.last_upstream_data_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// A registry exposing every metric under the `candlecast_` prefix.
    pub fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("candlecast");
        let r = &mut registry;
        r.register(
            "upstream_frames",
            "Websocket frames read from the exchange",
            self.frames.clone(),
        );
        r.register(
            "upstream_parse_errors",
            "Exchange frames that were not klines",
            self.parse_errors.clone(),
        );
        r.register(
            "upstream_closed_candles",
            "Closed candles received on the stream",
            self.closed_from_stream.clone(),
        );
        r.register(
            "backfilled_candles",
            "Closed candles fetched by REST backfill",
            self.backfilled.clone(),
        );
        r.register(
            "upstream_reconnects",
            "Upstream connections lost, by cause",
            self.reconnects.clone(),
        );
        r.register(
            "upstream_renewals",
            "Connections renewed before the 24-hour cut",
            self.renewals.clone(),
        );
        r.register(
            "upstream_connected",
            "1 while the exchange stream is connected",
            self.upstream_connected.clone(),
        );
        r.register(
            "store_repairs",
            "Refetches after the write queue dropped candles",
            self.store_repairs.clone(),
        );
        r.register(
            "store_written_candles",
            "Candles written to the store",
            self.stored.clone(),
        );
        r.register(
            "store_errors",
            "Failed store writes",
            self.store_errors.clone(),
        );
        r.register(
            "store_retries",
            "Store writes retried after a failure",
            self.store_retries.clone(),
        );
        r.register(
            "store_write_seconds",
            "Duration of successful store writes",
            self.store_write_seconds.clone(),
        );
        r.register(
            "store_dropped_candles",
            "Candles the write queue could not hold",
            self.dropped_writes.clone(),
        );
        r.register(
            "store_pending_candles",
            "Candles waiting to be written",
            self.pending_writes.clone(),
        );
        r.register(
            "clients_connected",
            "Websocket clients connected now",
            self.clients_connected.clone(),
        );
        r.register(
            "messages_sent",
            "Messages sent to websocket clients",
            self.messages_sent.clone(),
        );
        r.register(
            "bytes_sent",
            "Message bytes sent to websocket clients",
            self.bytes_sent.clone(),
        );
        r.register(
            "slow_clients_closed",
            "Clients closed for not taking messages in time",
            self.slow_clients_closed.clone(),
        );
        r.register(
            "unresponsive_clients_closed",
            "Clients closed for not answering pings",
            self.unresponsive_clients_closed.clone(),
        );
        r.register(
            "oversized_messages",
            "Clients closed for an oversized message",
            self.oversized_messages.clone(),
        );
        r.register(
            "connections_rejected",
            "Upgrades refused at MAX_CONNECTIONS",
            self.connections_rejected.clone(),
        );
        r.register(
            "change_stream_open",
            "1 while the change stream is open",
            self.change_stream_open.clone(),
        );
        r.register(
            "followed_candles",
            "Candles received from the change stream",
            self.followed_candles.clone(),
        );
        r.register(
            "change_stream_errors",
            "Change stream interruptions",
            self.change_stream_errors.clone(),
        );
        r.register(
            "newest_candle_age_seconds",
            "Age of the newest closed candle held, per symbol",
            self.newest_candle_age.clone(),
        );
        registry
    }
}
