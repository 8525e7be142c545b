//! The candle domain: [`Candle`], the [`Interval`] it spans and the BUY/SELL
//! [`Operation`] a client sees. Pure data and rules, no I/O: every other module
//! builds on this one.

pub mod bucket;
#[cfg(test)]
mod bucket_sum_tests;
mod decimal_sum;
pub mod indicators;
mod instant;
mod interval;
mod notation;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

pub use bucket::{BucketBuilder, aggregate};
pub use decimal_sum::DecimalSum;
pub use indicators::{BadIndicator, Indicator, IndicatorValue};
pub use instant::{BadInstant, parse_instant, utc_date};
pub use interval::{Interval, UnknownInterval};
pub use notation::{Notation, Notations, Scale, decimals_of};

/// One candle of one symbol at one interval, as Binance reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candle {
    /// Upper case, e.g. `BTCUSDT`.
    pub symbol: String,
    /// Binance's interval name, e.g. `1m`.
    pub interval: String,
    /// Epoch milliseconds, UTC.
    pub open_time: i64,
    /// Epoch milliseconds, UTC; the last millisecond of the candle (open + interval − 1).
    pub close_time: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub quote_volume: f64,
    pub taker_buy_volume: f64,
    pub taker_buy_quote_volume: f64,
    pub trades: i64,
}

/// Why a candle's values cannot be right, whatever their source.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidCandle {
    #[error("{field} is not a finite number")]
    NotFinite { field: &'static str },
    #[error("close time {close_time} is not after open time {open_time}")]
    Times { open_time: i64, close_time: i64 },
}

impl Candle {
    /// Checks that every price and volume is finite and that the candle closes
    /// after it opens.
    ///
    /// # Errors
    /// [`InvalidCandle`] naming the first field at fault.
    pub fn validate(&self) -> Result<(), InvalidCandle> {
        let fields = [
            ("open", self.open),
            ("high", self.high),
            ("low", self.low),
            ("close", self.close),
            ("volume", self.volume),
            ("quote_volume", self.quote_volume),
            ("taker_buy_volume", self.taker_buy_volume),
            ("taker_buy_quote_volume", self.taker_buy_quote_volume),
        ];
        if let Some((field, _)) = fields.iter().find(|(_, value)| !value.is_finite()) {
            return Err(InvalidCandle::NotFinite { field });
        }
        if self.close_time <= self.open_time {
            return Err(InvalidCandle::Times {
                open_time: self.open_time,
                close_time: self.close_time,
            });
        }
        Ok(())
    }

    /// `HH:MM` of the minute the candle closed (open time + interval) in `zone`.
    pub fn close_label(&self, zone: Tz) -> String {
        // close_time is the candle's last millisecond; one more is the closing instant.
        let closed_at =
            DateTime::<Utc>::from_timestamp_millis(self.close_time + 1).unwrap_or_default();
        closed_at.with_timezone(&zone).format("%H:%M").to_string()
    }

    /// `YYYY-MM-DD`, the UTC date the candle opened: the label of daily and weekly
    /// candles, whose close minute is always 00:00.
    pub fn open_date(&self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.open_time)
            .unwrap_or_default()
            .format("%Y-%m-%d")
            .to_string()
    }
}

/// The trading direction a client sees for a candle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Buy,
    Sell,
}

impl Operation {
    /// BUY when the close is at least the previous candle's close, SELL when lower;
    /// with no previous candle known, the candle's own open is the reference.
    pub fn of(candle: &Candle, previous: Option<&Candle>) -> Self {
        let reference = previous.map_or(candle.open, |previous| previous.close);
        if candle.close >= reference {
            Operation::Buy
        } else {
            Operation::Sell
        }
    }

    /// The protocol's spelling: `"BUY"` or `"SELL"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Buy => "BUY",
            Operation::Sell => "SELL",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candle(open: f64, close: f64) -> Candle {
        Candle {
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            open_time: 1_763_791_500_000,
            close_time: 1_763_791_559_999,
            open,
            high: open.max(close),
            low: open.min(close),
            close,
            volume: 1.0,
            quote_volume: 1.0,
            taker_buy_volume: 0.5,
            taker_buy_quote_volume: 0.5,
            trades: 1,
        }
    }

    #[test]
    fn buy_sell_uses_the_previous_close() {
        let previous = candle(100.0, 105.0);
        assert_eq!(
            Operation::of(&candle(90.0, 106.0), Some(&previous)),
            Operation::Buy
        );
        // Equal counts as BUY.
        assert_eq!(
            Operation::of(&candle(110.0, 105.0), Some(&previous)),
            Operation::Buy
        );
        // Lower than the previous close is SELL even when above its own open.
        assert_eq!(
            Operation::of(&candle(100.0, 104.0), Some(&previous)),
            Operation::Sell
        );
    }

    #[test]
    fn buy_sell_without_a_previous_candle_uses_the_open() {
        assert_eq!(Operation::of(&candle(100.0, 101.0), None), Operation::Buy);
        assert_eq!(Operation::of(&candle(100.0, 100.0), None), Operation::Buy);
        assert_eq!(Operation::of(&candle(100.0, 99.5), None), Operation::Sell);
        assert_eq!(Operation::Buy.as_str(), "BUY");
        assert_eq!(Operation::Sell.as_str(), "SELL");
    }

    #[test]
    fn the_time_label_is_the_close_minute_in_the_zone() {
        // Opens 2025-11-22 06:05 UTC, closes 06:06 UTC.
        let c = candle(1.0, 1.0);
        assert_eq!(c.close_label(Tz::UTC), "06:06");
        // India is UTC+05:30 all year.
        assert_eq!(c.close_label(chrono_tz::Asia::Kolkata), "11:36");
        // New York is UTC−05:00 in November.
        assert_eq!(c.close_label(chrono_tz::America::New_York), "01:06");
        // Near midnight the date rolls but only HH:MM is shown.
        let mut late = c.clone();
        late.open_time = 1_763_855_940_000; // 2025-11-22 23:59 UTC
        late.close_time = late.open_time + 59_999;
        assert_eq!(late.close_label(Tz::UTC), "00:00");
        assert_eq!(late.close_label(chrono_tz::Asia::Tokyo), "09:00");
    }
}
