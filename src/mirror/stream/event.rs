//! Kline events encoded exactly as Binance USD-M sends them ("Kline/Candlestick
//! Streams", "Continuous Contract Kline/Candlestick Streams"): each event once, into
//! shared bytes, raw and (on first use) wrapped for combined connections.
//!
//! Prices and volumes are decimal strings written as the exchange writes that
//! symbol's ([`Notation`]: `"84201.70"`; never an exponent). Binance's `f`/`L` are the first and last
//! trade ids, which candlecast does not keep: it sends `f` = 0 and `L` = `n` − 1, so
//! `L − f + 1 = n` holds as it does on Binance.

use std::sync::{Arc, OnceLock};

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;

use super::name::{StreamKind, StreamName};
use crate::candle::{Candle, Notation, Scale};

/// One event of one stream, encoded once and shared by every subscriber.
#[derive(Debug)]
pub struct Event {
    /// The stream's canonical name.
    pub stream: Arc<StreamName>,
    /// The event alone, as a raw (`/ws`) connection gets it.
    pub raw: Utf8Bytes,
    /// `{"stream":…,"data":…}`, built by the first combined subscriber.
    combined: OnceLock<Utf8Bytes>,
}

impl Event {
    /// The event of `stream` for `candle` (`closed`: its final update), stamped
    /// `event_time` (ms since the epoch, on the exchange's clock).
    /// Its prices and volumes are written in `notation`.
    pub fn new(
        stream: Arc<StreamName>,
        candle: &Candle,
        notation: Notation,
        closed: bool,
        event_time: i64,
    ) -> Self {
        let raw = encode(&stream, candle, notation, closed, event_time);
        Self {
            stream,
            raw: Utf8Bytes::from(raw),
            combined: OnceLock::new(),
        }
    }

    /// The payload for a connection with the `combined` property set or not.
    pub fn payload(&self, combined: bool) -> Utf8Bytes {
        if !combined {
            return self.raw.clone();
        }
        self.combined
            .get_or_init(|| {
                let name = serde_json::to_string(self.stream.as_str())
                    .expect("a string always serializes");
                Utf8Bytes::from(format!(
                    "{{\"stream\":{name},\"data\":{}}}",
                    self.raw.as_str()
                ))
            })
            .clone()
    }
}

/// A price or volume as Binance writes it: a decimal string of its scale.
struct Decimal(f64, Scale);

impl Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(24);
        self.1.write(&mut text, self.0);
        serializer.serialize_str(&text)
    }
}

/// The `k` object; `s` only in `kline` events.
#[derive(Serialize)]
struct Kline<'a> {
    t: i64,
    #[serde(rename = "T")]
    close_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'a str>,
    i: &'a str,
    f: i64,
    #[serde(rename = "L")]
    last_trade: i64,
    o: Decimal,
    c: Decimal,
    h: Decimal,
    l: Decimal,
    v: Decimal,
    n: i64,
    x: bool,
    q: Decimal,
    #[serde(rename = "V")]
    taker_buy_volume: Decimal,
    #[serde(rename = "Q")]
    taker_buy_quote_volume: Decimal,
    #[serde(rename = "B")]
    ignore: &'static str,
}

/// `{"e":"kline","E":…,"s":…,"k":{…}}`.
#[derive(Serialize)]
struct KlineEvent<'a> {
    e: &'static str,
    #[serde(rename = "E")]
    event_time: i64,
    s: &'a str,
    k: Kline<'a>,
}

/// `{"e":"continuous_kline","E":…,"ps":…,"ct":"PERPETUAL","k":{…}}`.
#[derive(Serialize)]
struct ContinuousEvent<'a> {
    e: &'static str,
    #[serde(rename = "E")]
    event_time: i64,
    ps: &'a str,
    ct: &'static str,
    k: Kline<'a>,
}

fn encode(
    stream: &StreamName,
    candle: &Candle,
    notation: Notation,
    closed: bool,
    event_time: i64,
) -> String {
    let price = |value| Decimal(value, notation.price);
    let quantity = |value| Decimal(value, notation.quantity);
    let quote = |value| Decimal(value, notation.quote);
    let continuous = stream.kind != StreamKind::Kline;
    let k = Kline {
        t: candle.open_time,
        close_time: candle.close_time,
        s: (!continuous).then_some(stream.symbol.as_str()),
        i: &stream.interval,
        f: 0,
        last_trade: candle.trades - 1,
        o: price(candle.open),
        c: price(candle.close),
        h: price(candle.high),
        l: price(candle.low),
        v: quantity(candle.volume),
        n: candle.trades,
        x: closed,
        q: quote(candle.quote_volume),
        taker_buy_volume: quantity(candle.taker_buy_volume),
        taker_buy_quote_volume: quote(candle.taker_buy_quote_volume),
        ignore: "0",
    };
    let encoded = if continuous {
        serde_json::to_string(&ContinuousEvent {
            e: "continuous_kline",
            event_time,
            ps: &stream.symbol,
            ct: "PERPETUAL",
            k,
        })
    } else {
        serde_json::to_string(&KlineEvent {
            e: "kline",
            event_time,
            s: &stream.symbol,
            k,
        })
    };
    encoded.expect("an event of strings and integers always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candle() -> Candle {
        Candle {
            symbol: "BTCUSDT".into(),
            interval: "1m".into(),
            open_time: 1_763_791_500_000,
            close_time: 1_763_791_559_999,
            open: 84210.1,
            high: 84230.0,
            low: 84188.0,
            close: 84201.7,
            volume: 171.904,
            quote_volume: 14_475_520.104_7,
            taker_buy_volume: 80.551,
            taker_buy_quote_volume: 6_782_976.414,
            trades: 6437,
        }
    }

    #[test]
    fn a_kline_event_has_binances_fields_in_binances_order() {
        let name = Arc::new(StreamName::parse("btcusdt@kline_1m").unwrap());
        let padded = Notation::from_precisions(2, 3);
        let event = Event::new(name, &candle(), padded, true, 1_763_791_560_012);
        // fixtures/kline-combined-closed.json's values, decimals and all.
        assert_eq!(
            event.raw.as_str(),
            r#"{"e":"kline","E":1763791560012,"s":"BTCUSDT","k":{"t":1763791500000,"T":1763791559999,"s":"BTCUSDT","i":"1m","f":0,"L":6436,"o":"84210.10","c":"84201.70","h":"84230.00","l":"84188.00","v":"171.904","n":6437,"x":true,"q":"14475520.10470","V":"80.551","Q":"6782976.41400","B":"0"}}"#
        );
        assert_eq!(
            event.payload(true).as_str(),
            format!(
                r#"{{"stream":"btcusdt@kline_1m","data":{}}}"#,
                event.raw.as_str()
            )
        );
    }

    #[test]
    fn a_continuous_event_names_the_pair_and_contract_and_no_symbol_in_k() {
        let name = Arc::new(StreamName::parse("btcusdt_perpetual@continuousKline_1m").unwrap());
        let event = Event::new(name, &candle(), Notation::default(), false, 1);
        let json: serde_json::Value = serde_json::from_str(event.raw.as_str()).unwrap();
        assert_eq!(json["e"], "continuous_kline");
        assert_eq!(json["ps"], "BTCUSDT");
        assert_eq!(json["ct"], "PERPETUAL");
        assert!(json.get("s").is_none());
        assert!(json["k"].get("s").is_none());
        assert_eq!(json["k"]["x"], false);
    }

    #[test]
    fn tiny_and_large_values_are_plain_decimals() {
        let shortest = |value| serde_json::to_string(&Decimal(value, Scale::Shortest)).unwrap();
        assert_eq!(shortest(1e-7), r#""0.0000001""#);
        assert_eq!(shortest(2e21), r#""2000000000000000000000""#);
        assert_eq!(shortest(0.1 + 0.2), r#""0.30000000000000004""#);
        let fixed = serde_json::to_string(&Decimal(0.1 + 0.2, Scale::Fixed(5))).unwrap();
        assert_eq!(fixed, r#""0.30000""#);
    }
}
