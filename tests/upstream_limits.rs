//! Hundreds of contracts within Binance's stream limits, against the fake exchange
//! (which enforces them as Binance does: a handshake over 8 KiB refused, at most
//! 1,024 streams a connection, at most 10 incoming messages a second): one
//! connection subscribing in paced batches, more connections only past the cap,
//! renewal without a lost or repeated close, a quiet contract repaired without
//! renewing its connection, symbols followed and let go while running, and a
//! refused or unanswered subscription logged once and retried.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use candlecast::candle::Candle;
use candlecast::exchange::{Exchange, Market, ReconnectCause, Sinks};
use candlecast::health::{StoreHealth, UpstreamHealth};
use candlecast::hub::Hub;
use candlecast::metrics::Metrics;
use candlecast::store::{CandleStore, SqliteStore, StoreWriter, Unacknowledged};
use common::binary::{Running, fake_env};
use common::fake_exchange::stream::{ControlMessage, StreamConnection};
use common::*;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Held by each test that runs a service of hundreds of contracts: on a machine of
/// two cores, several at once starve each other's timers (and the fake's answers),
/// which then look like the exchange's failures.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A silence no test here is about: nothing trades until a test closes candles.
const NO_STALE: (&str, &str) = ("UPSTREAM_STALE_SECS", "600");

/// `S000USDT`, `S001USDT`, …: contracts the fake lists and trades.
fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("S{i:03}USDT")).collect()
}

/// A fake trading `symbols` whose history stops 30 minutes ago (so the closes a test
/// makes are in the past and REST serves them), and a store holding that history,
/// as a service that ran before would have left it.
async fn crowd(symbols: &[String]) -> (FakeExchange, Backend) {
    let refs: Vec<&str> = symbols.iter().map(String::as_str).collect();
    // More than HISTORY_MAX minutes: the windows are full from the store.
    let fake = FakeExchange::start_lagging_sized(&refs, 30, 120).await;
    let backend = Backend::sqlite();
    let Backend::Sqlite { dir } = &backend else {
        unreachable!()
    };
    let store = SqliteStore::open(dir.path()).unwrap();
    let history: Vec<Candle> = symbols.iter().flat_map(|s| fake.history(s)).collect();
    store.upsert(&history).await.unwrap();
    (fake, backend)
}

/// Waits until the fake's open connections carry `streams` streams in all; returns
/// what it saw of each connection.
async fn wait_until_subscribed(fake: &FakeExchange, streams: usize) -> Vec<StreamConnection> {
    eventually(30, &format!("{streams} streams are subscribed"), || {
        fake.subscriptions().iter().map(Vec::len).sum::<usize>() == streams
    })
    .await;
    fake.stream_connections()
}

/// Reads the feed until the newest value of every coin in `closes` is its close;
/// the coins still waiting if a message takes over 9 s.
async fn wait_for_closes(client: &mut Client, closes: &[Candle]) -> Result<(), Vec<String>> {
    let mut waiting: HashMap<&str, f64> = closes
        .iter()
        .map(|c| (c.symbol.as_str(), c.close))
        .collect();
    while !waiting.is_empty() {
        let Some(message) = client.next_json_within(Duration::from_secs(9)).await else {
            let mut left: Vec<String> = waiting.keys().map(|s| s.to_string()).collect();
            left.sort();
            return Err(left);
        };
        let coin = message["coin"].as_str().unwrap();
        if waiting.get(coin).copied() == message["values"][0].as_f64() {
            waiting.remove(coin);
        }
    }
    Ok(())
}

fn subscribe_requests(connection: &StreamConnection) -> Vec<&ControlMessage> {
    connection
        .control
        .iter()
        .filter(|c| c.method == "SUBSCRIBE")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_and_six_contracts_stream_over_one_connection_without_a_long_url() {
    let _heavy = HEAVY.lock().await;
    let symbols = names(506);
    let (fake, backend) = crowd(&symbols).await;
    let app = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("SYMBOLS", &symbols.join(",")), NO_STALE],
    ))
    .await;

    let connections = wait_until_subscribed(&fake, 506).await;
    // The start-up repair, paced at 1,200 weight a minute, is done: REST fetches
    // after this are the test's.
    common::mirror::settled(&fake).await;
    assert_eq!(connections.len(), 1, "one connection carries them all");
    assert!(fake.refused_handshakes().is_empty());
    let named: Vec<&str> = connections[0].query.split('/').collect();
    assert_eq!(named.len(), 10, "a short URL: {named:?}");
    assert_eq!(named[0], "s000usdt@kline_1m");
    // The other 496 by message, 100 to a message, at most five a second, each
    // answered; the exchange never saw more than its limit.
    let requests = subscribe_requests(&connections[0]);
    let sizes: Vec<usize> = requests.iter().map(|r| r.params.len()).collect();
    assert_eq!(sizes, [100, 100, 100, 100, 96]);
    // Sent 200 ms apart; the fake reads them when its task gets to, a little late
    // at times, so their spread is checked, not each gap.
    let spread = requests[4].at - requests[0].at;
    assert!(
        spread >= Duration::from_millis(600),
        "five requests within {spread:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.answer == Some(json!({"result": null, "id": r.id})))
    );
    assert!(!connections[0].over_rate);

    // A close of every contract reaches a client and the store.
    let mut client = app.client().await;
    client.next_n(506).await;
    let closes: Vec<Candle> = symbols.iter().map(|s| fake.close_next(s)).collect();
    // Each by the stream: the reader loses no frame of a burst of 1,012.
    wait_for_closes(&mut client, &closes).await.unwrap();
    assert!(app.metrics.frames.get() >= 1012);
    for close in &closes {
        assert!(
            !served_closed(&fake, &close.symbol).contains(close),
            "{close:?} by REST"
        );
    }
    for close in closes.iter().step_by(25).chain(closes.last()) {
        let history = fake.history(&close.symbol);
        let stored = backend.wait_for_stored(&close.symbol, &history).await;
        assert_same_candles(&stored, &history, &close.symbol);
    }
    assert_eq!(fake.connections(), 1);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_per_connection_cap_take_a_second_connection() {
    let _heavy = HEAVY.lock().await;
    let symbols = names(506);
    let (fake, backend) = crowd(&symbols).await;
    let mut config = config_for(
        &fake,
        &backend,
        &[("SYMBOLS", &symbols.join(",")), NO_STALE],
    );
    // Binance's cap is 1,024; a lower one shows the spreading with fewer symbols.
    config.exchange.streams_per_connection = 300;
    let app = TestApp::spawn(config).await;

    let mut connections = wait_until_subscribed(&fake, 506).await;
    // Both open at once; the fake may see either handshake first.
    connections.sort_by(|a, b| a.query.cmp(&b.query));
    let carried: Vec<usize> = connections.iter().map(|c| c.streams.len()).collect();
    assert_eq!(carried, [300, 206]);
    let mut all: Vec<String> = connections.iter().flat_map(|c| c.streams.clone()).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 506, "each stream on one connection");
    assert_eq!(
        connections[1].query.split('/').next(),
        Some("s300usdt@kline_1m")
    );

    let mut client = app.client().await;
    client.next_n(506).await;
    let closes = [fake.close_next("S000USDT"), fake.close_next("S505USDT")];
    wait_for_closes(&mut client, &closes).await.unwrap();
    assert_eq!(app.metrics.upstream_connected.get(), 2);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_a_connection_of_hundreds_of_streams_loses_and_repeats_no_close() {
    let _heavy = HEAVY.lock().await;
    let symbols = names(506);
    let (fake, backend) = crowd(&symbols).await;
    let settings = [
        ("SYMBOLS", symbols.join(",")),
        (NO_STALE.0, NO_STALE.1.into()),
        ("UPSTREAM_MAX_AGE_SECS", "1".into()),
        ("HISTORY_LEN", "40".into()),
    ];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    // The first successor may be subscribing already: it replaces the first
    // connection once it carries everything and a kline came.
    eventually(30, "the first connection carries every stream", || {
        fake.stream_connections()[0].streams.len() == 506
    })
    .await;
    // The start-up repair, paced at 1,200 weight a minute, is done: REST fetches
    // after this are the test's.
    common::mirror::settled(&fake).await;
    let mut client = app.client().await;
    client.next_n(506).await;

    // Contracts named in the URL and subscribed by message, closing every 250 ms
    // while the connection is renewed about every two seconds.
    let closing: Vec<String> = [0, 1, 9, 10, 11, 250, 400, 505]
        .iter()
        .map(|&i| symbols[i].clone())
        .collect();
    let mut closes = Vec::new();
    for _ in 0..24 {
        closes.extend(closing.iter().map(|s| fake.close_next(s)));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let renewals = app.metrics.renewals.get();
    assert!(
        renewals >= 2,
        "renewed {renewals} times in 6 s at a 1 s maximum age"
    );
    let (_, peak, closed_by_service) = fake.open_connections();
    assert!(peak >= 2 && closed_by_service >= 1, "make before break");
    // Each successor carried every stream before the link it replaced was closed
    // (with a close frame; a successor given up is dropped without one): the
    // successor is the last connection opened before that close.
    let connections = fake.stream_connections();
    for replaced in connections.iter().filter(|c| c.closed_by_client) {
        let closed_at = replaced.closed_at.unwrap();
        let successor = connections
            .iter()
            .rfind(|c| c.opened_at < Some(closed_at) && c.opened_at > replaced.opened_at)
            .expect("a successor opened before the close");
        let subscribed = subscribe_requests(successor);
        assert_eq!(subscribed.len(), 5);
        assert!(
            subscribed
                .iter()
                .all(|r| r.answer.is_some() && r.at < closed_at)
        );
        assert_eq!(successor.streams.len(), 506);
    }

    // Every close reached the client once: each push is a new window, the last
    // one holds every close, and none came by REST, so the stream lost none.
    let expected: HashMap<&str, Value> = closing
        .iter()
        .map(|s| {
            (
                s.as_str(),
                expected_message(s, &fake.history(s), 40, chrono_tz::UTC),
            )
        })
        .collect();
    let mut last: HashMap<String, Value> = HashMap::new();
    while closing
        .iter()
        .any(|s| last.get(s) != expected.get(s.as_str()))
    {
        let message = client.next_json().await;
        let coin = message["coin"].as_str().unwrap().to_owned();
        if let Some(previous) = last.get(&coin) {
            assert_ne!(previous, &message, "{coin}: the same window pushed twice");
        }
        last.insert(coin, message);
    }
    for close in &closes {
        assert!(
            !served_closed(&fake, &close.symbol).contains(close),
            "{} at {} was fetched by REST: the stream lost it",
            close.symbol,
            close.open_time
        );
    }
    // Both links delivered some closes; the hub kept one of each.
    assert!(app.metrics.closed_from_stream.get() > closes.len() as u64);
    for symbol in &closing {
        let history = fake.history(symbol);
        let stored = backend.wait_for_stored(symbol, &history).await;
        assert_same_candles(&stored, &history, symbol);
    }
    assert_eq!(app.metrics.reconnects_of(ReconnectCause::Stale.label()), 0);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_contract_is_subscribed_afresh_without_renewing_its_connection() {
    let _heavy = HEAVY.lock().await;
    let symbols = names(506);
    let quiet = "S300USDT";
    let (fake, backend) = crowd(&symbols).await;
    let fake = Arc::new(fake);
    let trading = {
        let fake = Arc::clone(&fake);
        let symbols = symbols.clone();
        tokio::spawn(async move {
            loop {
                for symbol in symbols.iter().filter(|s| *s != quiet) {
                    fake.send_forming(symbol);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let settings = [
        ("SYMBOLS", symbols.join(",")),
        // Long enough for a loaded machine to keep 505 streams flowing.
        ("UPSTREAM_STALE_SECS", "5".into()),
    ];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    wait_until_subscribed(&fake, 506).await;
    // The start-up repair, paced at 1,200 weight a minute, is done: REST fetches
    // after this are the test's.
    common::mirror::settled(&fake).await;
    // Once it was found quiet (and the connection's own repair, which would fetch
    // them at once, is long done), candles close that only REST serves.
    eventually(20, "the contract is found quiet", || {
        app.metrics.quiet_symbols.get() >= 1
    })
    .await;
    let missed: Vec<Candle> = (0..2).map(|_| fake.close_next_silently(quiet)).collect();

    let stream = format!("{}@kline_1m", quiet.to_lowercase());
    eventually(30, "the quiet stream is subscribed afresh", || {
        fake.stream_connections().iter().any(|connection| {
            let control = &connection.control;
            let unsubscribed = control
                .iter()
                .position(|c| c.method == "UNSUBSCRIBE" && c.params == [stream.clone()]);
            unsubscribed.is_some_and(|at| {
                control[at..]
                    .iter()
                    .any(|c| c.method == "SUBSCRIBE" && c.params == [stream.clone()])
            })
        })
    })
    .await;
    let history = fake.history(quiet);
    assert_eq!(history.last(), missed.last());
    let stored = backend.wait_for_stored(quiet, &history).await;
    assert_same_candles(&stored, &history, "the quiet contract caught up from REST");
    assert!(app.metrics.quiet_symbols.get() >= 1);
    assert!(app.metrics.resubscribed.get() >= 1);
    let reconnects: Vec<u64> = ["stale", "closed", "eof", "error", "unanswered"]
        .into_iter()
        .map(|cause| app.metrics.reconnects_of(cause))
        .collect();
    assert_eq!(
        fake.connections(),
        1,
        "the connection was neither renewed nor dropped; reconnects {reconnects:?}"
    );
    assert_eq!(app.metrics.renewals.get(), 0);
    assert_eq!(fake.subscriptions()[0].len(), 506);
    trading.abort();
    app.stop().await.unwrap();
}

/// The exchange client alone, built from the library's parts as the app builds it,
/// on an embedded store in `backend`.
struct Upstream {
    exchange: Arc<Exchange>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start(fake: &FakeExchange, backend: &Backend, symbols: &[String], cap: usize) -> Self {
        let mut config = config_for(fake, backend, &[("SYMBOLS", &symbols.join(","))]);
        config.exchange.streams_per_connection = cap;
        let Backend::Sqlite { dir } = backend else {
            unreachable!()
        };
        let store: Arc<dyn CandleStore> = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let metrics = Arc::new(Metrics::new());
        let cancel = CancellationToken::new();
        let (writer, _) = StoreWriter::spawn(
            Arc::clone(&store),
            Unacknowledged::default(),
            64,
            Arc::clone(&metrics),
            Arc::new(StoreHealth::default()),
            cancel.clone(),
        );
        let market = Market {
            symbols: config.symbols.clone(),
            interval: config.interval.clone(),
            longest: config.interval.clone(),
            window_len: config.windows.window_len(),
            seed_windows: false,
        };
        let sinks = Sinks {
            hub: Hub::new(&config.symbols, &config.intervals, &config.windows),
            store,
            writer,
            metrics,
            health: Arc::new(UpstreamHealth::default()),
        };
        let exchange = Arc::new(Exchange::new(market, config.exchange.clone(), sinks).unwrap());
        let (done, _) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(Arc::clone(&exchange).run(cancel.clone(), done));
        Self {
            exchange,
            cancel,
            task,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbols_followed_and_let_go_while_running_are_subscribed_and_unsubscribed_upstream() {
    let all = names(15);
    let (fake, backend) = crowd(&all).await;
    let first: Vec<String> = all[..12].to_vec();
    let upstream = Upstream::start(&fake, &backend, &first, 14).await;
    wait_until_subscribed(&fake, 12).await;

    // Two fit on the first connection (14 at most, for this test); one opens another.
    let added = upstream.exchange.follow(&[
        all[12].to_lowercase(),
        all[13].clone(),
        all[14].clone(),
        all[0].clone(),
    ]);
    assert_eq!(added, all[12..]);
    assert_eq!(upstream.exchange.followed(), all);
    let connections = wait_until_subscribed(&fake, 15).await;
    assert_eq!(connections.len(), 2);
    assert_eq!(connections[0].streams.len(), 14);
    assert_eq!(connections[1].streams, ["s014usdt@kline_1m"]);
    let followed = subscribe_requests(&connections[0]);
    assert_eq!(
        followed.last().unwrap().params,
        ["s012usdt@kline_1m", "s013usdt@kline_1m"]
    );
    // Their history was fetched, and their closes are taken now.
    for symbol in &all[12..] {
        eventually(10, &format!("{symbol}'s history is fetched"), || {
            fake.rest_requests().iter().any(|r| &r.symbol == symbol)
        })
        .await;
        let close = fake.close_next(symbol);
        eventually_async(10, &format!("{symbol}'s close is stored"), || async {
            backend.stored(symbol).await.last() == Some(&close)
        })
        .await;
    }

    // Letting go of S014USDT closes its connection; of two others, unsubscribes them.
    let removed = upstream.exchange.let_go(&[
        all[14].clone(),
        all[3].clone(),
        all[13].clone(),
        "NOPEUSDT".into(),
    ]);
    assert_eq!(removed, [all[14].clone(), all[3].clone(), all[13].clone()]);
    eventually(10, "the emptied connection is closed", || {
        fake.subscriptions().len() == 1
    })
    .await;
    let connections = wait_until_subscribed(&fake, 12).await;
    let unsubscribed = connections[0]
        .control
        .iter()
        .find(|c| c.method == "UNSUBSCRIBE")
        .unwrap();
    let mut params = unsubscribed.params.clone();
    params.sort();
    assert_eq!(params, ["s003usdt@kline_1m", "s013usdt@kline_1m"]);
    assert!(
        !connections[0]
            .streams
            .contains(&"s003usdt@kline_1m".to_owned())
    );
    assert_eq!(upstream.exchange.followed().len(), 12);

    // A close of a let-go contract is no longer taken, even if one arrives.
    let ignored = fake.close_next(&all[3]);
    let taken = fake.close_next(&all[4]);
    eventually_async(10, "the followed close is stored", || async {
        backend.stored(&all[4]).await.last() == Some(&taken)
    })
    .await;
    assert!(!backend.stored(&all[3]).await.contains(&ignored));
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_unanswered_subscription_is_logged_once_and_retried() {
    let symbols = names(30);
    let (fake, _backend) = crowd(&symbols).await;
    // The first three SUBSCRIBEs are refused with Binance's error answer.
    fake.refuse_subscribes(3);
    let mut env = fake_env(&fake);
    env.push(("SYMBOLS", symbols.join(",")));
    env.push(("UPSTREAM_BACKOFF_MAX_SECS", "1".into()));
    let mut service = Running::start(tempfile::tempdir().unwrap(), &env);
    let address = service.wait_for_address().await;
    wait_until_subscribed(&fake, 30).await;
    let output = service
        .wait_for_output("accepts subscriptions again", 10)
        .await;
    let refusals = output.matches("the exchange refused a request;").count();
    assert_eq!(refusals, 1, "logged once:\n{output}");
    let subscribes = subscribe_requests(&fake.stream_connections()[0]).len();
    assert_eq!(subscribes, 4, "three refused, the fourth taken");
    assert!(
        output.contains("Invalid request: refused by the test"),
        "with the exchange's answer"
    );

    // A SUBSCRIBE never answered: the connection is given up and made again.
    fake.ignore_subscribes(1);
    fake.disconnect_all();
    eventually(20, "a third connection subscribes everything", || {
        fake.connections() >= 3 && fake.subscriptions().iter().map(Vec::len).sum::<usize>() == 30
    })
    .await;
    let output = service.output();
    let unanswered = output
        .lines()
        .filter(|l| l.contains("reconnecting") && l.contains("unanswered"))
        .count();
    assert_eq!(unanswered, 1, "{output}");
    let metrics = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (reason, count) in [("refused", 3), ("unanswered", 1)] {
        let line = format!(
            "candlecast_upstream_subscription_failures_total{{reason=\"{reason}\"}} {count}"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    let (code, _, _) = service.terminate().await;
    assert_eq!(code, 0);
}
