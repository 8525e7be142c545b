//! Inputs nobody should send, answered without losing anything: documents that are
//! not candles, symbols the exchange refuses or lists under unusual names, bans.

mod common;

use std::time::Duration;

use common::*;
use mongodb::bson::{DateTime, doc};
use serde_json::Value;

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_document_that_is_not_a_candle_is_skipped_everywhere() {
    let backend = Backend::mongo();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let candles = backend.collection("candles").await;
    // A manual insert from another schema, inside the window that is loaded.
    let newest = fake.history("BTCUSDT").last().unwrap().open_time;
    candles
        .insert_one(doc! {"symbol": "BTCUSDT", "interval": "1m", "open_time": DateTime::from_millis(newest + 7), "close": "oops"})
        .await
        .unwrap();

    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let mut ws = app.client().await;
    let snapshot = ws.next_n(5).await;
    assert_eq!(
        snapshot[0],
        expected_message("BTCUSDT", &fake.history("BTCUSDT"), 10, chrono_tz::UTC)
    );
    let (status, body) = get_json(&format!(
        "http://{}/api/v1/candles/BTCUSDT?limit=5",
        app.addr
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    // Read from memory, which never held it: five good candles, the bad one not among them.
    let times: Vec<i64> = body["candles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["open_time"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = fake
        .history("BTCUSDT")
        .iter()
        .rev()
        .take(5)
        .map(|c| c.open_time)
        .collect();
    assert_eq!(times, expected, "{body}");
    assert!(app.metrics.skipped_documents.get() >= 1);

    // While running: a bad document on the change stream stalls nothing.
    fake.wait_for_connections(1).await;
    candles
        .insert_one(doc! {"symbol": "ETHUSDT", "interval": "1m", "open_time": "never"})
        .await
        .unwrap();
    let next = fake.close_next("ETHUSDT");
    let message = ws.next_json().await;
    assert_eq!(message["values"][0].as_f64(), Some(next.close), "{message}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_row_that_is_not_a_candle_is_skipped_on_sqlite() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let Backend::Sqlite { dir } = &backend else {
        unreachable!()
    };
    let connection =
        rusqlite::Connection::open(dir.path().join(candlecast::store::SQLITE_FILE)).unwrap();
    let newest = fake.history("SOLUSDT").last().unwrap().open_time;
    connection
        .execute(
            "INSERT INTO candles VALUES ('SOLUSDT', '1m', ?1, ?2, 'x', 1, 1, 'oops', 1, 1, 1, 1, 1)",
            [newest - 30, newest + 1],
        )
        .unwrap();
    drop(connection);
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let snapshot = app.client().await.next_n(5).await;
    assert_eq!(
        snapshot[3],
        expected_message("SOLUSDT", &fake.history("SOLUSDT"), 10, chrono_tz::UTC)
    );
    assert!(app.metrics.skipped_documents.get() >= 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_rest_ban_is_named_by_readiness_and_waited_out_in_full() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    for symbol in SYMBOLS {
        let history = fake.history(symbol);
        seed(&backend, &history[..history.len() - 2]).await;
    }
    fake.ban_rest(418, 8);
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    fake.wait_for_connections(1).await;
    fake.send_forming("BTCUSDT");
    let (status, body) = get_json(&format!("http://{}/ready", app.addr)).await;
    assert_eq!(status, 503, "{body}");
    let reasons = body["reasons"].to_string();
    assert!(
        reasons.contains("banned") && reasons.contains("418"),
        "{reasons}"
    );
    // Nothing is asked again before the ban ends; then everything arrives.
    let banned_requests = fake
        .rest_requests()
        .iter()
        .filter(|r| r.status == 418)
        .count();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        fake.rest_requests()
            .iter()
            .filter(|r| r.status == 418)
            .count(),
        banned_requests,
        "no request while banned"
    );
    for symbol in SYMBOLS {
        let stored = backend.wait_for_stored(symbol, &fake.history(symbol)).await;
        assert_same_candles(&stored, &fake.history(symbol), symbol);
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_unknown_symbol_stops_startup_naming_it() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let dir = tempfile::tempdir().unwrap();
    let mut command = common::binary::binary();
    command.current_dir(dir.path());
    for (name, value) in common::binary::fake_env(&fake) {
        command.env(name, value);
    }
    command.env("SYMBOLS", "BTCUSDT,XRPXRP");
    let started = std::time::Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SYMBOLS") && stderr.contains("XRPXRP"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("BTCUSDT,"),
        "only the unknown one is named: {stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(fake.exchange_info_requests(), 1);
}

#[tokio::test]
async fn a_symbol_refused_later_is_not_retried_and_readiness_names_it() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start(&SYMBOLS).await;
    // The list cannot be read at startup: the service starts and learns from klines.
    fake.fail_exchange_info(true);
    let config = config_for(&fake, &backend, &[("SYMBOLS", "BTCUSDT,XRPXRP")]);
    let started = std::time::Instant::now();
    let app = TestApp::spawn(config).await;
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "no stall on a refused symbol"
    );
    fake.wait_for_connections(1).await;
    fake.send_forming("BTCUSDT");
    let ready = format!("http://{}/ready", app.addr);
    eventually_async(5, "readiness names the refused symbol", || async {
        let (status, body) = get_json(&ready).await;
        status == 503 && body["reasons"].to_string().contains("XRPXRP")
    })
    .await;
    let asked = |fake: &FakeExchange| {
        fake.rest_requests()
            .iter()
            .filter(|r| r.symbol == "XRPXRP")
            .count()
    };
    let before = asked(&fake);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(asked(&fake), before, "a -1121 answer is not retried");
    assert_eq!(before, 1);
    // The known symbol is served as usual.
    let snapshot = app.client().await.next_n(2).await;
    assert_eq!(snapshot[0]["values"].as_array().unwrap().len(), 10);
    assert_eq!(snapshot[1]["coin"], "XRPXRP");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn quarterly_and_non_ascii_symbols_are_served_on_every_path() {
    let symbols = ["BTCUSDT_260626", "币安人生USDT"];
    for backend in [Backend::sqlite(), Backend::mongo()] {
        let fake = FakeExchange::start(&symbols).await;
        let config = config_for(
            &fake,
            &backend,
            &[("SYMBOLS", "btcusdt_260626,币安人生USDT")],
        );
        let app = TestApp::spawn(config).await;
        fake.wait_for_connections(1).await;
        let query = fake.stream_queries();
        assert!(
            query[0].contains("btcusdt_260626@kline_1m")
                && query[0].contains("币安人生usdt@kline_1m"),
            "{query:?}"
        );
        let url = format!(
            "ws://{}/?symbols=%E5%B8%81%E5%AE%89%E4%BA%BA%E7%94%9FUSDT",
            app.addr
        );
        let mut client = Client::connect(&url).await;
        let first = client.next_json().await;
        assert_eq!(first["coin"], "币安人生USDT");
        assert_eq!(first["values"].as_array().unwrap().len(), 10, "{first}");
        let candle = fake.close_next("币安人生USDT");
        assert_eq!(
            client.next_json().await["values"][0].as_f64(),
            Some(candle.close)
        );
        let history = format!(
            "http://{}/api/v1/candles/%E5%B8%81%E5%AE%89%E4%BA%BA%E7%94%9FUSDT?limit=3",
            app.addr
        );
        let (status, body) = get_json(&history).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["symbol"], "币安人生USDT");
        // The history API reads the store, which the write queue fills shortly.
        let quarterly = format!("http://{}/api/v1/candles/btcusdt_260626?limit=3", app.addr);
        eventually_async(10, "the quarterly contract's history is served", || async {
            let (status, body) = get_json(&quarterly).await;
            (status, body["candles"].as_array().map(Vec::len)) == (200, Some(3))
        })
        .await;
        eventually_async(10, "the non-ASCII symbol's candle is stored", || async {
            backend
                .stored("币安人生USDT")
                .await
                .iter()
                .any(|c| c.open_time == candle.open_time)
        })
        .await;
        app.stop().await.unwrap();
    }
}

#[tokio::test]
async fn the_service_starts_without_its_database_and_writes_everything_when_it_comes() {
    let mut database = common::mongo_server::MongoServer::start().await;
    let backend = Backend::Mongo {
        uri: database.uri(),
        database: unique_database("candlecast_absent"),
    };
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    // What a run long ago left: the oldest ten minutes. The gap behind them is
    // older than the startup backfill reaches; it is fetched once the store is back.
    for symbol in SYMBOLS {
        seed(&backend, &fake.history(symbol)[..10]).await;
    }
    database.stop().await;
    let app = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("UPSTREAM_BACKOFF_MAX_SECS", "1")],
    ))
    .await;
    // Served from the exchange, into memory.
    let snapshot = app.client().await.next_n(5).await;
    for (message, symbol) in snapshot.iter().zip(SYMBOLS) {
        assert_eq!(
            message,
            &expected_message(symbol, &fake.history(symbol), 10, chrono_tz::UTC)
        );
    }
    fake.wait_for_connections(1).await;
    fake.send_forming("BTCUSDT");
    let (status, body) = get_json(&format!("http://{}/ready", app.addr)).await;
    assert_eq!(status, 503);
    assert!(
        body["reasons"].to_string().contains("store: not reachable"),
        "{body}"
    );
    assert!(
        !body.to_string().contains("127.0.0.1"),
        "details stay in the log: {body}"
    );

    database.resume().await;
    for symbol in SYMBOLS {
        let history = fake.history(symbol);
        let stored = backend.wait_for_stored_within(60, symbol, &history).await;
        assert_same_candles(
            &stored,
            &history,
            &format!("{symbol} complete once the database came"),
        );
    }
    app.stop().await.unwrap();
}

/// The user id of `nobody`, which the permission tests run the binary as.
const NOBODY: u32 = 65534;

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &std::path::Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

#[tokio::test]
async fn a_data_dir_this_user_cannot_write_is_named_with_the_user_id() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    // What a fresh volume gives: a directory owned by root.
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o755);
    let mut env = common::binary::fake_env(&fake);
    env.push(("DATA_DIR", data.display().to_string()));
    let running = common::binary::Running::start_as(dir, &env, Some(NOBODY));
    let output = running.wait_for_output("stopped with an error", 15).await;
    let line = output
        .lines()
        .find(|l| l.contains("stopped with an error"))
        .unwrap();
    assert!(line.contains(&data.display().to_string()), "{line}");
    assert!(line.contains("permission denied"), "{line}");
    assert!(line.contains(&format!("user id {NOBODY}")), "{line}");
}

#[tokio::test]
async fn a_read_only_store_fails_readiness_and_loses_nothing() {
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let seeded: Vec<_> = SYMBOLS
        .iter()
        .map(|s| {
            let h = fake.history(s);
            h[..h.len() - 5].to_vec()
        })
        .collect();
    let store = candlecast::store::SqliteStore::open(&data).unwrap();
    use candlecast::store::CandleStore;
    for candles in &seeded {
        store.upsert(candles).await.unwrap();
    }
    drop(store);
    chown(&data, NOBODY);
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        chown(&path, NOBODY);
    }
    chmod(&data.join(candlecast::store::SQLITE_FILE), 0o444);
    let mut env = common::binary::fake_env(&fake);
    env.push(("DATA_DIR", data.display().to_string()));
    let mut running = common::binary::Running::start_as(dir, &env, Some(NOBODY));
    let address = running.wait_for_address().await;
    assert!(
        running.output().contains("read-only"),
        "{}",
        running.output()
    );
    let ready = format!("http://{address}/ready");
    eventually_async(20, "readiness reports the failing writes", || async {
        let (status, body) = get_json(&ready).await;
        status == 503
            && body["reasons"]
                .to_string()
                .contains("store: writes failing for")
    })
    .await;
    let (code, output, dir) = running.terminate().await;
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("candles not written before exit") && output.contains("first_open_time"),
        "what could not be written is logged with its range: {output}"
    );
    // Writable again (the operator's chmod covers SQLite's -wal and -shm files,
    // which it created with the database's mode): the next start fetches what the
    // last one could not keep.
    for entry in std::fs::read_dir(&data).unwrap() {
        chmod(&entry.unwrap().path(), 0o644);
    }
    let mut running = common::binary::Running::start_as(dir, &env, Some(NOBODY));
    running.wait_for_address().await;
    let check = data.clone();
    eventually_async(20, "the next start stores every candle", || {
        let check = check.clone();
        let fake = &fake;
        async move {
            let connection =
                rusqlite::Connection::open(check.join(candlecast::store::SQLITE_FILE)).unwrap();
            SYMBOLS.iter().all(|symbol| {
                let newest: i64 = connection
                    .query_row(
                        "SELECT MAX(open_time) FROM candles WHERE symbol = ?1",
                        [symbol],
                        |r| r.get(0),
                    )
                    .unwrap();
                newest == fake.history(symbol).last().unwrap().open_time
            })
        }
    })
    .await;
    let (_, output, _) = running.terminate().await;
    assert!(!output.contains("read-only"), "{output}");
}

/// The password has a `$`: unquoted in `.env`, dotenv replaces `$sw0rd` (unset) with
/// nothing and MongoDB refuses the credentials; single-quoted, it works.
#[tokio::test]
async fn a_dollar_in_a_dotenv_password_is_explained() {
    let database = common::mongo_server::MongoServer::start_with_user("app", "Pa$sw0rd").await;
    let fake = FakeExchange::start(&SYMBOLS).await;
    let uri = format!(
        "mongodb://app:Pa$sw0rd@127.0.0.1:{}/?directConnection=true&authSource=admin",
        database.port
    );
    let run = |dotenv: String| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), dotenv).unwrap();
        let mut command = common::binary::binary();
        command.current_dir(dir.path());
        for (name, value) in common::binary::fake_env(&fake) {
            command.env(name, value);
        }
        (dir, command)
    };
    let (_dir, mut command) = run(format!("MONGO_URI={uri}\n"));
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("MONGO_URI") && stderr.contains("refused the credentials"),
        "{stderr}"
    );
    assert!(
        stderr.contains(".env") && stderr.contains("single-quote"),
        "{stderr}"
    );
    assert!(
        stdout.contains("outside single quotes"),
        "warned at startup: {stdout}"
    );
    assert!(
        !format!("{stdout}{stderr}").contains("sw0rd"),
        "{stdout}{stderr}"
    );

    // Single quotes keep the `$`: the same password works.
    let (dir, _) = run(format!("MONGO_URI='{uri}'\nMONGO_DATABASE=dotenv_quoted\n"));
    let mut env = common::binary::fake_env(&fake);
    env.retain(|(name, _)| *name != "MONGO_URI");
    let mut running = common::binary::Running::start(dir, &env);
    running.wait_for_address().await;
    assert!(running.output().contains("using MongoDB store"));
    let (code, output, _) = running.terminate().await;
    assert_eq!(code, 0, "{output}");
    assert!(!output.contains("refused"), "{output}");
}

/// A follower is ready while at least one ingester is healthy, whichever wrote its
/// heartbeat last; times are the database's; an ingester makes the TTL index.
#[tokio::test]
async fn a_follower_is_ready_while_any_ingester_is_healthy() {
    let backend = Backend::mongo();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    seed_all(&fake, &backend).await;
    let beats = backend.collection("candles_ingesters").await;
    let beat = |id: &'static str, data_age_ms: i64| {
        let beats = beats.clone();
        async move {
            beats
                .update_one(
                    doc! {"_id": id},
                    doc! {"$currentDate": {"seen": true}, "$set": {"data_age_ms": data_age_ms}},
                )
                .upsert(true)
                .await
                .unwrap();
        }
    };
    let settings = [("INGEST", "false"), ("UPSTREAM_STALE_SECS", "5")];
    let follower = TestApp::spawn(config_for(&fake, &backend, &settings)).await;
    let ready = format!("http://{}/ready", follower.addr);
    beat("healthy", 0).await;
    beat("no-exchange", 600_000).await; // wrote last, but has no data
    eventually_async(10, "the follower is ready", || async {
        get_json(&ready).await.0 == 200
    })
    .await;

    beats.delete_one(doc! {"_id": "healthy"}).await.unwrap();
    // Readiness reads a judgement refreshed in the background every 2 s.
    eventually_async(10, "the follower says no ingester has data", || async {
        let (status, body) = get_json(&ready).await;
        status == 503
            && body["reasons"]
                .to_string()
                .contains("ingesters: no data from the exchange for 60")
    })
    .await;

    let ingester =
        TestApp::spawn(config_for(&fake, &backend, &[("UPSTREAM_STALE_SECS", "5")])).await;
    fake.wait_for_connections(1).await;
    let ticks = fake.tick(Duration::from_millis(200));
    eventually_async(15, "a real ingester makes the follower ready", || async {
        get_json(&ready).await.0 == 200
    })
    .await;
    let indexes = beats.list_index_names().await.unwrap();
    assert!(indexes.iter().any(|name| name == "seen_ttl"), "{indexes:?}");
    ticks.abort();
    ingester.stop().await.unwrap();
    follower.stop().await.unwrap();
}

/// SIGTERM while a history request waits on a database that accepts connections
/// and never answers: exit 0 within 10 s all the same.
#[tokio::test]
async fn shutdown_meets_its_deadline_with_a_query_stuck_on_a_hung_database() {
    // A "database" that takes connections and says nothing.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hung.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung.accept().await {
            held.push(socket);
        }
    });
    let fake = FakeExchange::start(&SYMBOLS).await;
    let mut env = common::binary::fake_env(&fake);
    env.push((
        "MONGO_URI",
        format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
    ));
    let mut running = common::binary::Running::start(tempfile::tempdir().unwrap(), &env);
    let address = running.wait_for_address().await;
    let stuck = tokio::spawn(reqwest::get(format!(
        "http://{address}/api/v1/candles/BTCUSDT"
    )));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let (code, output, _) = running.terminate().await;
    assert_eq!(code, 0, "{output}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exited {:?} after SIGTERM",
        started.elapsed()
    );
    stuck.abort();
    holder.abort();
}
