//! Reading the journal in global order.
//!
//! The global order is (transaction_id, position). On SQLite transaction_id is always 0, so
//! it is plain position order. On PostgreSQL, positions are handed out at INSERT but
//! transactions commit in any order; reading only events whose transaction is older than
//! every transaction of this database still running ([`SETTLED_HORIZON`]) and ordering by
//! the writing transaction first means no event can ever commit *behind* a reader's
//! cursor. That is what makes "resume after cursor" safe with many concurrent writers.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::{Database, Tx};
use crate::{on_backend, on_pool};

/// A subscriber's place in the journal: everything at or before it has been handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Cursor {
    pub transaction_id: i64,
    pub position: i64,
}

impl Cursor {
    /// Before the first event.
    pub const START: Cursor = Cursor {
        transaction_id: 0,
        position: 0,
    };
}

/// One stored event with everything subscribers and auditors need.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JournalEvent {
    pub position: i64,
    #[serde(skip)]
    pub transaction_id: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

impl JournalEvent {
    pub fn cursor(&self) -> Cursor {
        Cursor {
            transaction_id: self.transaction_id,
            position: self.position,
        }
    }

    pub(crate) fn from_row<R>(row: &R) -> Result<Self, sqlx::Error>
    where
        R: Row,
        for<'c> &'c str: sqlx::ColumnIndex<R>,
        i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        Value: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        DateTime<Utc>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(JournalEvent {
            position: row.try_get("position")?,
            transaction_id: row.try_get("transaction_id")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            event_version: row.try_get("event_version")?,
            payload: row.try_get("payload")?,
            metadata: row.try_get("metadata")?,
            recorded_at: row.try_get("recorded_at")?,
        })
    }
}

/// Which events a [`Journal::page`] returns.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only events with a greater position.
    pub after: i64,
    /// Only events with this position or a smaller one.
    pub until: Option<i64>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
}

pub(crate) const COLUMNS: &str =
    "position, transaction_id, aggregate_type, aggregate_id, sequence, \
                       event_type, event_version, payload, metadata, recorded_at";

/// Read access to the journal.
#[derive(Clone, Debug)]
pub struct Journal {
    database: Database,
}

impl Journal {
    pub fn new(database: Database) -> Self {
        Journal { database }
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Up to `limit` settled events after `cursor`, in global order, in a snapshot of
    /// their own.
    pub async fn read_after(
        &self,
        cursor: Cursor,
        limit: i64,
    ) -> Result<Vec<JournalEvent>, sqlx::Error> {
        let mut tx = self.database.begin_read().await?;
        let events = read_after_in(&mut tx, cursor, limit).await?;
        tx.commit().await?;
        Ok(events)
    }

    /// A page of committed events in position order, for auditors and exports: events with
    /// a position above `after`, optionally only up to `until` and of one aggregate.
    ///
    /// Unlike [`Journal::read_after`] this does not hold back events behind running
    /// transactions, so paging the live tail by position can, on PostgreSQL, pass an event
    /// that commits late; subscribers therefore use `read_after`, and an export of a
    /// range that is already settled is exact.
    pub async fn page(
        &self,
        filter: &EventFilter,
        limit: i64,
    ) -> Result<Vec<JournalEvent>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events \
             WHERE position > $1 AND ($2 IS NULL OR position <= $2) \
               AND ($3 IS NULL OR aggregate_type = $3) AND ($4 IS NULL OR aggregate_id = $4) \
             ORDER BY position LIMIT $5"
        );
        on_pool!(&self.database, pool => {
            let rows = sqlx::query(&sql)
                .bind(filter.after)
                .bind(filter.until)
                .bind(filter.aggregate_type.as_deref())
                .bind(filter.aggregate_id.as_deref())
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter().map(JournalEvent::from_row).collect()
        })
    }

    /// Whether any committed event lies after `cursor`, settled or not. On PostgreSQL an
    /// event stays unsettled while any older transaction in the cluster is still running;
    /// this tells "caught up" apart from "held back".
    pub async fn has_events_after(&self, cursor: Cursor) -> Result<bool, sqlx::Error> {
        let sql =
            "SELECT EXISTS (SELECT 1 FROM events WHERE (transaction_id, position) > ($1, $2))";
        on_pool!(&self.database, pool => {
            sqlx::query_scalar(sql)
                .bind(cursor.transaction_id)
                .bind(cursor.position)
                .fetch_one(pool)
                .await
        })
    }

    /// Every event of one aggregate, in sequence order, recorded at or before `at` if given.
    pub async fn aggregate_events(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<Vec<JournalEvent>, sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
             ORDER BY sequence"
        );
        let events: Vec<JournalEvent> = on_pool!(&self.database, pool => {
            let rows = sqlx::query(&sql)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(JournalEvent::from_row).collect::<Result<Vec<_>, _>>()?
        });
        Ok(match at {
            Some(at) => events.into_iter().filter(|e| e.recorded_at <= at).collect(),
            None => events,
        })
    }

    /// The event at `position`, if any (a parked reaction names its event this way).
    pub async fn at_position(&self, position: i64) -> Result<Option<JournalEvent>, sqlx::Error> {
        let sql = format!("SELECT {COLUMNS} FROM events WHERE position = $1");
        on_pool!(&self.database, pool => {
            let row = sqlx::query(&sql).bind(position).fetch_optional(pool).await?;
            row.as_ref().map(JournalEvent::from_row).transpose()
        })
    }

    /// The number of events in the journal.
    pub async fn count(&self) -> Result<i64, sqlx::Error> {
        on_pool!(&self.database, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await
        })
    }

    /// The highest position written: the event count (barring positions of rolled-back
    /// appends), read from the unique index on `position`, not by a scan.
    pub async fn head_position(&self) -> Result<i64, sqlx::Error> {
        on_pool!(&self.database, pool => {
            sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events").fetch_one(pool).await
        })
    }

    /// Walks every event in (aggregate type, aggregate id, sequence) order, in pages, and
    /// hands each to `visit`; stops early when `visit` returns false.
    pub async fn walk_by_aggregate(
        &self,
        page_size: i64,
        mut visit: impl FnMut(&JournalEvent) -> bool,
    ) -> Result<(), sqlx::Error> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events \
             WHERE (aggregate_type, aggregate_id, sequence) > ($1, $2, $3) \
             ORDER BY aggregate_type, aggregate_id, sequence LIMIT $4"
        );
        let mut after = (String::new(), String::new(), -1_i64);
        loop {
            let page: Vec<JournalEvent> = on_pool!(&self.database, pool => {
                let rows = sqlx::query(&sql)
                    .bind(&after.0)
                    .bind(&after.1)
                    .bind(after.2)
                    .bind(page_size)
                    .fetch_all(pool)
                    .await?;
                rows.iter().map(JournalEvent::from_row).collect::<Result<Vec<_>, _>>()?
            });
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = (
                last.aggregate_type.clone(),
                last.aggregate_id.clone(),
                last.sequence,
            );
            for event in &page {
                if !visit(event) {
                    return Ok(());
                }
            }
        }
    }
}

/// PostgreSQL: the oldest transaction of *this database* still running in the current
/// snapshot, or the snapshot's xmax when none is; every event below it is settled.
///
/// `pg_snapshot_xmin` alone would do, but it covers the whole cluster: a write held open
/// in a neighbour database would hold back every subscriber here. So a running
/// transaction is left out only when `pg_stat_activity` shows it belongs to another
/// database. The test is conservative: a transaction that ended since the snapshot, a
/// prepared one, or one whose backend this role may not see counts as ours (a later poll
/// passes it). xids in `pg_stat_activity` are 32-bit, snapshots' 64-bit (`xid8`): the
/// comparison drops the epoch.
pub(crate) const SETTLED_HORIZON: &str = "(SELECT COALESCE(MIN(running.xid::text::bigint),          pg_snapshot_xmax(pg_current_snapshot())::text::bigint)      FROM pg_snapshot_xip(pg_current_snapshot()) AS running(xid)      WHERE (running.xid::text::bigint % 4294967296) NOT IN (          SELECT backend_xid::text::bigint FROM pg_stat_activity          WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database()))";

/// Up to `limit` settled events after `cursor`, in global order, read inside `tx`.
///
/// On PostgreSQL `tx` must be REPEATABLE READ ([`Database::begin_read`] or
/// [`Database::begin_subscriber`]) so that the xmin horizon and the rows come from one
/// snapshot: a transaction committing between two snapshots could otherwise slip past.
pub async fn read_after_in(
    tx: &mut Tx,
    cursor: Cursor,
    limit: i64,
) -> Result<Vec<JournalEvent>, sqlx::Error> {
    match tx {
        Tx::Postgres(tx) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM events \
                 WHERE (transaction_id, position) > ($1, $2) \
                   AND transaction_id < {SETTLED_HORIZON} \
                 ORDER BY transaction_id, position LIMIT $3"
            );
            let rows = sqlx::query(&sql)
                .bind(cursor.transaction_id)
                .bind(cursor.position)
                .bind(limit)
                .fetch_all(&mut **tx)
                .await?;
            rows.iter().map(JournalEvent::from_row).collect()
        }
        Tx::Sqlite(tx) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2"
            );
            let rows = sqlx::query(&sql)
                .bind(cursor.position)
                .bind(limit)
                .fetch_all(&mut **tx)
                .await?;
            rows.iter().map(JournalEvent::from_row).collect()
        }
    }
}

/// Reads a subscriber's checkpoint outside any transaction.
pub async fn current_checkpoint(
    database: &Database,
    name: &str,
) -> Result<Option<Cursor>, sqlx::Error> {
    let sql = "SELECT transaction_id, position FROM subscription_checkpoints WHERE name = $1";
    let row: Option<(i64, i64)> = on_pool!(database, pool => {
        sqlx::query_as(sql).bind(name).fetch_optional(pool).await?
    });
    Ok(row.map(|(transaction_id, position)| Cursor {
        transaction_id,
        position,
    }))
}

/// Reads a subscriber's checkpoint inside its transaction.
pub async fn load_checkpoint(tx: &mut Tx, name: &str) -> Result<Option<Cursor>, sqlx::Error> {
    let sql = "SELECT transaction_id, position FROM subscription_checkpoints WHERE name = $1";
    let row: Option<(i64, i64)> = on_backend!(tx, conn => {
        sqlx::query_as(sql).bind(name).fetch_optional(conn).await?
    });
    Ok(row.map(|(transaction_id, position)| Cursor {
        transaction_id,
        position,
    }))
}

/// Moves a subscriber's checkpoint from `from` to `to`, inside its transaction. Fails with
/// [`CheckpointMoved`] if someone else moved it first (another instance handled the same
/// events), so the caller rolls back instead of applying them twice.
pub async fn advance_checkpoint(
    tx: &mut Tx,
    name: &str,
    from: Cursor,
    to: Cursor,
    handled: i64,
) -> Result<(), CheckpointError> {
    let sql = "UPDATE subscription_checkpoints \
               SET transaction_id = $1, position = $2, events_handled = events_handled + $3, \
                   updated_at = CURRENT_TIMESTAMP \
               WHERE name = $4 AND transaction_id = $5 AND position = $6";
    let result = on_backend!(tx, conn => {
        sqlx::query(sql)
            .bind(to.transaction_id)
            .bind(to.position)
            .bind(handled)
            .bind(name)
            .bind(from.transaction_id)
            .bind(from.position)
            .execute(conn)
            .await?
            .rows_affected()
    });
    if result == 1 {
        Ok(())
    } else {
        Err(CheckpointError::Moved)
    }
}

/// Creates a subscriber's checkpoint at the start of the journal if it has none.
pub async fn ensure_checkpoint(database: &Database, name: &str) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO subscription_checkpoints (name, transaction_id, position) \
               VALUES ($1, 0, 0) ON CONFLICT (name) DO NOTHING";
    on_pool!(database, pool => sqlx::query(sql).bind(name).execute(pool).await.map(|_| ()))?;
    Ok(())
}

/// Puts a subscriber back at the start of the journal (for `rebuild`).
pub async fn reset_checkpoint(tx: &mut Tx, name: &str) -> Result<(), sqlx::Error> {
    let sql = "UPDATE subscription_checkpoints \
               SET transaction_id = 0, position = 0, events_handled = 0 WHERE name = $1";
    on_backend!(tx, conn => sqlx::query(sql).bind(name).execute(conn).await.map(|_| ()))?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint was moved by another instance")]
    Moved,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}
