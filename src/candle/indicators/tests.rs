//! Unit tests of the indicators: every value against TA-Lib's own (src/candle/testdata, written
//! by scripts/talib-reference.py), the warmup, the band deviation at BTC levels, the names.

use std::collections::HashSet;
use std::sync::LazyLock;

use serde_json::Value;

use super::*;

/// One series of the reference file and TA-Lib's outputs over it, by indicator.
struct Series {
    name: String,
    closes: Vec<f64>,
    /// The largest close: the scale of the rounding in price-sized values.
    level: f64,
    indicators: Vec<(Indicator, Vec<Value>)>,
}

static REFERENCE: LazyLock<Vec<Series>> = LazyLock::new(|| {
    let root: Value = serde_json::from_str(include_str!("../testdata/talib_reference.json"))
        .expect("the reference file is JSON");
    let numbers = |value: &Value| -> Vec<f64> {
        let values = value.as_array().expect("an array");
        values
            .iter()
            .map(|v| v.as_f64().expect("a number"))
            .collect()
    };
    root["series"]
        .as_array()
        .expect("a list of series")
        .iter()
        .map(|series| {
            let closes = numbers(&series["closes"]);
            Series {
                name: series["name"].as_str().expect("a name").to_owned(),
                level: closes.iter().fold(0.0, |max, close| close.abs().max(max)),
                closes,
                indicators: series["indicators"]
                    .as_object()
                    .expect("indicators by name")
                    .iter()
                    .map(|(name, values)| {
                        let indicator = Indicator::parse(name).expect("a name the API takes");
                        (indicator, values.as_array().expect("values").clone())
                    })
                    .collect(),
            }
        })
        .collect()
});

/// Whether `ours` agrees with TA-Lib's `theirs` within `relative`. Values near 0 are judged
/// against a millionth of the series' price level rather than their own size: the MACD line,
/// its histogram and an RSI of 0 come from differences of price-sized numbers and carry the
/// rounding of those.
fn agrees(ours: f64, theirs: f64, relative: f64, level: f64) -> bool {
    (ours - theirs).abs() <= relative * ours.abs().max(theirs.abs()).max(level * 1e-6)
}

/// Compares one computed value with TA-Lib's: the same JSON shape (null, a number, or an
/// object with the same keys, as the API serializes it) and every number within `relative`.
/// Returns how many numbers were compared, or why they differ.
fn compare(
    ours: Option<IndicatorValue>,
    theirs: &Value,
    relative: f64,
    level: f64,
) -> Result<usize, String> {
    let ours = serde_json::to_value(ours).expect("serializable");
    let pairs: Vec<(&Value, &Value)> = match (&ours, theirs) {
        (Value::Null, Value::Null) => return Ok(0),
        (Value::Number(_), Value::Number(_)) => vec![(&ours, theirs)],
        (Value::Object(a), Value::Object(b)) if a.len() == b.len() => {
            let field = |key: &String| a.get(key).ok_or(format!("no {key} in {ours}"));
            let fields: Result<Vec<_>, String> =
                b.iter().map(|(k, v)| Ok((field(k)?, v))).collect();
            fields?
        }
        _ => return Err(format!("ours {ours}, TA-Lib's {theirs}")),
    };
    for (a, b) in &pairs {
        let (a, b) = (a.as_f64().expect("number"), b.as_f64().expect("number"));
        if !agrees(a, b, relative, level) {
            return Err(format!("ours {ours}, TA-Lib's {theirs}"));
        }
    }
    Ok(pairs.len())
}

#[test]
fn every_value_matches_talib() {
    let mut compared = 0;
    for series in REFERENCE.iter() {
        for (indicator, theirs) in &series.indicators {
            let ours = indicator.compute(&series.closes);
            assert_eq!(
                ours.len(),
                series.closes.len(),
                "{} {indicator}",
                series.name
            );
            assert_eq!(
                theirs.len(),
                series.closes.len(),
                "{} {indicator}",
                series.name
            );
            for (i, (ours, theirs)) in ours.into_iter().zip(theirs).enumerate() {
                match compare(ours, theirs, 1e-9, series.level) {
                    Ok(count) => compared += count,
                    Err(why) => panic!("{} {indicator} at {i}: {why}", series.name),
                }
            }
        }
    }
    // 50,044 numbers in the file as generated: three series of 2,000, 635 and 900 closes.
    assert!(compared > 45_000, "only {compared} values compared");
}

#[test]
fn the_reference_covers_every_indicator_and_the_hard_cases() {
    let names: Vec<&str> = REFERENCE.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["btc", "flat", "xrp"]);
    for series in REFERENCE.iter() {
        let listed: HashSet<String> = series.indicators.iter().map(|(i, _)| i.name()).collect();
        for required in [
            "sma20", "ema20", "ema200", "rsi14", "rsi2", "bb20", "sma500", "macd",
        ] {
            assert!(
                listed.contains(required),
                "{} lacks {required}",
                series.name
            );
        }
    }
    let [btc, flat, xrp] = &REFERENCE[..] else {
        unreachable!()
    };
    assert_eq!(btc.closes.len(), 2_000);
    assert!((90_000.0..110_000.0).contains(&btc.closes[0]));
    assert!((2.0..2.6).contains(&xrp.closes[0]));
    let theirs = |series: &Series, name: &str| {
        let found = series.indicators.iter().find(|(i, _)| i.name() == name);
        found.expect("listed").1.clone()
    };
    // A flat start: no gain and no loss, which TA-Lib answers with an RSI of 0, and a band
    // of zero width.
    assert!(flat.closes[..40].iter().all(|&c| c == flat.closes[0]));
    assert_eq!(theirs(flat, "rsi14")[14], 0.0);
    let band = &theirs(flat, "bb20")[19];
    assert_eq!(
        (&band["upper"], &band["lower"]),
        (&band["middle"], &band["middle"])
    );
    // And later flat stretches long enough for rsi2's averages to decay below any fixed
    // epsilon, which TA-Lib still divides rather than answering 0.
    let longest = flat.closes.windows(2).fold((0, 0), |(run, best), pair| {
        let run = if pair[0] == pair[1] { run + 1 } else { 0 };
        (run, best.max(run))
    });
    assert!(longest.1 >= 150);
}

#[test]
fn warmup_is_enough_whatever_the_series_started_with() {
    // Starting the computation `warmup` closes before a value must give TA-Lib's value over
    // the whole history within 1e-6, from whichever close the shorter series starts.
    let mut compared = HashSet::new();
    for series in REFERENCE.iter() {
        for (indicator, theirs) in &series.indicators {
            // An RSI keeps its value through a flat stretch (both averages decay alike), so
            // no warmup can forget a seed taken inside one: the flat series shows TA-Lib's
            // values, not this property.
            if series.name == "flat" && matches!(indicator, Indicator::Rsi(_)) {
                continue;
            }
            let warmup = indicator.warmup();
            for start in [1, 2, 5, 13, 40, 77, 150, 222] {
                if start + warmup >= series.closes.len() {
                    continue;
                }
                let ours = indicator.compute(&series.closes[start..]);
                for (i, ours) in ours.into_iter().enumerate().skip(warmup) {
                    let theirs = &theirs[start + i];
                    if let Err(why) = compare(ours, theirs, 1e-6, series.level) {
                        panic!("{} {indicator} from {start}, at {i}: {why}", series.name);
                    }
                }
                compared.insert(std::mem::discriminant(indicator));
            }
        }
    }
    assert_eq!(compared.len(), 5, "every kind of indicator was checked");
}

#[test]
fn warmup_is_fifteen_periods_and_400_for_macd() {
    assert_eq!(Indicator::Sma(20).warmup(), 300);
    assert_eq!(Indicator::Ema(2).warmup(), 30);
    assert_eq!(Indicator::Rsi(14).warmup(), 210);
    assert_eq!(Indicator::Bb(500).warmup(), 7_500);
    assert_eq!(Indicator::Macd.warmup(), 400);
    assert_eq!(Indicator::Sma(usize::MAX).warmup(), usize::MAX);
}

/// The index of the first value, or the length when there is none.
fn first_value(values: &[Option<IndicatorValue>]) -> usize {
    values
        .iter()
        .position(Option::is_some)
        .unwrap_or(values.len())
}

#[test]
fn lookbacks_are_talibs() {
    let closes: Vec<f64> = (0..60).map(|i| 100.0 + f64::from(i % 7)).collect();
    let cases = [
        (Indicator::Sma(2), 1),
        (Indicator::Sma(20), 19),
        (Indicator::Ema(20), 19),
        (Indicator::Bb(20), 19),
        (Indicator::Rsi(2), 2),
        (Indicator::Rsi(14), 14),
        (Indicator::Macd, 33),
    ];
    for (indicator, lookback) in cases {
        let values = indicator.compute(&closes);
        assert_eq!(first_value(&values), lookback, "{indicator}");
        assert!(
            values[lookback..].iter().all(Option::is_some),
            "{indicator}"
        );
        // Too short a series has no value at all, an empty one no entry.
        let short = indicator.compute(&closes[..lookback]);
        assert_eq!((short.len(), first_value(&short)), (lookback, lookback));
        assert_eq!(
            first_value(&indicator.compute(&closes[..=lookback])),
            lookback
        );
        assert!(indicator.compute(&[]).is_empty());
    }
}

#[test]
fn periods_out_of_range_compute_nothing() {
    let closes = [1.0, 2.0, 3.0, 4.0];
    for indicator in [
        Indicator::Sma(0),
        Indicator::Ema(1),
        Indicator::Rsi(501),
        Indicator::Bb(1),
    ] {
        assert_eq!(indicator.compute(&closes), [None; 4], "{indicator}");
    }
    assert!(
        Indicator::Sma(2)
            .compute(&closes)
            .iter()
            .any(Option::is_some)
    );
}

#[test]
fn a_flat_series_has_exact_values() {
    let closes = [97_000.5; 40];
    let last = |indicator: Indicator| indicator.compute(&closes)[39];
    assert_eq!(
        last(Indicator::Sma(20)),
        Some(IndicatorValue::Number(97_000.5))
    );
    assert_eq!(
        last(Indicator::Ema(20)),
        Some(IndicatorValue::Number(97_000.5))
    );
    // No gain and no loss: TA-Lib's answer is 0.
    assert_eq!(last(Indicator::Rsi(14)), Some(IndicatorValue::Number(0.0)));
    let (upper, middle, lower) = (97_000.5, 97_000.5, 97_000.5);
    let band = IndicatorValue::Bands {
        upper,
        middle,
        lower,
    };
    assert_eq!(last(Indicator::Bb(20)), Some(band));
    let (macd, signal, histogram) = (0.0, 0.0, 0.0);
    assert_eq!(
        last(Indicator::Macd),
        Some(IndicatorValue::Macd {
            macd,
            signal,
            histogram
        })
    );
}

#[test]
fn a_decayed_gain_still_counts_in_the_rsi() {
    // One tick up, then flat for 1,000 closes: the averages decay to ~1e-300 but the loss
    // stays exactly 0, so the index stays 100 (an epsilon test would answer 0).
    let mut closes = vec![2.3; 10];
    closes.extend([2.3001; 1_001]);
    let values = Indicator::Rsi(2).compute(&closes);
    assert_eq!(values.last(), Some(&Some(IndicatorValue::Number(100.0))));
}

/// The population standard deviation of each full window: two passes over each, over the
/// closes less the window's first (exact differences, so the mean's rounding is that of the
/// differences, not of 97,000).
fn two_pass(closes: &[f64], n: usize) -> Vec<Option<f64>> {
    let mut out = vec![None; n - 1];
    out.extend(closes.windows(n).map(|window| {
        let differences: Vec<f64> = window.iter().map(|x| x - window[0]).collect();
        let mean = differences.iter().sum::<f64>() / n as f64;
        let squares: f64 = differences.iter().map(|d| (d - mean) * (d - mean)).sum();
        Some((squares / n as f64).sqrt())
    }));
    out
}

#[test]
fn band_deviation_does_not_drift_at_btc_levels() {
    // 8,000 closes at 97,000 moving by ticks of 0.1, a jump of 5,000 and flat stretches: raw
    // rolling sums of squares would keep a few digits of these variances and drift.
    let mut closes: Vec<f64> = (0..8_000u32)
        .map(|i| 97_000.0 + 0.1 * f64::from((i * 7_919) % 13) + f64::from(i / 1_000))
        .collect();
    closes[4_000..].iter_mut().for_each(|c| *c += 5_000.0);
    closes[2_000..2_600].fill(96_999.9);
    closes[7_400..].fill(102_007.3);
    for n in [2, 20, 500] {
        let ours = deviation(&closes, n);
        for (i, (ours, exact)) in ours.iter().zip(two_pass(&closes, n)).enumerate() {
            let (Some(ours), Some(exact)) = (*ours, exact) else {
                assert_eq!((*ours, exact), (None, None), "n {n} at {i}");
                continue;
            };
            let window = &closes[i + 1 - n..=i];
            if window.iter().all(|&c| c == window[0]) {
                assert_eq!(ours, 0.0, "a flat window is 0 wide (n {n} at {i})");
            } else {
                assert!(
                    (ours - exact).abs() <= 1e-9 * exact,
                    "n {n} at {i}: {ours} {exact}"
                );
            }
        }
    }
}

#[test]
fn values_serialize_as_numbers_and_objects() {
    let json = |value: IndicatorValue| serde_json::to_string(&value).unwrap();
    assert_eq!(json(IndicatorValue::Number(56.25)), "56.25");
    let (upper, middle, lower) = (3.5, 2.0, 0.5);
    assert_eq!(
        json(IndicatorValue::Bands {
            upper,
            middle,
            lower
        }),
        r#"{"upper":3.5,"middle":2.0,"lower":0.5}"#
    );
    let (macd, signal, histogram) = (-1.5, 0.25, -1.75);
    assert_eq!(
        json(IndicatorValue::Macd {
            macd,
            signal,
            histogram
        }),
        r#"{"macd":-1.5,"signal":0.25,"histogram":-1.75}"#
    );
}
