//! Everything public the mirror does not serve itself goes to the exchange verbatim,
//! within the weight budget; keyed or signed requests never do.

use crate::common::mirror::*;
use crate::common::*;
use crate::same_as_exchange;
use serde_json::json;

#[tokio::test]
async fn other_public_endpoints_are_forwarded_verbatim() {
    let backend = Backend::sqlite();
    let fake = FakeExchange::start_sized(
        &[
            "BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT",
        ],
        120,
    )
    .await;
    let app = TestApp::spawn(config_for(&fake, &backend, &[])).await;
    settled(&fake).await;
    let ours = mirror_get(&app, "/fapi/v1/ticker/price?symbol=ETHUSDT").await;
    let theirs = exchange_get(&fake, "/fapi/v1/ticker/price?symbol=ETHUSDT").await;
    assert_eq!((ours.status, &ours.body), (200, &theirs.body));
    assert_eq!(ours.headers["content-type"], theirs.headers["content-type"]);
    assert_eq!(ours.headers["x-mbx-used-weight-1m"], "7");
    assert_eq!(ours.headers["x-mbx-used-weight"], "7");
    assert!(ours.headers.get("x-fake-private").is_none());
    let log = fake.rest_log();
    assert_eq!(
        log.iter()
            .filter(|p| *p == "/fapi/v1/ticker/price?symbol=ETHUSDT")
            .count(),
        2
    );
    // An error answer is the exchange's too.
    let missing = mirror_get(&app, "/fapi/v1/ticker/price?symbol=NOPE").await;
    assert_eq!(
        (missing.status, missing.json()["code"].clone()),
        (400, json!(-1121))
    );
    // A symbol the exchange lists but SYMBOLS does not follow: klines forwarded.
    let query = "symbol=DOGEUSDT&interval=1m&limit=20";
    same_as_exchange(&fake, &app, query).await;
    assert_eq!(
        fake.rest_log()
            .iter()
            .filter(|p| p.ends_with(query))
            .count(),
        2
    );
}

#[tokio::test]
async fn the_weight_budget_answers_binance_s_429_instead_of_the_exchange() {
    let backend = Backend::sqlite();
    let (fake, app) = mirror_on(&backend, 120, &[("MIRROR_WEIGHT_PER_MINUTE", "12")]).await;
    let path = "/fapi/v1/ticker/price"; // weight 2 without a symbol
    let mut passed = 0;
    let mut refused = None;
    for _ in 0..10 {
        let answer = mirror_get(&app, path).await;
        match answer.status {
            200 => passed += 1,
            429 => {
                refused = Some(answer);
                break;
            }
            other => panic!("{other}: {}", answer.body),
        }
    }
    let refused = refused.expect("the budget ran out");
    assert_eq!(refused.json()["code"], -1003);
    // USD-M's own wording ("Error Codes", -1003).
    assert_eq!(
        refused.json()["msg"],
        "Too many requests; current limit is 12 requests per minute. Please use the \
         websocket for live updates to avoid polling the API."
    );
    let retry: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(
        fake.rest_log().iter().filter(|p| *p == path).count(),
        passed,
        "the refused one never reached the exchange"
    );
}

#[tokio::test]
async fn keyed_or_signed_requests_are_refused_not_forwarded() {
    let backend = Backend::sqlite();
    let (fake, app) = mirror_on(&backend, 120, &[]).await;
    let base = format!("http://{}", app.addr);
    let keyed = get_at(
        &base,
        "/fapi/v1/ticker/price?symbol=BTCUSDT",
        &[("X-MBX-APIKEY", "k")],
    )
    .await;
    let signed = get_at(&base, "/fapi/v2/account?timestamp=1&signature=abc", &[]).await;
    // Klines candlecast does not build itself are forwarded, so refused the same.
    let keyed_klines = get_at(
        &base,
        "/fapi/v1/klines?symbol=BTCUSDT&interval=3d&limit=2",
        &[("X-MBX-APIKEY", "k")],
    )
    .await;
    let signed_klines = get_at(
        &base,
        "/fapi/v1/klines?symbol=BTCUSDT&interval=1M&signature=abc",
        &[],
    )
    .await;
    for answer in [keyed, signed, keyed_klines, signed_klines] {
        assert_eq!(answer.status, 403);
        assert_eq!(answer.json()["code"], -2015);
        assert!(
            answer.json()["msg"]
                .as_str()
                .unwrap()
                .contains("public market data only")
        );
    }
    assert!(!fake.rest_log().iter().any(|p| p.contains("ticker")
        || p.contains("account")
        || p.contains("interval=3d")
        || p.contains("interval=1M")));
}

#[tokio::test]
async fn a_ban_from_the_exchange_is_passed_on_and_kept_to() {
    let backend = Backend::sqlite();
    let (fake, app) = mirror_on(&backend, 900, &[]).await;
    let first = fake.history("BTCUSDT")[0].open_time;
    fake.ban_rest(418, 30);
    let not_held = format!("/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={first}&limit=10");
    let answer = mirror_get(&app, &not_held).await;
    assert_eq!(answer.status, 418, "{}", answer.body);
    assert_eq!(answer.json()["code"], -1003);
    let msg = answer.json()["msg"].as_str().unwrap().to_owned();
    assert!(
        msg.starts_with("Way too many requests; IP banned until ")
            && msg.ends_with(". Please use the websocket for live updates to avoid bans."),
        "{msg}"
    );
    let retry: u64 = answer.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    // Nothing more reaches the exchange until the ban ends...
    let forwarded = mirror_get(&app, "/fapi/v1/ticker/price?symbol=BTCUSDT").await;
    assert_eq!(forwarded.status, 418);
    assert!(!fake.rest_log().iter().any(|p| p.contains("ticker")));
    // ...while what the service holds is still answered.
    let now = this_minute();
    let held = format!(
        "/fapi/v1/klines?symbol=BTCUSDT&interval=1m&startTime={}&endTime={}",
        now - 60 * MINUTE,
        now - 31 * MINUTE
    );
    let answer = mirror_get(&app, &held).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json().as_array().unwrap().len(), 30);
}
