//! `GET /api/payments` and `GET /api/payments/{id}`: the payments projection, and one
//! payment with its full history from the journal.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use latchkey_projections::payments::{self, PageKey, PaymentFilter, PaymentRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Permission, Principal};
use super::journal_api::JournalEventView;
use super::read_params::{self, internal, ReadQuery};
use super::{ApiError, AppState};
use crate::projections_runtime::PooledConn;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/payments", get(list))
        .route("/api/payments/{id}", get(detail))
}

pub const STATUSES: &[&str] = &[
    "pending",
    "authorized",
    "succeeded",
    "partially_refunded",
    "refunded",
    "failed",
    "cancelled",
    "expired",
];

/// A payment as API.md shapes it (plus a few more fields).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PaymentView {
    pub payment_id: String,
    /// `door` or `device`.
    pub kind: String,
    /// One of pending, authorized, succeeded, partially_refunded, refunded, failed,
    /// cancelled, expired.
    pub status: String,
    /// The price locked at checkout, minor units.
    pub amount: i64,
    /// What Stripe collected (less than `amount` after a partial capture).
    pub amount_received: i64,
    /// Stripe's cumulative refunded total.
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
    /// the price (audit `amount_mismatch`).
    pub amount_mismatch: Option<String>,
    /// Below the price: no access until an operator grants it
    /// (`POST /api/payments/{id}/grant-access`) or refunds.
    pub access_held: bool,
    pub created_at: DateTime<Utc>,
    pub succeeded_at: Option<DateTime<Utc>>,
    pub refunded_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl From<PaymentRow> for PaymentView {
    fn from(row: PaymentRow) -> Self {
        PaymentView {
            payment_id: row.payment_id,
            kind: row.kind,
            status: row.status,
            amount: row.amount,
            amount_received: row.amount_received,
            amount_refunded: row.amount_refunded,
            amount_capturable: row.amount_capturable,
            currency: row.currency,
            email: row.email,
            door_uid: row.door_uid,
            device_uid: row.device_uid,
            plan_id: row.plan_id,
            stripe_checkout_session: row.stripe_checkout_session,
            stripe_payment_intent: row.stripe_payment_intent,
            stripe_charge: row.stripe_charge,
            failed_attempts: row.failed_attempts,
            last_failure_reason: row.last_failure_reason,
            disputed: row.disputed,
            amount_mismatch: row.amount_mismatch,
            access_held: row.access_held,
            created_at: row.created_at,
            succeeded_at: row.succeeded_at,
            refunded_at: row.refunded_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PaymentPage {
    pub items: Vec<PaymentView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A payment and every event of its history, in order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PaymentDetail {
    #[serde(flatten)]
    pub payment: PaymentView,
    pub events: Vec<JournalEventView>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentQuery {
    /// pending, authorized, succeeded, partially_refunded, refunded, failed, cancelled, expired.
    pub status: Option<String>,
    /// door or device.
    pub kind: Option<String>,
    /// Door uid.
    pub door: Option<String>,
    /// Device uid.
    pub device: Option<String>,
    /// Guest email, exactly as entered.
    pub email: Option<String>,
    /// Created at or after (RFC 3339 or YYYY-MM-DD).
    pub from: Option<String>,
    /// Created before (RFC 3339 or YYYY-MM-DD).
    pub to: Option<String>,
    /// 1–200, default 50.
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Payments, newest first, keyset-paginated.
#[utoipa::path(get, path = "/api/payments", tag = "payments",
    params(PaymentQuery),
    responses(
        (status = 200, body = PaymentPage),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 422, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ReadQuery(query): ReadQuery<PaymentQuery>,
) -> Result<Json<PaymentPage>, ApiError> {
    principal.require(Permission::Read)?;
    let filter = filter_of(&query)?;
    let limit = read_params::limit(query.limit.as_deref())?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let mut pooled = PooledConn::acquire(&state.database)
        .await
        .map_err(internal)?;
    let rows = payments::list(&mut pooled.conn(), &filter, after.as_ref(), limit).await?;
    let next_cursor = match rows.last() {
        Some(last) if rows.len() as i64 == limit => Some(encode_cursor(&last.key())),
        _ => None,
    };
    Ok(Json(PaymentPage {
        items: rows.into_iter().map(PaymentView::from).collect(),
        next_cursor,
    }))
}

/// The filters of a payments query, each checked (422 naming a bad one).
pub fn filter_of(query: &PaymentQuery) -> Result<PaymentFilter, ApiError> {
    Ok(PaymentFilter {
        status: read_params::one_of("status", query.status.as_deref(), STATUSES)?,
        kind: read_params::one_of("kind", query.kind.as_deref(), &["door", "device"])?,
        door_uid: read_params::text("door", query.door.as_deref())?,
        device_uid: read_params::text("device", query.device.as_deref())?,
        email: read_params::text("email", query.email.as_deref())?,
        from: read_params::time("from", query.from.as_deref())?,
        to: read_params::time("to", query.to.as_deref())?,
    })
}

pub fn encode_cursor(key: &PageKey) -> String {
    let created_at = key
        .created_at
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    read_params::encode_cursor(&[&created_at, &key.payment_id])
}

pub fn decode_cursor(value: &str) -> Result<PageKey, ApiError> {
    let parts = read_params::decode_cursor(value, 2)?;
    let created_at = DateTime::parse_from_rfc3339(&parts[0])
        .map_err(|_| ApiError::Invalid("cursor is not one this API returned".to_owned()))?
        .with_timezone(&Utc);
    Ok(PageKey {
        created_at,
        payment_id: parts[1].clone(),
    })
}

/// One payment with its full event history.
#[utoipa::path(get, path = "/api/payments/{id}", tag = "payments",
    params(("id" = String, Path, description = "Payment UUID")),
    responses(
        (status = 200, body = PaymentDetail),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 404, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn detail(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<PaymentDetail>, ApiError> {
    principal.require(Permission::Read)?;
    let not_found = || ApiError::NotFound(format!("no payment {id:?}"));
    let row = {
        let mut pooled = PooledConn::acquire(&state.database)
            .await
            .map_err(internal)?;
        payments::get(&mut pooled.conn(), &id).await?
    };
    let row = row.ok_or_else(not_found)?;
    let events = state
        .journal
        .aggregate_events("Payment", &id, None)
        .await
        .map_err(internal)?;
    Ok(Json(PaymentDetail {
        payment: row.into(),
        events: events.into_iter().map(JournalEventView::from).collect(),
    }))
}
