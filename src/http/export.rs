//! `GET /api/v1/candles/{symbol}?format=csv&from=&to=&interval=`: every closed candle
//! of a range as CSV in the columns of Binance's public kline files, streamed from
//! the read path in constant memory.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::candle::{Candle, Interval, utc_date};
use crate::store::{CandleStream, StoreError};

/// The header of Binance's public kline files (data.binance.vision), which tools
/// written for those files expect.
pub const CSV_HEADER: &str = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore";

/// Rows written into one chunk of the body.
const ROWS_PER_CHUNK: usize = 1000;

/// What one export answers.
pub(super) struct Export {
    pub symbol: String,
    pub interval: Interval,
    /// ms since the epoch (UTC), inclusive.
    pub from: i64,
    /// ms since the epoch (UTC), exclusive.
    pub to: i64,
}

impl Export {
    /// The CSV answer over `candles` (those of `[from, to)`, oldest first, as the
    /// read path streams them).
    pub(super) fn respond(self, candles: CandleStream) -> Response {
        let filename = format!(
            "{}-{}-{}-{}.csv",
            self.symbol,
            self.interval,
            utc_date(self.from),
            utc_date(self.to)
        );
        let chunks = candles.chunks(ROWS_PER_CHUNK);
        let header = futures_util::stream::once(std::future::ready(Ok::<_, StoreError>(
            Bytes::from(format!("{CSV_HEADER}\n")),
        )));
        let body = header.chain(chunks.map(move |chunk| {
            let candles: Vec<Candle> = chunk.into_iter().collect::<Result<_, _>>()?;
            Ok(Bytes::from(rows(&candles)))
        }));
        (
            [
                (header::CONTENT_TYPE, "text/csv".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{filename}\""),
                ),
            ],
            Body::from_stream(body.map(|chunk| {
                chunk.map_err(|err| {
                    tracing::warn!(error = %crate::telemetry::Chain(&err), "CSV export cut short by the store");
                    std::io::Error::other("the store failed during the export")
                })
            })),
        )
            .into_response()
    }
}

/// Candles as CSV rows in the column order of [`CSV_HEADER`], with the `csv` crate:
/// times in epoch ms, numbers in their shortest form that reads back exactly (Rust's
/// `Display` for `f64`), `ignore` always 0.
fn rows(candles: &[Candle]) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(candles.len() * 128));
    for c in candles {
        writer
            .write_record([
                c.open_time.to_string(),
                c.open.to_string(),
                c.high.to_string(),
                c.low.to_string(),
                c.close.to_string(),
                c.volume.to_string(),
                c.close_time.to_string(),
                c.quote_volume.to_string(),
                c.trades.to_string(),
                c.taker_buy_volume.to_string(),
                c.taker_buy_quote_volume.to_string(),
                "0".to_owned(),
            ])
            .expect("twelve plain fields always write into memory");
    }
    writer
        .into_inner()
        .expect("flushing into memory cannot fail")
}
