//! Binance's own USD-M market-data protocol, served from candlecast's candles
//! (DESIGN.md §8): streams and their control messages here; the websocket I/O lives
//! in `http`, which imports this module, never the reverse.

pub mod stream;
