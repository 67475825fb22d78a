//! The cqrs-es event repository behind every aggregate.
//!
//! It delegates storage to postgres-es or sqlite-es, and adds two things on the way in:
//! the hash chain (see [`super::chain`]) and a wake-up signal so that subscribers in this
//! process react to an append at once (other processes hear PostgreSQL's NOTIFY).
//!
//! Concurrency: an append computes its chain from the aggregate's last stored event, then
//! inserts. Two writers racing on one aggregate both target the same next sequence; the
//! primary key lets exactly one insert win and the other gets an optimistic-lock error,
//! which the command layer retries. So a chain can never fork.

use std::sync::Arc;

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlite_es::SqliteEventRepository;
use tokio::sync::watch;

use super::chain::{self, ChainedFields};
use super::Database;
use crate::on_pool;

/// Counts appends made by this process; subscribers wait for it to change.
#[derive(Clone, Debug)]
pub struct AppendSignal {
    sender: Arc<watch::Sender<u64>>,
}

impl Default for AppendSignal {
    fn default() -> Self {
        AppendSignal {
            sender: Arc::new(watch::channel(0).0),
        }
    }
}

impl AppendSignal {
    /// Tells every waiting subscriber that the journal has grown.
    pub fn notify(&self) {
        self.sender
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }
}

enum Storage {
    Postgres(PostgresEventRepository),
    Sqlite(SqliteEventRepository),
}

/// The event repository shared by every aggregate's event store.
pub struct JournalRepository {
    storage: Storage,
    database: Database,
    appended: AppendSignal,
}

impl JournalRepository {
    pub fn new(database: Database, appended: AppendSignal) -> Self {
        let storage = match &database {
            Database::Postgres(pool) => {
                Storage::Postgres(PostgresEventRepository::new(pool.clone()))
            }
            Database::Sqlite(pool) => Storage::Sqlite(SqliteEventRepository::new(pool.clone())),
        };
        JournalRepository {
            storage,
            database,
            appended,
        }
    }

    /// Adds `prev_hash` and `hash` to the metadata of each event, chained to the
    /// aggregate's last stored event.
    async fn chain(
        &self,
        events: &[SerializedEvent],
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let Some(first) = events.first() else {
            return Ok(Vec::new());
        };
        let mut prev_hash = self.stored_hash_before(first).await?;
        let mut chained = Vec::with_capacity(events.len());
        for event in events {
            let sequence = i64::try_from(event.sequence).map_err(unknown)?;
            let hash = chain::event_hash(
                &prev_hash,
                &ChainedFields {
                    aggregate_type: &event.aggregate_type,
                    aggregate_id: &event.aggregate_id,
                    sequence,
                    event_type: &event.event_type,
                    event_version: &event.event_version,
                    payload: &event.payload,
                },
            );
            let mut metadata = match &event.metadata {
                Value::Object(map) => map.clone(),
                _ => serde_json::Map::new(),
            };
            metadata.insert(
                chain::PREV_HASH_KEY.into(),
                Value::String(prev_hash.clone()),
            );
            metadata.insert(chain::HASH_KEY.into(), Value::String(hash.clone()));
            let mut event = event.clone();
            event.metadata = Value::Object(metadata);
            chained.push(event);
            prev_hash = hash;
        }
        Ok(chained)
    }

    /// The hash of the event just before `event` in its aggregate, or the genesis hash.
    async fn stored_hash_before(
        &self,
        event: &SerializedEvent,
    ) -> Result<String, PersistenceError> {
        if event.sequence <= 1 {
            return Ok(chain::GENESIS.to_string());
        }
        let previous = i64::try_from(event.sequence - 1).map_err(unknown)?;
        let sql = "SELECT metadata FROM events \
                   WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3";
        let metadata: Option<Value> = on_pool!(&self.database, pool => {
            sqlx::query_scalar(sql)
                .bind(&event.aggregate_type)
                .bind(&event.aggregate_id)
                .bind(previous)
                .fetch_optional(pool)
                .await
        })
        .map_err(|error| PersistenceError::ConnectionError(Box::new(error)))?;
        match metadata {
            Some(metadata) => chain::stored_hash(&metadata, chain::HASH_KEY)
                .map(str::to_string)
                .ok_or_else(|| {
                    unknown(format!(
                        "{} {} sequence {previous} has no hash; run `latchkey verify`",
                        event.aggregate_type, event.aggregate_id
                    ))
                }),
            // The event we were built on is not there: someone else's view of the
            // aggregate is newer or older than ours. Treat it as a conflict and retry.
            None => Err(PersistenceError::OptimisticLockError),
        }
    }
}

fn unknown(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> PersistenceError {
    PersistenceError::UnknownError(error.into())
}

impl PersistedEventRepository for JournalRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match &self.storage {
            Storage::Postgres(repo) => repo.get_events::<A>(aggregate_id).await,
            Storage::Sqlite(repo) => repo.get_events::<A>(aggregate_id).await,
        }
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match &self.storage {
            Storage::Postgres(repo) => repo.get_last_events::<A>(aggregate_id, last_sequence).await,
            Storage::Sqlite(repo) => repo.get_last_events::<A>(aggregate_id, last_sequence).await,
        }
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        match &self.storage {
            Storage::Postgres(repo) => repo.get_snapshot::<A>(aggregate_id).await,
            Storage::Sqlite(repo) => repo.get_snapshot::<A>(aggregate_id).await,
        }
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        let chained = self.chain(events).await?;
        match &self.storage {
            Storage::Postgres(repo) => repo.persist::<A>(&chained, snapshot_update).await?,
            Storage::Sqlite(repo) => repo.persist::<A>(&chained, snapshot_update).await?,
        }
        self.appended.notify();
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        match &self.storage {
            Storage::Postgres(repo) => repo.stream_events::<A>(aggregate_id).await,
            Storage::Sqlite(repo) => repo.stream_events::<A>(aggregate_id).await,
        }
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        match &self.storage {
            Storage::Postgres(repo) => repo.stream_all_events::<A>().await,
            Storage::Sqlite(repo) => repo.stream_all_events::<A>().await,
        }
    }
}
