//! What a person or a log collector sees while the backfill runs: a bar per symbol
//! on a terminal (candles stored of those to fetch, rate, ETA), otherwise one log
//! line every 10 s; and log lines written around the bars so neither tears the
//! other.

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::retry::Every;

/// How often progress is logged when standard error is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Where the backfill writes: its report to standard output, progress and logs to
/// standard error, as bars when that is a terminal.
#[derive(Clone, Default)]
pub struct Console {
    bars: Option<MultiProgress>,
}

impl Console {
    /// Bars when standard error is a terminal; log lines otherwise.
    pub fn for_stderr() -> Self {
        Self {
            bars: io::stderr().is_terminal().then(MultiProgress::new),
        }
    }

    /// Whether progress is drawn as bars.
    pub fn has_bars(&self) -> bool {
        self.bars.is_some()
    }

    /// A tracing writer to standard error that lifts the bars off while it writes.
    pub fn log_writer(&self) -> LogWriter {
        LogWriter {
            bars: self.bars.clone(),
        }
    }

    /// Prints `text` (a line or several) to standard output, above the bars.
    pub fn print(&self, text: &str) {
        let print = || {
            let mut out = io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        };
        match &self.bars {
            Some(bars) => bars.suspend(print),
            None => print(),
        }
    }

    /// Starts showing progress of `symbols`, each with its count of candles to fetch.
    pub(super) fn track(&self, symbols: &[(String, u64)]) -> Progress {
        let style = ProgressStyle::with_template(
            // per_sec's width is its precision: whole candles a second.
            "{prefix:>14} [{bar:30}] {pos}/{len} candles, {per_sec:0}, ETA {eta} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> ");
        let symbols: Vec<SymbolProgress> = symbols
            .iter()
            .map(|(symbol, to_fetch)| SymbolProgress {
                counts: Arc::new(Counts {
                    symbol: symbol.clone(),
                    stored: AtomicU64::new(0),
                    to_fetch: AtomicU64::new(*to_fetch),
                }),
                bar: self.bars.as_ref().map(|bars| {
                    let bar = bars.add(ProgressBar::new(*to_fetch).with_style(style.clone()));
                    bar.set_prefix(symbol.clone());
                    bar
                }),
            })
            .collect();
        let done = CancellationToken::new();
        if self.bars.is_none() {
            tokio::spawn(log_progress(symbols.clone(), done.clone()));
        }
        Progress { symbols, done }
    }
}

/// Progress of every symbol; the periodic log stops when it is dropped.
pub(super) struct Progress {
    symbols: Vec<SymbolProgress>,
    done: CancellationToken,
}

impl Progress {
    /// Each symbol's progress, in the order given.
    pub(super) fn symbols(&self) -> &[SymbolProgress] {
        &self.symbols
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

struct Counts {
    symbol: String,
    stored: AtomicU64,
    to_fetch: AtomicU64,
}

/// One symbol's progress: its bar, if drawn, and its counts for the log.
#[derive(Clone)]
pub(super) struct SymbolProgress {
    counts: Arc<Counts>,
    bar: Option<ProgressBar>,
}

impl SymbolProgress {
    /// `n` more candles written.
    pub(super) fn stored(&self, n: u64) {
        self.counts.stored.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// `n` missing open times the exchange has no candle for: no longer to fetch.
    pub(super) fn unavailable(&self, n: u64) {
        if n == 0 {
            return;
        }
        let left = self.counts.to_fetch.fetch_sub(n, Ordering::Relaxed) - n;
        if let Some(bar) = &self.bar {
            bar.set_length(left);
        }
    }

    /// The bar ends with `status` (`done`, `interrupted`, `failed`).
    pub(super) fn finish(&self, status: &'static str) {
        if let Some(bar) = &self.bar {
            if status == "done" {
                bar.finish_with_message(status);
            } else {
                bar.abandon_with_message(status);
            }
        }
    }
}

/// One line every [`LOG_EVERY`] until `done`: stored of to fetch, rate, time left,
/// and each symbol's share.
async fn log_progress(symbols: Vec<SymbolProgress>, done: CancellationToken) {
    let started = Instant::now();
    let mut ticks = Every::new(LOG_EVERY, done);
    ticks.next().await; // the first tick is at once: nothing to say yet
    while ticks.next().await {
        let (mut stored, mut to_fetch) = (0, 0);
        let mut each = Vec::with_capacity(symbols.len());
        for symbol in &symbols {
            let counts = &symbol.counts;
            let (s, t) = (
                counts.stored.load(Ordering::Relaxed),
                counts.to_fetch.load(Ordering::Relaxed),
            );
            stored += s;
            to_fetch += t;
            each.push(format!("{} {s}/{t}", counts.symbol));
        }
        let rate = stored as f64 / started.elapsed().as_secs_f64().max(0.001);
        let left = if rate > 0.0 {
            human(Duration::from_secs_f64(
                to_fetch.saturating_sub(stored) as f64 / rate,
            ))
        } else {
            "unknown".to_owned()
        };
        info!(
            stored,
            to_fetch,
            "backfill progress: {stored} of {to_fetch} candles stored ({}%), {rate:.0}/s, {left} left; {}",
            stored * 100 / to_fetch.max(1),
            each.join(", ")
        );
    }
}

/// `42 s`, `3 min 20 s`, `2 h 5 min`: a duration for people.
pub(super) fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..10 => format!("{:.1} s", duration.as_secs_f64()),
        10..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// A tracing writer to standard error that hides the bars while a line is written.
#[derive(Clone)]
pub struct LogWriter {
    bars: Option<MultiProgress>,
}

impl<'w> tracing_subscriber::fmt::MakeWriter<'w> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'w self) -> LogLine {
        LogLine {
            buffer: Vec::new(),
            bars: self.bars.clone(),
        }
    }
}

/// One log line, written to standard error as a whole when dropped.
pub struct LogLine {
    buffer: Vec<u8>,
    bars: Option<MultiProgress>,
}

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let write = || {
            let _ = io::stderr().lock().write_all(&self.buffer);
        };
        match &self.bars {
            Some(bars) => bars.suspend(write),
            None => write(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(Duration::from_millis(420)), "0.4 s");
        assert_eq!(human(Duration::from_millis(42_900)), "42 s");
        assert_eq!(human(Duration::from_secs(200)), "3 min 20 s");
        assert_eq!(human(Duration::from_secs(7_500)), "2 h 5 min");
    }

    #[tokio::test]
    async fn without_bars_the_counts_still_add_up() {
        let console = Console::default();
        assert!(!console.has_bars());
        let progress = console.track(&[("BTCUSDT".into(), 100)]);
        let symbol = &progress.symbols()[0];
        symbol.stored(30);
        symbol.unavailable(20);
        symbol.unavailable(0);
        assert_eq!(symbol.counts.stored.load(Ordering::Relaxed), 30);
        assert_eq!(symbol.counts.to_fetch.load(Ordering::Relaxed), 80);
        symbol.finish("done");
    }
}
