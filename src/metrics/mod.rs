//! Every metric the service keeps, registered once with `prometheus-client` and
//! updated where its event happens; `/metrics`, logs and tests read the same values.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod serving;

pub use serving::{ReasonLabel, ServingMetrics, SourceLabel};

/// Label of `upstream_reconnects`: why the exchange connection was lost.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: &'static str,
}

/// Label of `upstream_ignored_frames`: what a frame that was not a kline was.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Label of per-symbol metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SymbolLabel {
    pub symbol: String,
}

/// A gauge of seconds, as a float.
pub type SecondsGauge = Gauge<f64, AtomicU64>;

/// The service's metrics. Each field is a cheap handle to shared values; the
/// registry that `/metrics` encodes holds the same handles, under the `candlecast_`
/// prefix, with the names in the comments.
#[derive(Debug)]
pub struct Metrics {
    /// `upstream_frames`: websocket frames read from the exchange.
    pub frames: Counter,
    /// `upstream_parse_errors`: frames that did not parse as klines.
    pub parse_errors: Counter,
    /// `upstream_ignored_frames{kind}`: text frames that were not kline events
    /// (`ack`, `error`, `event`, `malformed`); they prove nothing about the stream.
    pub ignored_frames: Family<KindLabel, Counter>,
    /// `upstream_skipped_minutes`: candles the stream moved past without their
    /// close, fetched from REST at once.
    pub skipped_minutes: Counter,
    /// `upstream_quiet_symbols`: times a symbol sent nothing for
    /// `UPSTREAM_STALE_SECS` while others did.
    pub quiet_symbols: Counter,
    /// `upstream_rejected_candles`: candles refused as impossible (misaligned open
    /// time, wrong close time, in the future).
    pub rejected_candles: Counter,
    /// `upstream_closed_candles`: closed candles received on the stream.
    pub closed_from_stream: Counter,
    /// `backfilled_candles`: closed candles fetched by REST backfill.
    pub backfilled: Counter,
    /// `upstream_reconnects{cause}`: connections lost, by cause.
    pub reconnects: Family<CauseLabel, Counter>,
    /// `upstream_renewals`: connections replaced before Binance's 24-hour cut.
    pub renewals: Counter,
    /// `upstream_connected`: stream connections open now (1 for up to 1,024
    /// symbols).
    pub upstream_connected: Gauge,
    /// `symbols_followed`: contracts followed now (`SYMBOLS=*` changes it).
    pub symbols_followed: Gauge,
    /// `upstream_subscription_failures{reason}`: `SUBSCRIBE`/`UNSUBSCRIBE` requests
    /// the exchange `refused`, or left `unanswered` for 5 s.
    pub subscription_failures: Family<ReasonLabel, Counter>,
    /// `upstream_resubscribed_streams`: streams subscribed afresh because REST found
    /// candles they had not delivered.
    pub resubscribed: Counter,
    /// `store_repairs`: gap repairs started after the write queue dropped candles.
    pub store_repairs: Counter,
    /// `store_written_candles`: candles written to the store.
    pub stored: Counter,
    /// `store_errors`: failed store writes.
    pub store_errors: Counter,
    /// `store_retries`: failed store writes that were retried.
    pub store_retries: Counter,
    /// `store_write_seconds`: successful store writes, by duration.
    pub store_write_seconds: Histogram,
    /// `store_skipped_documents`: stored documents (or rows) that did not read as
    /// candles, skipped.
    pub skipped_documents: Counter,
    /// `store_dropped_candles`: candles that could not be queued, or written at shutdown.
    pub dropped_writes: Counter,
    /// `store_pending_candles`: candles waiting in the write queue.
    pub pending_writes: Gauge,
    /// `clients_connected`: websocket clients connected now.
    pub clients_connected: Gauge,
    /// `messages_sent`: messages sent to websocket clients.
    pub messages_sent: Counter,
    /// `bytes_sent`: message bytes sent to websocket clients.
    pub bytes_sent: Counter,
    /// `slow_clients_closed`: clients closed because a send did not complete in time.
    pub slow_clients_closed: Counter,
    /// `unresponsive_clients_closed`: clients closed for not answering pings.
    pub unresponsive_clients_closed: Counter,
    /// `oversized_messages`: clients closed for sending a message over the limit.
    pub oversized_messages: Counter,
    /// `connections_rejected`: upgrades refused at `MAX_CONNECTIONS`.
    pub connections_rejected: Counter,
    /// `change_stream_open`: 1 while the candle collection's change stream is open.
    pub change_stream_open: Gauge,
    /// `followed_candles`: candles received from the change stream.
    pub followed_candles: Counter,
    /// `change_stream_errors`: change stream interruptions.
    pub change_stream_errors: Counter,
    /// `newest_candle_age_seconds{symbol}`: age of the newest closed candle held
    /// (set when scraped).
    pub newest_candle_age: Family<SymbolLabel, SecondsGauge>,
    /// The HTTP server's connections and refusals.
    pub serving: ServingMetrics,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `candlecast_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("candlecast");
        // Registers a fresh metric and returns the handle the service updates.
        fn metric<M: prometheus_client::registry::Metric + Clone>(
            registry: &mut Registry,
            name: &str,
            help: &str,
            metric: M,
        ) -> M {
            registry.register(name, help, metric.clone());
            metric
        }
        let r = &mut registry;
        Self {
            frames: metric(
                r,
                "upstream_frames",
                "Websocket frames read from the exchange",
                Counter::default(),
            ),
            parse_errors: metric(
                r,
                "upstream_parse_errors",
                "Exchange frames that were not klines",
                Counter::default(),
            ),
            ignored_frames: metric(
                r,
                "upstream_ignored_frames",
                "Exchange text frames that were not kline events, by kind",
                Family::default(),
            ),
            skipped_minutes: metric(
                r,
                "upstream_skipped_minutes",
                "Candles the stream skipped, fetched from REST",
                Counter::default(),
            ),
            quiet_symbols: metric(
                r,
                "upstream_quiet_symbols",
                "Times a symbol went quiet while others flowed",
                Counter::default(),
            ),
            rejected_candles: metric(
                r,
                "upstream_rejected_candles",
                "Candles refused as impossible",
                Counter::default(),
            ),
            closed_from_stream: metric(
                r,
                "upstream_closed_candles",
                "Closed candles received on the stream",
                Counter::default(),
            ),
            backfilled: metric(
                r,
                "backfilled_candles",
                "Closed candles fetched by REST backfill",
                Counter::default(),
            ),
            reconnects: metric(
                r,
                "upstream_reconnects",
                "Upstream connections lost, by cause",
                Family::default(),
            ),
            renewals: metric(
                r,
                "upstream_renewals",
                "Connections renewed before the 24-hour cut",
                Counter::default(),
            ),
            upstream_connected: metric(
                r,
                "upstream_connected",
                "Exchange stream connections open now",
                Gauge::default(),
            ),
            symbols_followed: metric(
                r,
                "symbols_followed",
                "Contracts followed now",
                Gauge::default(),
            ),
            subscription_failures: metric(
                r,
                "upstream_subscription_failures",
                "Stream subscriptions the exchange refused or did not answer, by reason",
                Family::default(),
            ),
            resubscribed: metric(
                r,
                "upstream_resubscribed_streams",
                "Streams subscribed afresh after REST found candles they missed",
                Counter::default(),
            ),
            store_repairs: metric(
                r,
                "store_repairs",
                "Refetches after the write queue dropped candles",
                Counter::default(),
            ),
            stored: metric(
                r,
                "store_written_candles",
                "Candles written to the store",
                Counter::default(),
            ),
            store_errors: metric(r, "store_errors", "Failed store writes", Counter::default()),
            store_retries: metric(
                r,
                "store_retries",
                "Store writes retried after a failure",
                Counter::default(),
            ),
            // 1 ms to about 16 s.
            store_write_seconds: metric(
                r,
                "store_write_seconds",
                "Duration of successful store writes",
                Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            ),
            skipped_documents: metric(
                r,
                "store_skipped_documents",
                "Stored documents that did not read as candles, skipped",
                Counter::default(),
            ),
            dropped_writes: metric(
                r,
                "store_dropped_candles",
                "Candles the write queue could not hold",
                Counter::default(),
            ),
            pending_writes: metric(
                r,
                "store_pending_candles",
                "Candles waiting to be written",
                Gauge::default(),
            ),
            clients_connected: metric(
                r,
                "clients_connected",
                "Websocket clients connected now",
                Gauge::default(),
            ),
            messages_sent: metric(
                r,
                "messages_sent",
                "Messages sent to websocket clients",
                Counter::default(),
            ),
            bytes_sent: metric(
                r,
                "bytes_sent",
                "Message bytes sent to websocket clients",
                Counter::default(),
            ),
            slow_clients_closed: metric(
                r,
                "slow_clients_closed",
                "Clients closed for not taking messages in time",
                Counter::default(),
            ),
            unresponsive_clients_closed: metric(
                r,
                "unresponsive_clients_closed",
                "Clients closed for not answering pings",
                Counter::default(),
            ),
            oversized_messages: metric(
                r,
                "oversized_messages",
                "Clients closed for an oversized message",
                Counter::default(),
            ),
            connections_rejected: metric(
                r,
                "connections_rejected",
                "Upgrades refused at MAX_CONNECTIONS",
                Counter::default(),
            ),
            change_stream_open: metric(
                r,
                "change_stream_open",
                "1 while the change stream is open",
                Gauge::default(),
            ),
            followed_candles: metric(
                r,
                "followed_candles",
                "Candles received from the change stream",
                Counter::default(),
            ),
            change_stream_errors: metric(
                r,
                "change_stream_errors",
                "Change stream interruptions",
                Counter::default(),
            ),
            newest_candle_age: metric(
                r,
                "newest_candle_age_seconds",
                "Age of the newest closed candle held, per symbol",
                Family::default(),
            ),
            serving: ServingMetrics::register(r),
            registry,
        }
    }

    /// Counts one lost upstream connection of `cause` (a label such as `stale`).
    pub fn reconnected(&self, cause: &'static str) {
        self.reconnects.get_or_create(&CauseLabel { cause }).inc();
    }

    /// Lost upstream connections of `cause` so far.
    pub fn reconnects_of(&self, cause: &'static str) -> u64 {
        self.reconnects.get_or_create(&CauseLabel { cause }).get()
    }

    /// Every metric in the OpenMetrics text format.
    ///
    /// # Errors
    /// Only if writing to a `String` fails, which it does not.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut body = String::new();
        prometheus_client::encoding::text::encode(&mut body, &self.registry)?;
        Ok(body)
    }
}
