//! Text frames written straight to a client's socket (RFC 6455 §5.2): each message
//! is encoded once and shared by every client that gets it, so a client's write is
//! a small header per message and the shared bytes, gathered into one vectored
//! write, with nothing copied and no write buffer kept per client.
//!
//! Server frames are never masked (RFC 6455 §5.1), so the header is the first byte
//! (FIN, opcode 1 = text) and the payload length in 7, 7 + 16 or 7 + 64 bits.

use std::io::{self, IoSlice};

use axum::extract::ws::Utf8Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// The first header byte of a whole text frame: FIN set, opcode 1.
const FIN_TEXT: u8 = 0x81;
/// At most this many slices go to one `writev` (Linux allows 1,024).
const MAX_SLICES: usize = 64;

/// One frame header: up to 10 bytes, of which `len` are used.
#[derive(Debug, Clone, Copy)]
struct Header {
    bytes: [u8; 10],
    len: u8,
}

impl Header {
    /// The header of a whole, unmasked text frame of `payload` bytes.
    fn text(payload: usize) -> Self {
        let mut bytes = [0u8; 10];
        bytes[0] = FIN_TEXT;
        let len = if payload < 126 {
            bytes[1] = payload as u8;
            2
        } else if let Ok(short) = u16::try_from(payload) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(payload as u64).to_be_bytes());
            10
        };
        Self { bytes, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Messages on their way to one client as text frames, and how much of them the
/// socket has taken: a write that stops part way (the send timed out) can be
/// finished later, so the next frame (a close) starts on a frame boundary.
pub struct Outgoing {
    frames: Vec<(Header, Utf8Bytes)>,
    /// Bytes (headers and payloads) already written.
    written: usize,
    total: usize,
}

impl Outgoing {
    /// `messages` as text frames, in order.
    pub fn new(messages: impl IntoIterator<Item = Utf8Bytes>) -> Self {
        let frames: Vec<_> = messages
            .into_iter()
            .map(|message| (Header::text(message.len()), message))
            .collect();
        let total = frames
            .iter()
            .map(|(header, message)| usize::from(header.len) + message.len())
            .sum();
        Self {
            frames,
            written: 0,
            total,
        }
    }

    /// How many messages this holds.
    pub fn messages(&self) -> usize {
        self.frames.len()
    }

    /// The payload bytes of the messages (headers not counted).
    pub fn payload_bytes(&self) -> usize {
        self.frames.iter().map(|(_, message)| message.len()).sum()
    }

    /// Whether some bytes, but not all, have been written: the socket is mid-frame.
    pub fn partly_written(&self) -> bool {
        self.written > 0 && self.written < self.total
    }

    /// Writes what is left, in as few `writev` calls as the socket takes. Cancel
    /// safe: dropped part way, it has recorded every byte written.
    ///
    /// Errors: the socket's, or `WriteZero` if it takes nothing.
    pub async fn write_to<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        while self.written < self.total {
            let slices = self.remaining();
            let n = io.write_vectored(&slices).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.written += n;
        }
        io.flush().await
    }

    /// The slices not yet written, from the first unwritten byte. A `Vec`, not an
    /// array on the stack: the slices live across the write's `.await`, so an array
    /// would sit in every connection's future (1 KiB for 64 slices) while idle.
    fn remaining(&self) -> Vec<IoSlice<'_>> {
        let mut skip = self.written;
        let mut slices = Vec::with_capacity((self.frames.len() * 2).min(MAX_SLICES));
        let parts = self
            .frames
            .iter()
            .flat_map(|(header, message)| [header.as_slice(), message.as_bytes()]);
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            slices.push(IoSlice::new(&part[skip..]));
            skip = 0;
            if slices.len() == MAX_SLICES {
                break;
            }
        }
        slices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        assert_eq!(Header::text(0).as_slice(), [0x81, 0]);
        assert_eq!(Header::text(125).as_slice(), [0x81, 125]);
        assert_eq!(Header::text(126).as_slice(), [0x81, 126, 0, 126]);
        assert_eq!(Header::text(65_535).as_slice(), [0x81, 126, 0xff, 0xff]);
        assert_eq!(
            Header::text(65_536).as_slice(),
            [0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    /// A writer that takes at most `step` bytes per call, like a nearly full socket.
    struct Trickle {
        taken: Vec<u8>,
        step: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = buf.len().min(self.step);
            self.taken.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Tungstenite, the websocket layer clients are tested with, reads back every
    /// message whole and in order, however the writes were split.
    #[tokio::test]
    async fn frames_written_in_pieces_read_back_as_the_messages() {
        use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
        let messages: Vec<Utf8Bytes> = ["a", &"b".repeat(300), &"c".repeat(70_000), ""]
            .into_iter()
            .map(Utf8Bytes::from)
            .collect();
        for step in [1, 7, 1000, usize::MAX] {
            let mut outgoing = Outgoing::new(messages.clone());
            assert_eq!(outgoing.messages(), 4);
            assert_eq!(outgoing.payload_bytes(), 70_301);
            let mut io = Trickle {
                taken: Vec::new(),
                step,
            };
            outgoing.write_to(&mut io).await.unwrap();
            assert!(!outgoing.partly_written());
            let mut client =
                WebSocket::from_raw_socket(io::Cursor::new(io.taken), Role::Client, None);
            for message in &messages {
                let read = client.read().unwrap();
                assert_eq!(read.to_text().unwrap(), message.as_str(), "step {step}");
            }
        }
    }
}
