//! How the exchange writes one symbol's decimals, so a candle read back from the
//! store is written as the exchange wrote it, digit for digit.
//!
//! Binance sends every price and volume as a decimal string padded to a fixed
//! number of decimals per symbol: prices to the contract's `pricePrecision`
//! (`"84250.00"`), base volumes to its `quantityPrecision` (`"98.112"`), quote
//! volumes to the sum of the two (`"8265290.11200"`; USD-M docs, "Kline/Candlestick
//! Data" and "Exchange Information"). candlecast keeps candles as `f64`, which loses
//! the padding, so the decimals are learned per symbol from the exchange's own
//! strings (stream frames and REST rows) and, until a string is seen, taken from
//! exchangeInfo. An exchange whose strings vary in length (no padding) is written
//! back as Rust's shortest round-trip decimal.
//!
//! Fixed decimals are exact while a value has at most 15 significant digits (an
//! `f64`'s guarantee): every 1m candle; a weekly quote volume of a large contract
//! (over 10^10 with 5 decimals) may differ in its last digit.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::RwLock;

/// How one kind of value (prices, base volumes or quote volumes) of one symbol is
/// written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Scale {
    /// Nothing seen yet.
    #[default]
    Unknown,
    /// Always this many decimals, padded with zeros.
    Fixed(u8),
    /// Strings of different lengths were seen: the exchange does not pad.
    Shortest,
}

impl Scale {
    /// This scale after one more string with `decimals` digits after its point.
    #[must_use]
    pub fn observe(self, decimals: u8) -> Scale {
        match self {
            Scale::Unknown => Scale::Fixed(decimals),
            Scale::Fixed(known) if known == decimals => self,
            Scale::Fixed(_) | Scale::Shortest => Scale::Shortest,
        }
    }

    /// Both observations together.
    #[must_use]
    pub fn merge(self, other: Scale) -> Scale {
        match (self, other) {
            (Scale::Unknown, any) | (any, Scale::Unknown) => any,
            (Scale::Fixed(a), Scale::Fixed(b)) if a == b => self,
            _ => Scale::Shortest,
        }
    }

    /// Appends `value` as the exchange writes it; without a known fixed scale,
    /// the shortest decimal that reads back as `value` (never an exponent).
    pub fn write(self, out: &mut String, value: f64) {
        // Writing to a String cannot fail.
        let _ = match self {
            Scale::Fixed(decimals) => write!(out, "{value:.*}", usize::from(decimals)),
            Scale::Unknown | Scale::Shortest => write!(out, "{value}"),
        };
    }
}

/// The digits after the point of a decimal string (`"84250.10"` → 2, `"12"` → 0).
pub fn decimals_of(text: &str) -> u8 {
    let text = text.trim();
    text.find('.').map_or(0, |point| {
        u8::try_from(text.len() - point - 1).unwrap_or(u8::MAX)
    })
}

/// How one symbol's prices, base volumes (`v`, `V`) and quote volumes (`q`, `Q`)
/// are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Notation {
    pub price: Scale,
    pub quantity: Scale,
    pub quote: Scale,
}

impl Notation {
    /// Binance's padding from a contract's exchangeInfo `pricePrecision` and
    /// `quantityPrecision`; quote volumes carry both.
    pub fn from_precisions(price: u8, quantity: u8) -> Self {
        Self {
            price: Scale::Fixed(price),
            quantity: Scale::Fixed(quantity),
            quote: Scale::Fixed(price.saturating_add(quantity)),
        }
    }

    /// Both observations together, kind by kind.
    #[must_use]
    pub fn merge(self, other: Notation) -> Notation {
        Notation {
            price: self.price.merge(other.price),
            quantity: self.quantity.merge(other.quantity),
            quote: self.quote.merge(other.quote),
        }
    }

    /// This notation where it is known, `fallback` where it is not.
    #[must_use]
    pub fn or(self, fallback: Notation) -> Notation {
        let pick = |own: Scale, other: Scale| if own == Scale::Unknown { other } else { own };
        Notation {
            price: pick(self.price, fallback.price),
            quantity: pick(self.quantity, fallback.quantity),
            quote: pick(self.quote, fallback.quote),
        }
    }
}

/// Every followed symbol's notation: learned from the exchange's strings, else
/// listed in exchangeInfo. Shared by the exchange client (which learns) and the
/// Binance mirror (which writes); cheap to read on every event.
#[derive(Debug, Default)]
pub struct Notations {
    learned: RwLock<HashMap<String, Notation>>,
    listed: RwLock<HashMap<String, Notation>>,
}

impl Notations {
    /// Adds what one frame or row of `symbol` (upper case) showed.
    pub fn learn(&self, symbol: &str, seen: Notation) {
        let known = self
            .learned
            .read()
            .expect("notation lock")
            .get(symbol)
            .copied();
        let merged = known.unwrap_or_default().merge(seen);
        if known != Some(merged) {
            self.learned
                .write()
                .expect("notation lock")
                .insert(symbol.to_owned(), merged);
        }
    }

    /// Sets the notations exchangeInfo lists, replacing the previous listing.
    pub fn list(&self, listed: HashMap<String, Notation>) {
        *self.listed.write().expect("notation lock") = listed;
    }

    /// How `symbol` (upper case) is written: its strings' notation, else its
    /// listing's, else the shortest decimals.
    pub fn of(&self, symbol: &str) -> Notation {
        let learned = self
            .learned
            .read()
            .expect("notation lock")
            .get(symbol)
            .copied();
        let listed = self
            .listed
            .read()
            .expect("notation lock")
            .get(symbol)
            .copied();
        learned.unwrap_or_default().or(listed.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(scale: Scale, value: f64) -> String {
        let mut out = String::new();
        scale.write(&mut out, value);
        out
    }

    #[test]
    fn fixed_scales_write_the_exchange_s_padding() {
        // fixtures/rest-klines.json: prices 2 decimals, volumes 3, quote volumes 5.
        assert_eq!(
            written(Scale::Fixed(2), "84250.00".parse().unwrap()),
            "84250.00"
        );
        assert_eq!(written(Scale::Fixed(3), "6.100".parse().unwrap()), "6.100");
        assert_eq!(
            written(Scale::Fixed(5), "8265290.11200".parse().unwrap()),
            "8265290.11200"
        );
        assert_eq!(written(Scale::Fixed(0), 12.0), "12");
        assert_eq!(written(Scale::Shortest, 84201.7), "84201.7");
        assert_eq!(written(Scale::Unknown, 0.00001), "0.00001");
    }

    #[test]
    fn strings_of_one_length_fix_the_scale_and_of_two_lengths_do_not() {
        assert_eq!(decimals_of("84250.00"), 2);
        assert_eq!(decimals_of("12"), 0);
        assert_eq!(decimals_of(" 0.5 "), 1);
        let scale = Scale::Unknown.observe(2).observe(2);
        assert_eq!(scale, Scale::Fixed(2));
        assert_eq!(scale.observe(1), Scale::Shortest);
        assert_eq!(Scale::Shortest.observe(2), Scale::Shortest);
        assert_eq!(Scale::Fixed(3).merge(Scale::Unknown), Scale::Fixed(3));
        assert_eq!(Scale::Fixed(3).merge(Scale::Fixed(2)), Scale::Shortest);
    }

    #[test]
    fn learned_strings_win_over_the_listing() {
        let notations = Notations::default();
        assert_eq!(notations.of("BTCUSDT"), Notation::default());
        notations.list(HashMap::from([(
            "BTCUSDT".to_owned(),
            Notation::from_precisions(2, 3),
        )]));
        assert_eq!(notations.of("BTCUSDT").quote, Scale::Fixed(5));
        notations.learn(
            "BTCUSDT",
            Notation {
                price: Scale::Fixed(1),
                ..Notation::default()
            },
        );
        let of = notations.of("BTCUSDT");
        assert_eq!(of.price, Scale::Fixed(1), "the strings win");
        assert_eq!(of.quantity, Scale::Fixed(3), "the listing fills the rest");
        notations.learn(
            "BTCUSDT",
            Notation {
                price: Scale::Fixed(2),
                ..Notation::default()
            },
        );
        assert_eq!(notations.of("BTCUSDT").price, Scale::Shortest);
    }
}
