//! Stopping the service as an operator or a container runtime does. SIGTERM, SIGINT
//! and SIGHUP end it with exit code 0 within 2 s at any moment, start-up included
//! (a database or an exchange that does not answer), as PID 1 of a container too,
//! where a signal without a handler is dropped. SIGHUP is a graceful stop, same as
//! SIGTERM, for `serve` and for `backfill`.

mod common;

use std::time::{Duration, Instant};

use common::backfill as command;
use common::binary::{Running, fake_env};
use common::*;
use tokio_tungstenite::tungstenite::Message;

/// How long after a stop signal during start-up the process may still run.
const EXIT_DEADLINE: Duration = Duration::from_secs(2);
/// When the signal comes, counted from the start (the example).
const SIGNAL_AFTER: Duration = Duration::from_secs(2);

/// A "database" that accepts connections and never says a word: a hung MongoDB.
async fn hung_database() -> (u16, tokio::task::JoinHandle<()>) {
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hung.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    (port, holder)
}

/// A loopback port nothing listens on: a MongoDB that is down.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Checks that the service runs as PID 1 of its pid namespace, as in a container.
fn assert_pid_1(running: &Running) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", running.pid())).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert_eq!(nspid.split_whitespace().last(), Some("1"), "{nspid}");
}

/// Waits for `waiting_on` in the output (the start-up step the service is stuck
/// in), sends `signal` [`SIGNAL_AFTER`] the start, and checks that the service
/// had not started serving, and exits 0 within [`EXIT_DEADLINE`].
async fn stopped_during_startup(
    running: Running,
    started: Instant,
    waiting_on: &str,
    signal: &str,
) {
    running.wait_for_output(waiting_on, 10).await;
    tokio::time::sleep(SIGNAL_AFTER.saturating_sub(started.elapsed())).await;
    assert!(
        !running.output().contains("serving websocket clients"),
        "still starting when the signal comes:\n{}",
        running.output()
    );
    let (code, output, took) = running.stop_with(signal).await;
    assert_eq!(
        code, 0,
        "exit code after SIG{signal} during start-up:\n{output}"
    );
    assert!(
        took < EXIT_DEADLINE,
        "exited {took:?} after SIG{signal} during start-up:\n{output}"
    );
    assert!(output.contains("stopped during startup"), "{output}");
}

#[tokio::test]
async fn sigterm_while_mongodb_is_down_at_start_exits_0_within_2_s_as_pid_1() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let mut env = fake_env(&fake);
    env.push((
        "MONGO_URI",
        format!("mongodb://127.0.0.1:{}/", closed_port()),
    ));
    let started = Instant::now();
    let running = Running::start_as_pid1(tempfile::tempdir().unwrap(), &env);
    assert_pid_1(&running);
    stopped_during_startup(running, started, "using MongoDB store", "TERM").await;
}

/// `signal` while MongoDB accepts connections and never answers.
async fn stops_while_mongodb_hangs_at_start(signal: &str) {
    let (port, holder) = hung_database().await;
    let fake = FakeExchange::start(&SYMBOLS).await;
    let mut env = fake_env(&fake);
    env.push((
        "MONGO_URI",
        format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
    ));
    let started = Instant::now();
    let running = Running::start(tempfile::tempdir().unwrap(), &env);
    stopped_during_startup(running, started, "using MongoDB store", signal).await;
    holder.abort();
}

#[tokio::test]
async fn sigterm_while_mongodb_hangs_at_start_exits_0_within_2_s() {
    stops_while_mongodb_hangs_at_start("TERM").await;
}

#[tokio::test]
async fn sigterm_while_the_exchange_hangs_at_start_exits_0_within_2_s_as_pid_1() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.hang_exchange_info(true);
    let started = Instant::now();
    let running = Running::start_as_pid1(tempfile::tempdir().unwrap(), &fake_env(&fake));
    assert_pid_1(&running);
    running.wait_for_output("starting candlecast", 10).await;
    while fake.exchange_info_requests() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stopped_during_startup(running, started, "starting candlecast", "TERM").await;
}

/// Past the database probe the service waits for its first backfill, which reads
/// the store, while background tasks ping it: none of it may hold the stop.
#[tokio::test]
async fn sigterm_after_the_database_probe_gave_up_exits_0_within_2_s() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let mut env = fake_env(&fake);
    env.push((
        "MONGO_URI",
        format!("mongodb://127.0.0.1:{}/", closed_port()),
    ));
    let running = Running::start(tempfile::tempdir().unwrap(), &env);
    running
        .wait_for_output("MongoDB is not reachable", 10)
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (code, output, took) = running.stop_with("TERM").await;
    assert_eq!(code, 0, "{output}");
    assert!(
        took < EXIT_DEADLINE,
        "exited {took:?} after SIGTERM:\n{output}"
    );
}

/// A follower (`INGEST=false`) polls the database for ingesters and follows its
/// change stream: with the database hung, neither may hold the stop.
#[tokio::test]
async fn sigterm_to_a_follower_whose_database_hangs_exits_0_within_2_s() {
    let (port, holder) = hung_database().await;
    let fake = FakeExchange::start(&SYMBOLS).await;
    let mut env = fake_env(&fake);
    env.push((
        "MONGO_URI",
        format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
    ));
    env.push(("INGEST", "false".into()));
    let mut running = Running::start(tempfile::tempdir().unwrap(), &env);
    running.wait_for_address().await;
    // Past the first readiness polls of the database.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (code, output, took) = running.stop_with("TERM").await;
    assert_eq!(code, 0, "{output}");
    assert!(
        took < EXIT_DEADLINE,
        "exited {took:?} after SIGTERM:\n{output}"
    );
    holder.abort();
}

#[tokio::test]
async fn sigint_while_mongodb_hangs_at_start_exits_0_within_2_s() {
    stops_while_mongodb_hangs_at_start("INT").await;
}

#[tokio::test]
async fn sighup_during_startup_stops_like_sigterm() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.hang_exchange_info(true);
    let started = Instant::now();
    let running = Running::start(tempfile::tempdir().unwrap(), &fake_env(&fake));
    stopped_during_startup(running, started, "starting candlecast", "HUP").await;
}

#[tokio::test]
async fn sighup_stops_a_serving_process_gracefully_clients_get_1001() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let mut running = Running::start(tempfile::tempdir().unwrap(), &fake_env(&fake));
    let address = running.wait_for_address().await;
    let mut client = Client::connect(&format!("ws://{address}/")).await;
    client.next_n(5).await;

    let stopping = tokio::spawn(running.stop_with("HUP"));
    match client.next_raw().await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a 1001 close frame after SIGHUP, got {other:?}"),
    }
    let (code, output, took) = stopping.await.unwrap();
    assert_eq!(code, 0, "exit code after SIGHUP:\n{output}");
    assert!(
        took < Duration::from_secs(10),
        "exited {took:?} after SIGHUP"
    );
    assert!(
        output.contains("shutdown requested signal=\"SIGHUP\""),
        "{output}"
    );
    assert!(
        output.lines().any(|line| line.ends_with(" stopped")),
        "the shutdown's last line:\n{output}"
    );
}

#[tokio::test]
async fn sighup_stops_a_backfill_after_the_batch_in_flight_with_its_summary() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_sized(&["BTCUSDT"], 500).await;
    // 10 rows a page: 40 paced requests, about 3.5 s, time enough for the signal.
    fake.set_page_cap(10);
    let env = command::env_for(&fake, &backend, &["BTCUSDT"]);
    let range = fake.history("BTCUSDT")[50..450].to_vec();
    let args = command::range(range[0].open_time, range[399].open_time + MINUTE);

    let running = command::start(&env, &args);
    eventually_async(20, "the backfill fetched some pages", || async {
        command::served(&fake, "BTCUSDT").len() >= 30
    })
    .await;
    let stopped = running.stop_with("HUP").await;
    assert_eq!(stopped.code, 1, "{}", stopped.output());
    assert!(
        stopped.stderr.contains("interrupted before completion"),
        "{}",
        stopped.output()
    );
    assert!(
        stopped.stdout.contains("BTCUSDT: fetched"),
        "the summary is printed:\n{}",
        stopped.output()
    );
    let stored = backend.stored("BTCUSDT").await.len();
    assert!(stored < 400, "stopped before the end: {stored}");
    assert_eq!(
        stored,
        command::served(&fake, "BTCUSDT").len(),
        "every page fetched before the signal is stored"
    );
}

#[tokio::test]
async fn sigterm_stops_a_backfill_whose_exchange_hangs_within_2_s() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_sized(&["BTCUSDT"], 100).await;
    fake.hang_exchange_info(true);
    let env = command::env_for(&fake, &backend, &["BTCUSDT"]);
    let history = fake.history("BTCUSDT");
    let args = command::range(history[10].open_time, history[90].open_time);

    let running = command::start(&env, &args);
    eventually_async(10, "the backfill asked for exchangeInfo", || async {
        fake.exchange_info_requests() > 0
    })
    .await;
    let sent = Instant::now();
    let stopped = running.stop_with("TERM").await;
    assert!(
        sent.elapsed() < EXIT_DEADLINE,
        "exited {:?} after SIGTERM:\n{}",
        sent.elapsed(),
        stopped.output()
    );
    assert_eq!(stopped.code, 1, "{}", stopped.output());
    assert!(
        stopped
            .stderr
            .contains("interrupted before anything was fetched"),
        "{}",
        stopped.output()
    );
}
