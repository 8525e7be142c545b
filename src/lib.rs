//! candlecast: a persisted, live window of Binance USD-M futures candles, fanned out to
//! any number of websocket clients. The modules, from the bottom up:
//!
//! - [`candle`]: the domain (candles, intervals, BUY/SELL), no I/O;
//! - [`retry`], [`clock`], [`metrics`], [`health`], [`telemetry`]: shared mechanisms;
//! - [`hub`]: the in-memory windows and the messages every client shares;
//! - [`store`]: MongoDB and SQLite, the write queue, the change stream;
//! - [`read`]: the one read path over the hub, the write queue and the store;
//! - [`exchange`]: the Binance stream and REST backfill;
//! - [`http`]: the websocket feed, history API, health, readiness, metrics, page;
//! - [`config`]: the environment, read once into each area's options;
//! - [`app`]: the lifecycle that wires them, and the change-stream follower;
//! - [`backfill`]: the `backfill` command, a range of history into the store;
//! - [`cli`]: the command line, `serve` (the default) or `backfill`.

pub mod app;
pub mod backfill;
pub mod candle;
pub mod cli;
pub mod clock;
pub mod config;
pub mod exchange;
pub mod health;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod mirror;
pub mod read;
pub mod retry;
pub mod store;
pub mod telemetry;

pub use app::{App, AppError, StartError, run, run_until};
