//! Tracing setup (pretty or JSON lines) and how errors are written into log lines.

use std::fmt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How the service logs, from `RUST_LOG` and `LOG_FORMAT`.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// The validated `RUST_LOG` filter, e.g. `info` or `candlecast=debug`.
    pub filter: String,
    pub format: LogFormat,
}

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

/// [`init`] with a chosen line format, to standard output.
pub fn init_with(filter: &str, format: LogFormat) {
    // Colour only for a person at a terminal; Docker and Railway logs get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    init_writing_to(filter, format, std::io::stdout, ansi);
}

/// [`init_with`] writing each line to `writer` (the backfill command logs to
/// standard error, around its progress bars), coloured when `ansi`.
pub fn init_writing_to<W>(filter: &str, format: LogFormat, writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Pretty => builder.with_ansi(ansi).try_init(),
    };
}

/// Shows an error with its causes, `outer: inner: innermost`, for one log field:
/// module errors keep their causes as `#[source]`, and a log line needs them all.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
