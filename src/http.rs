//! The axum router: the websocket feed on `/` and the health endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::rejection::ExtensionRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::SinkExt;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;
use tracing::{Instrument, debug, info_span};

use crate::hub::Hub;

/// What handlers share: cheap handles only.
#[derive(Clone)]
pub struct AppState {
    /// The windows and their published messages.
    pub hub: Hub,
    /// Fires on shutdown; open connections close with 1001.
    pub shutdown: CancellationToken,
    /// Numbers connections for their log spans.
    pub next_connection: Arc<AtomicU64>,
}

impl AppState {
    /// State for a router serving `hub` until `shutdown` fires.
    pub fn new(hub: Hub, shutdown: CancellationToken) -> Self {
        Self {
            hub,
            shutdown,
            next_connection: Arc::new(AtomicU64::new(1)),
        }
    }
}

/// The service's routes, without a listener, so tests can drive it either way.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(feed))
        .route("/health", get(health))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `/`: a websocket upgrade subscribes to the feed; a plain request gets a hint.
async fn feed(
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    State(state): State<AppState>,
    connect_info: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(axum::http::header::UPGRADE, "websocket")],
            "candlecast streams candles over a websocket: connect with e.g. `wscat -c ws://HOST:PORT/`\n",
        )
            .into_response();
    };
    let id = state.next_connection.fetch_add(1, Ordering::Relaxed);
    let peer = connect_info
        .map(|ConnectInfo(addr)| addr.to_string())
        .unwrap_or_default();
    upgrade.on_upgrade(move |socket| {
        serve_client(socket, state).instrument(info_span!("client", id, peer))
    })
}

/// Sends the current window of every coin, then each coin's new window as it changes.
/// A client that falls behind gets only the newest message per coin, never a backlog.
async fn serve_client(mut socket: WebSocket, state: AppState) {
    let mut updates = state.hub.subscribe();
    let snapshot = Arc::clone(&updates.borrow_and_update());
    let mut sent: Vec<u64> = snapshot.coins.iter().map(|coin| coin.version).collect();
    for coin in &snapshot.coins {
        if socket.feed(Message::Text(coin.text.clone())).await.is_err() {
            return;
        }
    }
    if socket.flush().await.is_err() {
        return;
    }
    debug!("client subscribed");
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame { code: close_code::AWAY, reason: "server shutting down".into() })))
                    .await;
                return;
            }
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = Arc::clone(&updates.borrow_and_update());
                for (coin, sent) in snapshot.coins.iter().zip(sent.iter_mut()) {
                    if coin.version != *sent {
                        *sent = coin.version;
                        if socket.feed(Message::Text(coin.text.clone())).await.is_err() {
                            return;
                        }
                    }
                }
                if socket.flush().await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // Pings are answered by the websocket layer; anything else is ignored.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    debug!("client left");
                    return;
                }
                Some(Ok(_)) => {}
            }
        }
    }
}
