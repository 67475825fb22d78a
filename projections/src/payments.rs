//! `payments`: one row per payment, as the operators' list and detail show it.
//!
//! Status, amounts and Stripe ids are copied from the events, which already carry the
//! decided values (the status *after* each fact, Stripe's cumulative refunded total), so
//! this fold never re-derives a rule of the Payment aggregate.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use latchkey_aggregates::payment::{AmountMismatchDirection, PaymentEvent, PaymentTarget};
use serde::Serialize;

use crate::db::{Conn, Filters, Row};
use crate::{EventRecord, Projection, ProjectionError, Table};

pub struct PaymentsProjection;

const TABLES: &[Table] = &[Table {
    name: "payments",
    key: &["payment_id"],
}];

const INSERT: &str = "INSERT INTO payments (payment_id, kind, status, door_uid, device_uid, \
     plan_id, amount, amount_received, amount_refunded, amount_capturable, currency, email, \
     failed_attempts, disputed, created_at, updated_at) \
     VALUES ($1, $2, 'pending', $3, $4, $5, $6, 0, 0, 0, $7, $8, 0, $9, $10, $10) \
     ON CONFLICT (payment_id) DO NOTHING";

#[async_trait]
impl Projection for PaymentsProjection {
    fn name(&self) -> &'static str {
        "payments"
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    async fn apply(
        &self,
        conn: &mut Conn<'_>,
        event: &EventRecord<'_>,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != "Payment" {
            return Ok(());
        }
        let id = event.aggregate_id;
        match event.decode::<PaymentEvent>()? {
            PaymentEvent::CheckoutStarted {
                target,
                price,
                guest_email,
                at,
                ..
            } => {
                let (kind, door_uid, device_uid, plan_id) = match target {
                    PaymentTarget::Door { door_uid } => ("door", Some(door_uid), None, None),
                    PaymentTarget::Device {
                        device_uid,
                        plan_id,
                    } => ("device", None, Some(device_uid), Some(plan_id)),
                };
                let params = [
                    id.into(),
                    kind.into(),
                    door_uid.into(),
                    device_uid.into(),
                    plan_id.into(),
                    price.amount_minor.into(),
                    price.currency.as_str().into(),
                    guest_email.into(),
                    false.into(),
                    at.into(),
                ];
                conn.execute(INSERT, &params).await?;
            }
            PaymentEvent::CheckoutSessionCreated {
                checkout_session_id,
                payment_intent_id,
                at,
                ..
            } => {
                let sql = "UPDATE payments SET stripe_checkout_session = $2, \
                           stripe_payment_intent = COALESCE($3, stripe_payment_intent), \
                           updated_at = $4 WHERE payment_id = $1";
                let params = [
                    id.into(),
                    checkout_session_id.into(),
                    payment_intent_id.into(),
                    at.into(),
                ];
                conn.execute(sql, &params).await?;
            }
            PaymentEvent::PaymentAuthorized {
                payment_intent_id,
                amount_capturable,
                status,
                at,
                ..
            } => {
                let sql = "UPDATE payments SET status = $2, stripe_payment_intent = $3, \
                           amount_capturable = $4, updated_at = $5 WHERE payment_id = $1";
                let params = [
                    id.into(),
                    status.as_str().into(),
                    payment_intent_id.into(),
                    amount_capturable.amount_minor.into(),
                    at.into(),
                ];
                conn.execute(sql, &params).await?;
            }
            PaymentEvent::PaymentFailed {
                payment_intent_id,
                reason,
                attempt,
                status,
                at,
                ..
            } => {
                let sql = "UPDATE payments SET status = $2, stripe_payment_intent = $3, \
                           failed_attempts = $4, last_failure_reason = $5, updated_at = $6 \
                           WHERE payment_id = $1";
                let params = [
                    id.into(),
                    status.as_str().into(),
                    payment_intent_id.into(),
                    i64::from(attempt).into(),
                    reason.into(),
                    at.into(),
                ];
                conn.execute(sql, &params).await?;
            }
            PaymentEvent::PaymentSucceeded {
                payment_intent_id,
                charge_id,
                amount_received,
                status,
                stripe_event,
                at,
            } => {
                // `succeeded_at` is Stripe's time of the success, as the aggregate keeps it.
                let sql = "UPDATE payments SET status = $2, stripe_payment_intent = $3, \
                           stripe_charge = COALESCE($4, stripe_charge), amount_received = $5, \
                           succeeded_at = $6, updated_at = $7 WHERE payment_id = $1";
                let params = [
                    id.into(),
                    status.as_str().into(),
                    payment_intent_id.into(),
                    charge_id.into(),
                    amount_received.amount_minor.into(),
                    stripe_event.created.into(),
                    at.into(),
                ];
                conn.execute(sql, &params).await?;
            }
            PaymentEvent::RefundRecorded {
                charge_id,
                amount_refunded,
                status,
                stripe_event,
                at,
                ..
            } => {
                let sql = "UPDATE payments SET status = $2, stripe_charge = $3, \
                           amount_refunded = $4, refunded_at = $5, updated_at = $6 \
                           WHERE payment_id = $1";
                let params = [
                    id.into(),
                    status.as_str().into(),
                    charge_id.into(),
                    amount_refunded.amount_minor.into(),
                    stripe_event.created.into(),
                    at.into(),
                ];
                conn.execute(sql, &params).await?;
            }
            PaymentEvent::PaymentCancelled {
                payment_intent_id,
                status,
                at,
                ..
            } => {
                let sql = "UPDATE payments SET status = $2, stripe_payment_intent = $3, \
                           updated_at = $4 WHERE payment_id = $1";
                let params = [
                    id.into(),
                    status.as_str().into(),
                    payment_intent_id.into(),
                    at.into(),
                ];
                conn.execute(sql, &params).await?;
            }
            PaymentEvent::CheckoutExpired {
                checkout_session_id,
                status,
                at,
                ..
            } => {
                let sql = "UPDATE payments SET status = $2, stripe_checkout_session = $3, \
                           updated_at = $4 WHERE payment_id = $1";
                let params = [
                    id.into(),
                    status.as_str().into(),
                    checkout_session_id.into(),
                    at.into(),
                ];
                conn.execute(sql, &params).await?;
            }
            PaymentEvent::PaymentDisputed { at, .. } => {
                let sql = "UPDATE payments SET disputed = $2, updated_at = $3 \
                           WHERE payment_id = $1";
                conn.execute(sql, &[id.into(), true.into(), at.into()])
                    .await?;
            }
            PaymentEvent::PaymentAmountMismatch { direction, at, .. } => {
                let held = direction == AmountMismatchDirection::Below;
                let sql = "UPDATE payments SET amount_mismatch = $2, access_held = $3, \
                           updated_at = $4 WHERE payment_id = $1";
                let params = [id.into(), direction.as_str().into(), held.into(), at.into()];
                conn.execute(sql, &params).await?;
            }
            PaymentEvent::PaymentAccessGranted { at, .. } => {
                let sql = "UPDATE payments SET access_held = $2, updated_at = $3 \
                           WHERE payment_id = $1";
                conn.execute(sql, &[id.into(), false.into(), at.into()])
                    .await?;
            }
            // Requests and ignored reports change nothing a payment row shows; the audit
            // log has them (dispute money is the revenue projection's).
            PaymentEvent::DuplicateConfirmationIgnored { .. }
            | PaymentEvent::StripeReportIgnored { .. }
            | PaymentEvent::PaymentCaptureRequested { .. }
            | PaymentEvent::PaymentCancellationRequested { .. }
            | PaymentEvent::PaymentCaptureOrdered { .. }
            | PaymentEvent::PaymentCaptureFailed { .. }
            | PaymentEvent::PaymentCancellationOrdered { .. }
            | PaymentEvent::PaymentCancellationFailed { .. }
            | PaymentEvent::RefundRequested { .. }
            | PaymentEvent::RefundOrdered { .. }
            | PaymentEvent::RefundSubmitted { .. }
            | PaymentEvent::RefundSubmissionFailed { .. }
            | PaymentEvent::StripeRefundReported { .. }
            | PaymentEvent::DisputeFundsWithdrawn { .. }
            | PaymentEvent::DisputeFundsReinstated { .. }
            | PaymentEvent::DisputeClosed { .. } => {}
        }
        Ok(())
    }
}

/// One row of `payments`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PaymentRow {
    pub payment_id: String,
    pub kind: String,
    pub status: String,
    pub amount: i64,
    pub amount_received: i64,
    pub amount_refunded: i64,
    pub amount_capturable: i64,
    pub currency: String,
    pub email: String,
    pub door_uid: Option<String>,
    pub device_uid: Option<String>,
    pub plan_id: Option<String>,
    pub stripe_checkout_session: Option<String>,
    pub stripe_payment_intent: Option<String>,
    pub stripe_charge: Option<String>,
    pub failed_attempts: i64,
    pub last_failure_reason: Option<String>,
    pub disputed: bool,
    /// `below`, `above` or `other_currency` when Stripe reported an amount that is not
    /// the price.
    pub amount_mismatch: Option<String>,
    /// Below the price: no access until an operator grants it (or refunds).
    pub access_held: bool,
    pub created_at: DateTime<Utc>,
    pub succeeded_at: Option<DateTime<Utc>>,
    pub refunded_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "payment_id, kind, status, amount, amount_received, amount_refunded, \
     amount_capturable, currency, email, door_uid, device_uid, plan_id, \
     stripe_checkout_session, stripe_payment_intent, stripe_charge, failed_attempts, \
     last_failure_reason, disputed, amount_mismatch, access_held, created_at, succeeded_at, \
     refunded_at, updated_at";

impl PaymentRow {
    fn from_row(row: &Row) -> Result<Self, ProjectionError> {
        Ok(PaymentRow {
            payment_id: row.get("payment_id")?,
            kind: row.get("kind")?,
            status: row.get("status")?,
            amount: row.get("amount")?,
            amount_received: row.get("amount_received")?,
            amount_refunded: row.get("amount_refunded")?,
            amount_capturable: row.get("amount_capturable")?,
            currency: row.get("currency")?,
            email: row.get("email")?,
            door_uid: row.get("door_uid")?,
            device_uid: row.get("device_uid")?,
            plan_id: row.get("plan_id")?,
            stripe_checkout_session: row.get("stripe_checkout_session")?,
            stripe_payment_intent: row.get("stripe_payment_intent")?,
            stripe_charge: row.get("stripe_charge")?,
            failed_attempts: row.get("failed_attempts")?,
            last_failure_reason: row.get("last_failure_reason")?,
            disputed: row.get("disputed")?,
            amount_mismatch: row.get("amount_mismatch")?,
            access_held: row.get("access_held")?,
            created_at: row.get("created_at")?,
            succeeded_at: row.get("succeeded_at")?,
            refunded_at: row.get("refunded_at")?,
            updated_at: row.get("updated_at")?,
        })
    }

    /// Where the next page starts after this row.
    pub fn key(&self) -> PageKey {
        PageKey {
            created_at: self.created_at,
            payment_id: self.payment_id.clone(),
        }
    }
}

/// Keyset position in the newest-first list: `(created_at, payment_id)` of the last row
/// seen. A payment inserted while someone pages is newer than every row already listed,
/// so it never shifts the pages still to come: each older payment appears exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageKey {
    pub created_at: DateTime<Utc>,
    pub payment_id: String,
}

/// Filters of `GET /api/payments`; every field is optional.
#[derive(Clone, Debug, Default)]
pub struct PaymentFilter {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub door_uid: Option<String>,
    pub device_uid: Option<String>,
    pub email: Option<String>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
}

/// A page of payments, newest first, after `after` if given.
pub async fn list(
    conn: &mut Conn<'_>,
    filter: &PaymentFilter,
    after: Option<&PageKey>,
    limit: i64,
) -> Result<Vec<PaymentRow>, ProjectionError> {
    let mut filters = Filters::default();
    let equal = [
        ("status", &filter.status),
        ("kind", &filter.kind),
        ("door_uid", &filter.door_uid),
        ("device_uid", &filter.device_uid),
        ("email", &filter.email),
    ];
    for (column, value) in equal {
        if let Some(value) = value {
            filters.add(&format!("{column} = ?"), vec![value.clone().into()]);
        }
    }
    if let Some(from) = filter.from {
        filters.add("created_at >= ?", vec![from.into()]);
    }
    if let Some(to) = filter.to {
        filters.add("created_at < ?", vec![to.into()]);
    }
    if let Some(key) = after {
        filters.add(
            "(created_at, payment_id) < (?, ?)",
            vec![key.created_at.into(), key.payment_id.clone().into()],
        );
    }
    let limit = filters.push(limit.into());
    let sql = format!(
        "SELECT {COLUMNS} FROM payments {} ORDER BY created_at DESC, payment_id DESC LIMIT {limit}",
        filters.where_clause()
    );
    let rows = conn.fetch_all(&sql, filters.params()).await?;
    rows.iter().map(PaymentRow::from_row).collect()
}

/// One payment by id.
pub async fn get(
    conn: &mut Conn<'_>,
    payment_id: &str,
) -> Result<Option<PaymentRow>, ProjectionError> {
    let sql = format!("SELECT {COLUMNS} FROM payments WHERE payment_id = $1");
    let row = conn.fetch_optional(&sql, &[payment_id.into()]).await?;
    row.as_ref().map(PaymentRow::from_row).transpose()
}

/// How many payments were created at or after `since`, by status.
pub async fn count_by_status_since(
    conn: &mut Conn<'_>,
    since: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, ProjectionError> {
    let sql = "SELECT status, COUNT(*) AS n FROM payments WHERE created_at >= $1 \
               GROUP BY status ORDER BY status";
    let rows = conn.fetch_all(sql, &[since.into()]).await?;
    rows.iter()
        .map(|row| Ok((row.get("status")?, row.get("n")?)))
        .collect()
}

/// Payments Stripe reported with an amount that is not their price, newest change first,
/// at most `limit`: what module health shows operators (held ones wait for a decision).
pub async fn amount_mismatches(
    conn: &mut Conn<'_>,
    limit: i64,
) -> Result<Vec<PaymentRow>, ProjectionError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM payments WHERE amount_mismatch IS NOT NULL \
         ORDER BY updated_at DESC, payment_id LIMIT $1"
    );
    let rows = conn.fetch_all(&sql, &[limit.into()]).await?;
    rows.iter().map(PaymentRow::from_row).collect()
}

/// Every payment, by id; for tests and diffs.
pub async fn all(conn: &mut Conn<'_>) -> Result<Vec<PaymentRow>, ProjectionError> {
    let sql = format!("SELECT {COLUMNS} FROM payments ORDER BY payment_id");
    let rows = conn.fetch_all(&sql, &[]).await?;
    rows.iter().map(PaymentRow::from_row).collect()
}
