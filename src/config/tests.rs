//! Unit tests of reading the configuration.

use std::collections::HashMap;

use super::*;

pub(super) fn config_with(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|name| map.get(name).cloned())
}

#[test]
fn defaults_match_the_design() {
    let config = config_with(&[]).unwrap();
    assert_eq!(config.port, 8080);
    assert_eq!(config.bind_addr.to_string(), "::");
    assert_eq!(config.cors, crate::http::CorsOrigins::Any);
    assert!(config.store.mongo_uri.is_none());
    assert_eq!(config.store.mongo_database, "candlecast");
    assert_eq!(config.store.mongo_collection, "candles");
    assert_eq!(config.store.data_dir, PathBuf::from("./data"));
    assert_eq!(
        config.symbols,
        ["BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
    );
    assert_eq!(config.interval.name(), "1m");
    assert_eq!(config.interval.millis(), 60_000);
    assert_eq!(config.windows.history_len, 10);
    assert_eq!(config.windows.history_max, 100);
    assert_eq!(
        config.exchange.ws_url.as_str(),
        "wss://fstream.binance.com/market/stream"
    );
    assert_eq!(
        config.exchange.rest_url.as_str(),
        "https://fapi.binance.com/"
    );
    assert_eq!(config.windows.time_zone, Tz::UTC);
    assert_eq!(config.log.filter, "info");
    assert_eq!(config.exchange.stale_after, Duration::from_secs(30));
    assert_eq!(config.exchange.backoff_max, Duration::from_secs(30));
    assert_eq!(config.exchange.max_age, Duration::from_secs(82_800));
    assert_eq!(config.feed.send_timeout, Duration::from_secs(10));
    assert_eq!(config.feed.ping_every, Duration::from_secs(30));
    assert_eq!(config.feed.max_connections, 10_000);
}

#[test]
fn symbols_are_case_insensitive_and_keep_their_order() {
    let config = config_with(&[("SYMBOLS", " ethusdt, BtcUsdt ,,xrpusdt")]).unwrap();
    assert_eq!(config.symbols, ["ETHUSDT", "BTCUSDT", "XRPUSDT"]);
}

#[test]
fn each_bad_value_names_its_variable() {
    let cases = [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("PORT", "-1"),
        ("BIND_ADDR", "somewhere"),
        ("CORS_ALLOW_ORIGINS", "charts.example.com"),
        ("CORS_ALLOW_ORIGINS", "*,https://charts.example.com"),
        ("SYMBOLS", " , ,"),
        ("SYMBOLS", "BTC/USDT"),
        ("SYMBOLS", "BTC USDT"),
        ("SYMBOLS", "btcusdt@kline_1m"),
        ("SYMBOLS", "BTC\u{7}USDT"),
        ("SYMBOLS", "btcusdt,BTCUSDT"),
        ("INTERVAL", "7m"),
        ("HISTORY_LEN", "0"),
        ("HISTORY_LEN", "ten"),
        ("TIME_ZONE", "Mars/Olympus"),
        ("MONGO_URI", "postgres://localhost"),
        ("MONGO_URI", "mongodb://"),
        (
            "BINANCE_WS_URL",
            "https://fstream.binance.com/market/stream",
        ),
        ("BINANCE_REST_URL", "not a url"),
        ("MONGO_DATABASE", "a.b"),
        ("RUST_LOG", "info,[[["),
        ("PORT", "  "),
        ("UPSTREAM_STALE_SECS", "0"),
        ("UPSTREAM_BACKOFF_MAX_SECS", "1.5"),
        ("UPSTREAM_MAX_AGE_SECS", "90000"),
        ("CLIENT_SEND_TIMEOUT_SECS", "0"),
        ("CLIENT_PING_SECS", "soon"),
        ("MAX_CONNECTIONS", "0"),
        ("LOG_FORMAT", "xml"),
        ("HISTORY_MAX", "0"),
        ("INTERVALS", "1m,2m"),
        ("INTERVALS", "1M"),
        ("INTERVALS", "3d"),
        ("INTERVALS", " , "),
        ("INTERVALS", "5m,5m"),
        ("LIVE_INTERVAL_MS", "-1"),
        ("LIVE_INTERVAL_MS", "60001"),
    ];
    for (var, value) in cases {
        let err =
            config_with(&[(var, value)]).expect_err(&format!("{var}={value:?} should be rejected"));
        assert_eq!(err.var, var, "{var}={value:?} gave {err}");
        assert!(err.to_string().contains(var), "{err}");
    }
}

#[test]
fn a_follower_needs_mongodb() {
    let err = config_with(&[("INGEST", "false")]).unwrap_err();
    assert_eq!(err.var, "INGEST");
    assert!(err.to_string().contains("MONGO_URI"), "{err}");
    let follower =
        config_with(&[("INGEST", "false"), ("MONGO_URI", "mongodb://db:27017")]).unwrap();
    assert!(!follower.ingest);
    assert!(config_with(&[]).unwrap().ingest);
    assert_eq!(
        config_with(&[("INGEST", "maybe")]).unwrap_err().var,
        "INGEST"
    );
}

#[test]
fn cors_origins_are_any_by_default_a_list_when_given_and_off_when_empty() {
    use crate::http::CorsOrigins;
    let list = config_with(&[("CORS_ALLOW_ORIGINS", "https://charts.example.com")]).unwrap();
    assert_eq!(
        list.cors,
        CorsOrigins::List(vec!["https://charts.example.com".into()])
    );
    let off = config_with(&[("CORS_ALLOW_ORIGINS", "")]).unwrap();
    assert_eq!(off.cors, CorsOrigins::Off);
    assert!(off.summary().contains("CORS_ALLOW_ORIGINS=(empty: off) "));
}

#[test]
fn blank_mongo_uri_means_the_embedded_store() {
    let config = config_with(&[("MONGO_URI", "")]).unwrap();
    assert!(config.store.mongo_uri.is_none());
}

#[test]
fn the_mongo_password_never_shows() {
    let config = config_with(&[(
        "MONGO_URI",
        "mongodb://alice:s3cr%40t@db.example:27017/?authSource=admin",
    )])
    .unwrap();
    let uri = config.store.mongo_uri.as_ref().unwrap();
    assert_eq!(
        uri.expose(),
        "mongodb://alice:s3cr%40t@db.example:27017/?authSource=admin"
    );
    assert_eq!(
        uri.to_string(),
        "mongodb://alice:***@db.example:27017/?authSource=admin"
    );
    assert!(!format!("{config:?}").contains("s3cr"));
    assert!(
        config
            .summary()
            .contains("MONGO_URI=mongodb://alice:***@db.example:27017/")
    );
    assert!(!config.summary().contains("s3cr"));
    assert_eq!(
        uri.scrub("auth failed for s3cr@t and s3cr%40t"),
        "auth failed for *** and ***"
    );

    let err = config_with(&[("MONGO_URI", "mongodb://bob:hunter2@host:notaport")]).unwrap_err();
    assert_eq!(err.var, "MONGO_URI");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn the_startup_line_hides_the_password_where_it_stands() {
    let config = config_with(&[("MONGO_URI", "mongodb://admin:admin@h")]).unwrap();
    assert!(
        config
            .summary()
            .contains("MONGO_URI=mongodb://admin:***@h "),
        "{}",
        config.summary()
    );
}

#[test]
fn symbols_the_exchange_lists_are_accepted_whatever_their_alphabet() {
    let config = config_with(&[("SYMBOLS", "btcusdt_260626,币安人生USDT,1000pepeusdt")]).unwrap();
    assert_eq!(
        config.symbols,
        ["BTCUSDT_260626", "币安人生USDT", "1000PEPEUSDT"]
    );
}

#[test]
fn intervals_are_served_shortest_first_with_the_base_always_among_them() {
    let names = |config: &Config| -> Vec<String> {
        config
            .intervals
            .iter()
            .map(|i| i.name().to_owned())
            .collect()
    };
    let defaults = config_with(&[]).unwrap();
    assert_eq!(names(&defaults), ["1m", "5m", "15m", "1h", "4h", "1d"]);
    assert_eq!(defaults.feed.live_interval, Duration::from_millis(250));
    let chosen = config_with(&[("INTERVALS", "1d, 15m,1w")]).unwrap();
    assert_eq!(names(&chosen), ["1m", "15m", "1d", "1w"]);
    // A longer base: the default list keeps only its multiples.
    let hourly = config_with(&[("INTERVAL", "1h")]).unwrap();
    assert_eq!(names(&hourly), ["1h", "4h", "1d"]);
    let err = config_with(&[("INTERVAL", "1h"), ("INTERVALS", "1h,5m")]).unwrap_err();
    assert_eq!(err.var, "INTERVALS");
    assert!(err.reason.contains("multiple of INTERVAL=1h"), "{err}");
    let every_update = config_with(&[("LIVE_INTERVAL_MS", "0")]).unwrap();
    assert_eq!(every_update.feed.live_interval, Duration::ZERO);
}

/// Each alias alone, with a password, as a platform sets it.
const ALIASES: [&str; 9] = [
    "MONGODB_URI",
    "MONGO_PRIVATE_URL",
    "MONGO_URL",
    "MONGO_PUBLIC_URL",
    "MONGODB_URL",
    "ORMONGO_URL",
    "MONGOLAB_URI",
    "MONGOHQ_URL",
    "DATABASE_URL",
];

#[test]
fn each_alias_of_mongo_uri_selects_mongodb_and_is_named() {
    assert_eq!(&MONGO_URI_VARIABLES[1..], ALIASES);
    for alias in ALIASES {
        let config = config_with(&[(
            alias,
            "mongodb://mongo:Pw0rd99@mongodb.railway.internal:27017",
        )])
        .unwrap();
        let uri = config.store.mongo_uri.as_ref().expect(alias);
        assert_eq!(
            uri.expose(),
            "mongodb://mongo:Pw0rd99@mongodb.railway.internal:27017"
        );
        assert_eq!(config.store.mongo_uri_variable, alias);
        let summary = config.summary();
        assert!(
            summary.contains(&format!(
                "{alias}=mongodb://mongo:***@mongodb.railway.internal:27017 "
            )),
            "the startup line names {alias}: {summary}"
        );
        assert!(!summary.contains("Pw0rd99"), "{summary}");
        assert!(!format!("{config:?}").contains("Pw0rd99"));
        assert!(config.store.mongo_alias_warnings.is_empty());
    }
    let srv = config_with(&[("MONGODB_URI", "mongodb+srv://u:p@cluster0.example.net/")]).unwrap();
    assert_eq!(srv.store.mongo_uri_variable, "MONGODB_URI");
    assert_eq!(
        config_with(&[]).unwrap().store.mongo_uri_variable,
        "MONGO_URI"
    );
}

#[test]
fn mongo_uri_wins_and_the_aliases_keep_a_fixed_order() {
    let all: Vec<(&str, String)> = MONGO_URI_VARIABLES
        .iter()
        .map(|var| {
            (
                *var,
                format!("mongodb://{}.example:27017", var.to_lowercase()),
            )
        })
        .collect();
    // Remove the winner each round: the next in the list takes over.
    for (at, expected) in MONGO_URI_VARIABLES.iter().enumerate() {
        let vars: Vec<(&str, &str)> = all[at..].iter().map(|(k, v)| (*k, v.as_str())).collect();
        let config = config_with(&vars).unwrap();
        assert_eq!(config.store.mongo_uri_variable, *expected);
        assert_eq!(
            config.store.mongo_uri.unwrap().expose(),
            format!("mongodb://{}.example:27017", expected.to_lowercase())
        );
    }
    // A shadowed alias is not read at all, even when it would not parse.
    let config = config_with(&[
        ("MONGO_URI", "mongodb://primary:27017"),
        ("MONGO_URL", "mongodb://"),
    ])
    .unwrap();
    assert_eq!(config.store.mongo_uri_variable, "MONGO_URI");
}

#[test]
fn an_alias_that_is_not_mongodb_is_ignored_with_a_warning_naming_it() {
    let config = config_with(&[("DATABASE_URL", "postgres://app:Secr3tPg@pg:5432/app")]).unwrap();
    assert!(config.store.mongo_uri.is_none(), "the embedded store");
    let warnings = &config.store.mongo_alias_warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("DATABASE_URL"), "{warnings:?}");
    assert!(warnings[0].contains("postgres"), "{warnings:?}");
    assert!(!warnings[0].contains("Secr3tPg"), "{warnings:?}");
    // Passed over, the next alias is used; the warning stays.
    let config = config_with(&[
        ("MONGO_URL", "redis://default:Secr3t@redis:6379"),
        ("DATABASE_URL", "mongodb://db:27017"),
    ])
    .unwrap();
    assert_eq!(config.store.mongo_uri_variable, "DATABASE_URL");
    assert!(config.store.mongo_alias_warnings[0].contains("MONGO_URL"));
    // Under DATABASE_URL a value without a scheme is not taken for MongoDB either.
    let config = config_with(&[("DATABASE_URL", "host=pg user=app")]).unwrap();
    assert!(config.store.mongo_uri.is_none());
    assert_eq!(config.store.mongo_alias_warnings.len(), 1);
}

#[test]
fn a_malformed_mongodb_value_is_an_error_naming_its_variable() {
    for var in ["MONGO_URI", "MONGO_URL", "MONGODB_URI", "DATABASE_URL"] {
        for value in ["mongodb://", "mongodb://u:Hunt3r2@host:notaport/"] {
            let err = config_with(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{var}={value}: {err}");
            assert!(!err.to_string().contains("Hunt3r2"), "{err}");
        }
    }
    // Our own variable holds only MongoDB strings; a Mongo-named alias without a
    // scheme is a malformed MongoDB string.
    assert_eq!(
        config_with(&[("MONGO_URI", "postgres://localhost")])
            .unwrap_err()
            .var,
        "MONGO_URI"
    );
    assert_eq!(
        config_with(&[("MONGO_URL", "localhost:27017")])
            .unwrap_err()
            .var,
        "MONGO_URL"
    );
}

#[test]
fn a_follower_may_take_its_database_from_an_alias() {
    let follower =
        config_with(&[("INGEST", "false"), ("MONGO_URL", "mongodb://db:27017")]).unwrap();
    assert!(!follower.ingest);
}

#[test]
fn proxy_protocol_is_off_unless_set_and_a_bad_value_names_it() {
    use crate::http::ProxyProtocol;
    let config = config_with(&[]).unwrap();
    assert_eq!(config.proxy_protocol, ProxyProtocol::Off);
    assert!(config.summary().contains("PROXY_PROTOCOL=off "));
    let v1 = config_with(&[("PROXY_PROTOCOL", "v1")]).unwrap();
    assert_eq!(v1.proxy_protocol, ProxyProtocol::V1);
    for bad in ["v3", "haproxy", ""] {
        let err = config_with(&[("PROXY_PROTOCOL", bad)]).unwrap_err();
        assert_eq!(err.var, "PROXY_PROTOCOL", "{bad}: {err}");
    }
}

#[test]
fn the_platform_is_read_for_the_ephemeral_disk_warning() {
    let config = config_with(&[
        ("RAILWAY_ENVIRONMENT", "production"),
        ("RAILWAY_VOLUME_MOUNT_PATH", "/data"),
    ])
    .unwrap();
    assert_eq!(
        config.store.platform.railway_environment.as_deref(),
        Some("production")
    );
    assert_eq!(
        config.store.platform.railway_volume,
        Some(PathBuf::from("/data"))
    );
}
