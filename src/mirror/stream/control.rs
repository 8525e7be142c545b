//! The control messages a client sends on a stream connection and Binance's answers
//! to them (Binance USD-M futures docs, "Live Subscribing/Unsubscribing to streams"):
//! `{"result":null,"id":N}`, `{"result":[…],"id":N}`, `{"result":true,"id":N}`, and
//! errors `{"error":{"code":C,"msg":"…"},"id":N}` with the documented codes and texts.
//!
//! Binance's own error texts are serde's ("unknown variant `X`, expected one of
//! `SUBSCRIBE`, … at line 1 column 28"), so requests are read with serde here too
//! and its messages passed on with Binance's prefixes.

use axum::extract::ws::Utf8Bytes;
use serde::Deserialize;
use serde_json::Value;

/// The one property there is (docs: "Currently, the only property can be set is to
/// set whether combined stream payloads are enabled are not").
pub const COMBINED: &str = "combined";

/// What a valid control message asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    ListSubscriptions,
    SetCombined(bool),
    GetCombined,
}

/// A control message that cannot be served, as Binance reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {msg}")]
pub struct ControlError {
    pub code: u8,
    pub msg: String,
}

impl ControlError {
    fn new(code: u8, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }

    /// `{"code":2,"msg":"Invalid request: …"}`.
    pub fn invalid_request(what: impl std::fmt::Display) -> Self {
        Self::new(2, format!("Invalid request: {what}"))
    }
}

#[derive(Deserialize)]
enum Method {
    #[serde(rename = "SUBSCRIBE")]
    Subscribe,
    #[serde(rename = "UNSUBSCRIBE")]
    Unsubscribe,
    #[serde(rename = "LIST_SUBSCRIPTIONS")]
    ListSubscriptions,
    #[serde(rename = "SET_PROPERTY")]
    SetProperty,
    #[serde(rename = "GET_PROPERTY")]
    GetProperty,
}

#[derive(Deserialize)]
struct Envelope {
    method: Method,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    id: Value,
}

/// Reads a control message: its id (to echo, when it is one) and what it asks.
///
/// # Errors
/// The id to answer with (`None`: `null`) and Binance's error: code 3 for text that
/// is not JSON, 2 for a bad request, 1 for a property value that is not a boolean,
/// 0 for an unknown property.
pub fn parse(text: &str) -> Result<(u64, Request), (Option<u64>, ControlError)> {
    if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        return Err((None, ControlError::new(3, format!("Invalid JSON: {err}"))));
    }
    let envelope: Envelope =
        serde_json::from_str(text).map_err(|err| (None, ControlError::invalid_request(err)))?;
    let id = envelope.id.as_u64().ok_or_else(|| {
        let err = ControlError::invalid_request("request ID must be an unsigned integer");
        (None, err)
    })?;
    request(envelope.method, envelope.params)
        .map(|request| (id, request))
        .map_err(|err| (Some(id), err))
}

fn request(method: Method, params: Option<Value>) -> Result<Request, ControlError> {
    let params = match params {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(params)) => params,
        Some(_) => return Err(ControlError::invalid_request("invalid params")),
    };
    match method {
        Method::Subscribe => streams(params).map(Request::Subscribe),
        Method::Unsubscribe => streams(params).map(Request::Unsubscribe),
        Method::ListSubscriptions => Ok(Request::ListSubscriptions),
        Method::SetProperty => {
            if params.len() > 2 {
                return Err(ControlError::invalid_request("too many parameters"));
            }
            property(params.first())?;
            match params.get(1) {
                Some(Value::Bool(value)) => Ok(Request::SetCombined(*value)),
                _ => Err(ControlError::new(1, "Invalid value type: expected Boolean")),
            }
        }
        Method::GetProperty => {
            if params.len() > 1 {
                return Err(ControlError::invalid_request("too many parameters"));
            }
            property(params.first())?;
            Ok(Request::GetCombined)
        }
    }
}

/// The property named by `name`: only `combined` exists.
fn property(name: Option<&Value>) -> Result<(), ControlError> {
    match name {
        Some(Value::String(name)) if name == COMBINED => Ok(()),
        Some(Value::String(_)) => Err(ControlError::new(0, "Unknown property")),
        _ => Err(ControlError::invalid_request(
            "property name must be a string",
        )),
    }
}

fn streams(params: Vec<Value>) -> Result<Vec<String>, ControlError> {
    params
        .into_iter()
        .map(|param| match param {
            Value::String(name) => Ok(name),
            _ => Err(ControlError::invalid_request("invalid stream")),
        })
        .collect()
}

/// `{"result":<result>,"id":<id>}`.
pub fn answer(id: u64, result: Value) -> Utf8Bytes {
    // Written by hand: the key order is Binance's whatever map serde_json uses.
    Utf8Bytes::from(format!("{{\"result\":{result},\"id\":{id}}}"))
}

/// `{"error":{"code":…,"msg":…},"id":<id or null>}`.
pub fn error(id: Option<u64>, err: &ControlError) -> Utf8Bytes {
    let msg = Value::String(err.msg.clone());
    let id = id.map_or_else(|| "null".to_owned(), |id| id.to_string());
    Utf8Bytes::from(format!(
        "{{\"error\":{{\"code\":{},\"msg\":{msg}}},\"id\":{id}}}",
        err.code
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (Option<u64>, u8, String) {
        let (id, e) = parse(text).unwrap_err();
        (id, e.code, e.msg)
    }

    #[test]
    fn each_method_reads_with_a_timestamp_id() {
        let id = 1_763_791_560_012_u64;
        assert_eq!(
            parse(&format!(
                r#"{{"method":"SUBSCRIBE","params":["btcusdt@kline_1m"],"id":{id}}}"#
            )),
            Ok((id, Request::Subscribe(vec!["btcusdt@kline_1m".into()])))
        );
        assert_eq!(
            parse(r#"{"method":"LIST_SUBSCRIPTIONS","id":3}"#),
            Ok((3, Request::ListSubscriptions))
        );
        assert_eq!(
            parse(r#"{"method":"SET_PROPERTY","params":["combined",true],"id":5}"#),
            Ok((5, Request::SetCombined(true)))
        );
        assert_eq!(
            parse(r#"{"method":"GET_PROPERTY","params":["combined"],"id":18446744073709551615}"#),
            Ok((u64::MAX, Request::GetCombined))
        );
    }

    #[test]
    fn errors_carry_binances_codes_and_texts() {
        assert_eq!(
            err("{"),
            (
                None,
                3,
                "Invalid JSON: EOF while parsing an object at line 1 column 1".into()
            )
        );
        assert_eq!(
            err(r#"{"method":"SUBSCRIBEX","id":1}"#),
            (None, 2, "Invalid request: unknown variant `SUBSCRIBEX`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY` at line 1 column 22".into())
        );
        assert_eq!(
            err(r#"{"id":1}"#).2,
            "Invalid request: missing field `method` at line 1 column 8"
        );
        assert_eq!(
            err(r#"{"method":"LIST_SUBSCRIPTIONS","id":-1}"#),
            (
                None,
                2,
                "Invalid request: request ID must be an unsigned integer".into()
            )
        );
        assert_eq!(
            err(r#"{"method":"SET_PROPERTY","params":["combined","yes"],"id":7}"#),
            (Some(7), 1, "Invalid value type: expected Boolean".into())
        );
        assert_eq!(
            err(r#"{"method":"GET_PROPERTY","params":["colour"],"id":7}"#),
            (Some(7), 0, "Unknown property".into())
        );
        assert_eq!(
            err(r#"{"method":"GET_PROPERTY","params":[1],"id":7}"#).2,
            "Invalid request: property name must be a string"
        );
        assert_eq!(
            err(r#"{"method":"SET_PROPERTY","params":["combined",true,1],"id":7}"#).2,
            "Invalid request: too many parameters"
        );
    }

    #[test]
    fn answers_are_shaped_as_binances() {
        assert_eq!(answer(1, Value::Null).as_str(), r#"{"result":null,"id":1}"#);
        assert_eq!(
            error(None, &ControlError::new(3, "Invalid JSON")).as_str(),
            r#"{"error":{"code":3,"msg":"Invalid JSON"},"id":null}"#
        );
    }
}
