//! A stand-in for Binance on your machine, for trying candlecast offline:
//!
//! ```sh
//! cargo run --example fake_exchange            # listens on 127.0.0.1:9100
//! BINANCE_WS_URL=ws://127.0.0.1:9100/market/stream BINANCE_REST_URL=http://127.0.0.1:9100 cargo run --release
//! ```
//!
//! It serves two hours of made-up history over REST and closes a candle of every
//! symbol on the stream every few seconds (`--every-secs N`, default 5). It is the
//! same fake the integration tests use.

#[path = "../tests/common/fake_exchange.rs"]
mod fake_exchange;

use std::time::Duration;

use fake_exchange::FakeExchange;

const SYMBOLS: [&str; 5] = ["BTCUSDT", "BNBUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut port = 9100u16;
    let mut every = 5u64;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().unwrap_or_default().parse()?,
            "--every-secs" => every = args.next().unwrap_or_default().parse()?,
            other => anyhow::bail!("unknown argument {other}; expected --port N or --every-secs N"),
        }
    }
    let fake = FakeExchange::start_on(&SYMBOLS, ([127, 0, 0, 1], port).into()).await;
    println!(
        "fake exchange: BINANCE_WS_URL={} BINANCE_REST_URL={}",
        fake.ws_url(),
        fake.rest_url()
    );
    let mut tick = tokio::time::interval(Duration::from_secs(every.max(1)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for symbol in SYMBOLS {
                    let candle = fake.close_next(symbol);
                    println!("closed {symbol} {} at {}", candle.open_time, candle.close);
                }
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
