//! The candle collection's MongoDB change stream, as candles written or a reset.

use futures_util::StreamExt;

use mongodb::bson::{Document, doc};

use super::StoreError;
use super::mongo::{DriverError, MongoStore};
use crate::candle::Candle;

pub use mongodb::change_stream::event::ResumeToken;

type CandleStream = mongodb::change_stream::ChangeStream<
    mongodb::change_stream::event::ChangeStreamEvent<Document>,
>;

impl MongoStore {
    /// Opens a change stream of written candles, resuming after `token` when given.
    /// Fails on a server without change streams (a standalone mongod).
    pub async fn watch(&self, token: Option<ResumeToken>) -> Result<CandleChanges, StoreError> {
        let written = [
            "insert",
            "update",
            "replace",
            "drop",
            "dropDatabase",
            "rename",
            "invalidate",
        ];
        // Plain documents: one that is not a candle is skipped, never stalls the stream.
        let stream = self
            .collection
            .clone_with_type::<Document>()
            .watch()
            .pipeline([doc! {"$match": {"operationType": {"$in": written.to_vec()}}}])
            .full_document(mongodb::options::FullDocumentType::UpdateLookup)
            .resume_after(token)
            .await
            .map_err(|err| self.error("watch", err))?;
        Ok(CandleChanges {
            stream,
            store: self.clone(),
            written_at_ms: None,
        })
    }
}

/// What happened to the candle collection.
#[derive(Debug)]
pub enum Change {
    /// A candle was inserted or replaced.
    Written(Candle),
    /// The collection or database went away: the stream cannot go on.
    Reset,
}

/// The candle collection's change stream.
pub struct CandleChanges {
    stream: CandleStream,
    store: MongoStore,
    /// When the database wrote the last change returned, on its own clock.
    written_at_ms: Option<i64>,
}

impl CandleChanges {
    /// The next change; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Result<Change, StoreError>> {
        use mongodb::change_stream::event::OperationType;
        loop {
            let event = match self.stream.next().await? {
                Ok(event) => event,
                Err(err) => {
                    return Some(Err(StoreError::Mongo {
                        operation: "change stream",
                        source: DriverError::new(err, &self.store.uri),
                    }));
                }
            };
            // The event's wall time (MongoDB 6+), else its cluster time (seconds).
            self.written_at_ms = event
                .wall_time
                .map(|t| t.timestamp_millis())
                .or_else(|| event.cluster_time.map(|t| i64::from(t.time) * 1000 + 999));
            match event.operation_type {
                OperationType::Insert | OperationType::Update | OperationType::Replace => {
                    if let Some(candle) =
                        event.full_document.and_then(|d| self.store.candle_from(d))
                    {
                        return Some(Ok(Change::Written(candle)));
                    }
                    // An update whose document is already gone: nothing to show.
                }
                OperationType::Drop
                | OperationType::DropDatabase
                | OperationType::Rename
                | OperationType::Invalidate => {
                    return Some(Ok(Change::Reset));
                }
                _ => {}
            }
        }
    }

    /// When the database wrote the last change returned (ms since the epoch, UTC,
    /// on the database's clock), when the event says.
    pub fn written_at_ms(&self) -> Option<i64> {
        self.written_at_ms
    }

    /// Where to resume after the last change returned.
    pub fn resume_token(&self) -> Option<ResumeToken> {
        self.stream.resume_token()
    }
}
