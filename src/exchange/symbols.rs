//! `SYMBOLS` against the exchange's own list (`GET /fapi/v1/exchangeInfo`, weight
//! 1): the syntax check in the configuration only rejects what can never be a
//! symbol; this is the authority.

use std::sync::Arc;

use tracing::{info, warn};

use super::ExchangeOptions;
use super::rest::{RestClient, RestError};
use crate::candle::Interval;
use crate::health::UpstreamHealth;
use crate::telemetry::Chain;

/// What the exchange said of the configured symbols.
#[derive(Debug)]
pub enum SymbolCheck {
    /// Every symbol is listed.
    Listed,
    /// These symbols are not listed: a configuration error.
    Unlisted(Vec<String>),
    /// The exchange could not be asked; klines answers are checked later instead
    /// (`400 {"code":-1121}` marks a symbol refused).
    Unreachable(RestError),
}

/// Asks the exchange which of `symbols` it lists. A listed symbol that is not
/// trading (a delivered quarterly contract) is served, with one warning.
pub async fn check_symbols(
    options: &ExchangeOptions,
    interval: &Interval,
    symbols: &[String],
) -> SymbolCheck {
    let health = Arc::new(UpstreamHealth::default());
    let rest = match RestClient::new(&options.rest_url, interval.clone(), health) {
        Ok(rest) => rest,
        Err(err) => return SymbolCheck::Unreachable(err),
    };
    let listed = match rest.listed_symbols().await {
        Ok(listed) => listed,
        Err(err) => {
            warn!(error = %Chain(&err), "cannot check SYMBOLS against the exchange now; symbols it refuses will show in /ready");
            return SymbolCheck::Unreachable(err);
        }
    };
    let mut unlisted = Vec::new();
    for symbol in symbols {
        match listed.iter().find(|l| &l.symbol == symbol) {
            None => unlisted.push(symbol.clone()),
            Some(l) if !l.status.is_empty() && l.status != "TRADING" => {
                warn!(symbol, status = %l.status, "the exchange lists this symbol but it is not trading");
            }
            Some(_) => {}
        }
    }
    if unlisted.is_empty() {
        info!(
            symbols = symbols.len(),
            "every symbol is listed by the exchange"
        );
        SymbolCheck::Listed
    } else {
        SymbolCheck::Unlisted(unlisted)
    }
}

/// Binance's status of a contract open for trading (USD-M docs, "Exchange
/// Information": `symbols[].status`).
pub const TRADING: &str = "TRADING";

/// Every contract the exchange lists as [`TRADING`] (perpetuals and quarterlies
/// alike), in the exchange's order: what `SYMBOLS=*` follows. One request, weight 1.
///
/// # Errors
/// [`RestError`] when exchangeInfo cannot be read.
pub async fn trading_symbols(
    options: &ExchangeOptions,
    interval: &Interval,
    health: Arc<UpstreamHealth>,
) -> Result<Vec<String>, RestError> {
    let rest = RestClient::new(&options.rest_url, interval.clone(), health)?;
    let listed = rest.listed_symbols().await?;
    Ok(listed
        .into_iter()
        .filter(|l| l.status == TRADING)
        .map(|l| l.symbol)
        .collect())
}
