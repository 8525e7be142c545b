//! Binance kline intervals with a fixed length, and where their candles open.

use std::fmt;

/// An interval name Binance does not have, or one without a fixed length (`1M`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported interval {0:?}; expected one of 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w")]
pub struct UnknownInterval(pub String);

/// A Binance kline interval with a fixed length (`1m` … `1w`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    name: String,
    millis: i64,
}

impl Interval {
    /// Parses Binance's interval names (Binance USD-M futures docs, "Kline/Candlestick
    /// Data"); `1M` (a calendar month) has no fixed length and is not supported.
    ///
    /// # Errors
    /// [`UnknownInterval`] for any other name.
    pub fn parse(raw: &str) -> Result<Self, UnknownInterval> {
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
            _ => return Err(UnknownInterval(raw.to_owned())),
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

    /// Open time (ms since the epoch, UTC) of the candle that contains `now_ms`:
    /// a multiple of the length since the epoch, except weeks, which open on
    /// Mondays 00:00 UTC as Binance's do.
    pub fn open_time_containing(&self, now_ms: i64) -> i64 {
        let offset = self.offset();
        (now_ms - offset).div_euclid(self.millis) * self.millis + offset
    }

    /// Whether every candle of `longer` is made of whole candles of this interval
    /// (`1h` in `4h`, `1d` in `1w`; not `3d` in `1w`), so `longer` can be built
    /// from this interval's candles instead of from the base ones.
    pub fn nests_in(&self, longer: &Interval) -> bool {
        longer.millis % self.millis == 0 && (longer.offset() - self.offset()) % self.millis == 0
    }

    /// Where the interval's candles start counting (ms since the epoch): the epoch
    /// was a Thursday, and weeks are counted from Monday 1970-01-05.
    fn offset(&self) -> i64 {
        if self.name == "1w" { 4 * 86_400_000 } else { 0 }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn shorter_candles_nest_in_longer_ones_that_they_divide() {
        let nests = |shorter: &str, longer: &str| {
            Interval::parse(shorter)
                .unwrap()
                .nests_in(&Interval::parse(longer).unwrap())
        };
        assert!(nests("1m", "5m") && nests("5m", "15m") && nests("1h", "4h"));
        assert!(nests("4h", "1d") && nests("1d", "1w") && nests("4h", "1w"));
        assert!(nests("1d", "3d") && nests("1h", "1h"));
        assert!(!nests("3m", "5m") && !nests("3d", "1w") && !nests("2h", "1h"));
        // Weeks open on Mondays, 4 days after the epoch: no 8h grid misses that.
        assert!(nests("8h", "1w") && !nests("3d", "1w"));
    }
}
