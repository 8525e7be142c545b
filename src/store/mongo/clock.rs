//! The database's clock (`hello`'s `localTime`), read into a [`Clock`] so that a
//! replica judges time as the ingesters writing to the same database do, whatever
//! its own clock says.

use std::time::Duration;

use mongodb::bson::doc;
use tokio_util::sync::CancellationToken;

use super::MongoStore;
use crate::clock::Clock;
use crate::store::StoreError;

/// How long one reading of the database's clock may take: a slower answer would
/// say little about when the clock was read.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// An offset this large (ms) is worth a warning: a machine's clock that far off
/// would misjudge which candles exist.
const NOTABLE_SKEW_MS: i64 = 60_000;

impl MongoStore {
    /// Reads the database's clock into `clock`; returns the offset learned (ms, the
    /// database's clock minus this machine's), `None` when the server's `hello`
    /// answer has no `localTime` (then `clock` is left as it was).
    ///
    /// # Errors
    /// [`StoreError`] when the server does not answer `hello` within 2 s.
    pub async fn read_clock(&self, clock: &Clock) -> Result<Option<i64>, StoreError> {
        let sent = clock.local_ms();
        let hello = tokio::time::timeout(
            READ_TIMEOUT,
            self.heartbeats
                .client()
                .database("admin")
                .run_command(doc! {"hello": 1}),
        )
        .await
        .map_err(|_| StoreError::Timeout {
            operation: "hello",
            timeout: READ_TIMEOUT,
        })?
        .map_err(|err| self.error("hello", err))?;
        let received = clock.local_ms();
        Ok(hello
            .get_datetime("localTime")
            .ok()
            .map(|database| clock.learn(database.timestamp_millis(), sent, received)))
    }
}

/// Reads the database's clock into `clock` every `every` until `cancel`, and says
/// once when this machine's clock is far off it (and again when that changes).
pub async fn follow_database_clock(
    mongo: MongoStore,
    clock: Clock,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut told: Option<i64> = None;
    let mut ticks = crate::retry::Every::new(every, cancel);
    while ticks.next().await {
        // On an error the store's reachability check reports the outage; the last
        // offset stays in use meanwhile.
        let Ok(Some(offset)) = mongo.read_clock(&clock).await else {
            continue;
        };
        let notable = offset.abs() >= NOTABLE_SKEW_MS;
        if notable && told.is_none_or(|t| (t - offset).abs() >= NOTABLE_SKEW_MS) {
            tracing::warn!(
                offset_s = offset / 1000,
                "this machine's clock is {} s {} the database's; judging candles by the database's clock",
                offset.abs() / 1000,
                if offset > 0 { "behind" } else { "ahead of" }
            );
            told = Some(offset);
        }
    }
}
