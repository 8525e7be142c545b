//! Ingesters' heartbeats, one document per running ingester in
//! `{collection}_ingesters`, so followers can tell whether anyone still brings in
//! candles. Times are judged by the database's clock (`$currentDate` to write,
//! `hello`'s `localTime` to read), never by comparing two machines' clocks; the
//! documents of ingesters gone for an hour expire through a TTL index.

use std::sync::Arc;
use std::time::Duration;

use mongodb::IndexModel;
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use tokio_util::sync::CancellationToken;

use super::{MongoStore, StoreError};
use crate::health::{StoreHealth, UpstreamHealth};
use crate::telemetry::Chain;

/// How long the document of an ingester that stopped beating is kept.
const EXPIRE_AFTER: Duration = Duration::from_secs(3600);
/// How long a heartbeat lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// One ingester as of the database's clock now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngesterReport {
    /// Since its last heartbeat.
    pub silent_for: Duration,
    /// Since it last had a kline from the exchange; `None` for never.
    pub data_age: Option<Duration>,
}

impl MongoStore {
    /// Records that ingester `id` is alive and that its last kline is `data_age`
    /// old (`None`: none yet). A duration, not a time: the ingester's clock never
    /// meets another's.
    ///
    /// # Errors
    /// [`StoreError::Mongo`] when the write fails.
    pub async fn beat(&self, id: &str, data_age: Option<Duration>) -> Result<(), StoreError> {
        let age = data_age.map(|age| i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
        let update = doc! {
            "$currentDate": {"seen": true},
            "$set": {"data_age_ms": age},
        };
        self.heartbeats
            .update_one(doc! {"_id": id}, update)
            .upsert(true)
            .await
            .map(drop)
            .map_err(|err| self.error("heartbeat", err))
    }

    /// Makes the TTL index that expires the documents of ingesters gone for an hour.
    ///
    /// # Errors
    /// [`StoreError::Mongo`] when the server refuses or cannot be reached.
    pub async fn expire_old_heartbeats(&self) -> Result<(), StoreError> {
        let index = IndexModel::builder()
            .keys(doc! {"seen": 1})
            .options(
                IndexOptions::builder()
                    .expire_after(EXPIRE_AFTER)
                    .name("seen_ttl".to_owned())
                    .build(),
            )
            .build();
        self.heartbeats
            .create_index(index)
            .await
            .map(drop)
            .map_err(|err| self.error("create index", err))
    }

    /// Every ingester that reported, as of the database's clock.
    ///
    /// # Errors
    /// [`StoreError`] when the lookup fails or takes over 2 s.
    pub async fn ingesters(&self) -> Result<Vec<IngesterReport>, StoreError> {
        let lookup = async {
            let hello = self
                .heartbeats
                .client()
                .database("admin")
                .run_command(doc! {"hello": 1})
                .await?;
            let now = hello.get_datetime("localTime").map_or_else(
                |_| chrono::Utc::now().timestamp_millis(),
                |t| t.timestamp_millis(),
            );
            let mut cursor = self.heartbeats.find(doc! {}).await?;
            let mut reports = Vec::new();
            while cursor.advance().await? {
                let document: Document = cursor.deserialize_current()?;
                reports.push(report(&document, now));
            }
            Ok::<_, mongodb::error::Error>(reports)
        };
        tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
            .await
            .map_err(|_| StoreError::Timeout {
                operation: "heartbeat lookup",
                timeout: LOOKUP_TIMEOUT,
            })?
            .map_err(|err| self.error("heartbeat lookup", err))
    }
}

/// An ingester's document read at `now` (ms since the epoch on the database's clock).
fn report(document: &Document, now: i64) -> IngesterReport {
    let seen = document
        .get_datetime("seen")
        .map_or(0, |t| t.timestamp_millis());
    let silent_for = Duration::from_millis((now - seen).max(0) as u64);
    let data_age = document
        .get_i64("data_age_ms")
        .ok()
        .map(|ms| Duration::from_millis(ms.max(0) as u64) + silent_for);
    IngesterReport {
        silent_for,
        data_age,
    }
}

/// Writes this ingester's heartbeat every `every` until `cancel`.
pub async fn heartbeat(
    mongo: MongoStore,
    health: Arc<UpstreamHealth>,
    every: Duration,
    cancel: CancellationToken,
) {
    let id = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
    let mut ticks = crate::retry::Every::new(every, cancel);
    let mut expiry_made = false;
    while ticks.next().await {
        let beat = async {
            if !expiry_made {
                expiry_made = mongo.expire_old_heartbeats().await.is_ok();
            }
            let data_age = health.last_data_ms().map(|last| {
                Duration::from_millis((chrono::Utc::now().timestamp_millis() - last).max(0) as u64)
            });
            if let Err(err) = mongo.beat(&id, data_age).await {
                // The store's own errors are logged by the writer; this one stays quiet.
                tracing::debug!(error = %Chain(&err), "heartbeat not written");
            }
        };
        if ticks.unless_stopped(beat).await.is_none() {
            break;
        }
    }
}

/// Why no new candles reach a follower, from the ingesters' reports: `None` while at
/// least one ingester is healthy (it reported within two stale windows and had a
/// kline within one), whichever wrote last.
pub fn ingesters_unhealthy(reports: &[IngesterReport], stale: Duration) -> Option<String> {
    let hint = "new candles come only from replicas with INGEST=true";
    let reporting: Vec<_> = reports
        .iter()
        .filter(|r| r.silent_for <= 2 * stale)
        .collect();
    if reporting
        .iter()
        .any(|r| r.data_age.is_some_and(|age| age <= stale))
    {
        return None;
    }
    if reports.is_empty() {
        return Some(format!("ingesters: none has reported yet; {hint}"));
    }
    if reporting.is_empty() {
        let quiet = reports
            .iter()
            .map(|r| r.silent_for)
            .min()
            .unwrap_or_default();
        return Some(format!(
            "ingesters: none has reported for {} s; {hint}",
            quiet.as_secs()
        ));
    }
    match reporting.iter().filter_map(|r| r.data_age).min() {
        Some(age) => Some(format!(
            "ingesters: no data from the exchange for {} s",
            age.as_secs()
        )),
        None => Some("ingesters: none has had data from the exchange yet".to_owned()),
    }
}

/// For a follower's readiness: judges the ingesters' heartbeats every `every` into
/// `health`, so `/ready` never waits on the database. A failed lookup leaves the
/// last judgement; the store's own check reports the outage.
pub async fn watch_ingesters(
    mongo: MongoStore,
    health: Arc<StoreHealth>,
    stale: Duration,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut ticks = crate::retry::Every::new(every, cancel);
    while ticks.next().await {
        match ticks.unless_stopped(mongo.ingesters()).await {
            None => break,
            Some(Ok(reports)) => {
                health.set_ingesters_reason(ingesters_unhealthy(&reports, stale));
            }
            Some(Err(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: Duration = Duration::from_secs(30);

    fn report(silent: u64, data: Option<u64>) -> IngesterReport {
        IngesterReport {
            silent_for: Duration::from_secs(silent),
            data_age: data.map(Duration::from_secs),
        }
    }

    #[test]
    fn one_healthy_ingester_is_enough_whoever_wrote_last() {
        assert_eq!(
            ingesters_unhealthy(&[report(20, Some(10)), report(1, Some(600))], STALE),
            None
        );
        assert_eq!(
            ingesters_unhealthy(&[report(1, Some(600))], STALE).unwrap(),
            "ingesters: no data from the exchange for 600 s"
        );
        assert!(
            ingesters_unhealthy(&[report(90, Some(1))], STALE)
                .unwrap()
                .starts_with("ingesters: none has reported for 90 s")
        );
        assert!(
            ingesters_unhealthy(&[], STALE)
                .unwrap()
                .starts_with("ingesters: none has reported yet")
        );
    }
}
