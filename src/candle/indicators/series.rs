//! The computations, each over a whole series of closes (oldest first), O(n), with
//! `None` during TA-Lib's lookback; definitions after TA-Lib's C sources.

use super::{IndicatorValue, MACD_FAST, MACD_SIGNAL, MACD_SLOW};

/// Sum in index order from 0.0, as TA-Lib's seeding loops add.
fn sum(values: &[f64]) -> f64 {
    values.iter().fold(0.0, |total, &x| total + x)
}

/// One EMA step in TA-Lib's operation order, ((x − prev)·k) + prev; another order rounds
/// differently and the difference is carried forever.
fn ema_step(prev: f64, x: f64, k: f64) -> f64 {
    (x - prev) * k + prev
}

/// TA_SMA: a rolling sum, the newest close added before the division and the oldest
/// removed after it.
pub(super) fn sma(closes: &[f64], n: usize) -> Vec<Option<f64>> {
    let mut out = vec![None; closes.len()];
    let mut total = 0.0;
    for (i, &x) in closes.iter().enumerate() {
        total += x;
        if i + 1 >= n {
            out[i] = Some(total / n as f64);
            total -= closes[i + 1 - n];
        }
    }
    out
}

/// TA_EMA: the first value, at N − 1, is the SMA of the first N closes.
pub(super) fn ema(closes: &[f64], n: usize) -> Vec<Option<f64>> {
    let mut out = vec![None; closes.len()];
    if closes.len() < n {
        return out;
    }
    let k = 2.0 / (n + 1) as f64;
    let mut prev = sum(&closes[..n]) / n as f64;
    out[n - 1] = Some(prev);
    for (value, &x) in out[n..].iter_mut().zip(&closes[n..]) {
        prev = ema_step(prev, x, k);
        *value = Some(prev);
    }
    out
}

/// TA_RSI: the first averages are the plain means of the first N gains and losses, then
/// Wilder's smoothing avg = (avg·(N−1) + x)/N, the division done as a product with 1/N as
/// TA-Lib 0.8 does (bit for bit the same values). With no gain and no loss at all (a flat
/// start) the answer is 0, as TA-Lib's; any gain or loss, however decayed, counts: a fixed
/// epsilon would zero the index of an instrument quoted small enough.
pub(super) fn rsi(closes: &[f64], n: usize) -> Vec<Option<f64>> {
    let mut out = vec![None; closes.len()];
    if closes.len() <= n {
        return out;
    }
    let index = |gain: f64, loss: f64| {
        let total = gain + loss;
        if total > 0.0 {
            100.0 * (gain / total)
        } else {
            0.0
        }
    };
    // The gain and the loss of the change into close i, one of them 0.
    let change = |i: usize| match closes[i] - closes[i - 1] {
        up if up > 0.0 => (up, 0.0),
        down => (0.0, -down),
    };
    let (kept, scale) = ((n - 1) as f64, 1.0 / n as f64);
    let (mut gain, mut loss) = (0.0, 0.0);
    for i in 1..=n {
        let (up, down) = change(i);
        (gain, loss) = (gain + up, loss + down);
    }
    (gain, loss) = (gain * scale, loss * scale);
    out[n] = Some(index(gain, loss));
    for (i, value) in out.iter_mut().enumerate().skip(n + 1) {
        let (up, down) = change(i);
        gain = (gain * kept + up) * scale;
        loss = (loss * kept + down) * scale;
        *value = Some(index(gain, loss));
    }
    out
}

/// TA_BBANDS(N, 2, 2, SMA): the middle band is [`sma`], the bands ± 2 × [`deviation`].
pub(super) fn bands(closes: &[f64], n: usize) -> Vec<Option<IndicatorValue>> {
    let middles = sma(closes, n).into_iter();
    let pairs = middles.zip(deviation(closes, n));
    pairs
        .map(|(middle, deviation)| {
            let (middle, width) = (middle?, deviation? * 2.0);
            let (upper, lower) = (middle + width, middle - width);
            Some(IndicatorValue::Bands {
                upper,
                middle,
                lower,
            })
        })
        .collect()
}

/// The population standard deviation of each window of N closes.
///
/// Rolling sums of raw closes cancel: at 97,000 each square is ~9.4e9 while the variance may be
/// a few units, so E[x²] − E[x]² keeps few digits, and the sums' rounding drifts as the window
/// rolls. So the sums are of deviations from a `shift`, a close of the window, which keeps the
/// cancellation under N (TA-Lib 0.8 shifts too; the two agree within a few ulps); they are recomputed exactly over the window (O(N), rarely; otherwise
/// O(1) per close) once the shift is far from the mean (variance under a thousandth of the
/// mean squared deviation), once the sum of squares fell below a thousandth of its peak (what
/// is left is mostly the rounding of what left), after 8·N closes (drift), and after a flat
/// stretch. A window of equal closes is exactly 0 wide, as TA-Lib's.
pub(super) fn deviation(closes: &[f64], n: usize) -> Vec<Option<f64>> {
    let period = n as f64;
    let sums = |window: &[f64], shift: f64| {
        window.iter().fold((0.0, 0.0), |(s1, s2), &x| {
            let d = x - shift;
            (s1 + d, s2 + d * d)
        })
    };
    let variance_of = |s1: f64, s2: f64| s2 / period - (s1 / period) * (s1 / period);
    let mut out = vec![None; closes.len()];
    let (mut shift, mut s1, mut s2, mut peak) =
        (closes.first().copied().unwrap_or(0.0), 0.0, 0.0, 0.0);
    let (mut equal_run, mut since_reseed, mut stale) = (0, 0, false);
    for (i, &x) in closes.iter().enumerate() {
        equal_run = if i > 0 && x == closes[i - 1] {
            equal_run + 1
        } else {
            0
        };
        let d = x - shift;
        s1 += d;
        s2 += d * d;
        peak = f64::max(peak, s2);
        if i + 1 < n {
            continue;
        }
        let window = &closes[i + 1 - n..=i];
        since_reseed += 1;
        let variance = if equal_run + 1 >= n {
            stale = true;
            0.0
        } else {
            let mut variance = variance_of(s1, s2);
            if stale || variance < 1e-3 * (s2 / period) || s2 < 1e-3 * peak || since_reseed >= 8 * n
            {
                shift = x;
                (s1, s2) = sums(window, shift);
                (peak, since_reseed, stale) = (s2, 0, false);
                variance = variance_of(s1, s2);
            }
            variance.max(0.0)
        };
        out[i] = Some(variance.sqrt());
        let gone = window[0] - shift;
        s1 -= gone;
        s2 -= gone * gone;
    }
    out
}

/// TA_MACD(12, 26, 9). Both EMAs start on the slow one's first bar (25): the fast one is seeded
/// with the mean of the 12 closes ending there, not of the first 12. The signal EMA runs over
/// the MACD line from that bar, seeded with the mean of its first 9 values, so the first
/// output is at 25 + 8 = 33.
pub(super) fn macd(closes: &[f64]) -> Vec<Option<IndicatorValue>> {
    let first_line = MACD_SLOW - 1;
    let lookback = first_line + MACD_SIGNAL - 1;
    let mut out = vec![None; closes.len()];
    if closes.len() <= lookback {
        return out;
    }
    let k = |n: usize| 2.0 / (n + 1) as f64;
    let (fast_k, slow_k, signal_k) = (k(MACD_FAST), k(MACD_SLOW), k(MACD_SIGNAL));
    let mut slow = sum(&closes[..MACD_SLOW]) / MACD_SLOW as f64;
    let mut fast = sum(&closes[MACD_SLOW - MACD_FAST..MACD_SLOW]) / MACD_FAST as f64;
    let mut signal_total = fast - slow;
    let mut signal = 0.0;
    for (i, &x) in closes.iter().enumerate().skip(first_line + 1) {
        fast = ema_step(fast, x, fast_k);
        slow = ema_step(slow, x, slow_k);
        let line = fast - slow;
        if i < lookback {
            signal_total += line;
            continue;
        }
        signal = if i == lookback {
            (signal_total + line) / MACD_SIGNAL as f64
        } else {
            ema_step(signal, line, signal_k)
        };
        out[i] = Some(IndicatorValue::Macd {
            macd: line,
            signal,
            histogram: line - signal,
        });
    }
    out
}
