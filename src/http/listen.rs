//! The listening socket (dual stack by default, with a deep accept queue) and the
//! open-file budget that decides how many clients the process can hold.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tracing::{info, warn};

use super::FeedOptions;
use super::server::http_connection_cap;

/// Pending connections the kernel queues for us; bursts of connects beyond the
/// default 128 would otherwise be dropped and retried by clients after a second.
pub const LISTEN_BACKLOG: u32 = 4096;

/// File descriptors kept for everything but client connections: standard streams,
/// the runtime, the store's files or pool, the exchange connections, REST, logs.
pub const RESERVED_DESCRIPTORS: u64 = 64;

/// Binds `addr` with a deep accept queue. `::` listens on IPv6 and IPv4 alike (dual
/// stack); on a host without IPv6 it falls back to `0.0.0.0`, saying so once.
///
/// # Errors
/// The socket's error when the address cannot be bound.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    match bind_exactly(addr) {
        Err(err) if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && no_ipv6(&err) => {
            let fallback = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
            info!(error = %err, %fallback, "this host has no IPv6; listening on IPv4 only");
            bind_exactly(fallback)
        }
        bound => bound,
    }
}

fn bind_exactly(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        // Accept IPv4 on the same socket whatever net.ipv6.bindv6only says.
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG as i32)?;
    TcpListener::from_std(socket.into())
}

/// Whether binding failed because the host has no IPv6 at all.
fn no_ipv6(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL)
    )
}

/// Raises the soft open-file limit to the hard one and logs the result once; then,
/// if `MAX_CONNECTIONS` clients plus the HTTP connections and
/// [`RESERVED_DESCRIPTORS`] would not fit, lowers `feed.max_connections` to what
/// fits and says so in one line. Without this, a process at its limit cannot accept
/// at all: new clients and `/health` hang instead of getting their 503 or 200.
pub fn fit_open_files(feed: &mut FeedOptions) {
    let limit = match (
        rlimit::getrlimit(rlimit::Resource::NOFILE),
        rlimit::increase_nofile_limit(u64::MAX),
    ) {
        (Ok((was, hard)), Ok(limit)) => {
            if limit > was {
                info!(
                    was,
                    limit, hard, "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
                );
            } else {
                info!(limit, hard, "open-file limit (RLIMIT_NOFILE)");
            }
            limit
        }
        (Err(err), _) | (_, Err(err)) => {
            warn!(error = %err, "cannot read or raise the open-file limit; MAX_CONNECTIONS is not checked against it");
            return;
        }
    };
    let fits = clients_that_fit(limit, feed.max_connections);
    if fits < feed.max_connections {
        warn!(
            configured = feed.max_connections,
            max_connections = fits,
            open_file_limit = limit,
            "MAX_CONNECTIONS lowered to {fits} to fit the open-file limit of {limit} \
             (with {} HTTP connections and {RESERVED_DESCRIPTORS} descriptors kept aside); raise `ulimit -n` to serve more",
            http_connection_cap(fits),
        );
        feed.max_connections = fits;
    }
}

/// The most websocket clients (up to `wanted`, at least 1) that fit in `open_files`
/// descriptors beside the HTTP connections and [`RESERVED_DESCRIPTORS`].
pub fn clients_that_fit(open_files: u64, wanted: usize) -> usize {
    let available =
        usize::try_from(open_files.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX);
    let needs = |clients: usize| clients.saturating_add(http_connection_cap(clients));
    if needs(wanted) <= available {
        return wanted;
    }
    // `needs` grows with `clients`: find the largest that fits.
    let (mut low, mut high) = (0, wanted);
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if needs(mid) <= available {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    low.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_fit_beside_http_connections_and_the_reserve() {
        assert_eq!(clients_that_fit(1 << 20, 10_000), 10_000);
        let fits = clients_that_fit(256, 10_000);
        assert!(fits + http_connection_cap(fits) + 64 <= 256, "{fits}");
        assert!(
            fits + 1 + http_connection_cap(fits + 1) + 64 > 256,
            "{fits}"
        );
        assert_eq!(clients_that_fit(10, 10_000), 1);
    }
}
