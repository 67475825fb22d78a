//! The mail outbox: which facts become which mails, written in the same transaction as the
//! subscriber's checkpoint (a [`Delivery::Transactional`] subscriber), so a crash between
//! the fact and the send can neither lose the mail nor queue it twice.
//!
//! - `CheckoutStarted` (Payment): remember the guest's address, kind, target and price;
//! - `AccessCodeIssued` (Door): the door guest's receipt, key `receipt:<payment>` (a code
//!   reissued later is the same purchase: no second receipt);
//! - `RefundRecorded` (Payment) that raised the refunded total: a refund notice, key
//!   `refund:<payment>:<refunded total>`.
//!
//! Facts recorded more than [`fact_age_max`] before the subscriber reads them queue
//! nothing: the subscriber starts at position 0 on a database that predates it, and a
//! years-old journal must not mail every guest it ever had.

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::store::journal::JournalEvent;
use crate::store::subscription::{Delivery, Subscriber};
use crate::store::{Database, Tx};
use crate::{on_backend, on_pool};

/// The subscriber's name (its checkpoint).
pub const NAME: &str = "mail_outbox";

/// The oldest fact worth a mail: a receipt a day late is noise, and older facts are
/// history the subscriber is catching up on.
pub fn fact_age_max() -> ChronoDuration {
    ChronoDuration::hours(24)
}

/// Kinds of mail, as stored.
pub const DOOR_RECEIPT: &str = "door_receipt";
pub const REFUND_NOTICE: &str = "refund_notice";

/// Statuses of a row, as stored.
pub const STATUSES: [&str; 4] = ["pending", "sent", "failed", "expired"];

pub struct MailOutbox;

#[async_trait]
impl Subscriber for MailOutbox {
    fn name(&self) -> &str {
        NAME
    }

    fn delivery(&self) -> Delivery {
        Delivery::Transactional
    }

    async fn apply(&self, tx: &mut Tx, event: &JournalEvent) -> anyhow::Result<()> {
        match (event.aggregate_type.as_str(), event.event_type.as_str()) {
            ("Payment", "CheckoutStarted") => remember_recipient(tx, event).await,
            _ if Utc::now() - event.recorded_at > fact_age_max() => Ok(()),
            ("Door", "AccessCodeIssued") => queue_receipt(tx, event).await,
            ("Payment", "RefundRecorded") => queue_refund_notice(tx, event).await,
            _ => Ok(()),
        }
    }
}

async fn remember_recipient(tx: &mut Tx, event: &JournalEvent) -> anyhow::Result<()> {
    let payload = &event.payload;
    let target = &payload["target"];
    let (kind, target_uid) = match (target["door_uid"].as_str(), target["device_uid"].as_str()) {
        (Some(door), _) => ("door", door),
        (None, Some(device)) => ("device", device),
        (None, None) => anyhow::bail!("CheckoutStarted without a door or device: {target}"),
    };
    let email = payload["guest_email"].as_str().unwrap_or_default();
    let price_minor = payload["price"]["amount_minor"].as_i64().unwrap_or(0);
    let currency = payload["price"]["currency"].as_str().unwrap_or_default();
    let sql =
        "INSERT INTO mail_recipients (payment_id, email, kind, target_uid, price_minor, currency) \
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (payment_id) DO NOTHING";
    on_backend!(tx, conn => {
        sqlx::query(sql)
            .bind(&event.aggregate_id)
            .bind(email)
            .bind(kind)
            .bind(target_uid)
            .bind(price_minor)
            .bind(currency)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    Ok(())
}

/// Who paid, for what and how much.
struct Recipient {
    email: String,
    target_uid: String,
    price_minor: i64,
    currency: String,
}

async fn recipient(tx: &mut Tx, payment_id: &str) -> anyhow::Result<Option<Recipient>> {
    let sql = "SELECT email, target_uid, price_minor, currency FROM mail_recipients WHERE payment_id = $1";
    let row: Option<(String, String, i64, String)> = on_backend!(tx, conn => {
        sqlx::query_as(sql).bind(payment_id).fetch_optional(conn).await
    })?;
    Ok(
        row.map(|(email, target_uid, price_minor, currency)| Recipient {
            email,
            target_uid,
            price_minor,
            currency,
        }),
    )
}

async fn queue_receipt(tx: &mut Tx, event: &JournalEvent) -> anyhow::Result<()> {
    let payload = &event.payload;
    let Some(payment_id) = payload["payment_id"].as_str() else {
        anyhow::bail!("AccessCodeIssued without a payment_id");
    };
    let Some(recipient) = recipient(tx, payment_id).await? else {
        // A payment started before the subscriber's history (or without a checkout).
        return Ok(());
    };
    let facts = json!({
        "door_uid": event.aggregate_id,
        "code": payload["code"],
        "valid_from": payload["valid_from"],
        "valid_to": payload["valid_to"],
        "price": {"amount_minor": recipient.price_minor, "currency": recipient.currency},
    });
    let row = Row {
        key: format!("receipt:{payment_id}"),
        kind: DOOR_RECEIPT,
        payment_id,
        recipient: &recipient.email,
        facts,
    };
    insert(tx, event, row).await
}

async fn queue_refund_notice(tx: &mut Tx, event: &JournalEvent) -> anyhow::Result<()> {
    let payload = &event.payload;
    let increase = payload["refunded_increase"]["amount_minor"]
        .as_i64()
        .unwrap_or(0);
    if increase <= 0 {
        // A refund that failed later gives money back to us, not to the guest.
        return Ok(());
    }
    let payment_id = event.aggregate_id.as_str();
    let Some(recipient) = recipient(tx, payment_id).await? else {
        return Ok(());
    };
    let total = payload["amount_refunded"]["amount_minor"]
        .as_i64()
        .unwrap_or(0);
    let facts = json!({
        "target_uid": recipient.target_uid,
        "refunded_increase": payload["refunded_increase"],
        "amount_refunded": payload["amount_refunded"],
        "price": {"amount_minor": recipient.price_minor, "currency": recipient.currency},
    });
    let row = Row {
        key: format!("refund:{payment_id}:{total}"),
        kind: REFUND_NOTICE,
        payment_id,
        recipient: &recipient.email,
        facts,
    };
    insert(tx, event, row).await
}

struct Row<'a> {
    key: String,
    kind: &'static str,
    payment_id: &'a str,
    recipient: &'a str,
    facts: Value,
}

async fn insert(tx: &mut Tx, event: &JournalEvent, row: Row<'_>) -> anyhow::Result<()> {
    let now = Utc::now().timestamp_millis();
    let sql =
        "INSERT INTO mail_outbox (mail_key, kind, payment_id, recipient, facts, fact_position, \
               fact_at_ms, created_at_ms, next_attempt_at_ms) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (mail_key) DO NOTHING";
    let inserted = on_backend!(tx, conn => {
        sqlx::query(sql)
            .bind(&row.key)
            .bind(row.kind)
            .bind(row.payment_id)
            .bind(row.recipient)
            .bind(row.facts.to_string())
            .bind(event.position)
            .bind(event.recorded_at.timestamp_millis())
            .bind(now)
            .execute(conn)
            .await
            .map(|result| result.rows_affected())
    })?;
    if inserted == 1 {
        tracing::info!(mail_key = %row.key, payment_id = row.payment_id, position = event.position, "mail queued");
    }
    Ok(())
}

/// One outbox row, as the dashboard and the worker read it.
#[derive(Clone, Debug, Serialize)]
pub struct OutboxRow {
    pub mail_key: String,
    pub kind: String,
    pub payment_id: String,
    pub recipient: String,
    pub facts: Value,
    pub fact_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
}

type RawRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    String,
    i32,
    i64,
    Option<String>,
    Option<i64>,
);

const COLUMNS: &str = "mail_key, kind, payment_id, recipient, facts, fact_at_ms, created_at_ms, \
                       status, attempts, next_attempt_at_ms, last_error, sent_at_ms";

fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn from_raw(raw: RawRow) -> OutboxRow {
    let (
        key,
        kind,
        payment_id,
        recipient,
        facts,
        fact_at,
        created_at,
        status,
        attempts,
        next,
        error,
        sent,
    ) = raw;
    OutboxRow {
        mail_key: key,
        kind,
        payment_id,
        recipient,
        facts: serde_json::from_str(&facts).unwrap_or(Value::Null),
        fact_at: millis(fact_at),
        created_at: millis(created_at),
        status,
        attempts: i64::from(attempts),
        next_attempt_at_ms: next,
        last_error: error,
        sent_at: sent.map(millis),
    }
}

/// The newest rows first, of one status or all; at most `limit`.
pub async fn list(
    database: &Database,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM mail_outbox WHERE ($1 IS NULL OR status = $1) \
         ORDER BY created_at_ms DESC, mail_key LIMIT $2"
    );
    let rows: Vec<RawRow> = on_pool!(database, pool => {
        sqlx::query_as(&sql).bind(status).bind(limit).fetch_all(pool).await
    })?;
    Ok(rows.into_iter().map(from_raw).collect())
}

/// Pending rows due at `now_ms`, oldest due first.
pub async fn due(
    database: &Database,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM mail_outbox WHERE status = 'pending' AND next_attempt_at_ms <= $1 \
         ORDER BY next_attempt_at_ms LIMIT $2"
    );
    let rows: Vec<RawRow> = on_pool!(database, pool => {
        sqlx::query_as(&sql).bind(now_ms).bind(limit).fetch_all(pool).await
    })?;
    Ok(rows.into_iter().map(from_raw).collect())
}
