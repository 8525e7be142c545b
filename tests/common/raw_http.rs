//! HTTP/1.1 spoken by hand over TCP, for requests no well-behaved client would send.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

/// A response as read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header lines, names lower-cased: `name: value`.
    pub headers: Vec<String>,
    pub body: String,
}

impl RawResponse {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n == name).then_some(v.trim())
        })
    }
}

/// Sends `request` as is on a new connection and reads one response.
pub async fn send(addr: impl ToSocketAddrs, request: &str) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut stream).await.expect("a response")
}

/// Reads one response (head, then `content-length` bytes of body; none for 101),
/// or `None` if the connection closes first. Fails the test after 10 s.
pub async fn read_response(stream: &mut TcpStream) -> Option<RawResponse> {
    let mut buffer = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = find(&buffer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buffer[..end]).to_string();
                let mut lines = head.split("\r\n");
                let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
                let headers: Vec<String> = lines
                    .map(|l| match l.split_once(':') {
                        Some((n, v)) => format!("{}:{v}", n.to_ascii_lowercase()),
                        None => l.to_owned(),
                    })
                    .collect();
                let mut response = RawResponse {
                    status,
                    headers,
                    body: String::new(),
                };
                let length: usize = response
                    .header("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                while buffer.len() < end + 4 + length {
                    let n = stream.read(&mut chunk).await.ok()?;
                    if n == 0 {
                        break;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                }
                let body_end = buffer.len().min(end + 4 + length);
                response.body = String::from_utf8_lossy(&buffer[end + 4..body_end]).to_string();
                return Some(response);
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no response within 10 s")
}

/// Waits up to `within` for the server to close `stream`; true if it did. Anything
/// the server sends first is read and ignored.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    let closed = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, closed).await.is_ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
