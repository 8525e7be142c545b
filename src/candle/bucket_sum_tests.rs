//! Unit tests of buckets' volumes against the decimal sums of their base candles'
//! volumes, computed with integers. The timing is `examples/bucket_timing.rs`.

use rand::{Rng, SeedableRng};

use super::{BucketBuilder, Candle, Interval};

const MINUTE: i64 = 60_000;
/// 2025-11-22 00:00 UTC, a multiple of a day.
const DAY_START: i64 = 1_763_769_600_000;

/// `units` of `10^-decimals` as the exchange writes it: `"12.340"` for 12340, 3.
fn exchange_text(units: u64, decimals: u32) -> String {
    let scale = 10u64.pow(decimals);
    format!(
        "{}.{:0width$}",
        units / scale,
        units % scale,
        width = decimals as usize
    )
}

/// The shortest text of the decimal `units` × `10^-decimals`: how Rust prints the
/// `f64` nearest it, and how Binance's own candle of a longer interval reads.
fn decimal_text(units: u64, decimals: u32) -> String {
    let text = exchange_text(units, decimals);
    let text = text.trim_end_matches('0');
    text.trim_end_matches('.').to_owned()
}

/// A minute whose volumes are `units` (thousandths for base volumes, 10^-5 for
/// quote volumes), parsed from the exchange's strings as the client does.
fn minute(open_time: i64, volume: u64, quote: u64) -> Candle {
    let parse = |units: u64, decimals: u32| exchange_text(units, decimals).parse::<f64>().unwrap();
    Candle {
        symbol: "BTCUSDT".into(),
        interval: "1m".into(),
        open_time,
        close_time: open_time + MINUTE - 1,
        open: 97_012.5,
        high: 97_013.1,
        low: 97_000.3,
        close: 97_001.1,
        volume: parse(volume, 3),
        quote_volume: parse(quote, 5),
        taker_buy_volume: parse(volume / 2, 3),
        taker_buy_quote_volume: parse(quote / 3, 5),
        trades: 1,
    }
}

fn builder(interval: &str) -> BucketBuilder {
    BucketBuilder::new(
        Interval::parse(interval).unwrap(),
        &Interval::parse("1m").unwrap(),
    )
}

#[test]
fn the_issues_five_minute_bucket_has_volume_seven_tenths() {
    let volumes = [100, 200, 100, 200, 100]; // 0.1, 0.2, 0.1, 0.2, 0.1
    let minutes: Vec<Candle> = volumes
        .iter()
        .enumerate()
        .map(|(i, &v)| minute(DAY_START + i as i64 * MINUTE, v, v * 100))
        .collect();
    // In order, as the stream closes them.
    let mut five = builder("5m");
    let bucket = minutes.iter().filter_map(|m| five.add(m)).next().unwrap();
    assert_eq!(bucket.volume.to_string(), "0.7");
    assert_eq!(bucket.quote_volume.to_string(), "0.7");
    // Minute 2 last (a REST repair): the bucket is summed anew, as exactly.
    let mut five = builder("5m");
    let late = [0, 1, 3, 4, 2]
        .iter()
        .filter_map(|&i| five.add(&minutes[i]));
    assert_eq!(late.last().unwrap().volume.to_string(), "0.7");
    // The forming bucket: four closed minutes and the forming fifth.
    let mut five = builder("5m");
    minutes[..4]
        .iter()
        .for_each(|m| assert_eq!(five.add(m), None));
    assert_eq!(five.forming(&minutes[4]).volume.to_string(), "0.7");
}

#[test]
fn every_bucket_of_random_three_decimal_volumes_prints_its_decimal_sum() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let minutes: Vec<(u64, u64)> = (0..1440)
        .map(|_| {
            (
                rng.random_range(0..50_000_000),         // up to 50,000.000
                rng.random_range(0..10_000_000_000_000), // up to 100,000,000.00000
            )
        })
        .collect();
    for (interval, per_bucket) in [("5m", 5), ("1h", 60)] {
        let mut built = builder(interval);
        let mut buckets = Vec::new();
        let mut noisy_float_sums = 0;
        for (i, &(volume, quote)) in minutes.iter().enumerate() {
            let candle = minute(DAY_START + i as i64 * MINUTE, volume, quote);
            buckets.extend(built.add(&candle));
        }
        assert_eq!(buckets.len(), 1440 / per_bucket, "{interval}");
        for (bucket, parts) in buckets.iter().zip(minutes.chunks(per_bucket)) {
            let volume: u64 = parts.iter().map(|p| p.0).sum();
            let quote: u64 = parts.iter().map(|p| p.1).sum();
            let taker: u64 = parts.iter().map(|p| p.0 / 2).sum();
            let taker_quote: u64 = parts.iter().map(|p| p.1 / 3).sum();
            let at = bucket.open_time;
            assert_eq!(bucket.volume.to_string(), decimal_text(volume, 3), "{at}");
            assert_eq!(
                bucket.quote_volume.to_string(),
                decimal_text(quote, 5),
                "{at}"
            );
            assert_eq!(bucket.taker_buy_volume.to_string(), decimal_text(taker, 3));
            assert_eq!(
                bucket.taker_buy_quote_volume.to_string(),
                decimal_text(taker_quote, 5)
            );
            let float: f64 = parts
                .iter()
                .map(|p| exchange_text(p.0, 3).parse::<f64>().unwrap())
                .sum();
            noisy_float_sums += usize::from(float.to_string() != decimal_text(volume, 3));
        }
        // The example is not vacuous: plain f64 sums of the same volumes print noise.
        assert!(noisy_float_sums > 0, "{interval}");
    }
}
