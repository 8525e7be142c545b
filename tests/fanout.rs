//! Fan-out under stress: clients that never read, send too much, exceed the limit or
//! outlive the server; none of them costs the others anything.

mod common;

use std::time::{Duration, Instant};

use common::binary::{Running, fake_env};
use common::mongo_server::MongoServer;
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A websocket client with a tiny receive buffer that completes the handshake and
/// then never reads: its socket fills up and the server's sends to it stall.
async fn stuck_client(app: &TestApp) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let (client, _) = tokio_tungstenite::client_async(app.ws_url(), stream)
        .await
        .unwrap();
    client
}

#[tokio::test]
async fn new_clients_get_their_snapshot_while_the_database_is_down() {
    let mut database = MongoServer::start().await;
    let backend = Backend::Mongo {
        uri: database.uri(),
        database: unique_database("candlecast_snapshot"),
    };
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.freeze();
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let before = app.client().await.next_n(5).await;

    database.stop().await;
    let during = app.client().await.next_n(5).await;
    assert_eq!(
        during, before,
        "served from memory, not from the stopped database"
    );
    assert!(
        during
            .iter()
            .all(|m| m["values"].as_array().unwrap().len() == 10)
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_never_reads_delays_no_one_and_is_closed_after_the_send_timeout() {
    let backend = Backend::sqlite();
    // 1000-candle windows: about 25 KB per coin message.
    let fake = FakeExchange::start_sized(&SYMBOLS, 1100).await;
    fake.freeze();
    let settings = [("HISTORY_LEN", "1000"), ("CLIENT_SEND_TIMEOUT_SECS", "5")];
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    let mut healthy = app.client().await;
    healthy.next_n(5).await;
    let stuck = stuck_client(&app).await;
    fake.wait_for_connections(1).await;

    // About 6 MB per client: more than the kernel buffers between the server and a
    // client that does not read can hold.
    let rounds = 50;
    for _ in 0..rounds {
        let closes: Vec<_> = SYMBOLS
            .iter()
            .map(|symbol| fake.close_next(symbol))
            .collect();
        for close in &closes {
            let message = healthy.next_json().await;
            assert_eq!(
                (message["coin"].as_str(), message["values"][0].as_f64()),
                (Some(close.symbol.as_str()), Some(close.close))
            );
        }
    }
    // Every round reached the healthy client while the stuck one still held its
    // connection: its stalled sends delayed no one.
    assert_eq!(app.metrics.slow_clients_closed.get(), 0);
    let fully_served = 2 * 5 * (rounds + 1);
    let sent = app.metrics.messages_sent.get();
    assert!(
        sent < fully_served,
        "the stuck client must have stalled: {sent} of {fully_served} messages sent"
    );

    eventually(15, "the stuck client is closed", || {
        app.metrics.slow_clients_closed.get() == 1
    })
    .await;
    eventually(5, "its slot is given back", || {
        app.metrics.clients_connected.get() == 1
    })
    .await;
    let candle = fake.close_next("ETHUSDT");
    assert_eq!(
        healthy.next_json().await["values"][0].as_f64(),
        Some(candle.close)
    );
    drop(stuck);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_oversized_message_closes_that_client_with_1009_and_no_other() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.freeze();
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let mut bystander = app.client().await;
    bystander.next_n(5).await;

    let (mut offender, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .unwrap();
    offender
        .send(Message::text("x".repeat(64 * 1024)))
        .await
        .unwrap();
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(10), offender.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1009));
    assert_eq!(app.metrics.oversized_messages.get(), 1);

    fake.wait_for_connections(1).await;
    let candle = fake.close_next("SOLUSDT");
    assert_eq!(
        bystander.next_json().await["values"][0].as_f64(),
        Some(candle.close)
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn past_max_connections_upgrades_get_503_and_existing_clients_carry_on() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.freeze();
    let app = TestApp::spawn(config_for(&fake, &backend, &[("MAX_CONNECTIONS", "3")])).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = app.client().await;
        client.next_n(5).await;
        clients.push(client);
    }

    match tokio_tungstenite::connect_async(app.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
            let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("connection limit"), "{body}");
        }
        other => panic!(
            "expected HTTP 503, got {other:?}",
            other = other.map(|_| "a connection")
        ),
    }
    assert_eq!(app.metrics.connections_rejected.get(), 1);

    fake.wait_for_connections(1).await;
    let candle = fake.close_next("BNBUSDT");
    for client in &mut clients {
        assert_eq!(
            client.next_json().await["values"][0].as_f64(),
            Some(candle.close)
        );
    }
    // A slot freed by a leaving client can be taken again.
    drop(clients.pop());
    eventually(5, "the slot is given back", || {
        app.metrics.clients_connected.get() == 2
    })
    .await;
    app.client().await.next_n(5).await;
    app.stop().await.unwrap();
}

#[tokio::test]
async fn clients_are_pinged_and_one_that_never_answers_is_closed() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start(&SYMBOLS).await;
    fake.freeze();
    let app = TestApp::spawn(config_for(&fake, &backend, &[("CLIENT_PING_SECS", "1")])).await;
    let (mut live, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .unwrap();
    // Never polled, so it never answers a ping.
    let (mut silent, _) = tokio_tungstenite::connect_async(app.ws_url())
        .await
        .unwrap();

    // The live client reads (answering pings as it goes) for 3.5 s: two missed
    // intervals would have closed it by then.
    let mut pings = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(3500);
    while let Ok(Some(message)) = tokio::time::timeout_at(until, live.next()).await {
        match message.unwrap() {
            Message::Ping(_) => pings += 1,
            Message::Close(frame) => panic!("the live client was closed: {frame:?}"),
            _ => {}
        }
    }
    assert!(
        pings >= 2,
        "pinged {pings} times in 3.5 s at a 1 s interval"
    );

    let mut close_code = None;
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(5), silent.next()).await
    {
        if let Message::Close(frame) = message {
            close_code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(close_code, Some(1008), "closed for not answering pings");
    assert_eq!(app.metrics.unresponsive_clients_closed.get(), 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_0_with_every_candle_stored() {
    let backend = Backend::mongo();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    for symbol in SYMBOLS {
        seed(&backend, &fake.history(symbol)).await;
    }
    let mut env = fake_env(&fake);
    env.extend(backend.env());
    let mut running = Running::start(tempfile::tempdir().unwrap(), &env);
    let address = running.wait_for_address().await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(&format!("ws://{address}/")).await;
        client.next_n(5).await;
        clients.push(client);
    }
    fake.wait_for_connections(1).await;
    let closes: Vec<_> = SYMBOLS
        .iter()
        .map(|symbol| fake.close_next(symbol))
        .collect();
    for client in &mut clients {
        let mut coins: Vec<String> = Vec::new();
        while coins.len() < closes.len() {
            coins.push(
                client.next_json().await["coin"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }

    let asked = Instant::now();
    let terminating = tokio::spawn(running.terminate());
    for client in &mut clients {
        match client.next_raw().await {
            Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("expected a 1001 close frame, got {other:?}"),
        }
    }
    let (code, output, _) = terminating.await.unwrap();
    assert_eq!(code, 0, "{output}");
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "exited in {:?}",
        asked.elapsed()
    );
    for symbol in SYMBOLS {
        let history = fake.history(symbol);
        assert_same_candles(&backend.stored(symbol).await, &history, symbol);
    }
}

/// A client that stops reading, then reads again, gets each coin's states in order,
/// the newest last, never one it already had, and skips the states it missed rather
/// than receiving a backlog; when every client is stalled, the exchange reader still
/// answers pings and takes every frame.
#[tokio::test]
async fn a_client_that_pauses_gets_only_newer_states_and_the_exchange_reader_never_waits() {
    let backend = Backend::sqlite();
    // 1000-candle windows: about 25 KB per coin message, so a few fill a socket.
    let fake = FakeExchange::start_sized(&SYMBOLS, 1100).await;
    fake.freeze();
    let settings = [
        ("HISTORY_LEN", "1000"),
        ("CLIENT_SEND_TIMEOUT_SECS", "600"),
        ("CLIENT_PING_SECS", "600"),
    ];
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    let started = Instant::now();
    let mut paused = stuck_client(&app).await;
    let others: Vec<_> = futures_util::future::join_all((0..3).map(|_| stuck_client(&app))).await;
    fake.wait_for_connections(1).await;

    // Every client is stalled while 40 rounds close; the exchange's pings are
    // answered and every candle still reaches the store.
    let pongs = fake.pongs();
    let rounds = 40;
    let mut closed = Vec::new();
    for round in 0..rounds {
        for symbol in SYMBOLS {
            closed.push(fake.close_next(symbol));
        }
        if round % 10 == 0 {
            fake.ping_all();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(
        5,
        "the exchange's pings are answered while clients are stalled",
        || fake.pongs() >= pongs + 4,
    )
    .await;
    eventually_async(10, "every candle closed meanwhile is stored", || async {
        let mut stored = Vec::new();
        for symbol in SYMBOLS {
            stored.extend(
                backend
                    .stored(symbol)
                    .await
                    .into_iter()
                    .map(|c| (c.symbol, c.open_time)),
            );
        }
        closed
            .iter()
            .all(|c| stored.contains(&(c.symbol.clone(), c.open_time)))
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(30));

    // Reading again: per coin, strictly newer windows, ending with the newest.
    let newest: std::collections::HashMap<String, i64> = SYMBOLS
        .iter()
        .map(|s| {
            (
                s.to_string(),
                fake.history(s).last().unwrap().close_time + 1,
            )
        })
        .collect();
    let mut last_seen: std::collections::HashMap<String, String> = Default::default();
    let mut messages = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let caught_up = |seen: &std::collections::HashMap<String, String>| {
        SYMBOLS.iter().all(|s| {
            let closed_at = chrono::DateTime::from_timestamp_millis(newest[*s])
                .unwrap()
                .format("%H:%M")
                .to_string();
            seen.get(*s) == Some(&closed_at)
        })
    };
    while !caught_up(&last_seen) {
        assert!(
            Instant::now() < deadline,
            "the paused client never caught up: {last_seen:?}"
        );
        let message = match tokio::time::timeout(Duration::from_secs(10), paused.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                serde_json::from_str::<serde_json::Value>(&text).unwrap()
            }
            Ok(Some(Ok(_))) => continue,
            other => panic!("the paused client lost its connection: {other:?}"),
        };
        messages += 1;
        let coin = message["coin"].as_str().unwrap().to_owned();
        let time = message["time"][0].as_str().unwrap().to_owned();
        if let Some(previous) = last_seen.get(&coin) {
            assert!(
                time > *previous || (previous.as_str() > "23" && time.as_str() < "01"),
                "{coin}: {time} after {previous}: an older or repeated state"
            );
        }
        last_seen.insert(coin, time);
    }
    assert!(
        messages < 5 * (rounds + 1),
        "{messages} messages: a backlog, not the newest states"
    );
    assert_eq!(app.metrics.slow_clients_closed.get(), 0);
    drop(others);
    app.stop().await.unwrap();
}

/// Messages are written straight to the socket, beside the websocket layer's own
/// frames (the pongs answering a client's pings): the two never cut into each
/// other, even while the socket is full and writes stop part way through a frame.
#[tokio::test]
async fn a_slow_client_that_pings_gets_every_pong_and_every_message_whole() {
    let backend = Backend::sqlite();
    // 1000-candle windows: about 25 KB per coin message, more than the socket holds.
    let fake = FakeExchange::start_sized(&SYMBOLS, 1100).await;
    fake.freeze();
    let settings = [("HISTORY_LEN", "1000"), ("CLIENT_SEND_TIMEOUT_SECS", "60")];
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    let (mut sink, mut stream) = stuck_client(&app).await.split();
    fake.wait_for_connections(1).await;

    let pings = 40u8;
    let pinging = tokio::spawn(async move {
        for i in 0..pings {
            sink.send(Message::Ping(vec![i].into())).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sink
    });
    // Not reading while 40 rounds close (about 5 MB): the server's writes stall,
    // some part way through a frame, while the pings keep coming.
    let mut newest = Vec::new();
    for _ in 0..40 {
        newest = SYMBOLS.iter().map(|s| fake.close_next(s)).collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut pongs = Vec::new();
    let mut last_close: std::collections::HashMap<String, f64> = Default::default();
    let caught_up = |last: &std::collections::HashMap<String, f64>| {
        newest.iter().all(|c| last.get(&c.symbol) == Some(&c.close))
    };
    while pongs.len() < usize::from(pings) || !caught_up(&last_close) {
        let frame = tokio::time::timeout(Duration::from_secs(20), stream.next()).await;
        match frame {
            Ok(Some(Ok(Message::Text(text)))) => {
                let message: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|err| panic!("a message cut short or mixed: {err}"));
                let coin = message["coin"].as_str().unwrap().to_owned();
                last_close.insert(coin, message["values"][0].as_f64().unwrap());
            }
            Ok(Some(Ok(Message::Pong(payload)))) => pongs.extend_from_slice(&payload),
            Ok(Some(Ok(Message::Ping(_)))) => {}
            other => panic!(
                "the connection broke: {other:?} after {} pongs",
                pongs.len()
            ),
        }
        // A slow reader: the server's writes keep finding the socket full.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        pongs,
        (0..pings).collect::<Vec<_>>(),
        "every ping answered, in order"
    );
    assert_eq!(app.metrics.slow_clients_closed.get(), 0);
    drop(pinging.await.unwrap());
    app.stop().await.unwrap();
}
