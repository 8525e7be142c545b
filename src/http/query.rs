//! Query strings through axum's `Query` and serde, with a rejection that names the
//! parameter at fault the way every 400 of this service does.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::HttpError;

/// A query type with a fixed set of parameter names (deserialized with
/// `#[serde(deny_unknown_fields)]`).
pub trait Parameters: DeserializeOwned {
    /// Every accepted parameter, in the order error messages list them.
    const NAMES: &'static [&'static str];
}

/// Extracts `T` from the query string; an unknown or repeated parameter is a 400
/// naming it.
pub struct Params<T>(pub T);

impl<T: Parameters, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(params)) => Ok(Params(params)),
            Err(rejection) => Err(explain::<T>(&rejection)),
        }
    }
}

/// Turns serde's words ("unknown field `x`", "duplicate field `limit`") into ours.
fn explain<T: Parameters>(rejection: &QueryRejection) -> HttpError {
    let text = rejection.body_text();
    let named = text.split('`').nth(1).unwrap_or_default().to_owned();
    if text.contains("unknown field") {
        let message = format!(
            "unknown parameter {named:?}; expected one of {}",
            T::NAMES.join(", ")
        );
        HttpError::bad_parameter(named, message)
    } else if text.contains("duplicate field") {
        let message = format!("{named} is given more than once");
        HttpError::bad_parameter(named, message)
    } else {
        HttpError::bad_parameter("", text)
    }
}

/// `value` as a whole number within `range`, or a 400 naming `parameter`.
pub fn number_in<T>(
    parameter: &str,
    value: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, HttpError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match value.parse::<T>() {
        Ok(number) if range.contains(&number) => Ok(number),
        _ => Err(HttpError::bad_parameter(
            parameter,
            format!(
                "{parameter} must be a whole number from {} to {}, got {value:?}",
                range.start(),
                range.end()
            ),
        )),
    }
}
