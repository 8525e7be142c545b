//! The request weight of Binance USD-M's public endpoints (USD-M futures docs,
//! "Market Data Endpoints": each endpoint's "Request Weight"), for the budget.

use std::collections::HashMap;

use crate::exchange::klines_weight;

/// What an endpoint the table does not know is charged: as much as the heaviest
/// public ones, so an unknown endpoint never spends more than was booked.
pub const UNKNOWN_WEIGHT: u32 = 40;

/// The weight Binance charges for `GET {path}?{query}`.
pub fn weight_of(path: &str, query: &HashMap<String, String>) -> u32 {
    let has_symbol = query.get("symbol").is_some_and(|s| !s.is_empty());
    let limit = |default: usize| {
        query
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(default)
    };
    match path {
        "/fapi/v1/ping" | "/fapi/v1/time" | "/fapi/v1/exchangeInfo" => 1,
        "/fapi/v1/klines"
        | "/fapi/v1/continuousKlines"
        | "/fapi/v1/indexPriceKlines"
        | "/fapi/v1/markPriceKlines"
        | "/fapi/v1/premiumIndexKlines" => klines_weight(limit(500)),
        // "Order Book": 5, 10, 20, 50 → 2; 100 → 5; 500 → 10; 1000 → 20.
        "/fapi/v1/depth" => match limit(500) {
            0..=50 => 2,
            51..=100 => 5,
            101..=500 => 10,
            _ => 20,
        },
        "/fapi/v1/trades" => 5,
        "/fapi/v1/historicalTrades" | "/fapi/v1/aggTrades" => 20,
        "/fapi/v1/ticker/24hr" => {
            if has_symbol {
                1
            } else {
                40
            }
        }
        "/fapi/v1/ticker/price" | "/fapi/v2/ticker/price" => {
            if has_symbol {
                1
            } else {
                2
            }
        }
        "/fapi/v1/ticker/bookTicker" => {
            if has_symbol {
                2
            } else {
                5
            }
        }
        "/fapi/v1/premiumIndex"
        | "/fapi/v1/fundingRate"
        | "/fapi/v1/fundingInfo"
        | "/fapi/v1/openInterest"
        | "/fapi/v1/constituents"
        | "/fapi/v1/indexInfo"
        | "/fapi/v1/assetIndex" => 1,
        // The "/futures/data/…" statistics have their own limit (1,000 per 5
        // minutes per IP); each is booked as 1 here.
        p if p.starts_with("/futures/data/") => 1,
        _ => UNKNOWN_WEIGHT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn weights_follow_binance_s_tables() {
        assert_eq!(weight_of("/fapi/v1/klines", &query(&[])), 5);
        assert_eq!(weight_of("/fapi/v1/klines", &query(&[("limit", "99")])), 1);
        assert_eq!(
            weight_of("/fapi/v1/depth", &query(&[("limit", "1000")])),
            20
        );
        assert_eq!(weight_of("/fapi/v1/ticker/price", &query(&[])), 2);
        let one = query(&[("symbol", "BTCUSDT")]);
        assert_eq!(weight_of("/fapi/v1/ticker/price", &one), 1);
        assert_eq!(weight_of("/futures/data/openInterestHist", &one), 1);
        assert_eq!(weight_of("/fapi/v9/unknown", &one), UNKNOWN_WEIGHT);
    }
}
