//! How long building buckets takes now that their volumes are decimal sums: a week
//! of minutes folded into 5m and 1h buckets (a long history read), and one 1h
//! forming bucket (built on every forming update). Each figure is printed beside a
//! floor measured in the same run — the same minutes folded with plain `f64`
//! additions — and as a ratio to it.
//!
//! ```sh
//! cargo run --release --example bucket_timing
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use candlecast::candle::{BucketBuilder, Candle, Interval};
use rand::{Rng, SeedableRng};

const MINUTE: i64 = 60_000;
/// 2025-11-22 00:00 UTC, a multiple of a day.
const DAY_START: i64 = 1_763_769_600_000;
const ROUNDS: u32 = 20;

/// A minute with three-decimal volumes, parsed from text as the exchange client does.
fn minute(open_time: i64, volume: u64, quote: u64) -> Candle {
    let text = |units: u64, decimals: u32| {
        let scale = 10u64.pow(decimals);
        format!(
            "{}.{:0w$}",
            units / scale,
            units % scale,
            w = decimals as usize
        )
        .parse::<f64>()
        .expect("a decimal")
    };
    Candle {
        symbol: "BTCUSDT".into(),
        interval: "1m".into(),
        open_time,
        close_time: open_time + MINUTE - 1,
        open: 97_012.5,
        high: 97_100.0,
        low: 96_900.0,
        close: 97_050.0,
        volume: text(volume, 3),
        quote_volume: text(quote, 5),
        taker_buy_volume: text(volume / 2, 3),
        taker_buy_quote_volume: text(quote / 2, 5),
        trades: 10,
    }
}

/// The floor: the same buckets' volumes summed as plain `f64`s.
fn float_floor(week: &[Candle], per_bucket: usize) -> f64 {
    week.chunks(per_bucket)
        .map(|bucket| {
            bucket.iter().map(|c| c.volume).sum::<f64>()
                + bucket.iter().map(|c| c.quote_volume).sum::<f64>()
                + bucket.iter().map(|c| c.taker_buy_volume).sum::<f64>()
                + bucket.iter().map(|c| c.taker_buy_quote_volume).sum::<f64>()
        })
        .sum()
}

fn timed(mut run: impl FnMut()) -> Duration {
    run();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        run();
    }
    started.elapsed() / ROUNDS
}

fn main() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let week: Vec<Candle> = (0..10_080)
        .map(|i| {
            let volume = rng.random_range(0..50_000_000);
            let quote = rng.random_range(0..10_000_000_000_000);
            minute(DAY_START + i * MINUTE, volume, quote)
        })
        .collect();
    let base = Interval::parse("1m").expect("1m");
    println!("{} minutes, median of {ROUNDS} rounds", week.len());
    for (name, per_bucket) in [("5m", 5), ("1h", 60)] {
        let interval = Interval::parse(name).expect("an interval");
        let built = timed(|| {
            let mut builder = BucketBuilder::new(interval.clone(), &base);
            black_box(week.iter().filter_map(|c| builder.add(c)).count());
        });
        let floor = timed(|| {
            black_box(float_floor(&week, per_bucket));
        });
        println!(
            "{name} buckets: {built:?} (floor, f64 sums only: {floor:?}; {:.1}x)",
            built.as_secs_f64() / floor.as_secs_f64()
        );
    }
    let hour = Interval::parse("1h").expect("1h");
    let mut builder = BucketBuilder::new(hour, &base);
    week[..59].iter().for_each(|c| drop(builder.add(c)));
    let forming = timed(|| {
        for _ in 0..1_000 {
            black_box(builder.forming(&week[59]));
        }
    }) / 1_000;
    let floor = timed(|| {
        for _ in 0..1_000 {
            black_box(float_floor(&week[..60], 60));
        }
    }) / 1_000;
    println!(
        "1h forming bucket: {forming:?} (floor: {floor:?}; {:.1}x)",
        forming.as_secs_f64() / floor.as_secs_f64()
    );
}
