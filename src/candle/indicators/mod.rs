//! Technical indicators over a series of closes — SMA, EMA, RSI, Bollinger Bands, MACD — and
//! the names clients ask for them by (`rsi14`). The rules are TA-Lib's C code (default
//! compatibility, no unstable period), followed operation for operation so the values match
//! TA-Lib and the charting tools built on it. Pure: no I/O, no clock.

use std::fmt;

/// Shortest period accepted (N from 2 to 500).
pub const MIN_PERIOD: usize = 2;
/// Longest period accepted: bounds the work and the warmup a request can ask for.
pub const MAX_PERIOD: usize = 500;
/// Most indicators one request may ask for.
pub const MAX_INDICATORS: usize = 8;

// MACD is only offered with TA-Lib's default periods, so `macd` needs no parameters.
const MACD_FAST: usize = 12;
const MACD_SLOW: usize = 26;
const MACD_SIGNAL: usize = 9;

/// Names longer than this are cut in error messages, which echo what the client sent.
const SHOWN_CHARS: usize = 32;

/// One indicator a client can ask for; the periods are in closes.
///
/// Built by [`Indicator::parse`], which keeps periods from [`MIN_PERIOD`] to [`MAX_PERIOD`].
/// A variant built directly with another period computes nothing (all `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Indicator {
    /// Simple moving average of the last N closes.
    Sma(usize),
    /// Exponential moving average, k = 2/(N+1), seeded with the SMA of its first N closes.
    Ema(usize),
    /// Wilder's relative strength index, 0 to 100.
    Rsi(usize),
    /// Bollinger Bands: SMA(N) ± 2 population standard deviations of the same N closes.
    Bb(usize),
    /// MACD(12, 26, 9): the EMA12 − EMA26 line, its EMA9 signal and their difference.
    Macd,
}

/// Why a name or list of indicators was refused. The messages are shown to API users (in a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadIndicator {
    /// Not `sma<N>`, `ema<N>`, `rsi<N>`, `bb<N>` or `macd` (upper case, leading zeros, signs,
    /// spaces and missing periods included); holds the name as given, cut to 32 characters.
    #[error(
        "unknown indicator {0:?}; expected sma<N>, ema<N>, rsi<N>, bb<N> (N from {min} to {max}) or macd",
        min = MIN_PERIOD,
        max = MAX_PERIOD
    )]
    Unknown(String),
    /// A well-formed name whose period is outside [`MIN_PERIOD`]..=[`MAX_PERIOD`], e.g. `rsi1`.
    #[error("{0}: the period must be from {min} to {max}", min = MIN_PERIOD, max = MAX_PERIOD)]
    Period(String),
    /// More than [`MAX_INDICATORS`] names in one list.
    #[error("at most {max} indicators", max = MAX_INDICATORS)]
    TooMany,
    /// The same indicator twice in one list (names are canonical, so equal names).
    #[error("{0} is listed twice")]
    Twice(Indicator),
    /// A list with no names at all, e.g. `""` or `" , "`.
    #[error("no indicator given")]
    Empty,
}

/// One indicator's value at one close. Serializes (untagged) as a bare number (SMA, EMA, RSI),
/// `{"upper","middle","lower"}` (Bollinger Bands) or `{"macd","signal","histogram"}` (MACD).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum IndicatorValue {
    /// SMA, EMA and RSI.
    Number(f64),
    /// Bollinger Bands.
    Bands { upper: f64, middle: f64, lower: f64 },
    /// MACD.
    Macd {
        macd: f64,
        signal: f64,
        histogram: f64,
    },
}

impl Indicator {
    /// Parses one name: `sma20`, `ema50`, `rsi14`, `bb20` or `macd` (MACD 12,26,9). Lower case
    /// only, N in decimal without leading zeros, nothing around it: each indicator has exactly
    /// one name, which is its key in answers.
    ///
    /// # Errors
    /// [`BadIndicator::Period`] for a well-formed name with N outside 2..=500 (`rsi1`, `sma0`,
    /// `ema501`); [`BadIndicator::Unknown`] for anything else.
    pub fn parse(raw: &str) -> Result<Self, BadIndicator> {
        if raw == "macd" {
            return Ok(Indicator::Macd);
        }
        let unknown = || BadIndicator::Unknown(shown(raw));
        let split = raw.find(|c: char| c.is_ascii_digit()).ok_or_else(unknown)?;
        let (kind, digits) = raw.split_at(split);
        let make: fn(usize) -> Indicator = match kind {
            "sma" => Indicator::Sma,
            "ema" => Indicator::Ema,
            "rsi" => Indicator::Rsi,
            "bb" => Indicator::Bb,
            _ => return Err(unknown()),
        };
        // A leading zero would give one indicator a second name (rsi014 = rsi14).
        if !digits.bytes().all(|b| b.is_ascii_digit())
            || (digits.len() > 1 && digits.starts_with('0'))
        {
            return Err(unknown());
        }
        // Digits too many for usize are as far out of range as 501.
        let period = digits.parse::<usize>().unwrap_or(usize::MAX);
        if !valid(period) {
            return Err(BadIndicator::Period(shown(raw)));
        }
        Ok(make(period))
    }

    /// The canonical name, the key in answers: `"rsi14"`, `"macd"`. [`Indicator::parse`] gives
    /// back the same indicator for it.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// Earlier closes needed before this indicator's value agrees with TA-Lib's over the full
    /// history within 1e-6 relative, whatever the series started with: 15 × N, and 400 for MACD.
    /// The recursive ones (EMA, RSI, MACD) forget their seed geometrically; SMA and BB need only
    /// N − 1 but get the same rule, so callers need not know which is which. An RSI forgets
    /// only as the closes move: through a flat stretch both averages decay alike and the index
    /// keeps its value, so a series that starts inside a long flat stretch needs more.
    pub fn warmup(&self) -> usize {
        match *self {
            Indicator::Sma(n) | Indicator::Ema(n) | Indicator::Rsi(n) | Indicator::Bb(n) => {
                n.saturating_mul(15)
            }
            Indicator::Macd => 400,
        }
    }

    /// The indicator over `closes` (oldest first, finite): a Vec of the same length, `None`
    /// during TA-Lib's lookback — the first N − 1 closes for SMA, EMA and BB, N for RSI, 33 for
    /// MACD — and everywhere when the series is that short or the period is out of range.
    /// O(closes) per call.
    pub fn compute(&self, closes: &[f64]) -> Vec<Option<IndicatorValue>> {
        let number = |values: Vec<Option<f64>>| {
            values
                .into_iter()
                .map(|v| v.map(IndicatorValue::Number))
                .collect()
        };
        match *self {
            Indicator::Sma(n) if valid(n) => number(sma(closes, n)),
            Indicator::Ema(n) if valid(n) => number(ema(closes, n)),
            Indicator::Rsi(n) if valid(n) => number(rsi(closes, n)),
            Indicator::Bb(n) if valid(n) => bands(closes, n),
            Indicator::Macd => macd(closes),
            _ => vec![None; closes.len()],
        }
    }
}

impl fmt::Display for Indicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Indicator::Sma(n) => write!(f, "sma{n}"),
            Indicator::Ema(n) => write!(f, "ema{n}"),
            Indicator::Rsi(n) => write!(f, "rsi{n}"),
            Indicator::Bb(n) => write!(f, "bb{n}"),
            Indicator::Macd => f.write_str("macd"),
        }
    }
}

/// Parses a comma-separated list as given in `?indicators=rsi14,ema20,bb20`: items trimmed,
/// empty items ignored, order kept.
///
/// # Errors
/// [`BadIndicator::TooMany`] for more than [`MAX_INDICATORS`] items and
/// [`BadIndicator::Empty`] for none (both judged before any name is read); otherwise the first
/// item's [`Indicator::parse`] error, or [`BadIndicator::Twice`] for a repeated indicator.
pub fn parse_list(raw: &str) -> Result<Vec<Indicator>, BadIndicator> {
    let items: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect();
    if items.len() > MAX_INDICATORS {
        return Err(BadIndicator::TooMany);
    }
    if items.is_empty() {
        return Err(BadIndicator::Empty);
    }
    let mut indicators = Vec::with_capacity(items.len());
    for item in items {
        let indicator = Indicator::parse(item)?;
        if indicators.contains(&indicator) {
            return Err(BadIndicator::Twice(indicator));
        }
        indicators.push(indicator);
    }
    Ok(indicators)
}

fn valid(period: usize) -> bool {
    (MIN_PERIOD..=MAX_PERIOD).contains(&period)
}

/// `raw` cut to [`SHOWN_CHARS`] characters, so an error never echoes a whole query string.
fn shown(raw: &str) -> String {
    match raw.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &raw[..cut]),
        None => raw.to_owned(),
    }
}

mod series;

#[cfg(test)]
use series::deviation;
use series::{bands, ema, macd, rsi, sma};

#[cfg(test)]
mod parse_tests;
#[cfg(test)]
mod tests;
