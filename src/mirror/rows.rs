//! Candles as Binance's kline rows (USD-M docs, "Kline/Candlestick Data"):
//! `[openTime,"open","high","low","close","volume",closeTime,"quoteVolume",trades,
//! "takerBuyVolume","takerBuyQuoteVolume","0"]`, times and trades as integers, every
//! price and volume a decimal string written as the exchange writes that symbol's
//! ([`Notation`]: `"84250.00"`, `"98.112"`, `"8265290.11200"`).

use std::fmt::Write;

use bytes::Bytes;

use crate::candle::{Candle, Notation};

/// The JSON array of `candles`' rows, in the order given, their decimals written
/// in `notation`.
pub fn klines_json<'a>(candles: impl IntoIterator<Item = &'a Candle>, notation: Notation) -> Bytes {
    let mut out = String::with_capacity(4096);
    out.push('[');
    for (i, c) in candles.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let quoted = |out: &mut String, scale: crate::candle::Scale, value: f64| {
            out.push_str(",\"");
            scale.write(out, value);
            out.push('"');
        };
        // Writing to a String cannot fail.
        let _ = write!(out, "[{}", c.open_time);
        for price in [c.open, c.high, c.low, c.close] {
            quoted(&mut out, notation.price, price);
        }
        quoted(&mut out, notation.quantity, c.volume);
        let _ = write!(out, ",{}", c.close_time);
        quoted(&mut out, notation.quote, c.quote_volume);
        let _ = write!(out, ",{}", c.trades);
        quoted(&mut out, notation.quantity, c.taker_buy_volume);
        quoted(&mut out, notation.quote, c.taker_buy_quote_volume);
        out.push_str(",\"0\"]");
    }
    out.push(']');
    Bytes::from(out)
}

/// `rows` (a JSON array of rows) with `last`'s row appended: the forming candle
/// after closed rows built once.
pub fn with_last_row(rows: &[u8], last: &Candle, notation: Notation) -> Bytes {
    let row = klines_json([last], notation);
    let inner = &rows[1..rows.len() - 1];
    let mut out = Vec::with_capacity(rows.len() + row.len());
    out.extend_from_slice(&rows[..rows.len() - 1]);
    if !inner.is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(&row[1..]);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::candle::Scale;
    use serde_json::Value;

    /// The fixture's rows come back as the exchange wrote them.
    #[test]
    fn rows_match_the_exchange_s_fixture_digit_for_digit() {
        // DESIGN.md's fixtures/rest-klines.json, Binance's documented shape.
        let fixture = r#"[
  [1763791380000,"84250.00","84262.50","84231.10","84240.30","98.112",1763791439999,"8265290.11200",3012,"51.004","4296839.22100","0"],
  [1763791440000,"84240.30","84244.00","84205.60","84210.10","120.870",1763791499999,"10178922.45600",4150,"55.431","4667987.10900","0"],
  [1763791500000,"84210.10","84230.00","84188.00","84201.70","171.904",1763791559999,"14475520.10470",6437,"80.551","6782976.41400","0"],
  [1763791560000,"84201.70","84215.30","84199.90","84212.00","12.334",1763791619999,"1038655.20010",402,"6.100","513670.01200","0"]
]"#;
        let rows: Vec<Vec<Value>> = serde_json::from_str(fixture).unwrap();
        let number = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
        let candles: Vec<Candle> = rows
            .iter()
            .map(|r| Candle {
                symbol: "BTCUSDT".into(),
                interval: "1m".into(),
                open_time: r[0].as_i64().unwrap(),
                open: number(&r[1]),
                high: number(&r[2]),
                low: number(&r[3]),
                close: number(&r[4]),
                volume: number(&r[5]),
                close_time: r[6].as_i64().unwrap(),
                quote_volume: number(&r[7]),
                trades: r[8].as_i64().unwrap(),
                taker_buy_volume: number(&r[9]),
                taker_buy_quote_volume: number(&r[10]),
            })
            .collect();
        let padded = Notation::from_precisions(2, 3);
        // Byte for byte the exchange's answer, whitespace aside.
        let compact: String = fixture.split_whitespace().collect();
        assert_eq!(
            std::str::from_utf8(&klines_json(&candles, padded)).unwrap(),
            compact
        );
        let spliced = with_last_row(&klines_json(&candles[..3], padded), &candles[3], padded);
        assert_eq!(spliced, klines_json(&candles, padded));
        assert_eq!(
            with_last_row(b"[]", &candles[0], padded),
            klines_json(&candles[..1], padded)
        );
        // An exchange that does not pad: the shortest decimals, same values.
        let shortest = Notation {
            price: Scale::Shortest,
            quantity: Scale::Shortest,
            quote: Scale::Unknown,
        };
        assert_eq!(
            std::str::from_utf8(&klines_json(&candles[3..], shortest)).unwrap(),
            "[[1763791560000,\"84201.7\",\"84215.3\",\"84199.9\",\"84212\",\"12.334\",\
             1763791619999,\"1038655.2001\",402,\"6.1\",\"513670.012\",\"0\"]]"
        );
        let ours: Vec<Vec<Value>> =
            serde_json::from_slice(&klines_json(&candles, shortest)).unwrap();
        for (ours, theirs) in ours.iter().zip(&rows) {
            for (a, b) in ours.iter().zip(theirs) {
                match (a, b) {
                    (Value::String(a), Value::String(b)) => {
                        assert_eq!(a.parse::<f64>().unwrap(), b.parse::<f64>().unwrap())
                    }
                    _ => assert_eq!(a, b, "integers stay integers"),
                }
            }
        }
    }
}
