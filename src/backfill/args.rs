//! The `backfill` subcommand's arguments: the range (`--from`, `--to`, UTC dates or
//! RFC 3339 times) and the symbols, parsed and checked before anything is opened.

use chrono::{DateTime, Utc};

use crate::candle::parse_instant;

use crate::config::{ArgumentError, parse_symbol_list};

/// `candlecast backfill --from DATE [--to DATE] [--symbols LIST]`.
#[derive(Debug, Clone, clap::Args)]
pub struct BackfillArgs {
    /// Start of the range: candles opening at or after it. YYYY-MM-DD (00:00 UTC) or
    /// an RFC 3339 time such as 2025-01-01T12:00:00Z
    #[arg(long, value_name = "DATE", value_parser = parse_time)]
    pub from: DateTime<Utc>,
    /// End of the range, exclusive: candles opening before it [default: now]
    #[arg(long, value_name = "DATE", value_parser = parse_time)]
    pub to: Option<DateTime<Utc>>,
    /// Comma-separated symbols, e.g. BTCUSDT,ETHUSDT [default: SYMBOLS]
    #[arg(long, value_name = "LIST", value_parser = parse_symbols)]
    pub symbols: Option<SymbolList>,
}

/// The symbols `--symbols` named, upper case, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolList(pub Vec<String>);

impl BackfillArgs {
    /// The range in ms since the epoch (UTC), `[from, to)`, with `to` defaulting to
    /// `now`.
    ///
    /// # Errors
    /// [`ArgumentError`] naming `--to` (or `--from` when `--to` is left to default)
    /// when the range is empty.
    pub fn range(&self, now: DateTime<Utc>) -> Result<(i64, i64), ArgumentError> {
        let (to, arg) = match self.to {
            Some(to) => (to, "--to"),
            None => (now, "--from"),
        };
        if self.from >= to {
            let reason = match self.to {
                Some(_) => format!(
                    "{} is not after --from {}; the range is [--from, --to)",
                    rfc3339(to),
                    rfc3339(self.from)
                ),
                None => format!(
                    "{} is not in the past; without --to the range ends now",
                    rfc3339(self.from)
                ),
            };
            return Err(ArgumentError::new(arg, reason));
        }
        Ok((self.from.timestamp_millis(), to.timestamp_millis()))
    }
}

/// `YYYY-MM-DD` (00:00 UTC that day) or an RFC 3339 time, from 1970 on.
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    // The same forms the history API's `from` and `to` take (epoch ms too).
    let millis = parse_instant(raw).map_err(|err| err.to_string())?;
    DateTime::from_timestamp_millis(millis).ok_or_else(|| format!("{raw:?} is out of range"))
}

/// `--symbols`, read as `SYMBOLS` is.
fn parse_symbols(raw: &str) -> Result<SymbolList, String> {
    parse_symbol_list(raw).map(SymbolList)
}

/// `2025-01-01T00:00:00Z`: how times are shown, so any can be passed back as
/// `--from` or `--to`.
pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// [`rfc3339`] of ms since the epoch (UTC).
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(|| ms.to_string(), rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(from: &str, to: Option<&str>) -> BackfillArgs {
        BackfillArgs {
            from: parse_time(from).unwrap(),
            to: to.map(|to| parse_time(to).unwrap()),
            symbols: None,
        }
    }

    #[test]
    fn dates_are_midnight_utc_and_times_keep_their_offset() {
        assert_eq!(
            parse_time("2025-01-01").unwrap().timestamp_millis(),
            1_735_689_600_000
        );
        assert_eq!(
            parse_time("2025-01-01T01:30:00+01:30").unwrap(),
            parse_time("2025-01-01T00:00:00Z").unwrap()
        );
        assert_eq!(rfc3339_ms(1_735_689_600_000), "2025-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(1_735_689_600_500), "2025-01-01T00:00:00.500Z");
    }

    #[test]
    fn words_local_times_and_years_before_1970_are_refused() {
        for raw in [
            "yesterday",
            "2025-13-01",
            "2025-01-01 00:00",
            "2025-01-01T00:00:00",
        ] {
            let err = parse_time(raw).unwrap_err();
            assert!(err.contains("YYYY-MM-DD"), "{raw}: {err}");
        }
        assert!(parse_time("1969-12-31").unwrap_err().contains("1970"));
    }

    #[test]
    fn the_range_must_not_be_empty() {
        let now = parse_time("2025-07-01").unwrap();
        assert_eq!(
            args("2025-01-01", Some("2025-06-30")).range(now),
            Ok((1_735_689_600_000, 1_751_241_600_000))
        );
        assert_eq!(
            args("2025-01-01", None).range(now).unwrap().1,
            now.timestamp_millis()
        );
        let err = args("2025-06-30", Some("2025-01-01"))
            .range(now)
            .unwrap_err();
        assert_eq!(err.arg, "--to");
        assert_eq!(
            err.to_string(),
            "invalid argument: --to: 2025-01-01T00:00:00Z is not after --from \
             2025-06-30T00:00:00Z; the range is [--from, --to)"
        );
        assert_eq!(
            args("2025-01-01", Some("2025-01-01"))
                .range(now)
                .unwrap_err()
                .arg,
            "--to"
        );
        assert_eq!(
            args("2025-08-01", None).range(now).unwrap_err().arg,
            "--from"
        );
    }

    #[test]
    fn symbols_read_as_the_variable_does() {
        assert_eq!(
            parse_symbols("btcusdt, ETHUSDT").unwrap(),
            SymbolList(vec!["BTCUSDT".into(), "ETHUSDT".into()])
        );
        assert!(parse_symbols("").unwrap_err().contains("empty"));
        assert!(parse_symbols(" , ").unwrap_err().contains("empty"));
        assert!(parse_symbols("BTC/USDT").is_err());
        assert!(
            parse_symbols("BTCUSDT,btcusdt")
                .unwrap_err()
                .contains("twice")
        );
    }
}
