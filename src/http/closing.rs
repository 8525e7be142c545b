//! How a client's websocket ends: the closing handshake of RFC 6455 §5.5.1 and §7.1,
//! whichever side starts it, bounded in time because the peer may be what is stuck.
//!
//! Tungstenite answers a client's Close by queueing the reply, which leaves only on
//! the socket's next read, write or flush; a task that stops at the client's Close
//! and drops the socket never sends it, and the client sees TCP end without a
//! handshake (Python `websockets` reports 1006, a browser `wasClean: false`). So
//! every way out of a connection's task that follows a Close, the client's or ours,
//! goes through here and completes the handshake before the socket is dropped.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;

use super::upgrade::Socket;

/// The longest a closing handshake may take, our Close and the peer's together,
/// and the longest the rest of a frame cut short before a Close may take to write.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Closes with `code` (RFC 6455 §7.1.2): sends our Close, then reads until the
/// client's Close answers it, and drops the socket (the server closes TCP first,
/// §7.1.1). Whatever the client sends meanwhile is discarded; all of it within
/// [`CLOSE_WAIT`].
pub(super) async fn close(socket: &mut Socket, code: u16, reason: &'static str) {
    // Boxed: a close happens once per connection, and its state would otherwise be
    // part of every idle connection's future.
    Box::pin(async move {
        let frame = Message::Close(Some(CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }));
        let handshake = async {
            if socket.send(frame).await.is_err() {
                return;
            }
            // Tungstenite ends the stream once the client's Close has been read.
            while let Some(Ok(_)) = socket.next().await {}
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, handshake).await;
    })
    .await;
}

/// Answers the Close a client sent (RFC 6455 §5.5.1): the reply tungstenite queued
/// when it read that Close (the client's code echoed; none if it gave none; 1002
/// for a code not allowed on the wire) is flushed, our side of TCP is shut (FIN),
/// and the client gets [`CLOSE_WAIT`] to close its side before the socket is
/// dropped. Dropping at once could reset the connection (RST) if anything of the
/// client's were still unread, and a reset can destroy the reply before the client
/// reads it.
pub(super) async fn answer_close(socket: &mut Socket) {
    Box::pin(async move {
        let handshake = async {
            // Ends in `ConnectionClosed` once the reply is out, which `flush` reports as Ok.
            if socket.flush().await.is_err() {
                return;
            }
            let io = socket.get_mut();
            if io.shutdown().await.is_err() {
                return;
            }
            let mut discard = [0u8; 256];
            while let Ok(1..) = io.read(&mut discard).await {}
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, handshake).await;
    })
    .await;
}
