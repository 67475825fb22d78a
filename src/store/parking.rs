//! Parked reactions: the dead-letter rows of workflow subscribers.
//!
//! A workflow reacts to events one at a time ([`Delivery::Effects`]). Before this existed, a
//! reaction that could never succeed (a plan deleted under a payment in flight, a payment
//! that names no device) was retried for ever, and because a subscriber handles the journal
//! in order, no other aggregate got its reaction either: one poison event stopped the door
//! or device workflow for every site. Now such a reaction is *parked*: the event, the error
//! and the attempts go into `parked_reactions` in the same transaction that moves the
//! checkpoint past it, and the subscriber carries on. An operator sees the row (dashboard,
//! `/api/health/modules`, `/api/parked-reactions`), fixes the cause and asks for a retry —
//! the subscriber's own runtime runs the reaction again, under its singleton lock — or
//! skips it with a note. Who asked, and when, stays on the row.
//!
//! [`Delivery::Effects`]: super::subscription::Delivery::Effects

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use super::journal::JournalEvent;
use super::{Database, Tx};
use crate::{on_backend, on_pool};

/// The statuses a parked row moves through.
pub const STATUSES: [&str; 4] = ["parked", "retry_requested", "resolved", "skipped"];

/// Marks a reaction failure that retrying the same event cannot cure (the aggregate's
/// data is missing or contradictory): the runtime parks it at once instead of retrying.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PermanentFailure(pub String);

/// An [`anyhow::Error`] that parks its event at once.
pub fn permanent(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(PermanentFailure(message.into()))
}

/// Whether anywhere in the error's chain a reaction said it cannot succeed by retrying.
pub fn is_permanent(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<PermanentFailure>())
}

/// One parked reaction, as operators see it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ParkedReaction {
    pub parked_id: String,
    pub subscriber: String,
    /// The journal position of the event whose reaction failed.
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    /// The last error, cause chain included.
    pub error: String,
    /// Reactions tried so far, the operator's retries included.
    pub attempts: i32,
    /// `parked`, `retry_requested`, `resolved` or `skipped`.
    pub status: String,
    pub parked_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The operator who last asked for a retry or a skip.
    pub acted_by: Option<String>,
    pub note: Option<String>,
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

impl ParkedReaction {
    fn from_row<R>(row: &R) -> Result<Self, sqlx::Error>
    where
        R: Row,
        for<'c> &'c str: sqlx::ColumnIndex<R>,
        i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        i32: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(ParkedReaction {
            parked_id: row.try_get("parked_id")?,
            subscriber: row.try_get("subscriber")?,
            position: row.try_get("position")?,
            aggregate_type: row.try_get("aggregate_type")?,
            aggregate_id: row.try_get("aggregate_id")?,
            sequence: row.try_get("sequence")?,
            event_type: row.try_get("event_type")?,
            error: row.try_get("error")?,
            attempts: row.try_get("attempts")?,
            status: row.try_get("status")?,
            parked_at: at(row.try_get("parked_at_ms")?),
            updated_at: at(row.try_get("updated_at_ms")?),
            acted_by: row.try_get("acted_by")?,
            note: row.try_get("note")?,
        })
    }
}

const COLUMNS: &str = "parked_id, subscriber, position, aggregate_type, aggregate_id, sequence, \
                       event_type, error, attempts, status, parked_at_ms, updated_at_ms, \
                       acted_by, note";

/// Parks `event` for `subscriber` inside `tx` (the transaction that moves the checkpoint
/// past it), and queues the admins' alert mail in the same transaction. Parking the same
/// event again (a crash between the two) keeps one row and one mail.
pub async fn park(
    tx: &mut Tx,
    subscriber: &str,
    event: &JournalEvent,
    error: &str,
    attempts: u32,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO parked_reactions (parked_id, subscriber, position, aggregate_type, \
               aggregate_id, sequence, event_type, error, attempts, status, parked_at_ms, \
               updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'parked', $10, $10) \
               ON CONFLICT (subscriber, position) DO UPDATE SET error = excluded.error, \
               attempts = excluded.attempts, status = 'parked', updated_at_ms = excluded.updated_at_ms";
    let now = Utc::now().timestamp_millis();
    on_backend!(tx, conn => {
        sqlx::query(sql)
            .bind(Uuid::new_v4().to_string())
            .bind(subscriber)
            .bind(event.position)
            .bind(&event.aggregate_type)
            .bind(&event.aggregate_id)
            .bind(event.sequence)
            .bind(&event.event_type)
            .bind(error)
            .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
            .bind(now)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    // The admins hear of it by mail, once per parked event (a retry that fails again
    // parks the same row and queues nothing).
    crate::mail::outbox::queue_parked_alert(tx, subscriber, event, error).await
}

/// Parked rows, newest first, optionally of one status.
pub async fn list(
    database: &Database,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<ParkedReaction>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM parked_reactions WHERE ($1 IS NULL OR status = $1) \
         ORDER BY parked_at_ms DESC, position DESC LIMIT $2"
    );
    on_pool!(database, pool => {
        let rows = sqlx::query(&sql).bind(status).bind(limit).fetch_all(pool).await?;
        rows.iter().map(ParkedReaction::from_row).collect()
    })
}

pub async fn get(
    database: &Database,
    parked_id: &str,
) -> Result<Option<ParkedReaction>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM parked_reactions WHERE parked_id = $1");
    on_pool!(database, pool => {
        let row = sqlx::query(&sql).bind(parked_id).fetch_optional(pool).await?;
        row.as_ref().map(ParkedReaction::from_row).transpose()
    })
}

/// How many reactions wait for an operator (parked or with a retry asked for), per
/// subscriber, for health.
pub async fn open_counts(database: &Database) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let sql = "SELECT subscriber, COUNT(*) FROM parked_reactions \
               WHERE status IN ('parked', 'retry_requested') GROUP BY subscriber ORDER BY subscriber";
    on_pool!(database, pool => {
        sqlx::query_as(sql).fetch_all(pool).await
    })
}

/// What an operator asks of a parked row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperatorDecision {
    /// Run the reaction again (the subscriber's runtime does it on its next round).
    Retry,
    /// Leave the event without its reaction, for good.
    Skip,
}

/// Records `decision` on a `parked` row; `false` when the row is not parked (already
/// retried, resolved or skipped), so two operators cannot both act on it.
pub async fn decide(
    database: &Database,
    parked_id: &str,
    decision: OperatorDecision,
    actor: &str,
    note: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let status = match decision {
        OperatorDecision::Retry => "retry_requested",
        OperatorDecision::Skip => "skipped",
    };
    let sql =
        "UPDATE parked_reactions SET status = $1, acted_by = $2, note = $3, updated_at_ms = $4 \
               WHERE parked_id = $5 AND status = 'parked'";
    let changed = on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(status)
            .bind(actor)
            .bind(note)
            .bind(Utc::now().timestamp_millis())
            .bind(parked_id)
            .execute(pool)
            .await
            .map(|result| result.rows_affected())
    })?;
    Ok(changed == 1)
}

/// The rows of `subscriber` an operator asked to retry, oldest event first.
pub async fn retry_requests(
    database: &Database,
    subscriber: &str,
) -> Result<Vec<ParkedReaction>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM parked_reactions WHERE subscriber = $1 AND status = 'retry_requested' \
         ORDER BY position LIMIT 50"
    );
    on_pool!(database, pool => {
        let rows = sqlx::query(&sql).bind(subscriber).fetch_all(pool).await?;
        rows.iter().map(ParkedReaction::from_row).collect()
    })
}

/// The outcome of a retried reaction: `None` succeeded (resolved), `Some(error)` parks it
/// again with one more attempt.
pub async fn settle_retry(
    database: &Database,
    parked_id: &str,
    failure: Option<&str>,
) -> Result<(), sqlx::Error> {
    let now = Utc::now().timestamp_millis();
    on_pool!(database, pool => {
        match failure {
            None => sqlx::query(
                "UPDATE parked_reactions SET status = 'resolved', attempts = attempts + 1, \
                 updated_at_ms = $1 WHERE parked_id = $2",
            )
            .bind(now)
            .bind(parked_id)
            .execute(pool)
            .await
            .map(|_| ()),
            Some(error) => sqlx::query(
                "UPDATE parked_reactions SET status = 'parked', attempts = attempts + 1, \
                 error = $1, updated_at_ms = $2 WHERE parked_id = $3",
            )
            .bind(error)
            .bind(now)
            .bind(parked_id)
            .execute(pool)
            .await
            .map(|_| ()),
        }
    })
}
