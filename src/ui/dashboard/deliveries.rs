//! Webhook deliveries: Stripe's events in the inbox with their statuses, attempts and
//! errors, newest first, and a retry button for operators on failed or waiting rows.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use serde::Deserialize;

use crate::ui::account::OperatorForm;

use super::{
    badge, csrf_field, filled, may, page, query_string, see_other, select, when, Operator,
    PageResult,
};
use crate::http::auth::Permission;
use crate::http::read_params::DEFAULT_LIMIT;
use crate::http::stripe_webhook;
use crate::http::{ApiError, AppState};
use crate::store::inbox::Cursor;

const STATUSES: [&str; 4] = ["received", "processed", "ignored", "failed"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/deliveries", get(list))
        .route("/dashboard/deliveries/{event_id}/retry", post(retry))
}

#[derive(Debug, Default, Deserialize)]
struct DeliveriesQuery {
    status: Option<String>,
    cursor: Option<String>,
    retried: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    op: Operator,
    Query(query): Query<DeliveriesQuery>,
) -> PageResult {
    op.require(Permission::Read)?;
    let status = crate::http::read_params::one_of("status", filled(&query.status), &STATUSES)?;
    let cursor = filled(&query.cursor)
        .map(|raw| {
            Cursor::decode(raw)
                .ok_or_else(|| ApiError::Invalid("cursor is not one this page made".into()))
        })
        .transpose()?;
    let rows = state
        .stripe
        .inbox
        .list(DEFAULT_LIMIT, cursor.as_ref(), status.as_deref())
        .await
        .map_err(anyhow::Error::new)
        .map_err(ApiError::Internal)?;
    let next = match rows.last() {
        Some(last) if rows.len() as i64 == DEFAULT_LIMIT => {
            let cursor = Cursor {
                received_at: last.received_at,
                event_id: last.event_id.clone(),
            }
            .encode();
            Some(format!(
                "/dashboard/deliveries{}",
                query_string(&[("status", status.as_deref()), ("cursor", Some(&cursor))])
            ))
        }
        _ => None,
    };
    let operate = may(&op, Permission::Operate);
    let body = html! {
        h1 { "Webhook deliveries" }
        @if let Some(event_id) = filled(&query.retried) {
            p.notice role="status" { "Retried " code { (event_id) } "." }
        }
        form.filters method="get" action="/dashboard/deliveries" {
            (select("status", "Status", &STATUSES, status.as_deref()))
            button type="submit" { "Filter" }
        }
        @if rows.is_empty() { p.empty { "No deliveries." } } @else {
            div.scroll { table.deliveries {
                thead { tr { th { "Received" } th { "Event" } th { "Type" } th { "Status" } th { "Attempts" } th { "Last error" } th { "Payment" } @if operate { th { "Retry" } } } }
                tbody { @for row in &rows { tr {
                    td { (when(row.received_at)) }
                    td { code { (row.event_id) } }
                    td { (row.event_type) }
                    td { (badge(&row.status)) @if row.duplicates > 0 { " +" (row.duplicates) " repeats" } }
                    td.num { (row.attempts) }
                    td { (row.last_error.as_deref().or(row.ignore_reason.as_deref()).unwrap_or("")) }
                    td { @if let Some(payment) = &row.payment_id { a href={ "/dashboard/payments/" (payment) } { (payment.get(..8).unwrap_or(payment)) } } }
                    @if operate { td {
                        @if matches!(row.status.as_str(), "failed" | "received") {
                            form.inline method="post" action={ "/dashboard/deliveries/" (row.event_id) "/retry" } {
                                (csrf_field(&op))
                                button type="submit" { "Retry" }
                            }
                        }
                    } }
                } } }
            } }
        }
        @if let Some(next) = next { p.pager { a rel="next" href=(next) { "Older deliveries →" } } }
    };
    Ok(page(&op, "Deliveries", body))
}

async fn retry(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
    OperatorForm { operator: op, .. }: OperatorForm<super::Button>,
) -> PageResult {
    op.require(Permission::Operate)?;
    stripe_webhook::retry(&state, &event_id, &op.principal.actor_id).await?;
    Ok(see_other(&format!(
        "/dashboard/deliveries?retried={}",
        super::encode(&event_id)
    )))
}
