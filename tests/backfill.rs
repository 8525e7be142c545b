//! `candlecast backfill` as an operator runs it: a range of history from the
//! exchange into the store, each candle once; only what the store lacks; resumable
//! after Ctrl-C; paced by request weight; bans honoured; its exit codes. The
//! store's stories run on MongoDB and SQLite.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use candlecast::candle::Candle;
use candlecast::exchange::klines_weight;
use common::backfill::{self as command, answered, open_times, rfc3339, served};
use common::binary::{Running, fake_env};
use common::*;

async fn fills_a_range_exactly_and_a_rerun_fetches_nothing(backend: Backend) {
    let symbols = ["BTCUSDT", "ETHUSDT"];
    let fake = FakeExchange::start_sized(&symbols, 300).await;
    let env = command::env_for(&fake, &backend, &symbols);
    let history = fake.history("BTCUSDT");
    let (from, to) = (history[50].open_time, history[250].open_time);
    // Half a minute before a candle opens: the range starts with that candle.
    let args = command::range(from - 30_000, to);

    let first = command::run(&env, &args).await;
    assert_eq!(first.code, 0, "{}", first.output());
    for symbol in symbols {
        let expected = fake.history(symbol)[50..250].to_vec();
        assert_same_candles(&backend.stored(symbol).await, &expected, symbol);
        for line in [
            format!("{symbol}: 200 candles in range, 0 stored, 200 to fetch in 1 range:"),
            format!("  [{}, {}) 200 candles", rfc3339(from), rfc3339(to)),
            format!("{symbol}: fetched 200, stored 200, already present 0: complete"),
        ] {
            assert!(first.stdout.contains(&line), "{line}\n{}", first.output());
        }
    }
    for request in fake.rest_requests() {
        let (start, end) = (request.start_time.unwrap(), request.end_time.unwrap());
        assert!(
            from <= start && end < to,
            "asked outside the range: {request:?}"
        );
    }

    let asked = fake.rest_requests().len();
    let second = command::run(&env, &args).await;
    assert_eq!(second.code, 0, "{}", second.output());
    assert_eq!(
        fake.rest_requests().len(),
        asked,
        "a rerun asks for no klines"
    );
    assert!(
        second
            .stdout
            .contains("BTCUSDT: 200 candles in range, all stored")
    );
    assert!(
        second.stdout.contains("Nothing to fetch"),
        "{}",
        second.output()
    );
}

#[tokio::test]
async fn fills_a_range_exactly_and_a_rerun_fetches_nothing_on_mongodb() {
    fills_a_range_exactly_and_a_rerun_fetches_nothing(Backend::mongo()).await;
}

#[tokio::test]
async fn fills_a_range_exactly_and_a_rerun_fetches_nothing_on_sqlite() {
    fills_a_range_exactly_and_a_rerun_fetches_nothing(Backend::sqlite()).await;
}

async fn only_the_holes_are_fetched(backend: Backend) {
    let fake = FakeExchange::start_sized(&["BTCUSDT"], 300).await;
    let env = command::env_for(&fake, &backend, &["BTCUSDT"]);
    let range = fake.history("BTCUSDT")[50..250].to_vec();
    let is_hole = |i: usize| (30..40).contains(&i) || i == 150;
    let held: Vec<Candle> = (0..range.len())
        .filter(|i| !is_hole(*i))
        .map(|i| range[i].clone())
        .collect();
    seed(&backend, &held).await;

    let args = command::range(range[0].open_time, range[199].open_time + MINUTE);
    let run = command::run(&env, &args).await;
    assert_eq!(run.code, 0, "{}", run.output());
    let t = |i: usize| rfc3339(range[i].open_time);
    for line in [
        "BTCUSDT: 200 candles in range, 189 stored, 11 to fetch in 2 ranges:".to_owned(),
        format!("  [{}, {}) 10 candles", t(30), t(40)),
        format!("  [{}, {}) 1 candle", t(150), t(151)),
        "BTCUSDT: fetched 11, stored 11, already present 189: complete".to_owned(),
    ] {
        assert!(run.stdout.contains(&line), "{line}\n{}", run.output());
    }
    let holes: Vec<i64> = (0..range.len())
        .filter(|i| is_hole(*i))
        .map(|i| range[i].open_time)
        .collect();
    assert_eq!(served(&fake, "BTCUSDT"), holes, "only the holes are served");
    assert_same_candles(&backend.stored("BTCUSDT").await, &range, "BTCUSDT");
}

#[tokio::test]
async fn only_the_holes_are_fetched_on_mongodb() {
    only_the_holes_are_fetched(Backend::mongo()).await;
}

#[tokio::test]
async fn only_the_holes_are_fetched_on_sqlite() {
    only_the_holes_are_fetched(Backend::sqlite()).await;
}

async fn an_interrupted_run_keeps_its_pages_and_the_next_one_completes(backend: Backend) {
    let fake = FakeExchange::start_sized(&["BTCUSDT"], 500).await;
    // 10 rows a page: 40 paced requests, about 3.5 s, time enough to press Ctrl-C.
    fake.set_page_cap(10);
    let env = command::env_for(&fake, &backend, &["BTCUSDT"]);
    let range = fake.history("BTCUSDT")[50..450].to_vec();
    let args = command::range(range[0].open_time, range[399].open_time + MINUTE);
    // The store exists before the test reads it while the backfill writes.
    seed(&backend, &[]).await;

    let running = command::start(&env, &args);
    eventually_async(20, "the backfill stored some pages", || async {
        backend.stored("BTCUSDT").await.len() >= 30
    })
    .await;
    let stopped = running.interrupt().await;
    assert_eq!(stopped.code, 1, "{}", stopped.output());
    assert!(
        stopped.stderr.contains("interrupted before completion"),
        "{}",
        stopped.output()
    );
    assert!(
        stopped.stdout.contains("BTCUSDT: fetched"),
        "{}",
        stopped.output()
    );
    let kept = open_times(&backend.stored("BTCUSDT").await);
    assert!(kept.len() < 400, "stopped before the end: {}", kept.len());
    let mut fetched = served(&fake, "BTCUSDT");
    fetched.sort_unstable();
    assert_eq!(
        kept, fetched,
        "every page fetched before the signal is stored"
    );

    let resumed = command::run(&env, &args).await;
    assert_eq!(resumed.code, 0, "{}", resumed.output());
    let left = format!("{} to fetch in 1 range", 400 - kept.len());
    assert!(
        resumed.stdout.contains(&left),
        "{left}\n{}",
        resumed.output()
    );
    assert_same_candles(&backend.stored("BTCUSDT").await, &range, "BTCUSDT");
    let served = served(&fake, "BTCUSDT");
    let distinct: BTreeSet<i64> = served.iter().copied().collect();
    assert_eq!(served.len(), distinct.len(), "no candle fetched twice");
    assert_eq!(distinct.len(), 400);
}

#[tokio::test]
async fn an_interrupted_run_keeps_its_pages_and_the_next_one_completes_on_mongodb() {
    an_interrupted_run_keeps_its_pages_and_the_next_one_completes(Backend::mongo()).await;
}

#[tokio::test]
async fn an_interrupted_run_keeps_its_pages_and_the_next_one_completes_on_sqlite() {
    an_interrupted_run_keeps_its_pages_and_the_next_one_completes(Backend::sqlite()).await;
}

#[tokio::test]
async fn requests_are_paced_under_1200_weight_a_minute() {
    let symbols = ["BTCUSDT", "ETHUSDT"];
    let fake = FakeExchange::start_sized(&symbols, 800).await;
    // 50 rows a page: each symbol's 700 candles take 14 requests of shrinking limits
    // (and weights 5, 2 and 1), the two symbols sharing one budget.
    fake.set_page_cap(50);
    let backend = Backend::sqlite();
    let env = command::env_for(&fake, &backend, &symbols);
    let history = fake.history("BTCUSDT");
    let args = command::range(history[50].open_time, history[750].open_time);
    let run = command::run(&env, &args).await;
    assert_eq!(run.code, 0, "{}", run.output());

    let mut requests = answered(&fake);
    requests.sort_by_key(|r| r.at);
    assert_eq!(requests.len(), 28, "{requests:#?}");
    let weights: Vec<u32> = requests
        .iter()
        .map(|r| klines_weight(r.limit.unwrap()))
        .collect();
    // 1,200 a minute is 50 ms per unit of weight: between any two requests, at least
    // the weight of those sent before the later one. The slack is for the fake's
    // clock, read when a request is handled: a stall of the test process on a busy
    // machine can bunch up two arrivals, never the sending.
    let per_weight = Duration::from_millis(50);
    for i in 0..requests.len() {
        let mut owed = Duration::ZERO;
        for j in i + 1..requests.len() {
            owed += per_weight * weights[j - 1];
            let took = requests[j].at - requests[i].at;
            assert!(
                took + Duration::from_millis(150) >= owed,
                "requests {i}..{j} weigh {owed:?} of the budget but took {took:?}"
            );
        }
    }
    let span = requests.last().unwrap().at - requests[0].at;
    let weight: u32 = weights[..weights.len() - 1].iter().sum();
    let pace = f64::from(weight) / span.as_secs_f64() * 60.0;
    eprintln!("paced at {pace:.0} weight a minute ({weight} weight in {span:?})");
    assert!(pace <= 1260.0, "{pace:.0} weight a minute");
}

#[tokio::test]
async fn a_429_or_418_with_retry_after_is_waited_out() {
    let symbols = ["BTCUSDT", "ETHUSDT"];
    for status in [429, 418] {
        let fake = FakeExchange::start_sized(&symbols, 200).await;
        if status == 429 {
            fake.fail_rest(&[(429, Some(2))]);
        } else {
            fake.ban_rest(418, 2);
        }
        let backend = Backend::sqlite();
        let env = command::env_for(&fake, &backend, &symbols);
        let history = fake.history("BTCUSDT");
        let args = command::range(history[50].open_time, history[150].open_time);
        let run = command::run(&env, &args).await;
        assert_eq!(run.code, 0, "{status}: {}", run.output());
        for symbol in symbols {
            let expected = fake.history(symbol)[50..150].to_vec();
            assert_same_candles(&backend.stored(symbol).await, &expected, symbol);
        }
        // One refusal; the other symbol's request, waiting its turn, waits for the
        // ban's end too rather than ask during it.
        let requests = fake.rest_requests();
        let refused = &requests[0];
        assert_eq!(refused.status, status, "{requests:#?}");
        for answered in &requests[1..] {
            assert_eq!(answered.status, 200, "{status}: {requests:#?}");
            let waited = answered.at - refused.at;
            assert!(
                waited >= Duration::from_millis(1900),
                "{status}: asked again after {waited:?}, before Retry-After: 2"
            );
        }
        assert!(run.stderr.contains("retry_in"), "{}", run.output());
    }
}

#[tokio::test]
async fn minutes_before_a_listing_cost_a_probe_not_a_page_each() {
    let fake = FakeExchange::start_sized(&["BTCUSDT"], 200).await;
    let backend = Backend::sqlite();
    let env = command::env_for(&fake, &backend, &["BTCUSDT"]);
    let listed = fake.history("BTCUSDT")[..100].to_vec();
    // From 3,000 minutes before the first candle the exchange has.
    let args = command::range(
        listed[0].open_time - 3_000 * MINUTE,
        listed[99].open_time + MINUTE,
    );
    let run = command::run(&env, &args).await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert_same_candles(&backend.stored("BTCUSDT").await, &listed, "BTCUSDT");
    let summary = "BTCUSDT: fetched 100, stored 100, already present 0: complete \
                   (the exchange has no candle for 3000 of the missing open times)";
    assert!(run.stdout.contains(summary), "{}", run.output());
    // An empty page of 1,000, then one row asked for alone finds the listing.
    let limits: Vec<usize> = fake
        .rest_requests()
        .iter()
        .map(|r| r.limit.unwrap())
        .collect();
    assert_eq!(limits, [1000, 1, 99]);

    // What the exchange does not have stays missing: asked again, never stored.
    let again = command::run(&env, &args).await;
    assert_eq!(again.code, 0, "{}", again.output());
    assert_eq!(
        fake.rest_requests().len(),
        5,
        "an empty page and an empty probe"
    );
}

#[tokio::test]
async fn a_symbol_the_exchange_refuses_fails_with_its_reason() {
    let fake = FakeExchange::start_sized(&["BTCUSDT"], 200).await;
    let backend = Backend::sqlite();
    let range = fake.history("BTCUSDT")[50..150].to_vec();
    let args = command::range(range[0].open_time, range[99].open_time + MINUTE);

    // With exchangeInfo unanswered, klines' -1121 is what refuses the symbol.
    fake.fail_exchange_info(true);
    let env = command::env_for(&fake, &backend, &["BTCUSDT", "NOPEUSDT"]);
    let run = command::run(&env, &args).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(
        run.stderr.contains("the exchange refuses NOPEUSDT"),
        "{}",
        run.output()
    );
    assert!(run.stderr.contains("Invalid symbol"), "{}", run.output());
    assert!(
        run.stdout
            .contains("NOPEUSDT: fetched 0, stored 0, already present 0: failed")
    );
    assert!(
        run.stdout
            .contains("BTCUSDT: fetched 100, stored 100, already present 0: complete")
    );
    assert_same_candles(&backend.stored("BTCUSDT").await, &range, "BTCUSDT");

    // A symbol exchangeInfo does not list is a configuration error, as for the
    // service, naming where it came from.
    fake.fail_exchange_info(false);
    let mut unlisted = args.clone();
    unlisted.extend(["--symbols".to_owned(), "btcusdt,NOPEUSDT".to_owned()]);
    let run = command::run(&command::env_for(&fake, &backend, &["BTCUSDT"]), &unlisted).await;
    assert_eq!(run.code, 2, "{}", run.output());
    let last = run.stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("--symbols") && last.contains("NOPEUSDT"),
        "{}",
        run.output()
    );
}

#[tokio::test]
async fn bad_arguments_and_settings_exit_2_with_one_line_naming_them() {
    let from = "--from=2025-06-30";
    let cases = [
        (vec!["--from", "yesterday"], None, "--from"),
        (vec![from, "--to", "2025-01-01"], None, "--to"),
        (vec![from, "--bogus"], None, "--bogus"),
        (vec![from, "--symbols", ""], None, "--symbols"),
        (vec![from, "--symbols", "BTC/USDT"], None, "--symbols"),
        (vec![], None, "--from"),
        (vec![from], Some(("SYMBOLS", " , ")), "SYMBOLS"),
        (vec![from], Some(("INTERVAL", "2m")), "INTERVAL"),
    ];
    for (args, setting, named) in cases {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env: Vec<(&str, String)> = setting
            .iter()
            .map(|(name, value)| (*name, value.to_string()))
            .collect();
        let run = command::run(&env, &args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.output());
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "{args:?}: {}",
            run.output()
        );
        assert!(run.stderr.contains(named), "{args:?}: {}", run.output());
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.output());
    }
}

#[tokio::test]
async fn an_unreachable_store_fails_without_showing_its_password() {
    let fake = FakeExchange::start_sized(&["BTCUSDT"], 100).await;
    let env = vec![
        (
            "MONGO_URI",
            "mongodb://candlecast:sup3r-s3cret@127.0.0.1:1/?serverSelectionTimeoutMS=300&connectTimeoutMS=300"
                .to_owned(),
        ),
        ("BINANCE_REST_URL", fake.rest_url()),
    ];
    let history = fake.history("BTCUSDT");
    let args = command::range(history[10].open_time, history[20].open_time);
    let run = command::run(&env, &args).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(run.stderr.contains("does not answer"), "{}", run.output());
    assert!(
        run.stderr.contains("candlecast:***@127.0.0.1:1"),
        "{}",
        run.output()
    );
    assert!(!run.output().contains("sup3r-s3cret"), "{}", run.output());
    assert!(
        fake.rest_requests().is_empty(),
        "nothing asked of the exchange"
    );
}

#[tokio::test]
async fn help_lists_both_commands_and_serve_runs_the_service() {
    let help = common::binary::binary().arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert_eq!(help.status.code(), Some(0), "{text}");
    assert!(
        text.contains("serve") && text.contains("backfill"),
        "{text}"
    );
    let help = common::binary::binary()
        .args(["backfill", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in ["--from", "--to", "--symbols"] {
        assert!(text.contains(flag), "{text}");
    }

    let fake = FakeExchange::start(&SYMBOLS).await;
    let mut running = Running::start_with(tempfile::tempdir().unwrap(), &fake_env(&fake), |c| {
        c.arg("serve");
    });
    running.wait_for_address().await;
    let (code, output, _) = running.terminate().await;
    assert_eq!(code, 0, "{output}");
}
