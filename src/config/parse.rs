//! How each kind of value is read from its variable: unset means the default,
//! set-but-blank is an error, anything else is parsed and checked.

use std::time::Duration;

use url::Url;

use crate::candle::Interval;

use super::ConfigError;

/// What a variable should have held: the text after `NAME:` in the error.
pub(super) struct Expected(pub(super) String);

/// [`Expected`] from any message.
pub(super) fn expected(message: impl Into<String>) -> Expected {
    Expected(message.into())
}

/// Wraps the lookup so each variable is parsed the same way: unset means the default,
/// set-but-blank is an error (an explicit empty value is a mistake, not a wish).
pub(super) struct Source<'a>(pub(super) &'a dyn Fn(&str) -> Option<String>);

impl Source<'_> {
    pub(super) fn parse_or<T>(
        &self,
        var: &'static str,
        default: T,
        parse: impl Fn(&str) -> Result<T, Expected>,
    ) -> Result<T, ConfigError> {
        match (self.0)(var) {
            None => Ok(default),
            Some(raw) => {
                let raw = raw.trim();
                if raw.is_empty() {
                    return Err(ConfigError::new(
                        var,
                        "is set but empty; unset it to use the default",
                    ));
                }
                parse(raw).map_err(|Expected(reason)| ConfigError::new(var, reason))
            }
        }
    }
}

pub(super) fn parse_port(raw: &str) -> Result<u16, Expected> {
    raw.parse::<u16>().map_err(|_| {
        expected(format!(
            "expected a port number from 0 to 65535, got {raw:?}"
        ))
    })
}

pub(super) fn parse_seconds(raw: &str, min: u64, max: u64) -> Result<Duration, Expected> {
    match raw.parse::<u64>() {
        Ok(secs) if (min..=max).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(expected(format!(
            "expected whole seconds from {min} to {max}, got {raw:?}"
        ))),
    }
}

pub(super) fn parse_name(raw: &str) -> Result<String, Expected> {
    if raw.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
        Err(expected(format!(
            "{raw:?} is not a valid MongoDB name (no / \\ . space \" $)"
        )))
    } else {
        Ok(raw.to_owned())
    }
}

pub(super) fn parse_symbols(raw: &str) -> Result<Vec<String>, Expected> {
    let mut symbols: Vec<String> = Vec::new();
    for symbol in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let symbol = symbol.to_uppercase();
        // Only what can never be a symbol: the exchange's list is the authority
        // (quarterly contracts such as BTCUSDT_260626, perpetuals with non-ASCII
        // names), checked at startup.
        if symbol == "*" {
            return Err(expected(
                "* follows every contract the exchange lists and stands alone; expected SYMBOLS=* or a list such as BTCUSDT,ETHUSDT",
            ));
        }
        if let Some(bad) = symbol.chars().find(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '/' | '@' | '?' | '&' | '#' | '%' | '*')
        }) {
            return Err(expected(format!(
                "{symbol:?} is not a symbol: it contains {bad:?}; expected names such as BTCUSDT or BTCUSDT_260626"
            )));
        }
        if symbols.contains(&symbol) {
            return Err(expected(format!("{symbol} is listed twice")));
        }
        symbols.push(symbol);
    }
    if symbols.is_empty() {
        return Err(expected(
            "the list is empty; expected comma-separated symbols such as BTCUSDT,ETHUSDT",
        ));
    }
    Ok(symbols)
}

pub(super) fn parse_url(raw: &str, schemes: &[&str]) -> Result<Url, Expected> {
    let url = Url::parse(raw).map_err(|err| expected(format!("{raw:?} is not a URL ({err})")))?;
    if !schemes.contains(&url.scheme()) {
        return Err(expected(format!(
            "{raw:?} must use {}",
            schemes.join(" or ")
        )));
    }
    if url.host_str().is_none() {
        return Err(expected(format!("{raw:?} has no host")));
    }
    Ok(url)
}

/// The intervals `INTERVALS` may name: Binance's fixed-length ones without `3d`, whose
/// buckets Binance counts from its own listing date rather than the epoch.
pub(super) const SERVABLE_INTERVALS: &[&str] = &[
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "1w",
];

/// `INTERVALS`: a comma-separated list of [`SERVABLE_INTERVALS`], each a whole
/// multiple of `base`; `base` is added when missing. Sorted shortest first, so the
/// base interval is always first.
pub(super) fn parse_intervals(raw: &str, base: &Interval) -> Result<Vec<Interval>, Expected> {
    let mut intervals = vec![base.clone()];
    let mut listed: Vec<&str> = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !SERVABLE_INTERVALS.contains(&name) {
            return Err(expected(format!(
                "unsupported interval {name:?}; expected a comma-separated list of {}",
                SERVABLE_INTERVALS.join(" ")
            )));
        }
        if listed.contains(&name) {
            return Err(expected(format!("{name} is listed twice")));
        }
        listed.push(name);
        let interval = Interval::parse(name).map_err(|err| expected(err.to_string()))?;
        if interval.millis() % base.millis() != 0 {
            return Err(expected(format!(
                "{name} is not a whole multiple of INTERVAL={base}: its candles are built from {base} candles"
            )));
        }
        if interval != *base {
            intervals.push(interval);
        }
    }
    if listed.is_empty() {
        return Err(expected(
            "the list is empty; expected comma-separated intervals such as 1m,5m,1h",
        ));
    }
    intervals.sort_by_key(Interval::millis);
    Ok(intervals)
}

/// The default `INTERVALS` for `base`: those of `1m,5m,15m,1h,4h,1d` that are whole
/// multiples of it, and `base` itself.
pub(super) fn default_intervals(base: &Interval) -> Vec<Interval> {
    let mut intervals = vec![base.clone()];
    intervals.extend(
        ["1m", "5m", "15m", "1h", "4h", "1d"]
            .iter()
            .filter_map(|name| Interval::parse(name).ok())
            .filter(|i| i.millis() > base.millis() && i.millis() % base.millis() == 0),
    );
    intervals
}
