//! Scaling out: ingesters and followers on one MongoDB replica set (SecantusDB
//! presents as one), followers fed by the candle collection's change stream.

mod common;

use std::time::Duration;

use common::binary::{Running, binary, fake_env};
use common::mongo_server::MongoServer;
use common::*;
use serde_json::Value;

/// Reads messages until every coin in `coins` shows the fake's history; a coin's
/// message is never pushed twice in a row.
async fn follow_until_caught_up(
    client: &mut Client,
    fake: &FakeExchange,
    coins: &[&str],
) -> Vec<Value> {
    let mut seen: Vec<Value> = Vec::new();
    loop {
        let done = coins.iter().all(|coin| {
            let expected = expected_message(coin, &fake.history(coin), 10, chrono_tz::UTC);
            seen.iter()
                .rev()
                .find(|m| m["coin"] == *coin)
                .is_some_and(|m| *m == expected)
        });
        if done {
            return seen;
        }
        let message = client.next_json().await;
        let previous = seen.iter().rev().find(|m| m["coin"] == message["coin"]);
        assert_ne!(previous, Some(&message), "the same window was pushed twice");
        seen.push(message);
    }
}

async fn assert_windows_match(client: &mut Client, fake: &FakeExchange) {
    for (message, symbol) in client.next_n(5).await.iter().zip(SYMBOLS) {
        assert_eq!(
            message,
            &expected_message(symbol, &fake.history(symbol), 10, chrono_tz::UTC)
        );
    }
}

fn follower_env(fake: &FakeExchange, backend: &Backend) -> Vec<(&'static str, String)> {
    let mut env = fake_env(fake);
    env.extend(backend.env());
    env.push(("INGEST", "false".into()));
    env.push(("UPSTREAM_STALE_SECS", "1".into()));
    env
}

/// Polls `/ready` until its status is `status` and its body contains `saying`.
async fn wait_for_ready(address: &str, status: u16, saying: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = reqwest::get(format!("http://{address}/ready"))
            .await
            .unwrap();
        let (got, body) = (response.status().as_u16(), response.text().await.unwrap());
        if got == status && body.contains(saying) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/ready stayed {got}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn followers_serve_every_close_an_ingester_writes_and_a_new_ingester_fills_the_gap() {
    let backend = Backend::mongo();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    for symbol in SYMBOLS {
        seed(&backend, &fake.history(symbol)).await;
    }
    // Open-candle updates keep the ingester's exchange data fresh, as on Binance.
    let _ticks = fake.tick(Duration::from_millis(200));
    let mut ingester_env = fake_env(&fake);
    ingester_env.extend(backend.env());
    ingester_env.push(("UPSTREAM_STALE_SECS", "1".into()));
    let mut ingester = Running::start(tempfile::tempdir().unwrap(), &ingester_env);
    ingester.wait_for_address().await;
    fake.wait_for_connections(1).await;
    let rest_before = fake.rest_requests().len();

    let mut followers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut follower =
            Running::start(tempfile::tempdir().unwrap(), &follower_env(&fake, &backend));
        let address = follower.wait_for_address().await;
        assert!(
            follower
                .output()
                .contains("INGEST=false: following the candle collection")
        );
        let mut client = Client::connect(&format!("ws://{address}/")).await;
        assert_windows_match(&mut client, &fake).await;
        followers.push((follower, address));
        clients.push(client);
    }
    for (_, address) in &followers {
        wait_for_ready(address, 200, "ready").await;
    }

    // Closes reach the ingester's stream, its store writes reach the followers.
    for _ in 0..3 {
        fake.close_next("BTCUSDT");
        fake.close_next("ETHUSDT");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for client in &mut clients {
        let seen = follow_until_caught_up(client, &fake, &["BTCUSDT", "ETHUSDT"]).await;
        assert!(
            seen.len() <= 6,
            "at most one push per close: {}",
            seen.len()
        );
    }
    assert_eq!(
        fake.connections(),
        1,
        "followers never connect to the exchange"
    );
    assert_eq!(
        fake.rest_requests().len(),
        rest_before,
        "nor call its REST API"
    );

    // The ingester dies; followers keep serving their windows, and their readiness
    // says why no new candles come.
    let _ = ingester.kill9();
    for (_, address) in &followers {
        let mut client = Client::connect(&format!("ws://{address}/")).await;
        assert_windows_match(&mut client, &fake).await;
        let body = wait_for_ready(address, 503, "ingesters: none has reported for").await;
        assert!(body.contains("INGEST=true"), "{body}");
    }
    // Candles close with no ingester running; a new one fills the gap by REST and
    // its writes reach the followers through the change stream.
    for _ in 0..2 {
        fake.close_next("SOLUSDT");
    }
    let mut second = Running::start(tempfile::tempdir().unwrap(), &ingester_env);
    second.wait_for_address().await;
    for client in &mut clients {
        follow_until_caught_up(client, &fake, &["SOLUSDT"]).await;
    }
    for (_, address) in &followers {
        wait_for_ready(address, 200, "ready").await;
    }
    for symbol in SYMBOLS {
        let history = fake.history(symbol);
        assert_same_candles(
            &backend.wait_for_stored(symbol, &history).await,
            &history,
            symbol,
        );
    }
    let (code, output, _) = second.terminate().await;
    assert_eq!(code, 0, "{output}");
    for (follower, _) in followers {
        let (code, output, _) = follower.terminate().await;
        assert_eq!(code, 0, "{output}");
    }
}

#[tokio::test]
async fn a_follower_resumes_its_change_stream_after_the_database_restarts() {
    let mut database = MongoServer::start().await;
    let backend = Backend::Mongo {
        uri: database.uri(),
        database: unique_database("candlecast_resume"),
    };
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    for symbol in SYMBOLS {
        seed(&backend, &fake.history(symbol)).await;
    }
    let ingester = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("UPSTREAM_BACKOFF_MAX_SECS", "1")],
    ))
    .await;
    let follower = TestApp::spawn(config_for(
        &fake,
        &backend,
        &[("INGEST", "false"), ("UPSTREAM_BACKOFF_MAX_SECS", "1")],
    ))
    .await;
    let mut client = follower.client().await;
    assert_windows_match(&mut client, &fake).await;
    fake.wait_for_connections(1).await;

    fake.close_next("XRPUSDT");
    follow_until_caught_up(&mut client, &fake, &["XRPUSDT"]).await;

    database.stop().await;
    eventually(20, "the follower notices", || {
        follower.metrics.change_stream_open.get() == 0
    })
    .await;
    let ready = reqwest::get(format!("http://{}/ready", follower.addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("change stream"));
    // Closed while the database is down: queued by the ingester, written later.
    fake.close_next("XRPUSDT");
    fake.close_next("BNBUSDT");
    database.resume().await;

    follow_until_caught_up(&mut client, &fake, &["XRPUSDT", "BNBUSDT"]).await;
    for symbol in SYMBOLS {
        let history = fake.history(symbol);
        assert_same_candles(
            &backend.wait_for_stored_within(60, symbol, &history).await,
            &history,
            symbol,
        );
    }
    eventually(20, "the change stream is open again", || {
        follower.metrics.change_stream_open.get() == 1
    })
    .await;
    follower.stop().await.unwrap();
    ingester.stop().await.unwrap();
}

#[tokio::test]
async fn a_follower_refuses_a_database_without_change_streams() {
    let database = MongoServer::start_standalone().await;
    let fake = FakeExchange::start(&SYMBOLS).await;
    let mut env = fake_env(&fake);
    env.push(("MONGO_URI", database.uri()));
    env.push(("INGEST", "false".into()));
    let dir = tempfile::tempdir().unwrap();
    let mut command = binary();
    command.current_dir(dir.path());
    for (name, value) in &env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("MONGO_URI") && stderr.contains("change streams"),
        "{stderr}"
    );
}

/// nginx (Debian's package) running deploy/nginx.conf, adapted to loopback ports.
struct Nginx {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(replicas: &[std::net::SocketAddr]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = std::fs::read_to_string(repo_root().join("deploy/nginx.conf")).unwrap();
        let servers: String = replicas
            .iter()
            .map(|addr| format!("\n        server {addr};"))
            .collect();
        let temp = dir.path().display();
        // The compose file's replicas give way to the test's.
        let config: String = config
            .lines()
            .filter(|line| !line.trim_start().starts_with("server follower"))
            .map(|line| format!("{line}\n"))
            .collect();
        let config = config
            .replace("least_conn;", &format!("least_conn;{servers}"))
            .replace("listen 80;", &format!("listen 127.0.0.1:{port};"))
            .replace(
                "http {",
                &format!(
                    "http {{\n    access_log off;\n    client_body_temp_path {temp}/body;\n    proxy_temp_path {temp}/proxy;\n    \
                     fastcgi_temp_path {temp}/fastcgi;\n    uwsgi_temp_path {temp}/uwsgi;\n    scgi_temp_path {temp}/scgi;"
                ),
            );
        assert!(
            config.contains(&replicas[0].to_string()),
            "the upstream block changed shape:\n{config}"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let child = std::process::Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .arg("-g")
            // One process, so stopping it leaves no worker behind.
            .arg(format!(
                "daemon off; master_process off; pid {temp}/nginx.pid; error_log {temp}/error.log;"
            ))
            .spawn()
            .expect("nginx is needed: ./scripts/test installs Debian's nginx");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM stops the workers too; SIGKILL would orphan them.
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn clients_through_nginx_get_the_same_windows_and_updates_from_either_replica() {
    let backend = Backend::mongo();
    let fake = FakeExchange::start_lagging(&SYMBOLS, 30).await;
    for symbol in SYMBOLS {
        seed(&backend, &fake.history(symbol)).await;
    }
    let ingester = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    let follower = TestApp::spawn(config_for(&fake, &backend, &[("INGEST", "false")])).await;
    let nginx = Nginx::start(&[ingester.addr, follower.addr]).await;
    fake.wait_for_connections(1).await;

    let mut clients = Vec::new();
    for _ in 0..6 {
        let mut client = Client::connect(&format!("ws://127.0.0.1:{}/", nginx.port)).await;
        assert_windows_match(&mut client, &fake).await;
        clients.push(client);
    }
    let connected = |app: &TestApp| app.metrics.clients_connected.get();
    assert!(
        connected(&ingester) >= 1 && connected(&follower) >= 1,
        "nginx spreads clients over both replicas"
    );
    assert_eq!(connected(&ingester) + connected(&follower), 6);

    fake.close_next("ETHUSDT");
    fake.close_next("BTCUSDT");
    for client in &mut clients {
        follow_until_caught_up(client, &fake, &["BTCUSDT", "ETHUSDT"]).await;
    }
    // The page and the API pass through as well.
    let page = reqwest::get(format!("http://127.0.0.1:{}/", nginx.port))
        .await
        .unwrap();
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<title>candlecast</title>")
    );
    drop(clients);
    follower.stop().await.unwrap();
    ingester.stop().await.unwrap();
}
