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
    /// Upstream connections that ended and were retried.
    pub reconnects: AtomicU64,
    /// Candles written to the store.
    pub stored: AtomicU64,
    /// Failed store writes that were retried.
    pub store_retries: AtomicU64,
    /// Candles that could not be queued or written at shutdown.
    pub dropped_writes: AtomicU64,
    /// Gauge: candles waiting in the write queue.
    pub pending_writes: AtomicU64,
}

impl Counters {
    /// Reads a counter; a shorthand for tests and logs.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
