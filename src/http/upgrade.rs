//! The switch from HTTP to a websocket on `/` (RFC 6455 §4.2.2): answer `101` with
//! `Sec-WebSocket-Accept`, then run the connection's task on the upgraded socket.
//!
//! axum's `WebSocketUpgrade` does the same but hands the task a socket that only
//! takes messages through tungstenite's write buffer, one copy per client. The feed
//! writes each shared, already encoded message straight to the socket instead
//! ([`super::frames`]), so it needs the tungstenite stream itself; this module is the
//! few lines of the handshake that needs. Tungstenite still reads every frame the
//! client sends and queues the answers to its pings and its close; they leave on
//! the socket's next read or flush, which [`super::feed`]'s loop and
//! [`super::closing`] make sure comes.

use std::future::Future;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::handshake::BadHandshake;

/// A client's websocket after the upgrade.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// A valid websocket handshake, not yet answered.
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = BadHandshake;

    /// Errors: [`BadHandshake`] when the request is not a valid handshake, or its
    /// connection cannot switch protocols.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, BadHandshake> {
        BadHandshake::check(parts)?;
        let key = parts.headers[header::SEC_WEBSOCKET_KEY].clone();
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
            BadHandshake::NotUpgradable("this connection has no upgrade to give".to_owned())
        })?;
        Ok(Upgrade { key, on_upgrade })
    }
}

impl Upgrade {
    /// The `101 Switching Protocols` answer; once the client has it, `serve` runs on
    /// its own task with the socket (configured by `config`). A connection that
    /// fails to upgrade ends quietly: the client has gone.
    pub fn on_upgrade<F, Fut>(self, config: WebSocketConfig, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Upgrade { key, on_upgrade } = self;
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let io = TokioIo::new(upgraded);
            serve(WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await).await;
        });
        let accept = derive_accept_key(key.as_bytes());
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Body::empty())
            .expect("a 101 answer from valid header values")
    }
}
