//! Binance's kline wire formats: a combined-stream frame and a REST klines row,
//! parsed into [`Candle`]s (Binance USD-M futures docs, "Kline/Candlestick Streams"
//! and "Kline/Candlestick Data").

use serde::{Deserialize, Deserializer};

use crate::candle::{Candle, InvalidCandle, Notation, Scale, decimals_of};

/// Why a frame or row was not a usable candle.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not a kline frame: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unexpected event type {0:?}")]
    EventType(String),
    #[error(transparent)]
    Invalid(#[from] InvalidCandle),
}

/// A kline update from the combined stream: the candle so far and whether it closed.
#[derive(Debug, Clone, PartialEq)]
pub struct KlineUpdate {
    pub candle: Candle,
    /// `k.x`: true on the last update of the candle, the only one that is stored.
    pub closed: bool,
    /// `E`: when the exchange sent it, ms since the epoch on the exchange's clock.
    pub event_time: Option<i64>,
    /// How the frame's strings are written (its decimals per kind of value).
    pub notation: Notation,
}

/// What a text frame that is not a kline event is, for counting and logging:
/// `ack` (`{"result":null,"id":1}`, a subscription answer), `error` (an error
/// object), `event` (another event type) or `malformed`.
pub fn frame_kind(text: &str) -> &'static str {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) if value.get("result").is_some() && value.get("id").is_some() => "ack",
        Ok(value) if value.get("error").is_some() || value.get("code").is_some() => "error",
        Ok(value) if value.pointer("/data/e").is_some_and(|e| e != "kline") => "event",
        _ => "malformed",
    }
}

#[derive(Deserialize)]
struct CombinedFrame {
    #[allow(dead_code)]
    stream: String,
    data: KlineEvent,
}

#[derive(Deserialize)]
struct KlineEvent {
    #[serde(rename = "e")]
    event_type: String,
    /// Event time, ms since the epoch on the exchange's clock.
    #[serde(rename = "E", default)]
    event_time: Option<i64>,
    #[serde(rename = "k")]
    kline: StreamKline,
}

#[derive(Deserialize)]
struct StreamKline {
    #[serde(rename = "t")]
    open_time: i64,
    #[serde(rename = "T")]
    close_time: i64,
    #[serde(rename = "s")]
    symbol: String,
    #[serde(rename = "i")]
    interval: String,
    #[serde(rename = "o")]
    open: Number,
    #[serde(rename = "c")]
    close: Number,
    #[serde(rename = "h")]
    high: Number,
    #[serde(rename = "l")]
    low: Number,
    #[serde(rename = "v")]
    volume: Number,
    #[serde(rename = "n")]
    trades: i64,
    #[serde(rename = "x")]
    closed: bool,
    #[serde(rename = "q")]
    quote_volume: Number,
    #[serde(rename = "V")]
    taker_buy_volume: Number,
    #[serde(rename = "Q")]
    taker_buy_quote_volume: Number,
}

/// A row of `GET /fapi/v1/klines`:
/// `[openTime,"o","h","l","c","v",closeTime,"q",trades,"V","Q","ignore"]`.
#[derive(Debug, Deserialize)]
pub struct RestKline(
    i64,
    Number,
    Number,
    Number,
    Number,
    Number,
    i64,
    Number,
    i64,
    Number,
    Number,
    serde::de::IgnoredAny,
);

/// A price or volume: Binance sends strings ("84201.70") to keep their precision;
/// a JSON number is read too. The string's decimals are kept so the candle can be
/// written back as the exchange wrote it ([`Notation`]).
#[derive(Debug, Clone, Copy)]
struct Number {
    value: f64,
    /// Digits after the point of the string; `None` for a JSON number.
    decimals: Option<u8>,
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw<'a> {
            Number(f64),
            Text(&'a str),
            Owned(String),
        }
        let parse = |text: &str| {
            let value = text
                .trim()
                .parse::<f64>()
                .map_err(serde::de::Error::custom)?;
            Ok(Number {
                value,
                decimals: Some(decimals_of(text)),
            })
        };
        match Raw::deserialize(deserializer)? {
            Raw::Number(value) => Ok(Number {
                value,
                decimals: None,
            }),
            Raw::Text(text) => parse(text),
            Raw::Owned(text) => parse(&text),
        }
    }
}

/// The notation shown by one candle's strings: prices, base volumes, quote volumes.
fn notation_of(prices: [Number; 4], quantities: [Number; 2], quotes: [Number; 2]) -> Notation {
    fn scale(numbers: &[Number]) -> Scale {
        numbers
            .iter()
            .filter_map(|n| n.decimals)
            .fold(Scale::Unknown, Scale::observe)
    }
    Notation {
        price: scale(&prices),
        quantity: scale(&quantities),
        quote: scale(&quotes),
    }
}

impl KlineUpdate {
    /// Parses one combined-stream text frame (`{"stream":…,"data":{"e":"kline",…}}`).
    pub fn from_combined_frame(text: &str) -> Result<Self, ParseError> {
        let frame: CombinedFrame = serde_json::from_str(text)?;
        if frame.data.event_type != "kline" {
            return Err(ParseError::EventType(frame.data.event_type));
        }
        let event_time = frame.data.event_time;
        let k = frame.data.kline;
        let candle = Candle {
            symbol: k.symbol.to_uppercase(),
            interval: k.interval,
            open_time: k.open_time,
            close_time: k.close_time,
            open: k.open.value,
            high: k.high.value,
            low: k.low.value,
            close: k.close.value,
            volume: k.volume.value,
            quote_volume: k.quote_volume.value,
            taker_buy_volume: k.taker_buy_volume.value,
            taker_buy_quote_volume: k.taker_buy_quote_volume.value,
            trades: k.trades,
        };
        candle.validate()?;
        Ok(Self {
            candle,
            closed: k.closed,
            event_time,
            notation: notation_of(
                [k.open, k.high, k.low, k.close],
                [k.volume, k.taker_buy_volume],
                [k.quote_volume, k.taker_buy_quote_volume],
            ),
        })
    }
}

impl RestKline {
    /// Builds a candle from a REST row; the symbol and interval come from the request.
    pub fn into_candle(self, symbol: &str, interval: &str) -> Result<Candle, ParseError> {
        let candle = Candle {
            symbol: symbol.to_uppercase(),
            interval: interval.to_owned(),
            open_time: self.0,
            open: self.1.value,
            high: self.2.value,
            low: self.3.value,
            close: self.4.value,
            volume: self.5.value,
            close_time: self.6,
            quote_volume: self.7.value,
            trades: self.8,
            taker_buy_volume: self.9.value,
            taker_buy_quote_volume: self.10.value,
        };
        candle.validate()?;
        Ok(candle)
    }

    /// How the row's strings are written (its decimals per kind of value).
    pub fn notation(&self) -> Notation {
        notation_of(
            [self.1, self.2, self.3, self.4],
            [self.5, self.9],
            [self.7, self.10],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE_CLOSED: &str = r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1763791560012,"s":"BTCUSDT","k":{"t":1763791500000,"T":1763791559999,"s":"BTCUSDT","i":"1m","f":6651234567,"L":6651241002,"o":"84210.10","c":"84201.70","h":"84230.00","l":"84188.00","v":"171.904","n":6437,"x":true,"q":"14475520.10470","V":"80.551","Q":"6782976.41400","B":"0"}}}"#;
    const FIXTURE_OPEN: &str = r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1763791559250,"s":"BTCUSDT","k":{"t":1763791500000,"T":1763791559999,"s":"BTCUSDT","i":"1m","f":6651234567,"L":6651239876,"o":"84210.10","c":"84198.40","h":"84230.00","l":"84190.20","v":"152.347","n":5310,"x":false,"q":"12829011.53210","V":"70.112","Q":"5904110.88120","B":"0"}}}"#;
    const FIXTURE_REST: &str = r#"[
      [1763791380000,"84250.00","84262.50","84231.10","84240.30","98.112",1763791439999,"8265290.11200",3012,"51.004","4296839.22100","0"],
      [1763791560000,"84201.70","84215.30","84199.90","84212.00","12.334",1763791619999,"1038655.20010",402,"6.100","513670.01200","0"]
    ]"#;

    #[test]
    fn parses_a_closed_combined_frame_with_string_numbers() {
        let update = KlineUpdate::from_combined_frame(FIXTURE_CLOSED).unwrap();
        assert!(update.closed);
        let c = update.candle;
        assert_eq!(c.symbol, "BTCUSDT");
        assert_eq!(c.interval, "1m");
        assert_eq!(
            (c.open_time, c.close_time),
            (1_763_791_500_000, 1_763_791_559_999)
        );
        assert_eq!(
            (c.open, c.high, c.low, c.close),
            (84210.10, 84230.00, 84188.00, 84201.70)
        );
        assert_eq!(c.volume, 171.904);
        assert_eq!(c.quote_volume, 14475520.1047);
        assert_eq!(c.taker_buy_volume, 80.551);
        assert_eq!(c.taker_buy_quote_volume, 6782976.414);
        assert_eq!(c.trades, 6437);
    }

    #[test]
    fn the_strings_decimals_are_kept_per_kind_of_value() {
        let update = KlineUpdate::from_combined_frame(FIXTURE_CLOSED).unwrap();
        assert_eq!(update.notation, Notation::from_precisions(2, 3));
        let rows: Vec<RestKline> = serde_json::from_str(FIXTURE_REST).unwrap();
        assert_eq!(rows[1].notation(), Notation::from_precisions(2, 3));
        let shortest = FIXTURE_CLOSED.replace(r#""c":"84201.70""#, r#""c":"84201.7""#);
        let update = KlineUpdate::from_combined_frame(&shortest).unwrap();
        assert_eq!(update.notation.price, Scale::Shortest);
        let numbers = FIXTURE_CLOSED.replace(r#""v":"171.904""#, r#""v":171.904"#);
        let update = KlineUpdate::from_combined_frame(&numbers).unwrap();
        assert_eq!(update.notation.quantity, Scale::Fixed(3), "V still tells");
    }

    #[test]
    fn an_open_frame_is_marked_open() {
        let update = KlineUpdate::from_combined_frame(FIXTURE_OPEN).unwrap();
        assert!(!update.closed);
        assert_eq!(update.candle.close, 84198.40);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let cases = [
            "",
            "not json",
            r#"{"result":null,"id":1}"#,
            r#"{"stream":"x","data":{"e":"aggTrade","k":{}}}"#,
            &FIXTURE_CLOSED.replace(r#""c":"84201.70""#, r#""c":"abc""#),
            &FIXTURE_CLOSED.replace(r#""c":"84201.70""#, r#""c":"NaN""#),
            &FIXTURE_CLOSED.replace(r#""T":1763791559999"#, r#""T":1763791400000"#),
            &FIXTURE_CLOSED.replace(r#""x":true"#, r#""x":"yes""#),
        ];
        for case in cases {
            assert!(
                KlineUpdate::from_combined_frame(case).is_err(),
                "accepted {case}"
            );
        }
        let err = KlineUpdate::from_combined_frame(r#"{"stream":"x","data":{"e":"trade","k":{}}}"#);
        assert!(err.is_err());
    }

    #[test]
    fn parses_rest_rows() {
        let rows: Vec<RestKline> = serde_json::from_str(FIXTURE_REST).unwrap();
        let candles: Vec<Candle> = rows
            .into_iter()
            .map(|row| row.into_candle("btcusdt", "1m").unwrap())
            .collect();
        assert_eq!(candles.len(), 2);
        let c = &candles[0];
        assert_eq!(c.symbol, "BTCUSDT");
        assert_eq!(
            (c.open_time, c.close_time),
            (1_763_791_380_000, 1_763_791_439_999)
        );
        assert_eq!(
            (c.open, c.high, c.low, c.close),
            (84250.00, 84262.50, 84231.10, 84240.30)
        );
        assert_eq!((c.volume, c.quote_volume), (98.112, 8265290.112));
        assert_eq!(c.trades, 3012);
        assert_eq!(
            (c.taker_buy_volume, c.taker_buy_quote_volume),
            (51.004, 4296839.221)
        );
    }

    #[test]
    fn the_fixture_rows_parse() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/rest-klines.json"
        ))
        .unwrap_or_else(|_| FIXTURE_REST.to_owned());
        let rows: Vec<RestKline> = serde_json::from_str(&text).unwrap();
        assert!(rows.len() >= 2);
    }

    #[test]
    fn frames_that_are_not_klines_are_told_apart() {
        assert_eq!(frame_kind(r#"{"result":null,"id":1}"#), "ack");
        assert_eq!(
            frame_kind(r#"{"error":{"code":2,"msg":"Invalid request"},"id":2}"#),
            "error"
        );
        assert_eq!(
            frame_kind(r#"{"stream":"x","data":{"e":"aggTrade"}}"#),
            "event"
        );
        assert_eq!(frame_kind("not json"), "malformed");
        assert_eq!(
            KlineUpdate::from_combined_frame(FIXTURE_CLOSED)
                .unwrap()
                .event_time,
            Some(1_763_791_560_012)
        );
    }

    #[test]
    fn a_short_rest_row_is_rejected() {
        assert!(serde_json::from_str::<RestKline>(r#"[1763791380000,"1","2"]"#).is_err());
    }
}
