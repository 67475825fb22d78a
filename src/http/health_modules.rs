//! `GET /api/health/modules`: each integration's state (configured / ok / failing, the
//! last error and when), each projection's position and lag behind the journal, workflow
//! reactions parked for an operator, and money that Stripe refused to move (captures that
//! failed, holds Stripe would not release), for operators' dashboards.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::{Permission, Principal};
use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/health/modules", get(modules))
}

/// The answer's shape, for the document (the handler builds the same JSON; the
/// conformance run checks one against the other).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ModulesHealth {
    /// Stripe, TTLock, Shelly and email.
    modules: Vec<crate::integrations::health::ModuleHealthSnapshot>,
    projections: Vec<crate::projections_runtime::ProjectionStatus>,
    parked_reactions: ParkedCounts,
    payment_failures: PaymentFailures,
    amount_mismatches: AmountMismatches,
}

/// Workflow reactions waiting for an operator.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ParkedCounts {
    total: i64,
    by_subscriber: Vec<SubscriberParked>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SubscriberParked {
    subscriber: String,
    parked: i64,
}

/// Device captures Stripe refused for good, and holds it would not release.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PaymentFailures {
    capture_failed: i64,
    authorization_release_failed: i64,
    /// The newest ten.
    latest: Vec<PaymentFailure>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PaymentFailure {
    action: String,
    payment_id: String,
    reason: Option<String>,
    at: Option<String>,
}

/// Payments Stripe reported with an amount that is not the price.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AmountMismatches {
    /// How many wait for an admin (below the price: no access yet).
    held: i64,
    /// The newest 50.
    payments: Vec<AmountMismatch>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct AmountMismatch {
    payment_id: String,
    /// `below` or `above` the price.
    direction: Option<String>,
    access_held: bool,
    amount: i64,
    amount_received: i64,
    currency: String,
}

#[utoipa::path(get, path = "/api/health/modules", tag = "operations",
    responses((status = 200, body = ModulesHealth)),
    security(("bearer" = [])))]
pub async fn modules(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    principal.require(Permission::Read)?;
    let modules: Vec<_> = crate::shared_status::modules(&state)
        .await
        .map_err(anyhow::Error::new)?;
    for module in &modules {
        let failing = if module.state == crate::integrations::health::HealthState::Failing {
            1.0
        } else {
            0.0
        };
        state.metrics.set_gauge(
            "latchkey_module_failing",
            &[("module", &module.name)],
            failing,
        );
    }
    let projections = crate::projections_runtime::status(&state.database).await?;
    // Workflow reactions set aside for an operator (see `/api/parked-reactions`).
    let open = crate::store::parking::open_counts(&state.database)
        .await
        .map_err(anyhow::Error::new)?;
    let parked_total: i64 = open.iter().map(|(_, count)| count).sum();
    let by_subscriber: Vec<Value> = open
        .iter()
        .map(|(subscriber, count)| json!({ "subscriber": subscriber, "parked": count }))
        .collect();
    state
        .metrics
        .set_gauge("latchkey_reactions_parked", &[], parked_total as f64);
    let payment_failures = payment_failures(&state).await?;
    let amount_mismatches = amount_mismatches(&state).await?;
    Ok(Json(json!({
        "modules": modules,
        "projections": projections,
        "parked_reactions": { "total": parked_total, "by_subscriber": by_subscriber },
        "payment_failures": payment_failures,
        "amount_mismatches": amount_mismatches,
    })))
}

/// The audit actions of money Stripe refused to move for a device session.
const PAYMENT_FAILURE_ACTIONS: [&str; 2] = ["capture_failed", "authorization_release_failed"];

/// How many of the latest payment failures are listed.
const LATEST_PAYMENT_FAILURES: i64 = 10;

/// Captures Stripe refused for good and releases it would not make, read from the audit
/// log: counts per action and the latest few with the payment and Stripe's reason.
async fn payment_failures(state: &AppState) -> Result<Value, ApiError> {
    let counts_sql = "SELECT action, COUNT(*) FROM audit_log \
                      WHERE action IN ('capture_failed', 'authorization_release_failed') \
                      GROUP BY action";
    let counts: Vec<(String, i64)> = crate::on_pool!(&state.database, pool => {
        sqlx::query_as(counts_sql).fetch_all(pool).await
    })
    .map_err(anyhow::Error::new)?;
    let latest_sql = "SELECT action, aggregate_id, details FROM audit_log \
                      WHERE action IN ('capture_failed', 'authorization_release_failed') \
                      ORDER BY position DESC LIMIT $1";
    let latest: Vec<(String, String, String)> = crate::on_pool!(&state.database, pool => {
        sqlx::query_as(latest_sql).bind(LATEST_PAYMENT_FAILURES).fetch_all(pool).await
    })
    .map_err(anyhow::Error::new)?;
    let mut body = serde_json::Map::new();
    for action in PAYMENT_FAILURE_ACTIONS {
        let count = counts
            .iter()
            .find(|(name, _)| name == action)
            .map_or(0, |(_, count)| *count);
        state.metrics.set_gauge(
            "latchkey_payment_failures",
            &[("action", action)],
            count as f64,
        );
        body.insert(action.to_string(), json!(count));
    }
    let latest: Vec<Value> = latest
        .into_iter()
        .map(|(action, payment_id, details)| {
            let details: Value = serde_json::from_str(&details).unwrap_or(Value::Null);
            json!({
                "action": action,
                "payment_id": payment_id,
                "reason": details.get("reason"),
                "at": details.get("at"),
            })
        })
        .collect();
    body.insert("latest".to_string(), json!(latest));
    Ok(Value::Object(body))
}

/// Payments listed in health at most: the newest, so the section stays small.
const AMOUNT_MISMATCHES_SHOWN: i64 = 50;

/// Stripe amounts that were not the price (audit `amount_mismatch`): how many payments
/// wait for an operator's decision (held: below the price), and the newest of them all.
async fn amount_mismatches(state: &AppState) -> Result<Value, ApiError> {
    let mut pooled = crate::projections_runtime::PooledConn::acquire(&state.database)
        .await
        .map_err(super::read_params::internal)?;
    let rows = latchkey_projections::payments::amount_mismatches(
        &mut pooled.conn(),
        AMOUNT_MISMATCHES_SHOWN,
    )
    .await?;
    let held = rows.iter().filter(|row| row.access_held).count();
    state
        .metrics
        .set_gauge("latchkey_payments_access_held", &[], held as f64);
    let payments: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "payment_id": row.payment_id,
                "direction": row.amount_mismatch,
                "access_held": row.access_held,
                "amount": row.amount,
                "amount_received": row.amount_received,
                "currency": row.currency,
            })
        })
        .collect();
    Ok(json!({ "held": held, "payments": payments }))
}
