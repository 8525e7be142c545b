//! The `candlecast` binary as an operator runs it: environment and `.env`, exit codes,
//! logs, signals.

mod common;

use common::binary::{Running, binary, fake_env};
use common::*;

#[test]
fn an_invalid_setting_stops_startup_with_exit_code_2_naming_the_variable() {
    let cases = [
        ("PORT", "http"),
        ("PORT", "99999"),
        ("BIND_ADDR", "everywhere"),
        ("TIME_ZONE", "Europe/Atlantis"),
        ("SYMBOLS", " , "),
        ("HISTORY_LEN", "0"),
        ("INTERVAL", "2m"),
        ("MONGO_URI", "mysql://root:pw@localhost"),
        ("BINANCE_WS_URL", "fstream.binance.com"),
        ("INGEST", "false"),
        ("INGEST", "sometimes"),
        ("INTERVALS", "1m,7m"),
        ("INTERVALS", "3d"),
        ("INTERVALS", "1h,1h"),
        ("LIVE_INTERVAL_MS", "fast"),
    ];
    for (var, value) in cases {
        let dir = tempfile::tempdir().unwrap();
        let output = binary()
            .current_dir(dir.path())
            .env(var, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{var}={value:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(var), "{var}={value:?} gave {stderr}");
    }
}

#[test]
fn a_bad_value_in_dotenv_is_reported_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "# local settings\nTIME_ZONE=Nowhere/Special\n",
    )
    .unwrap();
    let output = binary().current_dir(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("TIME_ZONE"));
}

#[tokio::test]
async fn the_mongo_password_never_reaches_the_logs() {
    // A password that is also the user name, or a piece of "mongodb", must be hidden
    // where it stands in the URI, not wherever its text first appears.
    let fake = FakeExchange::start(&SYMBOLS).await;
    for (user, password) in [
        ("candlecast", "sup3r-s3cret"),
        ("admin", "admin"),
        ("svc", "go"),
    ] {
        // Nothing listens on port 1: the service starts without its database and
        // talks about the URI while it waits for it.
        let mut env = fake_env(&fake);
        env.push((
            "MONGO_URI",
            format!("mongodb://{user}:{password}@127.0.0.1:1/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"),
        ));
        let mut running = Running::start(tempfile::tempdir().unwrap(), &env);
        running.wait_for_address().await;
        running
            .wait_for_output("MongoDB is not reachable", 10)
            .await;
        let (code, all, _) = running.terminate().await;
        assert_eq!(code, 0, "{all}");
        assert!(
            all.contains(&format!("mongodb://{user}:***@127.0.0.1:1")),
            "the redacted URI is shown: {all}"
        );
        assert!(
            !all.contains(&format!(":{password}@")),
            "password leaked: {all}"
        );
        if password.len() > 5 {
            assert!(!all.contains(password), "password leaked: {all}");
        }
    }
}

#[tokio::test]
async fn runs_on_the_embedded_store_with_no_dotenv_at_all() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let mut running = Running::start(tempfile::tempdir().unwrap(), &fake_env(&fake));
    let address = running.wait_for_address().await;
    assert!(
        running
            .output()
            .contains("MONGO_URI is not set: using the embedded SQLite store")
    );

    let mut client = Client::connect(&format!("ws://{address}/")).await;
    let messages = client.next_n(5).await;
    let coins: Vec<&str> = messages
        .iter()
        .map(|m| m["coin"].as_str().unwrap())
        .collect();
    assert_eq!(coins, SYMBOLS);
    assert!(
        messages
            .iter()
            .all(|m| m["values"].as_array().unwrap().len() == 10),
        "{messages:?}\n{}",
        running.output()
    );

    let (code, output, dir) = running.terminate().await;
    assert_eq!(code, 0, "exit code after SIGTERM:\n{output}");
    let connection =
        rusqlite::Connection::open(dir.path().join("data").join(candlecast::store::SQLITE_FILE))
            .unwrap();
    let rows: i64 = connection
        .query_row("SELECT COUNT(*) FROM candles", [], |r| r.get(0))
        .unwrap();
    assert!(
        rows >= 5 * 11,
        "the default ./data store holds the backfilled candles ({rows})"
    );
}

#[tokio::test]
async fn a_dotenv_file_points_it_at_mongodb() {
    let fake = FakeExchange::start(&SYMBOLS).await;
    let database = unique_database("candlecast_cli");
    let dir = tempfile::tempdir().unwrap();
    let mut dotenv = format!(
        "MONGO_URI={}\nMONGO_DATABASE={database}\n",
        mongo_test_uri()
    );
    for (name, value) in fake_env(&fake) {
        dotenv.push_str(&format!("{name}={value}\n"));
    }
    std::fs::write(dir.path().join(".env"), dotenv).unwrap();

    let mut running = Running::start(dir, &[]);
    let address = running.wait_for_address().await;
    assert!(running.output().contains("using MongoDB store"));
    let mut client = Client::connect(&format!("ws://{address}/")).await;
    let messages = client.next_n(5).await;
    assert!(
        messages
            .iter()
            .all(|m| m["values"].as_array().unwrap().len() == 10),
        "{messages:?}"
    );

    let backend = Backend::Mongo {
        uri: mongo_test_uri(),
        database,
    };
    // Stored before the stop, not raced against the shutdown's write grace.
    let mut stored = Vec::new();
    for symbol in SYMBOLS {
        stored.push(backend.wait_for_at_least(symbol, 11).await);
    }
    let (code, output, dir) = running.terminate().await;
    assert_eq!(code, 0, "{output}");
    for (symbol, stored) in SYMBOLS.iter().zip(stored) {
        assert!(
            stored >= 11,
            "{symbol} stored in MongoDB: {stored}\n{output}"
        );
    }
    assert!(
        !output.contains("embedded SQLite"),
        "must not fall back to the embedded store"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing written under ./data"
    );
}

const VARIABLES: [&str; 26] = [
    "PORT",
    "BIND_ADDR",
    "MONGO_URI",
    "MONGO_DATABASE",
    "MONGO_COLLECTION",
    "DATA_DIR",
    "SYMBOLS",
    "INTERVAL",
    "HISTORY_LEN",
    "BINANCE_WS_URL",
    "BINANCE_REST_URL",
    "TIME_ZONE",
    "RUST_LOG",
    "UPSTREAM_BACKOFF_MAX_SECS",
    "UPSTREAM_STALE_SECS",
    "UPSTREAM_MAX_AGE_SECS",
    "CLIENT_SEND_TIMEOUT_SECS",
    "CLIENT_PING_SECS",
    "MAX_CONNECTIONS",
    "HISTORY_MAX",
    "LOG_FORMAT",
    "INGEST",
    "CORS_ALLOW_ORIGINS",
    "INTERVALS",
    "LIVE_INTERVAL_MS",
    "PROXY_PROTOCOL",
];

#[test]
fn env_example_and_the_configuration_page_cover_every_variable_with_its_default() {
    let example = std::fs::read_to_string(repo_root().join(".env.example")).unwrap();
    // The README lists the variables set most often; the configuration page all.
    let reference =
        std::fs::read_to_string(repo_root().join("docs").join("configuration.md")).unwrap();
    let mut set = std::collections::HashMap::new();
    for line in example.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let assignment = line.trim_start_matches("# ");
        if let Some((name, value)) = assignment.split_once('=')
            && !line.starts_with('#')
        {
            set.insert(name.to_owned(), value.to_owned());
        }
    }
    for variable in VARIABLES {
        assert!(
            example.contains(&format!("{variable}=")),
            ".env.example lacks {variable}"
        );
        assert!(
            reference.contains(&format!("| `{variable}` |")),
            "docs/configuration.md's table lacks {variable}"
        );
    }
    // Copying .env.example to .env changes nothing: its values are the defaults.
    let from_example =
        candlecast::config::Config::from_lookup(|name| set.get(name).cloned()).unwrap();
    let defaults = candlecast::config::Config::from_lookup(|_| None).unwrap();
    assert_eq!(format!("{from_example:?}"), format!("{defaults:?}"));
}

#[test]
fn a_dotenv_line_that_does_not_parse_is_named_without_its_value() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "PORT=8080\nMONGO_URI='mongodb://app:it's-s3cret@h/'\n",
    )
    .unwrap();
    let output = binary().current_dir(dir.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 2 (MONGO_URI)"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}
