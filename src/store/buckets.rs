//! Reading candles of any served interval from the stored base candles: pages of base
//! candles, newest first, folded into whole buckets in bounded memory.

use crate::candle::{BucketBuilder, Candle, Interval};

use super::{CandleStore, StoreError};

/// Base candles read per store query.
const PAGE: usize = 5_000;

/// Up to `count` whole candles of `interval` for `symbol`, built from the stored
/// `base` candles, opened before `before` (ms since the epoch, UTC, exclusive;
/// `None`: up to the newest), oldest first. A bucket missing any base candle is left
/// out. Reads at most `count` buckets' worth of base candles, a page at a time.
///
/// # Errors
/// [`StoreError`] when a read fails.
pub async fn read_buckets(
    store: &dyn CandleStore,
    symbol: &str,
    base: &Interval,
    interval: &Interval,
    count: usize,
    before: Option<i64>,
) -> Result<Vec<Candle>, StoreError> {
    if interval == base {
        let mut candles = store.page(symbol, base.name(), count, before).await?;
        candles.reverse();
        return Ok(candles);
    }
    // Base candles of the newest bucket opened before `before` run past it.
    let mut cursor = before.map(|before| {
        let last_bucket = interval.open_time_containing(before - 1);
        last_bucket + interval.millis()
    });
    let per_bucket = usize::try_from(interval.millis() / base.millis()).unwrap_or(1);
    let budget = count.saturating_add(1).saturating_mul(per_bucket);
    let mut builder = BucketBuilder::new(interval.clone(), base);
    let mut buckets: Vec<Candle> = Vec::new();
    let mut read = 0usize;
    while buckets.len() < count && read < budget {
        let page = store.page(symbol, base.name(), PAGE, cursor).await?;
        let Some(oldest) = page.last() else { break };
        cursor = Some(oldest.open_time);
        read += page.len();
        let short = page.len() < PAGE;
        buckets.extend(page.iter().filter_map(|candle| builder.add(candle)));
        if short {
            break;
        }
    }
    // Newest first as found; a bucket can only complete once, oldest last.
    buckets.retain(|b| before.is_none_or(|before| b.open_time < before));
    buckets.sort_by_key(|b| b.open_time);
    buckets.dedup_by_key(|b| b.open_time);
    let surplus = buckets.len().saturating_sub(count);
    buckets.drain(..surplus);
    Ok(buckets)
}
