//! The JSON messages sent to websocket clients (DESIGN.md §3), and how a client
//! asks for them.

use serde::Serialize;

use crate::candle::{Candle, Indicator, IndicatorValue};

/// One coin's window, newest candle first; the three arrays are parallel:
/// `{"coin":"BTCUSDT","values":[…],"operations":["BUY",…],"time":["14:07",…]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoinMessage<'a> {
    /// The symbol, upper case.
    pub coin: &'a str,
    /// Close prices.
    pub values: Vec<f64>,
    /// `"BUY"` or `"SELL"` per candle.
    pub operations: Vec<&'static str>,
    /// `HH:MM` of each candle's close, in the configured zone.
    pub time: Vec<String>,
}

impl CoinMessage<'_> {
    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .expect("a CoinMessage always serializes: finite numbers and plain strings")
    }
}

/// How a client wants its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// The DESIGN.md §3 message: `values`, `operations`, `time`.
    Compact,
    /// Full candles: `{"coin", "candles": [{"open_time", …}]}`.
    Candles,
}

/// One candle in the `candles` format; times in epoch milliseconds (UTC).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandleEntry {
    pub open_time: i64,
    pub close_time: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub trades: i64,
    /// The requested indicators at this candle, when any were requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indicators: Option<IndicatorValues>,
}

impl From<&Candle> for CandleEntry {
    fn from(c: &Candle) -> Self {
        Self {
            open_time: c.open_time,
            close_time: c.close_time,
            open: c.open,
            high: c.high,
            low: c.low,
            close: c.close,
            volume: c.volume,
            trades: c.trades,
            indicators: None,
        }
    }
}

/// A candle with every stored field, as the history API and the forming message
/// give it: the `candles` format's fields plus the remaining volumes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredCandle {
    #[serde(flatten)]
    pub candle: CandleEntry,
    pub quote_volume: f64,
    pub taker_buy_volume: f64,
    pub taker_buy_quote_volume: f64,
}

impl From<&Candle> for StoredCandle {
    fn from(c: &Candle) -> Self {
        Self {
            candle: c.into(),
            quote_volume: c.quote_volume,
            taker_buy_volume: c.taker_buy_volume,
            taker_buy_quote_volume: c.taker_buy_quote_volume,
        }
    }
}

/// Indicator values keyed by name in the order requested:
/// `{"rsi14": 55.1, "bb20": {"upper": …, "middle": …, "lower": …}, "ema20": null}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IndicatorValues(pub Vec<(String, Option<IndicatorValue>)>);

impl IndicatorValues {
    /// `indicators` at every one of `candles` (oldest first), computed over their
    /// closes: one entry per candle, or none at all when no indicator is asked for.
    pub fn over(candles: &[Candle], indicators: &[Indicator]) -> Vec<IndicatorValues> {
        if indicators.is_empty() {
            return Vec::new();
        }
        let closes: Vec<f64> = candles.iter().map(|c| c.close).collect();
        let series: Vec<(String, Vec<Option<IndicatorValue>>)> = indicators
            .iter()
            .map(|indicator| (indicator.name(), indicator.compute(&closes)))
            .collect();
        (0..candles.len())
            .map(|index| {
                IndicatorValues(
                    series
                        .iter()
                        .map(|(name, values)| (name.clone(), values[index]))
                        .collect(),
                )
            })
            .collect()
    }
}

impl Serialize for IndicatorValues {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// A coin's window in the `candles` format, newest first:
/// `{"coin":"BTCUSDT","interval":"5m","candles":[…]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandlesMessage<'a> {
    pub coin: &'a str,
    pub interval: &'a str,
    pub candles: Vec<CandleEntry>,
}

impl CandlesMessage<'_> {
    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a CandlesMessage always serializes")
    }
}

/// The candle still forming, for `live=true` clients:
/// `{"coin":"BTCUSDT","interval":"1m","forming":{"open_time":…,…}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FormingMessage<'a> {
    pub coin: &'a str,
    pub interval: &'a str,
    pub forming: StoredCandle,
}

impl FormingMessage<'_> {
    /// The message as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a FormingMessage always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_in_the_documented_shape_and_order() {
        let message = CoinMessage {
            coin: "BTCUSDT",
            values: vec![97012.5, 97001.1, 97000.0],
            operations: vec!["BUY", "SELL", "BUY"],
            time: vec!["14:07".into(), "14:06".into(), "14:05".into()],
        };
        assert_eq!(
            message.to_json(),
            r#"{"coin":"BTCUSDT","values":[97012.5,97001.1,97000.0],"operations":["BUY","SELL","BUY"],"time":["14:07","14:06","14:05"]}"#
        );
    }

    #[test]
    fn an_empty_window_is_still_a_message() {
        let message = CoinMessage {
            coin: "XRPUSDT",
            values: vec![],
            operations: vec![],
            time: vec![],
        };
        assert_eq!(
            message.to_json(),
            r#"{"coin":"XRPUSDT","values":[],"operations":[],"time":[]}"#
        );
    }
}
