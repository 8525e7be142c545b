//! Unit tests of reading a connection's PROXY protocol header.

use std::net::SocketAddr;

use super::*;

fn addr(text: &str) -> Option<SocketAddr> {
    Some(text.parse().unwrap())
}

#[test]
fn a_v1_header_gives_the_client_address_and_its_length() {
    let header = b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n";
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(b"GET /health HTTP/1.1\r\n\r\n");
    assert_eq!(
        read_opening(&bytes),
        Opening::Header {
            version: Version::V1,
            len: header.len(),
            client: addr("1.2.3.4:1111"),
        }
    );
    let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 40000 443\r\nGET";
    assert!(matches!(
        read_opening(v6),
        Opening::Header { client, .. } if client == addr("[2001:db8::1]:40000")
    ));
}

#[test]
fn unknown_and_local_headers_keep_the_connection_address() {
    assert!(matches!(
        read_opening(b"PROXY UNKNOWN\r\nGET"),
        Opening::Header {
            client: None,
            len: 15,
            ..
        }
    ));
    // v2, LOCAL command (a health check of the proxy itself), no addresses.
    let mut local = V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    assert!(matches!(
        read_opening(&local),
        Opening::Header {
            version: Version::V2,
            client: None,
            len: 16
        }
    ));
}

#[test]
fn a_v2_header_gives_the_client_address() {
    let mut header = V2_SIGNATURE.to_vec();
    // PROXY command, TCP over IPv4, 12 address bytes.
    header.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    header.extend_from_slice(&[9, 8, 7, 6, 10, 0, 0, 1]);
    header.extend_from_slice(&4321u16.to_be_bytes());
    header.extend_from_slice(&80u16.to_be_bytes());
    let len = header.len();
    header.extend_from_slice(b"GET / HTTP/1.1\r\n");
    assert_eq!(
        read_opening(&header),
        Opening::Header {
            version: Version::V2,
            len,
            client: addr("9.8.7.6:4321"),
        }
    );
    assert!(matches!(
        read_opening(&header[..20]),
        Opening::Partial { need: 28 }
    ));
}

#[test]
fn partial_invalid_and_absent_headers_are_told_apart() {
    assert!(matches!(
        read_opening(b"PROXY TCP4 1.2.3.4 5.6"),
        Opening::Partial { .. }
    ));
    assert!(matches!(read_opening(b"PRO"), Opening::Partial { .. }));
    assert!(matches!(
        read_opening(b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n"),
        Opening::Invalid {
            version: Version::V1,
            ..
        }
    ));
    assert!(matches!(
        read_opening(&[b'P'; 200]),
        Opening::NoHeader | Opening::Invalid { .. }
    ));
    assert_eq!(read_opening(b"GET / HTTP/1.1\r\n"), Opening::NoHeader);
}

#[test]
fn the_setting_reads_its_names_and_refuses_others() {
    for (raw, mode) in [
        ("off", ProxyProtocol::Off),
        ("FALSE", ProxyProtocol::Off),
        ("v1", ProxyProtocol::V1),
        ("V2", ProxyProtocol::V2),
        ("any", ProxyProtocol::Any),
        ("true", ProxyProtocol::Any),
    ] {
        assert_eq!(ProxyProtocol::parse(raw), Ok(mode), "{raw}");
    }
    for raw in ["v3", "haproxy", "enabled"] {
        assert!(ProxyProtocol::parse(raw).is_err(), "{raw}");
    }
    assert!(ProxyProtocol::V1.accepts(Version::V1));
    assert!(!ProxyProtocol::V1.accepts(Version::V2));
    assert!(ProxyProtocol::Any.accepts(Version::V2));
}

#[test]
fn the_first_bytes_of_a_header_are_waited_for_when_off() {
    assert!(may_become_header(b"PRO"));
    assert!(may_become_header(b"\r\n\r\n\0"));
    assert!(!may_become_header(b"PROXY "), "long enough to tell");
    assert!(!may_become_header(b"POST /"));
    assert!(!may_become_header(b"GET"));
}
