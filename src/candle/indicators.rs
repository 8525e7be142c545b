//! TEMPORARY STUB: replaced by the indicators branch before merging.
#![allow(dead_code, unused)]
pub const MIN_PERIOD: usize = 2;
pub const MAX_PERIOD: usize = 500;
pub const MAX_INDICATORS: usize = 8;
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Indicator {
    Sma(usize),
    Ema(usize),
    Rsi(usize),
    Bb(usize),
    Macd,
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad indicator {0}")]
pub struct BadIndicator(String);
impl Indicator {
    pub fn parse(raw: &str) -> Result<Self, BadIndicator> {
        if raw == "macd" {
            return Ok(Self::Macd);
        }
        let n: usize = raw
            .trim_start_matches(char::is_alphabetic)
            .parse()
            .map_err(|_| BadIndicator(raw.into()))?;
        match raw.trim_end_matches(char::is_numeric) {
            "sma" => Ok(Self::Sma(n)),
            "ema" => Ok(Self::Ema(n)),
            "rsi" => Ok(Self::Rsi(n)),
            "bb" => Ok(Self::Bb(n)),
            _ => Err(BadIndicator(raw.into())),
        }
    }
    pub fn name(&self) -> String {
        match self {
            Self::Sma(n) => format!("sma{n}"),
            Self::Ema(n) => format!("ema{n}"),
            Self::Rsi(n) => format!("rsi{n}"),
            Self::Bb(n) => format!("bb{n}"),
            Self::Macd => "macd".into(),
        }
    }
    pub fn warmup(&self) -> usize {
        match self {
            Self::Macd => 400,
            Self::Sma(n) | Self::Ema(n) | Self::Rsi(n) | Self::Bb(n) => 15 * n,
        }
    }
    pub fn compute(&self, closes: &[f64]) -> Vec<Option<IndicatorValue>> {
        let n = match self {
            Self::Sma(n) => *n,
            _ => 2,
        };
        (0..closes.len())
            .map(|i| {
                (i + 1 >= n).then(|| {
                    IndicatorValue::Number(closes[i + 1 - n..=i].iter().sum::<f64>() / n as f64)
                })
            })
            .collect()
    }
}
pub fn parse_list(raw: &str) -> Result<Vec<Indicator>, BadIndicator> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(Indicator::parse)
        .collect()
}
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum IndicatorValue {
    Number(f64),
    Bands {
        upper: f64,
        middle: f64,
        lower: f64,
    },
    Macd {
        macd: f64,
        signal: f64,
        histogram: f64,
    },
}
