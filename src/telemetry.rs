//! Tracing subscriber setup, and the counters that the ingest path keeps in one place
//! so logs, tests and a metrics endpoint read the same numbers.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber with `filter` (the validated `RUST_LOG`). Safe to
/// call more than once; later calls are ignored.
pub fn init(filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal; Docker and Railway logs get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}

/// Monotonic counters (and one gauge) of what the service has done.
#[derive(Debug, Default)]
pub struct Counters {
    /// Websocket frames read from the exchange.
    pub frames: AtomicU64,
    /// Frames that did not parse as klines.
    pub parse_errors: AtomicU64,
    /// Closed candles received on the stream.
    pub closed_from_stream: AtomicU64,
    /// Closed candles fetched by REST backfill.
    pub backfilled: AtomicU64,
    /// Upstream connections lost and retried, by [`ReconnectCause`].
    pub reconnects: [AtomicU64; ReconnectCause::ALL.len()],
    /// Connections replaced before Binance's 24-hour cut (not failures).
    pub renewals: AtomicU64,
    /// Gap repairs started after the store lost queued candles.
    pub store_repairs: AtomicU64,
    /// Candles written to the store.
    pub stored: AtomicU64,
    /// Failed store writes.
    pub store_errors: AtomicU64,
    /// Failed store writes that were retried.
    pub store_retries: AtomicU64,
    /// Successful store writes and their total duration, for a mean latency.
    pub store_writes: AtomicU64,
    pub store_write_micros: AtomicU64,
    /// Candles that could not be queued or written at shutdown.
    pub dropped_writes: AtomicU64,
    /// Gauge: candles waiting in the write queue.
    pub pending_writes: AtomicU64,
    /// Gauge: websocket clients connected now.
    pub clients_connected: AtomicU64,
    /// Messages and bytes sent to clients.
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Clients closed because a send did not complete within the send timeout.
    pub slow_clients_closed: AtomicU64,
    /// Clients closed for not answering pings.
    pub unresponsive_clients_closed: AtomicU64,
    /// Clients closed for sending a message over the size limit.
    pub oversized_messages: AtomicU64,
    /// Upgrades refused at `MAX_CONNECTIONS`.
    pub connections_rejected: AtomicU64,
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
    /// Every cause, in counter order.
    pub const ALL: [ReconnectCause; 5] = [
        ReconnectCause::ConnectFailed,
        ReconnectCause::Stale,
        ReconnectCause::Closed,
        ReconnectCause::Eof,
        ReconnectCause::Error,
    ];

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

impl Counters {
    /// Counts one lost connection.
    pub fn reconnected(&self, cause: ReconnectCause) {
        let index = ReconnectCause::ALL
            .iter()
            .position(|c| *c == cause)
            .expect("listed");
        Self::add(&self.reconnects[index], 1);
    }

    /// Lost connections of one cause so far.
    pub fn reconnects(&self, cause: ReconnectCause) -> u64 {
        let index = ReconnectCause::ALL
            .iter()
            .position(|c| *c == cause)
            .expect("listed");
        Self::get(&self.reconnects[index])
    }

    /// Reads a counter; a shorthand for tests and logs.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` from a gauge.
    pub fn sub(gauge: &AtomicU64, n: u64) {
        gauge.fetch_sub(n, Ordering::Relaxed);
    }

    /// Records one successful store write that took `elapsed`.
    pub fn observe_write(&self, elapsed: std::time::Duration) {
        Self::add(&self.store_writes, 1);
        Self::add(&self.store_write_micros, elapsed.as_micros() as u64);
    }
}
