//! The durable Stripe webhook inbox (`stripe_inbox`) and the bounded record of refused
//! deliveries (`webhook_signature_failures`).
//!
//! A delivery is acknowledged to Stripe only after its row commits here, so nothing Stripe
//! considers delivered can be lost. The event id is the primary key: a repeated delivery
//! (Stripe delivers at least once, sometimes concurrently, to several of our instances)
//! bumps a counter instead of adding a row. Processing claims rows with a lease held in
//! `next_attempt_at`, so a crashed processor's rows become due again on their own.

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::Row;

use crate::on_pool;
use crate::store::group_commit::GroupCommit;
use crate::store::Database;

/// Where an inbox row came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A signed webhook delivery.
    Webhook,
    /// Found through the Events API by the catch-up job.
    CatchUp,
}

impl Source {
    pub fn as_str(&self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::CatchUp => "catch_up",
        }
    }
}

/// An event to store, with the envelope fields we index on.
#[derive(Clone, Debug)]
pub struct NewDelivery<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub api_version: Option<&'a str>,
    pub livemode: bool,
    pub stripe_created: i64,
    /// The raw JSON text.
    pub payload: &'a str,
    pub source: Source,
}

/// What storing a delivery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// A new row; the caller holds its processing lease until `lease_until_ms`.
    New,
    /// The event id was already stored; its status at that moment.
    Duplicate { status: String },
}

/// One stored event, as handed to a processor.
#[derive(Clone, Debug)]
pub struct InboxDelivery {
    pub event_id: String,
    pub event_type: String,
    pub api_version: Option<String>,
    pub livemode: bool,
    /// Stripe's `created`, unix seconds.
    pub stripe_created: i64,
    /// The event JSON as received (webhooks) or as listed by Stripe (catch-up).
    pub payload: String,
    /// `webhook` or `catch_up`.
    pub source: String,
    /// Processing attempts completed before this one.
    pub attempts: i32,
    pub received_at: DateTime<Utc>,
}

impl InboxDelivery {
    /// The payload parsed as JSON (it was checked to parse before it was stored).
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.payload)
    }
}

/// One row as operators see it (`GET /api/stripe/deliveries`).
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryRow {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub duplicates: i32,
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    pub payment_id: Option<String>,
    pub ignore_reason: Option<String>,
    pub source: String,
    pub stripe_created: i64,
}

/// Counts and recency for diagnostics.
#[derive(Clone, Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct InboxStats {
    pub by_status: std::collections::BTreeMap<String, i64>,
    pub duplicates: i64,
    pub last_received_at: Option<DateTime<Utc>>,
    pub last_error: Option<LastError>,
    pub signature_failures: i64,
}

#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct LastError {
    pub event_id: String,
    pub message: String,
}

/// A refused delivery, as recorded.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SignatureFailure {
    pub failed_at: DateTime<Utc>,
    pub reason: String,
    pub body_length: i64,
    pub body_prefix_hex: Option<String>,
}

/// How many leading body bytes a signature-failure record keeps (hex): enough to tell a
/// misrouted request from a forged event, too few to hold a useful payload.
const FAILURE_PREFIX_BYTES: usize = 64;

/// Microsecond precision on both backends, so a time read back equals the one written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

const DELIVERY_COLUMNS: &str = "event_id, type, api_version, livemode, stripe_created, payload, \
                                source, attempts, received_at";

const ROW_COLUMNS: &str = "event_id, type, status, attempts, duplicates, last_error, received_at, \
                           processed_at, payment_id, ignore_reason, source, stripe_created";

fn delivery_from<R: Row>(row: &R) -> Result<InboxDelivery, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    bool: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(InboxDelivery {
        event_id: row.try_get(0)?,
        event_type: row.try_get(1)?,
        api_version: row.try_get(2)?,
        livemode: row.try_get(3)?,
        stripe_created: row.try_get(4)?,
        payload: row.try_get(5)?,
        source: row.try_get(6)?,
        attempts: row.try_get(7)?,
        received_at: row.try_get(8)?,
    })
}

fn row_from<R: Row>(row: &R) -> Result<DeliveryRow, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i32: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    DateTime<Utc>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<DateTime<Utc>>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(DeliveryRow {
        event_id: row.try_get(0)?,
        event_type: row.try_get(1)?,
        status: row.try_get(2)?,
        attempts: row.try_get(3)?,
        duplicates: row.try_get(4)?,
        last_error: row.try_get(5)?,
        received_at: row.try_get(6)?,
        processed_at: row.try_get(7)?,
        payment_id: row.try_get(8)?,
        ignore_reason: row.try_get(9)?,
        source: row.try_get(10)?,
        stripe_created: row.try_get(11)?,
    })
}

/// Keyset cursor for the deliveries list: newest first by (received_at, event_id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub received_at: DateTime<Utc>,
    pub event_id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        format!("{}|{}", self.received_at.to_rfc3339(), self.event_id)
    }

    pub fn decode(value: &str) -> Option<Cursor> {
        let (at, id) = value.split_once('|')?;
        Some(Cursor {
            received_at: DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
            event_id: id.to_string(),
        })
    }
}

/// The inbox over one database.
#[derive(Clone, Debug)]
pub struct Inbox {
    database: Database,
    /// Shares commits between concurrent webhook deliveries; `None`: one commit each.
    group: Option<GroupCommit>,
}

impl Inbox {
    pub fn new(database: Database) -> Self {
        Inbox {
            database,
            group: Some(GroupCommit::default()),
        }
    }

    /// Every delivery in its own statement and commit (`LATCHKEY_WEBHOOK_GROUP_COMMIT=off`).
    pub fn with_single_commits(mut self) -> Self {
        self.group = None;
        self
    }

    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Batches written by group commit so far; `None` when every delivery commits alone.
    pub fn group_batches(&self) -> Option<u64> {
        self.group.as_ref().map(GroupCommit::batches)
    }

    /// Stores a delivery unless its event id is already there. One statement, so two
    /// instances receiving the same event at once cannot both insert: the loser's upsert
    /// waits for the winner's commit and only bumps `duplicates`. `due_at_ms` is when the
    /// worker may first pick the row up (later than now when the caller processes it
    /// inline: that is its lease).
    pub async fn insert(
        &self,
        delivery: &NewDelivery<'_>,
        due_at_ms: i64,
    ) -> Result<Inserted, sqlx::Error> {
        // A catch-up find of a stored event is not a repeated delivery: don't count it.
        let increment: i32 = match delivery.source {
            Source::Webhook => 1,
            Source::CatchUp => 0,
        };
        let sql = "INSERT INTO stripe_inbox (event_id, type, api_version, livemode, \
                   stripe_created, payload, source, next_attempt_at, received_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                   ON CONFLICT (event_id) DO UPDATE SET duplicates = stripe_inbox.duplicates + $10 \
                   RETURNING duplicates, status, received_at";
        let received_at = now();
        let (duplicates, status, stored_at): (i32, String, DateTime<Utc>) = on_pool!(&self.database, pool => {
            sqlx::query_as(sql)
                .bind(delivery.event_id)
                .bind(delivery.event_type)
                .bind(delivery.api_version)
                .bind(delivery.livemode)
                .bind(delivery.stripe_created)
                .bind(delivery.payload)
                .bind(delivery.source.as_str())
                .bind(due_at_ms)
                .bind(received_at)
                .bind(increment)
                .fetch_one(pool)
                .await
        })?;
        // A fresh row has no duplicates and carries the time we just wrote.
        if duplicates == 0 && stored_at == received_at {
            Ok(Inserted::New)
        } else {
            Ok(Inserted::Duplicate { status })
        }
    }

    /// `insert`, in a batch shared with concurrent webhook deliveries when group commit is
    /// on (see `store::group_commit`): the same outcome, answered only once the batch
    /// holding this row has committed. Catch-up finds are stored on their own.
    pub async fn store(
        &self,
        delivery: &NewDelivery<'_>,
        due_at_ms: i64,
    ) -> Result<Inserted, sqlx::Error> {
        if let (Some(group), Source::Webhook) = (&self.group, delivery.source) {
            if let Some(inserted) = group.store(&self.database, delivery, due_at_ms).await {
                return Ok(inserted);
            }
        }
        self.insert(delivery, due_at_ms).await
    }

    /// Claims up to `limit` rows that are due, leasing them until `lease_until_ms`.
    /// PostgreSQL skips rows another instance is claiming at the same moment; SQLite has
    /// a single writer, so the statement alone is atomic.
    pub async fn claim_due(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: i64,
    ) -> Result<Vec<InboxDelivery>, sqlx::Error> {
        let lock = match self.database {
            Database::Postgres(_) => "FOR UPDATE SKIP LOCKED",
            Database::Sqlite(_) => "",
        };
        let sql = format!(
            "UPDATE stripe_inbox SET next_attempt_at = $1 WHERE event_id IN (\
                 SELECT event_id FROM stripe_inbox \
                 WHERE status IN ('received', 'failed') AND next_attempt_at IS NOT NULL \
                   AND next_attempt_at <= $2 \
                 ORDER BY next_attempt_at LIMIT $3 {lock}) \
             RETURNING {DELIVERY_COLUMNS}"
        );
        on_pool!(&self.database, pool => {
            let rows = sqlx::query(&sql)
                .bind(lease_until_ms)
                .bind(now_ms)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter().map(delivery_from).collect()
        })
    }

    pub async fn get(&self, event_id: &str) -> Result<Option<InboxDelivery>, sqlx::Error> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM stripe_inbox WHERE event_id = $1");
        on_pool!(&self.database, pool => {
            let row = sqlx::query(&sql).bind(event_id).fetch_optional(pool).await?;
            row.as_ref().map(delivery_from).transpose()
        })
    }

    pub async fn row(&self, event_id: &str) -> Result<Option<DeliveryRow>, sqlx::Error> {
        let sql = format!("SELECT {ROW_COLUMNS} FROM stripe_inbox WHERE event_id = $1");
        on_pool!(&self.database, pool => {
            let row = sqlx::query(&sql).bind(event_id).fetch_optional(pool).await?;
            row.as_ref().map(row_from).transpose()
        })
    }

    /// Records a finished attempt. Only a row still waiting is changed, so a processor
    /// whose lease ran out cannot overwrite the outcome of the one that took over.
    pub async fn finish(&self, event_id: &str, outcome: Finish<'_>) -> Result<bool, sqlx::Error> {
        let (status, payment_id, reason, error, next): (
            &str,
            Option<&str>,
            Option<&str>,
            Option<&str>,
            Option<i64>,
        ) = match outcome {
            Finish::Processed { payment_id } => ("processed", payment_id, None, None, None),
            // Processed, with the note where an ignore reason would be.
            Finish::Flagged { payment_id, note } => {
                ("processed", Some(payment_id), Some(note), None, None)
            }
            Finish::Ignored { reason } => ("ignored", None, Some(reason), None, None),
            Finish::Failed {
                error,
                next_attempt_at_ms,
            } => ("failed", None, None, Some(error), next_attempt_at_ms),
        };
        let processed_at = (status != "failed").then(now);
        let sql = "UPDATE stripe_inbox SET status = $2, attempts = attempts + 1, \
                   payment_id = COALESCE($3, payment_id), ignore_reason = $4, \
                   last_error = COALESCE($5, last_error), next_attempt_at = $6, processed_at = $7 \
                   WHERE event_id = $1 AND status IN ('received', 'failed')";
        let done = on_pool!(&self.database, pool => {
            sqlx::query(sql)
                .bind(event_id)
                .bind(status)
                .bind(payment_id)
                .bind(reason)
                .bind(error)
                .bind(next)
                .bind(processed_at)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(done == 1)
    }

    /// Newest first; `limit` rows after `cursor`.
    pub async fn list(
        &self,
        limit: i64,
        cursor: Option<&Cursor>,
        status: Option<&str>,
    ) -> Result<Vec<DeliveryRow>, sqlx::Error> {
        let (after_at, after_id) = match cursor {
            Some(cursor) => (Some(cursor.received_at), Some(cursor.event_id.as_str())),
            None => (None, None),
        };
        let sql = format!(
            "SELECT {ROW_COLUMNS} FROM stripe_inbox \
             WHERE ($1 IS NULL OR received_at < $1 OR (received_at = $1 AND event_id < $2)) \
               AND ($3 IS NULL OR status = $3) \
             ORDER BY received_at DESC, event_id DESC LIMIT $4"
        );
        on_pool!(&self.database, pool => {
            let rows = sqlx::query(&sql)
                .bind(after_at)
                .bind(after_id)
                .bind(status)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter().map(row_from).collect()
        })
    }

    pub async fn stats(&self) -> Result<InboxStats, sqlx::Error> {
        let mut stats = InboxStats::default();
        let counts: Vec<(String, i64, i64)> = on_pool!(&self.database, pool => {
            sqlx::query_as(
                "SELECT status, COUNT(*), CAST(COALESCE(SUM(duplicates), 0) AS BIGINT) \
                 FROM stripe_inbox GROUP BY status",
            )
            .fetch_all(pool)
            .await
        })?;
        for (status, count, duplicates) in counts {
            stats.by_status.insert(status, count);
            stats.duplicates += duplicates;
        }
        stats.last_received_at = on_pool!(&self.database, pool => {
            sqlx::query_scalar(
                "SELECT received_at FROM stripe_inbox ORDER BY received_at DESC LIMIT 1",
            )
            .fetch_optional(pool)
            .await
        })?;
        let last_error: Option<(String, String)> = on_pool!(&self.database, pool => {
            sqlx::query_as(
                "SELECT event_id, last_error FROM stripe_inbox WHERE last_error IS NOT NULL \
                 ORDER BY received_at DESC LIMIT 1",
            )
            .fetch_optional(pool)
            .await
        })?;
        stats.last_error = last_error.map(|(event_id, message)| LastError { event_id, message });
        stats.signature_failures = on_pool!(&self.database, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_signature_failures")
                .fetch_one(pool)
                .await
        })?;
        Ok(stats)
    }

    /// Makes a waiting row (`failed`, or `received` and not yet done) due at `due_at_ms`
    /// again, whatever its retry schedule or spent attempts said: an operator's retry.
    /// Returns whether a row was re-queued; processed and ignored rows never are.
    pub async fn requeue(&self, event_id: &str, due_at_ms: i64) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE stripe_inbox SET next_attempt_at = $2 \
                   WHERE event_id = $1 AND status IN ('received', 'failed')";
        let changed = on_pool!(&self.database, pool => {
            sqlx::query(sql)
                .bind(event_id)
                .bind(due_at_ms)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })?;
        Ok(changed == 1)
    }

    /// Records a refused delivery and trims the table to the newest `keep` rows.
    pub async fn record_signature_failure(
        &self,
        reason: &str,
        body: &[u8],
        keep: i64,
    ) -> Result<(), sqlx::Error> {
        let prefix =
            (!body.is_empty()).then(|| hex::encode(&body[..body.len().min(FAILURE_PREFIX_BYTES)]));
        let length = i64::try_from(body.len()).unwrap_or(i64::MAX);
        on_pool!(&self.database, pool => {
            sqlx::query(
                "INSERT INTO webhook_signature_failures (failed_at, reason, body_length, body_prefix_hex) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(now())
            .bind(reason)
            .bind(length)
            .bind(prefix)
            .execute(pool)
            .await?;
            sqlx::query(
                "DELETE FROM webhook_signature_failures \
                 WHERE id <= (SELECT MAX(id) FROM webhook_signature_failures) - $1",
            )
            .bind(keep)
            .execute(pool)
            .await
            .map(|_| ())
        })
    }

    /// The newest refused deliveries.
    pub async fn signature_failures(
        &self,
        limit: i64,
    ) -> Result<Vec<SignatureFailure>, sqlx::Error> {
        let rows: Vec<(DateTime<Utc>, String, i64, Option<String>)> = on_pool!(&self.database, pool => {
            sqlx::query_as(
                "SELECT failed_at, reason, body_length, body_prefix_hex \
                 FROM webhook_signature_failures ORDER BY id DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await
        })?;
        Ok(rows
            .into_iter()
            .map(
                |(failed_at, reason, body_length, body_prefix_hex)| SignatureFailure {
                    failed_at,
                    reason,
                    body_length,
                    body_prefix_hex,
                },
            )
            .collect())
    }
}

/// The outcome of one processing attempt, as stored.
#[derive(Clone, Copy, Debug)]
pub enum Finish<'a> {
    Processed {
        payment_id: Option<&'a str>,
    },
    Ignored {
        reason: &'a str,
    },
    /// Processed as a fact the ledger flagged (an amount that is not the price); `note`
    /// says what, on the deliveries page.
    Flagged {
        payment_id: &'a str,
        note: &'a str,
    },
    /// `next_attempt_at_ms` is `None` once the attempts are used up: the row stays
    /// `failed` and visible, and an operator decides.
    Failed {
        error: &'a str,
        next_attempt_at_ms: Option<i64>,
    },
}
