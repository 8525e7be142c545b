//! Stored candles of a range read from MongoDB through a cursor, oldest first, a
//! batch at a time, for [`crate::store::CandleStore::range`].

use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::{self, Document, doc};

use super::{LAST_DATE_MS, MongoStore};
use crate::store::{CandleStream, StoreError};

/// Documents per batch of a range read.
const RANGE_BATCH: u32 = 1000;

impl MongoStore {
    /// The stored candles of `symbol` at `interval` opened in `[from, to)` (ms since
    /// the epoch, UTC), oldest first, through a cursor.
    pub(super) fn range_cursor(
        &self,
        symbol: &str,
        interval: &str,
        from: i64,
        to: i64,
    ) -> CandleStream {
        let store = self.clone();
        let filter = doc! {
            "symbol": symbol,
            "interval": interval,
            "open_time": {
                "$gte": bson::DateTime::from_millis(from.clamp(0, LAST_DATE_MS)),
                "$lt": bson::DateTime::from_millis(to.clamp(0, LAST_DATE_MS)),
            },
        };
        let open = async move {
            let cursor = store
                .collection
                .clone_with_type::<Document>()
                .find(filter)
                .sort(doc! {"open_time": 1})
                .batch_size(RANGE_BATCH)
                .await
                .map_err(|err| store.error("find", err))?;
            // A document that does not read as a candle is skipped and counted.
            Ok::<_, StoreError>(cursor.filter_map(move |document| {
                let read = match document {
                    Ok(document) => store.candle_from(document).map(Ok),
                    Err(err) => Some(Err(store.error("find", err))),
                };
                std::future::ready(read)
            }))
        };
        Box::pin(futures_util::stream::once(open).try_flatten())
    }
}
