//! Stream names as Binance USD-M spells them: `<symbol>@kline_<interval>` and
//! `<pair>_<contractType>@continuousKline_<interval>` (Binance USD-M futures docs,
//! "Kline/Candlestick Streams" and "Continuous Contract Kline/Candlestick Streams").
//! "All symbols for streams are lowercase"; an upper-case symbol is read as its
//! lower-case name.

use std::fmt;

use crate::candle::Interval;

/// Binance's kline intervals; `1M` (a month) is a valid name that candlecast cannot
/// build (no fixed length), so its streams are accepted and stay silent.
const BINANCE_INTERVALS: [&str; 15] = [
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
];

/// Contract types of continuous-contract streams; only `perpetual` is served.
const CONTRACT_TYPES: [&str; 3] = ["perpetual", "current_quarter", "next_quarter"];

/// Which event a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    /// `<symbol>@kline_<interval>`: event `kline`.
    Kline,
    /// `<pair>_perpetual@continuousKline_<interval>`: event `continuous_kline`.
    ContinuousPerpetual,
    /// `<pair>_current_quarter@…`, `<pair>_next_quarter@…`: valid, never sent.
    ContinuousQuarter,
}

/// A valid stream name, parsed; [`fmt::Display`] gives its canonical (lower-case)
/// spelling, which `LIST_SUBSCRIPTIONS` and combined payloads use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamName {
    pub kind: StreamKind,
    /// The symbol (or pair) in upper case, as `SYMBOLS` and Binance's events name it.
    pub symbol: String,
    /// Binance's interval name, e.g. `5m`.
    pub interval: String,
    canonical: String,
}

/// A name that is not a kline stream Binance has: answered with
/// `{"code":2,"msg":"Invalid request: invalid stream"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid stream")]
pub struct InvalidStream;

impl StreamName {
    /// Parses a stream name.
    ///
    /// # Errors
    /// [`InvalidStream`] for anything but a kline or continuous-kline stream with
    /// one of Binance's intervals.
    pub fn parse(raw: &str) -> Result<Self, InvalidStream> {
        let (left, right) = raw.split_once('@').ok_or(InvalidStream)?;
        if left.is_empty() || left.contains('/') {
            return Err(InvalidStream);
        }
        let left = left.to_lowercase();
        let (kind, symbol, interval) = if let Some(interval) = right.strip_prefix("kline_") {
            (StreamKind::Kline, left.clone(), interval)
        } else if let Some(interval) = right.strip_prefix("continuousKline_") {
            let (pair, contract) = CONTRACT_TYPES
                .iter()
                .find_map(|c| {
                    let pair = left.strip_suffix(c)?.strip_suffix('_')?;
                    (!pair.is_empty()).then_some((pair, *c))
                })
                .ok_or(InvalidStream)?;
            let kind = if contract == "perpetual" {
                StreamKind::ContinuousPerpetual
            } else {
                StreamKind::ContinuousQuarter
            };
            (kind, pair.to_owned(), interval)
        } else {
            return Err(InvalidStream);
        };
        if !BINANCE_INTERVALS.contains(&interval) {
            return Err(InvalidStream);
        }
        let canonical = match kind {
            StreamKind::Kline => format!("{left}@kline_{interval}"),
            _ => format!("{left}@continuousKline_{interval}"),
        };
        Ok(Self {
            kind,
            symbol: symbol.to_uppercase(),
            interval: interval.to_owned(),
            canonical,
        })
    }

    /// The interval, when candlecast can build it (every Binance interval but `1M`).
    pub fn fixed_interval(&self) -> Option<Interval> {
        Interval::parse(&self.interval).ok()
    }

    /// The canonical name.
    pub fn as_str(&self) -> &str {
        &self.canonical
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kline_and_continuous_names_parse_to_their_canonical_spelling() {
        let kline = StreamName::parse("btcusdt@kline_5m").unwrap();
        assert_eq!(kline.kind, StreamKind::Kline);
        assert_eq!(kline.symbol, "BTCUSDT");
        assert_eq!(kline.as_str(), "btcusdt@kline_5m");
        assert_eq!(
            StreamName::parse("BTCUSDT@kline_1m").unwrap().as_str(),
            "btcusdt@kline_1m"
        );
        let continuous = StreamName::parse("ethusdt_perpetual@continuousKline_1h").unwrap();
        assert_eq!(continuous.kind, StreamKind::ContinuousPerpetual);
        assert_eq!(continuous.symbol, "ETHUSDT");
        assert_eq!(continuous.as_str(), "ethusdt_perpetual@continuousKline_1h");
        let quarter = StreamName::parse("btcusdt_next_quarter@continuousKline_1m").unwrap();
        assert_eq!(quarter.kind, StreamKind::ContinuousQuarter);
        assert!(
            StreamName::parse("btcusdt@kline_1M")
                .unwrap()
                .fixed_interval()
                .is_none()
        );
    }

    #[test]
    fn other_names_are_invalid_streams() {
        for raw in [
            "0",
            "btcusdt",
            "btcusdt@kline_7m",
            "btcusdt@kline_1",
            "btcusdt@aggTrade",
            "@kline_1m",
            "btcusdt_weekly@continuousKline_1m",
            "_perpetual@continuousKline_1m",
        ] {
            assert_eq!(StreamName::parse(raw), Err(InvalidStream), "{raw}");
        }
    }
}
