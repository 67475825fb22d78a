//! `GET /api/health/modules`: each integration's state (configured / ok / failing, the
//! last error and when) and each projection's position and lag behind the journal, for
//! operators' dashboards.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::{Permission, Principal};
use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/health/modules", get(modules))
}

#[utoipa::path(get, path = "/api/health/modules", tag = "operations",
    responses((status = 200, description = "{modules, projections, parked_reactions: {total, by_subscriber}}"), (status = 401, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn modules(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    principal.require(Permission::Read)?;
    let modules: Vec<_> = state
        .gateways
        .current()
        .health
        .iter()
        .map(|health| health.snapshot())
        .collect();
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
    let amount_mismatches = amount_mismatches(&state).await?;
    Ok(Json(json!({
        "modules": modules,
        "projections": projections,
        "parked_reactions": { "total": parked_total, "by_subscriber": by_subscriber },
        "amount_mismatches": amount_mismatches,
    })))
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
