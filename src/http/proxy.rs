//! The PROXY protocol a load balancer may put before a connection's first request,
//! carrying the client's address (HAProxy's specification, versions 1 and 2:
//! <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>; parsed by the
//! `ppp` crate). Accepted only where `PROXY_PROTOCOL` says so: a header is a claim
//! anyone who reaches the port directly could make.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ppp::v2::Command;
use ppp::{PartialResult, v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tracing::warn;

use super::quiet::Noisy;
use crate::metrics::Metrics;
use crate::metrics::ReasonLabel;

/// The 12 bytes that open a version 2 (binary) header (spec §2.2).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// What opens a version 1 (text) header (spec §2.1).
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// Bytes looked at first: any version 1 header (at most 107 bytes, spec §2.1) and a
/// version 2 one with TCP over IPv6 and a few TLVs; a longer v2 header (its length
/// is in bytes 15–16) is peeked at whole once that length is known.
const FIRST_PEEK: usize = 256;
/// The wait before looking again at a header that arrived in pieces (the spec asks
/// senders to send it at once, so this is rare).
const PARTIAL_RETRY: Duration = Duration::from_millis(5);

/// `PROXY_PROTOCOL`: which PROXY protocol headers connections must start with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// None: connections come straight from clients (the default). One that starts
    /// with a header is refused, and the first is logged saying what to set.
    #[default]
    Off,
    /// Every connection starts with a version 1 (text) header.
    V1,
    /// Every connection starts with a version 2 (binary) header.
    V2,
    /// Every connection starts with a header of either version.
    Any,
}

impl ProxyProtocol {
    /// Reads `off`, `v1`, `v2` or `any` (also `false`/`no`/`0` for off and
    /// `true`/`on`/`yes`/`1` for any), in any letter case.
    ///
    /// # Errors
    /// What was expected, for the configuration error.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.to_ascii_lowercase().as_str() {
            "off" | "false" | "no" | "0" => Ok(Self::Off),
            "v1" | "1.0" => Ok(Self::V1),
            "v2" | "2.0" => Ok(Self::V2),
            "any" | "on" | "true" | "yes" | "1" => Ok(Self::Any),
            _ => Err(format!(
                "expected off, v1, v2 or any (v1 or v2 headers), got {raw:?}"
            )),
        }
    }

    fn accepts(self, version: Version) -> bool {
        matches!(
            (self, version),
            (Self::Any, _) | (Self::V1, Version::V1) | (Self::V2, Version::V2)
        )
    }
}

impl fmt::Display for ProxyProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::Any => "any",
        })
    }
}

/// A header's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    V1,
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1 (text)",
            Self::V2 => "v2 (binary)",
        })
    }
}

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Opening {
    /// A complete header of `version`, `len` bytes long, naming `client` (`None`:
    /// the header says to use the connection's own address, e.g. `PROXY UNKNOWN`
    /// or a v2 `LOCAL` health check of the proxy itself).
    Header {
        version: Version,
        len: usize,
        client: Option<SocketAddr>,
    },
    /// The start of a header whose rest has not arrived; `need`: bytes to look at.
    Partial { need: usize },
    /// A header that cannot be read.
    Invalid { version: Version, error: String },
    /// Anything else: no header.
    NoHeader,
}

/// Reads the start of a connection, `bytes`.
pub(super) fn read_opening(bytes: &[u8]) -> Opening {
    let starts = |prefix: &[u8]| {
        let n = bytes.len().min(prefix.len());
        bytes[..n] == prefix[..n]
    };
    if bytes.is_empty() {
        Opening::Partial { need: FIRST_PEEK }
    } else if starts(V2_SIGNATURE) {
        // The length of what follows the fixed 16 bytes is in bytes 15-16 (spec §2.2).
        let need = match bytes.get(14..16) {
            Some(len) => 16 + usize::from(u16::from_be_bytes([len[0], len[1]])),
            None => FIRST_PEEK,
        };
        match v2::Header::try_from(bytes) {
            Ok(header) => Opening::Header {
                version: Version::V2,
                len: header.len(),
                client: match (header.command, header.addresses) {
                    (Command::Proxy, v2::Addresses::IPv4(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    (Command::Proxy, v2::Addresses::IPv6(a)) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    _ => None,
                },
            },
            Err(error) if error.is_incomplete() => Opening::Partial { need },
            Err(error) => Opening::Invalid {
                version: Version::V2,
                error: error.to_string(),
            },
        }
    } else if starts(V1_PREFIX) {
        match v1::Header::try_from(bytes) {
            Ok(header) => Opening::Header {
                version: Version::V1,
                len: header.header.len(),
                client: match header.addresses {
                    v1::Addresses::Tcp4(a) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    v1::Addresses::Tcp6(a) => {
                        Some(SocketAddr::from((a.source_address, a.source_port)))
                    }
                    v1::Addresses::Unknown => None,
                },
            },
            Err(error) if error.is_incomplete() => Opening::Partial { need: FIRST_PEEK },
            Err(error) => Opening::Invalid {
                version: Version::V1,
                error: error.to_string(),
            },
        }
    } else {
        Opening::NoHeader
    }
}

/// Whether `opening` is too short to tell but could begin a header of either version.
fn may_become_header(opening: &[u8]) -> bool {
    let begins =
        |signature: &[u8]| opening.len() < signature.len() && signature.starts_with(opening);
    begins(V1_PREFIX) || begins(V2_SIGNATURE)
}

/// Whether a connection opening with a header under `PROXY_PROTOCOL=off` was
/// logged yet: once per process is enough to point at the setting.
static HEADER_WHILE_OFF_LOGGED: AtomicBool = AtomicBool::new(false);

/// Looks at the first bytes of `stream` (from `peer`) as `mode` says, consuming a
/// valid header. Returns the client's address (the header's, else `peer`), or
/// `None` when the connection is to be closed: refused (logged and counted in
/// `proxy_headers_refused`) or gone. The caller bounds the wait.
pub(super) async fn client_address(
    stream: &mut TcpStream,
    peer: SocketAddr,
    mode: ProxyProtocol,
    metrics: &Metrics,
) -> Option<SocketAddr> {
    let refused = |reason: &'static str| {
        metrics
            .serving
            .proxy_headers_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    };
    let mut buf = vec![0u8; FIRST_PEEK];
    // Peeked, not read: without a header the bytes are hyper's to read.
    let mut seen = stream.peek(&mut buf).await.ok().filter(|&n| n > 0)?;
    if mode == ProxyProtocol::Off {
        // A header's first bytes may come alone: wait for enough to tell.
        while may_become_header(&buf[..seen]) {
            tokio::time::sleep(PARTIAL_RETRY).await;
            seen = stream.peek(&mut buf).await.ok().filter(|&n| n > 0)?;
        }
        let opening = &buf[..seen];
        if !(opening.starts_with(V1_PREFIX) || opening.starts_with(V2_SIGNATURE)) {
            return Some(peer);
        }
        refused("unexpected");
        if !HEADER_WHILE_OFF_LOGGED.swap(true, Ordering::Relaxed) {
            warn!(
                %peer,
                "refused a connection that starts with a PROXY protocol header: \
                 PROXY_PROTOCOL is off, so none is accepted; if a load balancer in front \
                 sends it, set PROXY_PROTOCOL=v1, v2 or any (logged once; the metric \
                 proxy_headers_refused counts every one)"
            );
        }
        return None;
    }
    loop {
        let (reason, detail) = match read_opening(&buf[..seen]) {
            Opening::Header {
                version,
                len,
                client,
            } if mode.accepts(version) => {
                // Consume exactly the header: what follows is the client's request.
                let mut header = vec![0u8; len];
                stream.read_exact(&mut header).await.ok()?;
                return Some(client.unwrap_or(peer));
            }
            Opening::Partial { need } if seen < need => {
                if buf.len() < need {
                    buf.resize(need, 0);
                } else {
                    tokio::time::sleep(PARTIAL_RETRY).await;
                }
                seen = stream.peek(&mut buf).await.ok().filter(|&n| n > 0)?;
                continue;
            }
            Opening::Header { version, .. } => (
                "version",
                format!("{peer} sent a {version} header, but PROXY_PROTOCOL={mode}"),
            ),
            Opening::Invalid { version, error } => (
                "invalid",
                format!("{peer} sent a {version} header that does not parse: {error}"),
            ),
            Opening::Partial { .. } => (
                "invalid",
                format!("{peer} sent a header that does not parse"),
            ),
            Opening::NoHeader => (
                "missing",
                format!(
                    "{peer} sent no PROXY protocol header, but PROXY_PROTOCOL={mode}: is the \
                     port reachable other than through the load balancer?"
                ),
            ),
        };
        refused(reason);
        Noisy::ProxyHeaderRefused.note(&detail);
        return None;
    }
}

#[cfg(test)]
mod tests;
