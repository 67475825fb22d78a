//! The mail outbox: which facts become which mails, written in the same transaction as the
//! subscriber's checkpoint (a [`Delivery::Transactional`] subscriber), so a crash between
//! the fact and the send can neither lose the mail nor queue it twice.
//!
//! - `CheckoutStarted` (Payment): remember the guest's address, kind, target, price and
//!   plan name; `SessionQueued` / `SessionOpened` (DeviceSession): remember the session;
//! - `AccessCodeIssued` (Door): the door guest's receipt, key `receipt:<payment>` (a code
//!   reissued later is the same purchase: no second receipt);
//! - `SessionActivated` (DeviceSession) and `PaymentSucceeded` (Payment), whichever comes
//!   second: the device guest's receipt (plan, start, end), key `receipt:<payment>` — not
//!   before the capture succeeded, so a guest whose card was declined once the relay came
//!   on gets no receipt;
//! - `RefundRecorded` (Payment) that raised the refunded total: a refund notice, key
//!   `refund:<payment>:<refunded total>`;
//! - money and access failures: an alert to every active admin, key
//!   `alert:<aggregate type>:<aggregate id>:<sequence>` (one per event): a capture Stripe
//!   refused (`PaymentCaptureFailed`), a hold it would not release
//!   (`PaymentCancellationFailed`), a door code TTLock refused for good
//!   (`AccessCodeIssueFailed` with `retryable: false`), a refund decided because access
//!   could not be given (`AccessCompensationDecided`). Parked workflow reactions are
//!   alerted from [`crate::store::parking::park`], key `alert:parked:<subscriber>:<position>`.
//!
//! Requests that are not journal facts (a guest's "lost your link?", an operator's
//! password reset) queue their row with [`queue_now`] before the page answers.
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
pub const DEVICE_RECEIPT: &str = "device_receipt";
pub const REFUND_NOTICE: &str = "refund_notice";
pub const LINK_RESEND: &str = "link_resend";
pub const PASSWORD_RESET: &str = "password_reset";
pub const ADMIN_ALERT: &str = "admin_alert";

/// The recipient of an alert: every active admin, resolved when the mail is rendered (an
/// admin added while the alert waits gets it too).
pub const ADMINS: &str = "admins";

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
            ("DeviceSession", "SessionQueued" | "SessionOpened") => {
                remember_session(tx, event).await
            }
            ("Payment", "PaymentSucceeded") => payment_succeeded(tx, event).await,
            ("DeviceSession", "SessionActivated") => session_activated(tx, event).await,
            _ if !fresh(event) => Ok(()),
            ("Door", "AccessCodeIssued") => queue_receipt(tx, event).await,
            ("Payment", "RefundRecorded") => queue_refund_notice(tx, event).await,
            ("Payment", "PaymentCaptureFailed" | "PaymentCancellationFailed")
            | ("Door", "AccessCompensationDecided") => queue_alert(tx, event).await,
            ("Door", "AccessCodeIssueFailed") if event.payload["retryable"] == false => {
                queue_alert(tx, event).await
            }
            _ => Ok(()),
        }
    }
}

/// Whether a fact is recent enough to be worth a mail.
fn fresh(event: &JournalEvent) -> bool {
    Utc::now() - event.recorded_at <= fact_age_max()
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
    let plan_name = payload["offer"]["plan_name"].as_str();
    let sql = "INSERT INTO mail_recipients (payment_id, email, kind, target_uid, price_minor, \
               currency, created_at_ms, plan_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
               ON CONFLICT (payment_id) DO NOTHING";
    on_backend!(tx, conn => {
        sqlx::query(sql)
            .bind(&event.aggregate_id)
            .bind(email)
            .bind(kind)
            .bind(target_uid)
            .bind(price_minor)
            .bind(currency)
            .bind(event.recorded_at.timestamp_millis())
            .bind(plan_name)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    Ok(())
}

/// Which payment a device session serves, so its activation finds the guest.
async fn remember_session(tx: &mut Tx, event: &JournalEvent) -> anyhow::Result<()> {
    let terms = &event.payload["terms"];
    let Some(payment_id) = terms["payment_id"].as_str() else {
        anyhow::bail!("{} without terms.payment_id", event.event_type);
    };
    let sql = "UPDATE mail_recipients SET session_id = $1 WHERE payment_id = $2";
    on_backend!(tx, conn => {
        sqlx::query(sql)
            .bind(&event.aggregate_id)
            .bind(payment_id)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    Ok(())
}

/// Who paid, for what and how much; for a device, the session's times once it started
/// and whether the payment succeeded (its receipt needs both).
struct Recipient {
    payment_id: String,
    email: String,
    kind: String,
    target_uid: String,
    price_minor: i64,
    currency: String,
    plan_name: Option<String>,
    session_facts: Option<String>,
    succeeded: bool,
}

const RECIPIENT_COLUMNS: &str = "payment_id, email, kind, target_uid, price_minor, currency, \
     plan_name, session_facts, succeeded_at_ms FROM mail_recipients";

type RecipientRow = (
    String,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
);

fn recipient_of(row: RecipientRow) -> Recipient {
    let (
        payment_id,
        email,
        kind,
        target_uid,
        price_minor,
        currency,
        plan_name,
        session_facts,
        succeeded_at_ms,
    ) = row;
    Recipient {
        payment_id,
        email,
        kind,
        target_uid,
        price_minor,
        currency,
        plan_name,
        session_facts,
        succeeded: succeeded_at_ms.is_some(),
    }
}

async fn recipient(tx: &mut Tx, payment_id: &str) -> anyhow::Result<Option<Recipient>> {
    let sql = format!("SELECT {RECIPIENT_COLUMNS} WHERE payment_id = $1");
    let row: Option<RecipientRow> = on_backend!(tx, conn => {
        sqlx::query_as(&sql).bind(payment_id).fetch_optional(conn).await
    })?;
    Ok(row.map(recipient_of))
}

async fn session_recipient(tx: &mut Tx, session_id: &str) -> anyhow::Result<Option<Recipient>> {
    let sql = format!("SELECT {RECIPIENT_COLUMNS} WHERE session_id = $1");
    let row: Option<RecipientRow> = on_backend!(tx, conn => {
        sqlx::query_as(&sql).bind(session_id).fetch_optional(conn).await
    })?;
    Ok(row.map(recipient_of))
}

fn price_of(recipient: &Recipient) -> Value {
    json!({"amount_minor": recipient.price_minor, "currency": recipient.currency})
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
        "price": price_of(&recipient),
    });
    let mail = NewMail {
        key: format!("receipt:{payment_id}"),
        kind: DOOR_RECEIPT,
        payment_id,
        recipient: &recipient.email,
        facts,
    };
    queue(tx, mail, FactRef::of(event)).await?;
    Ok(())
}

/// Stripe reported the payment succeeded: for a device whose session has started, the
/// receipt can go.
async fn payment_succeeded(tx: &mut Tx, event: &JournalEvent) -> anyhow::Result<()> {
    let sql = "UPDATE mail_recipients SET succeeded_at_ms = $1 WHERE payment_id = $2 \
               AND succeeded_at_ms IS NULL";
    on_backend!(tx, conn => {
        sqlx::query(sql)
            .bind(event.recorded_at.timestamp_millis())
            .bind(&event.aggregate_id)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    match recipient(tx, &event.aggregate_id).await? {
        Some(recipient) if fresh(event) => queue_device_receipt(tx, event, recipient).await,
        _ => Ok(()),
    }
}

/// The device session started: its times are kept, and once the payment succeeded (the
/// capture follows the relay's ON) the receipt can go.
async fn session_activated(tx: &mut Tx, event: &JournalEvent) -> anyhow::Result<()> {
    let payload = &event.payload;
    let times = json!({"started_at": payload["started_at"], "ends_at": payload["ends_at"]});
    let sql = "UPDATE mail_recipients SET session_facts = $1 WHERE session_id = $2";
    on_backend!(tx, conn => {
        sqlx::query(sql)
            .bind(times.to_string())
            .bind(&event.aggregate_id)
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    match session_recipient(tx, &event.aggregate_id).await? {
        Some(recipient) if fresh(event) => queue_device_receipt(tx, event, recipient).await,
        _ => Ok(()),
    }
}

/// The device guest's receipt, once both the session started and the payment succeeded
/// (whichever fact comes second queues it; the key makes it one).
async fn queue_device_receipt(
    tx: &mut Tx,
    event: &JournalEvent,
    recipient: Recipient,
) -> anyhow::Result<()> {
    let (true, true, Some(times)) = (
        recipient.kind == "device",
        recipient.succeeded,
        recipient.session_facts.as_deref(),
    ) else {
        return Ok(());
    };
    let times: Value = serde_json::from_str(times)?;
    let facts = json!({
        "device_uid": recipient.target_uid,
        "plan_name": recipient.plan_name,
        "started_at": times["started_at"],
        "ends_at": times["ends_at"],
        "price": price_of(&recipient),
    });
    let mail = NewMail {
        key: format!("receipt:{}", recipient.payment_id),
        kind: DEVICE_RECEIPT,
        payment_id: &recipient.payment_id,
        recipient: &recipient.email,
        facts,
    };
    queue(tx, mail, FactRef::of(event)).await?;
    Ok(())
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
        "price": price_of(&recipient),
    });
    let mail = NewMail {
        key: format!("refund:{payment_id}:{total}"),
        kind: REFUND_NOTICE,
        payment_id,
        recipient: &recipient.email,
        facts,
    };
    queue(tx, mail, FactRef::of(event)).await?;
    Ok(())
}

/// A money or access failure, for the admins.
async fn queue_alert(tx: &mut Tx, event: &JournalEvent) -> anyhow::Result<()> {
    let payload = &event.payload;
    let payment_id = match event.aggregate_type.as_str() {
        "Payment" => event.aggregate_id.clone(),
        _ => payload["payment_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    };
    let reason = payload["reason"]
        .as_str()
        .or_else(|| payload["last_error"].as_str())
        .unwrap_or_default();
    let facts = json!({
        "what": event.event_type,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "reason": reason,
        "at": event.recorded_at,
        "position": event.position,
    });
    let mail = NewMail {
        key: format!(
            "alert:{}:{}:{}",
            event.aggregate_type, event.aggregate_id, event.sequence
        ),
        kind: ADMIN_ALERT,
        payment_id: &payment_id,
        recipient: ADMINS,
        facts,
    };
    queue(tx, mail, FactRef::of(event)).await?;
    Ok(())
}

/// A workflow reaction parked for an operator (called by `parking::park`, in the
/// transaction that parks it): one alert per parked event, however often it is parked
/// again.
pub async fn queue_parked_alert(
    tx: &mut Tx,
    subscriber: &str,
    event: &JournalEvent,
    error: &str,
) -> Result<(), sqlx::Error> {
    let facts = json!({
        "what": "ReactionParked",
        "subscriber": subscriber,
        "event_type": event.event_type,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "reason": error,
        "at": Utc::now(),
        "position": event.position,
    });
    let mail = NewMail {
        key: format!("alert:parked:{subscriber}:{}", event.position),
        kind: ADMIN_ALERT,
        payment_id: "",
        recipient: ADMINS,
        facts,
    };
    let fact = FactRef {
        position: event.position,
        at: Utc::now(),
    };
    queue(tx, mail, fact).await.map(|_| ())
}

/// One mail to queue. `payment_id` is empty for mail about no payment (a password reset,
/// an alert about a parked reaction, a resend of several links).
pub struct NewMail<'a> {
    pub key: String,
    pub kind: &'static str,
    pub payment_id: &'a str,
    pub recipient: &'a str,
    pub facts: Value,
}

/// Where the fact a mail reports sits: its journal position (0 for requests that are not
/// journal facts) and when it happened (mail about an old fact expires unsent).
#[derive(Clone, Copy, Debug)]
pub struct FactRef {
    pub position: i64,
    pub at: DateTime<Utc>,
}

impl FactRef {
    fn of(event: &JournalEvent) -> FactRef {
        FactRef {
            position: event.position,
            at: event.recorded_at,
        }
    }

    /// A request made now, outside the journal.
    pub fn request(at: DateTime<Utc>) -> FactRef {
        FactRef { position: 0, at }
    }
}

/// Queues `mail` inside `tx` unless its key is queued already; true when it was added.
pub async fn queue(tx: &mut Tx, mail: NewMail<'_>, fact: FactRef) -> Result<bool, sqlx::Error> {
    let now = Utc::now().timestamp_millis();
    let sql =
        "INSERT INTO mail_outbox (mail_key, kind, payment_id, recipient, facts, fact_position, \
               fact_at_ms, created_at_ms, next_attempt_at_ms) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (mail_key) DO NOTHING";
    let inserted = on_backend!(tx, conn => {
        sqlx::query(sql)
            .bind(&mail.key)
            .bind(mail.kind)
            .bind(mail.payment_id)
            .bind(mail.recipient)
            .bind(mail.facts.to_string())
            .bind(fact.position)
            .bind(fact.at.timestamp_millis())
            .bind(now)
            .execute(conn)
            .await
            .map(|result| result.rows_affected())
    })?;
    if inserted == 1 {
        tracing::info!(mail_key = %mail.key, payment_id = mail.payment_id, position = fact.position, "mail queued");
    }
    Ok(inserted == 1)
}

/// Queues `mail` in a transaction of its own, committed before this returns.
pub async fn queue_now(
    database: &Database,
    mail: NewMail<'_>,
    fact: FactRef,
) -> anyhow::Result<bool> {
    let mut tx = database.begin().await?;
    let added = queue(&mut tx, mail, fact).await?;
    tx.commit().await?;
    Ok(added)
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
    /// The message as first rendered, while the row is pending (see the worker).
    #[serde(skip)]
    pub frozen: Option<Frozen>,
}

/// A rendered message and its envelope recipients, sent as they are on every attempt.
#[derive(Clone, Debug)]
pub struct Frozen {
    pub message: String,
    pub envelope_to: Vec<String>,
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
    Option<String>,
    Option<String>,
);

const COLUMNS: &str = "mail_key, kind, payment_id, recipient, facts, fact_at_ms, created_at_ms, \
                       status, attempts, next_attempt_at_ms, last_error, sent_at_ms, \
                       message, envelope_to";

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
        message,
        envelope_to,
    ) = raw;
    let frozen = message.map(|message| Frozen {
        message,
        envelope_to: envelope_to
            .unwrap_or_default()
            .split(',')
            .filter(|address| !address.is_empty())
            .map(str::to_string)
            .collect(),
    });
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
        frozen,
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

/// A guest's recent payments (door or device) that reached Stripe, newest first: what
/// "lost your link?" sends links for. `email` is compared case-insensitively.
pub async fn recent_payments_for(
    database: &Database,
    email: &str,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let sql = "SELECT r.payment_id, r.kind, r.target_uid FROM mail_recipients r \
               JOIN payments p ON p.payment_id = r.payment_id \
               WHERE lower(r.email) = $1 AND r.created_at_ms >= $2 \
               AND p.status IN ('authorized', 'succeeded', 'partially_refunded') \
               ORDER BY r.created_at_ms DESC LIMIT $3";
    on_pool!(database, pool => {
        sqlx::query_as(sql)
            .bind(email.trim().to_lowercase())
            .bind(since.timestamp_millis())
            .bind(limit)
            .fetch_all(pool)
            .await
    })
}
