//! Exact sums of the exchange's decimal quantities (volumes), so a bucket's volume
//! prints as the decimal sum of its base candles' volumes, digit for digit, as the
//! exchange's own candle of that interval does.
//!
//! A candle holds the shortest `f64` that prints as the exchange's decimal string
//! (`"0.1"` is held as the `f64` nearest 0.1). Adding those `f64`s carries binary
//! rounding (`0.1 + 0.2 + 0.1 + 0.2 + 0.1` is `0.7000000000000001`); adding the
//! decimals they stand for does not. So each value goes back to its decimal (its
//! shortest round-trip text, which is the exchange's string), the decimals are added
//! exactly with `rust_decimal`, and the sum comes back as the nearest `f64`, which
//! prints as that sum.

use std::fmt::{self, Write};
use std::str::FromStr;

use rust_decimal::Decimal;

/// A running sum of decimal quantities held as `f64`.
///
/// Exact while every value fits a [`Decimal`] (28 significant digits, magnitude
/// below 7.9e28): every volume the exchange sends does. A value that does not (an
/// infinity, a NaN, a sum overflowing) turns the sum into a plain `f64` sum.
#[derive(Debug, Clone, Copy)]
pub struct DecimalSum {
    /// The exact sum; `None` once a value could not be held as a decimal.
    exact: Option<Decimal>,
    /// The plain floating-point sum, for when the exact one gave up.
    float: f64,
}

impl Default for DecimalSum {
    fn default() -> Self {
        Self {
            exact: Some(Decimal::ZERO),
            float: 0.0,
        }
    }
}

impl DecimalSum {
    /// Adds `value`, a quantity parsed from the exchange's decimal string.
    pub fn add(&mut self, value: f64) {
        self.float += value;
        self.exact = self
            .exact
            .and_then(|sum| sum.checked_add(to_decimal(value)?));
    }

    /// The sum as the `f64` nearest the exact decimal sum.
    pub fn value(&self) -> f64 {
        self.exact.and_then(to_f64).unwrap_or(self.float)
    }
}

impl std::iter::FromIterator<f64> for DecimalSum {
    fn from_iter<I: IntoIterator<Item = f64>>(values: I) -> Self {
        let mut sum = Self::default();
        values.into_iter().for_each(|value| sum.add(value));
        sum
    }
}

/// The decimal that `value` stands for: its shortest round-trip text (Rust's
/// `Display` for `f64`, never in exponent form), read as a [`Decimal`].
fn to_decimal(value: f64) -> Option<Decimal> {
    if !value.is_finite() {
        return None;
    }
    // The fast path, no text: the fewest decimals `k` whose decimal nearest `value`
    // reads back as `value`. A decimal of at most 15 significant digits (every
    // exchange quantity) is the only one of its length that reads back as its f64,
    // so this is the decimal the exchange sent, and the one `Display` prints.
    for (k, power) in POWERS_OF_TEN.iter().enumerate() {
        let units = (value * power).round();
        if units.abs() >= EXACT_INTEGER {
            break;
        }
        if units / power == value {
            return Some(Decimal::from_i128_with_scale(units as i128, k as u32));
        }
    }
    let mut text = StackText::default();
    write!(text, "{value}").ok()?;
    Decimal::from_str(text.as_str()).ok()
}

/// 2^53: every integer below it is exact in an `f64`.
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// 10^0 to 10^12, each exact in an `f64`: the decimals the fast path tries.
const POWERS_OF_TEN: [f64; 13] = [
    1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12,
];

/// The `f64` nearest `decimal`.
fn to_f64(decimal: Decimal) -> Option<f64> {
    let mantissa = decimal.mantissa();
    let scale = decimal.scale();
    // Both exact in an f64, so the one division is correctly rounded (Clinger's
    // fast path): the common case, three-decimal volumes.
    if (mantissa.abs() as f64) < EXACT_INTEGER && scale <= 22 {
        return Some(mantissa as f64 / 10f64.powi(scale as i32));
    }
    // Otherwise Rust's float parsing, which is correctly rounded.
    let mut text = StackText::default();
    write!(text, "{decimal}").ok()?;
    text.as_str().parse().ok()
}

/// Text written into a fixed buffer on the stack: a value longer than a decimal's
/// text can be fails to write (and is then summed as a plain `f64`).
struct StackText {
    bytes: [u8; 64],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        Self {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl StackText {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(values: &[f64]) -> f64 {
        values.iter().copied().collect::<DecimalSum>().value()
    }

    #[test]
    fn the_issues_five_minutes_sum_to_seven_tenths() {
        let volumes = [0.1, 0.2, 0.1, 0.2, 0.1];
        assert_eq!(
            volumes.iter().sum::<f64>().to_string(),
            "0.7000000000000001"
        );
        assert_eq!(sum(&volumes).to_string(), "0.7");
    }

    #[test]
    fn one_value_comes_back_unchanged() {
        for value in [0.0, 0.1, 1e-8, 123_456.789, 97_012.5, 3.0, 1e20, -2.5] {
            assert_eq!(sum(&[value]).to_bits(), value.to_bits(), "{value}");
        }
    }

    #[test]
    fn quote_volumes_and_tiny_values_sum_exactly() {
        let quote = [1_234_567.890_12, 2_345_678.901_23, 0.000_01];
        assert_eq!(sum(&quote).to_string(), "3580246.79136");
        // More decimals than the fast path takes: back to f64 through text.
        assert_eq!(sum(&[1e-23, 2e-23]), 3e-23);
    }

    #[test]
    fn a_value_no_decimal_holds_falls_back_to_the_float_sum() {
        assert_eq!(sum(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert!(sum(&[1.0, f64::NAN]).is_nan());
        assert_eq!(sum(&[1e300, 1e300]), 2e300);
    }
}
