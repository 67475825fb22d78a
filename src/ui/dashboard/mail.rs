//! `/dashboard/mail`: the mail outbox (issue 21): every receipt, refund notice, resent
//! link, password reset and admin alert queued, whether it was sent, how often it was
//! tried and the last error. Mail that
//! failed for good says why here; the fix is usually the SMTP settings.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use maud::html;
use serde::Deserialize;

use super::{badge, filled, page, select, when, Operator, PageResult};
use crate::http::auth::Permission;
use crate::http::AppState;
use crate::mail::outbox;

pub fn router() -> Router<AppState> {
    Router::new().route("/dashboard/mail", get(list))
}

#[derive(Debug, Default, Deserialize)]
struct MailQuery {
    status: Option<String>,
}

/// Rows shown at most, newest first.
const ROWS_MAX: i64 = 200;

async fn list(
    State(state): State<AppState>,
    op: Operator,
    Query(query): Query<MailQuery>,
) -> PageResult {
    op.require(Permission::Read)?;
    let status =
        crate::http::read_params::one_of("status", filled(&query.status), &outbox::STATUSES)?;
    let rows = outbox::list(&state.database, status.as_deref(), ROWS_MAX)
        .await
        .map_err(|error| crate::http::ApiError::Internal(error.into()))?;
    let configured = state.mail.configured();
    let body = html! {
        h1 { "Mail" }
        @if !configured {
            p.notice role="status" { "Email is not configured: set LATCHKEY_SMTP_URL and \
                LATCHKEY_MAIL_FROM. Mail is queued here and sent once it is." }
        }
        form.filters method="get" action="/dashboard/mail" {
            (select("status", "Status", &outbox::STATUSES, status.as_deref()))
            button type="submit" { "Filter" }
        }
        @if rows.is_empty() { p.empty { "No mail." } } @else {
            div.scroll { table.data.mail {
                thead { tr { th { "Queued" } th { "Mail" } th { "To" } th { "Payment" } th { "Status" } th { "Attempts" } th { "Sent" } th { "Last error" } } }
                tbody { @for row in &rows { tr {
                    td { (when(row.created_at)) }
                    td { (row.kind.replace('_', " ")) }
                    td { (row.recipient) }
                    td { @if row.payment_id.is_empty() { "—" } @else {
                        a href={ "/dashboard/payments/" (row.payment_id) } { code { (row.payment_id.get(..8).unwrap_or(&row.payment_id)) } }
                    } }
                    td { (badge(&row.status)) }
                    td.num { (row.attempts) }
                    td { @if let Some(sent) = row.sent_at { (when(sent)) } }
                    td { @if let Some(error) = &row.last_error { (error) } }
                } } }
            } }
        }
    };
    Ok(page(&op, "Mail", body))
}
