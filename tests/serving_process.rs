//! The serving side of the real binary, as an operator runs it: the default dual-stack
//! address, slow and oversized requests, a low open-file limit, a shutdown with a
//! request half sent, and floods that must not flood the log.

mod common;
#[path = "common/raw_http.rs"]
mod raw_http;

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::binary::{Running, fake_env};
use common::*;
use raw_http::{closed_within, read_response, send};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The binary on the fake exchange and an embedded store, with `extra` variables.
async fn start(fake: &FakeExchange, extra: &[(&'static str, &str)]) -> (Running, String) {
    start_limited(fake, extra, None).await
}

/// [`start`] with `RLIMIT_NOFILE` set to `(soft, hard)` in the child before it runs.
async fn start_limited(
    fake: &FakeExchange,
    extra: &[(&'static str, &str)],
    open_files: Option<(u64, u64)>,
) -> (Running, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut env = fake_env(fake);
    env.push(("DATA_DIR", dir.path().join("data").display().to_string()));
    for (name, value) in extra {
        env.retain(|(n, _)| n != name);
        env.push((name, value.to_string()));
    }
    env.retain(|(_, value)| value != "(unset)");
    let mut running = Running::start_with(dir, &env, |command| {
        if let Some((soft, hard)) = open_files {
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard));
            }
        }
    });
    let address = running.wait_for_address().await;
    (running, address)
}

fn port_of(address: &str) -> u16 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn by_default_it_listens_on_ipv4_and_ipv6_alike() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let (running, address) = start(&fake, &[("BIND_ADDR", "(unset)")]).await;
    assert!(address.starts_with("[::]:"), "{address}");
    let port = port_of(&address);
    for host in ["127.0.0.1", "[::1]"] {
        let response = send(
            format!("{host}:{port}"),
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(response.status, 200, "{host}");
    }
    let (code, _, _) = running.terminate().await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn slow_headers_are_cut_at_10_s_and_oversized_ones_get_431() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let (running, address) = start(&fake, &[]).await;

    let mut slow = TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let opened = Instant::now();

    let huge = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(17 * 1024)
    );
    assert_eq!(send(&address, &huge).await.status, 431);
    let fits = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(15 * 1024)
    );
    assert_eq!(send(&address, &fits).await.status, 200);

    // Dribbling a byte a second does not keep the slow request alive.
    let dribble = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if slow.write_all(b"a").await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(13), dribble).await;
    let mut slow = slow;
    assert!(closed_within(&mut slow, Duration::from_secs(1)).await);
    let held = opened.elapsed();
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(13)).contains(&held),
        "the slow request was held {held:?}"
    );
    let (code, _, _) = running.terminate().await;
    assert_eq!(code, 0);
}

#[tokio::test]
async fn sigterm_exits_within_10_s_with_a_request_half_sent() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let (running, address) = start(&fake, &[]).await;
    let mut half = TcpStream::connect(&address).await.unwrap();
    half.write_all(b"GET /api/v1/candles/BTCUSDT HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await.unwrap().status, 200);
    let mut client = Client::connect(&format!("ws://{address}/")).await;
    client.next_n(5).await;

    let signalled = Instant::now();
    let (code, output, _) = running.terminate().await;
    let took = signalled.elapsed();
    assert_eq!(code, 0, "{output}");
    assert!(
        took < Duration::from_secs(10),
        "exit took {took:?}:\n{output}"
    );
}

#[tokio::test]
async fn the_open_file_limit_is_raised_to_the_hard_one_and_logged() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    let (running, _) = start_limited(&fake, &[], Some((200, hard))).await;
    let (_, output, _) = running.terminate().await;
    let line = output
        .lines()
        .find(|l| l.contains("raised the open-file limit"))
        .unwrap_or_else(|| panic!("no line about the open-file limit:\n{output}"));
    assert!(
        line.contains("was=200") && line.contains(&format!("limit={hard}")),
        "{line}"
    );
    let needed = 10_000
        + candlecast::http::MAX_HTTP_CONNECTIONS as u64
        + candlecast::http::RESERVED_DESCRIPTORS;
    if hard >= needed {
        assert!(!output.contains("MAX_CONNECTIONS lowered"), "{output}");
    }
}

#[tokio::test]
async fn out_of_descriptors_new_clients_get_503_and_health_still_answers() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let (running, address) = start_limited(&fake, &[], Some((256, 256))).await;
    let output = running.output();
    let lowered = output
        .lines()
        .find(|l| l.contains("MAX_CONNECTIONS lowered"))
        .unwrap_or_else(|| panic!("MAX_CONNECTIONS should be lowered to fit 256 files:\n{output}"));
    let max: usize = lowered
        .split("max_connections=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("the line names the new MAX_CONNECTIONS");

    let mut clients = Vec::new();
    let mut refused = 0;
    for _ in 0..240 {
        match tokio_tungstenite::connect_async(format!("ws://{address}/")).await {
            Ok((socket, _)) => clients.push(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 503);
                refused += 1;
            }
            Err(err) => panic!("a client neither connected nor got 503: {err}"),
        }
    }
    assert_eq!(
        clients.len(),
        max,
        "served up to the lowered MAX_CONNECTIONS"
    );
    assert_eq!(refused, 240 - max);
    for _ in 0..3 {
        let started = Instant::now();
        let health = send(
            &address,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(health.status, 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    drop(clients);
    let (code, output, _) = running.terminate().await;
    assert_eq!(code, 0, "{output}");
    assert!(!output.contains("Too many open files"), "{output}");
}

#[tokio::test]
async fn a_flood_of_refused_upgrades_is_summed_up_not_logged_one_by_one() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let (running, address) = start(&fake, &[("MAX_CONNECTIONS", "1")]).await;
    let _held = Client::connect(&format!("ws://{address}/")).await;
    for _ in 0..50 {
        let refused = tokio_tungstenite::connect_async(format!("ws://{address}/")).await;
        assert!(refused.is_err());
    }
    // The summary comes within SUMMARY_EVERY.
    tokio::time::sleep(candlecast::http::SUMMARY_EVERY + Duration::from_secs(1)).await;
    let (_, output, _) = running.terminate().await;
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("refused at MAX_CONNECTIONS"))
        .collect();
    // One line with the detail, then summaries (one, or two if a tick fell mid-flood).
    assert!((2..=3).contains(&lines.len()), "{output}");
    let summed: u64 = lines[1..]
        .iter()
        .map(|l| {
            let count = l.split("count=").nth(1).expect("a count field");
            count
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(summed, 49, "{output}");
}

#[tokio::test]
async fn refused_upgrades_write_no_error_lines_only_the_summary() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let (running, address) = start(&fake, &[("MAX_CONNECTIONS", "5")]).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(Client::connect(&format!("ws://{address}/")).await);
    }
    for _ in 0..50 {
        match tokio_tungstenite::connect_async(format!("ws://{address}/")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 503);
            }
            other => panic!("expected a 503, got {other:?}"),
        }
    }
    let metrics = send(
        &address,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    tokio::time::sleep(candlecast::http::SUMMARY_EVERY + Duration::from_secs(1)).await;
    let (code, output, _) = running.terminate().await;
    assert_eq!(code, 0, "{output}");
    let errors: Vec<&str> = output.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "refusals logged as errors:\n{output}");
    let refusals: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("refused at MAX_CONNECTIONS"))
        .collect();
    assert!(refusals[0].contains("MAX_CONNECTIONS=5"), "{output}");
    let summed: u64 = refusals[1..]
        .iter()
        .map(|l| l.split("count=").nth(1).expect("a count field"))
        .map(|count| {
            count
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(
        summed, 49,
        "one line with the detail, the rest summed:\n{output}"
    );
    assert!(
        metrics
            .body
            .contains("http_refused_total{reason=\"max_connections\"} 50"),
        "{}",
        metrics.body
    );
}
