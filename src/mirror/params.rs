//! `GET /fapi/v1/klines`'s parameters read as Binance reads them (USD-M docs,
//! "Kline/Candlestick Data"): `symbol` and `interval` mandatory, `startTime`,
//! `endTime` and `limit` optional whole numbers, `limit` 500 by default and at most
//! 1,500.

use std::collections::HashMap;

use super::error::BinanceError;
use crate::candle::Interval;

/// `limit` when none is sent.
pub const DEFAULT_LIMIT: usize = 500;
/// The largest `limit` Binance accepts.
pub const MAX_LIMIT: usize = 1500;
/// Binance's interval names, `1M` (a calendar month) included.
pub const BINANCE_INTERVALS: [&str; 15] = [
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
];

/// A klines request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KlinesQuery {
    pub symbol: String,
    pub interval: String,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub limit: usize,
}

impl KlinesQuery {
    /// Reads the raw query string.
    ///
    /// # Errors
    /// [`BinanceError`] -1101 for a parameter sent twice, -1102 for a missing
    /// `symbol` or `interval`, -1100 for a number that is not one, -1130 for a
    /// `limit` outside 1–1,500, -1120 for an interval Binance does not have, -1023
    /// for a `startTime` after the `endTime`.
    pub fn parse(raw: &str) -> Result<Self, BinanceError> {
        let mut params: HashMap<String, String> = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            if params
                .insert(name.into_owned(), value.into_owned())
                .is_some()
            {
                return Err(BinanceError::Duplicate);
            }
        }
        let mandatory = |name: &'static str| match params.get(name) {
            Some(value) if !value.is_empty() => Ok(value.clone()),
            _ => Err(BinanceError::Mandatory(name)),
        };
        let symbol = mandatory("symbol")?;
        let interval = mandatory("interval")?;
        let number = |name: &'static str| -> Result<Option<i64>, BinanceError> {
            match params.get(name) {
                None => Ok(None),
                Some(value) => {
                    let digits = !value.is_empty()
                        && value.len() <= 20
                        && value.bytes().all(|b| b.is_ascii_digit());
                    if !digits {
                        return Err(BinanceError::IllegalCharacters(name));
                    }
                    value
                        .parse::<i64>()
                        .map(Some)
                        .map_err(|_| BinanceError::InvalidValue(name))
                }
            }
        };
        let start_time = number("startTime")?;
        let end_time = number("endTime")?;
        let limit = match number("limit")? {
            None => DEFAULT_LIMIT,
            Some(limit) => usize::try_from(limit)
                .ok()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or(BinanceError::InvalidValue("limit"))?,
        };
        if !BINANCE_INTERVALS.contains(&interval.as_str()) {
            return Err(BinanceError::InvalidInterval);
        }
        if let (Some(start), Some(end)) = (start_time, end_time)
            && start > end
        {
            return Err(BinanceError::StartAfterEnd);
        }
        Ok(Self {
            symbol,
            interval,
            start_time,
            end_time,
            limit,
        })
    }

    /// The interval, when candlecast builds it itself ([`buildable_interval`]);
    /// `None`: forwarded.
    pub fn buildable_interval(&self, base: &Interval) -> Option<Interval> {
        buildable_interval(&self.interval, base)
    }
}

/// The interval named `name`, when candlecast can build it from `base` candles: a
/// fixed length that is a whole multiple of the base's, up to `1w`, `3d` aside (its
/// buckets follow Binance's own origin, not the epoch's). `None` for `3d`, `1M`,
/// intervals shorter than the base and names Binance does not have.
pub fn buildable_interval(name: &str, base: &Interval) -> Option<Interval> {
    let interval = Interval::parse(name).ok()?;
    let whole = interval.millis() >= base.millis() && interval.millis() % base.millis() == 0;
    (whole && interval.name() != "3d").then_some(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binance_s_rules_and_errors() {
        let q = KlinesQuery::parse("symbol=BTCUSDT&interval=1m").unwrap();
        assert_eq!((q.limit, q.start_time, q.end_time), (500, None, None));
        let q = KlinesQuery::parse("symbol=BTCUSDT&interval=2h&startTime=0&limit=1500").unwrap();
        assert_eq!((q.limit, q.start_time), (1500, Some(0)));
        let err = |raw: &str| KlinesQuery::parse(raw).unwrap_err().code();
        assert_eq!(err("interval=1m"), -1102);
        assert_eq!(err("symbol=&interval=1m"), -1102);
        assert_eq!(err("symbol=BTCUSDT"), -1102);
        assert_eq!(err("symbol=BTCUSDT&interval=7m"), -1120);
        assert_eq!(err("symbol=BTCUSDT&interval=1m&limit=1501"), -1130);
        assert_eq!(err("symbol=BTCUSDT&interval=1m&limit=abc"), -1100);
        assert_eq!(err("symbol=BTCUSDT&interval=1m&startTime=-5"), -1100);
        assert_eq!(err("symbol=BTCUSDT&symbol=ETHUSDT&interval=1m"), -1101);
        assert_eq!(
            err("symbol=BTCUSDT&interval=1m&startTime=2&endTime=1"),
            -1023
        );
        assert!(KlinesQuery::parse("symbol=BTCUSDT&interval=1m&startTime=2&endTime=2").is_ok());
        let base = Interval::parse("1m").unwrap();
        let built = |i: &str| {
            KlinesQuery::parse(&format!("symbol=X&interval={i}"))
                .unwrap()
                .buildable_interval(&base)
                .map(|i| i.name().to_owned())
        };
        assert_eq!(built("3m").as_deref(), Some("3m"));
        assert_eq!(built("1w").as_deref(), Some("1w"));
        assert_eq!(built("3d"), None);
        assert_eq!(built("1M"), None);
    }
}
