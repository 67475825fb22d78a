//! Parked reactions: workflow reactions that failed for good and were set aside so the
//! workflow could carry on for everyone else ([`crate::store::parking`]). Operators fix the
//! cause (re-add a plan, end maintenance…) and retry, or skip with a note.

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::Router;
use maud::html;
use serde::Deserialize;

use super::{
    badge, csrf_field, filled, may, page, query_string, see_other, select, when, Operator,
    OperatorForm, PageResult,
};
use crate::http::auth::Permission;
use crate::http::{parked as parked_api, AppState};
use crate::store::parking::{self, OperatorDecision};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/parked", get(list))
        .route("/dashboard/parked/{id}/retry", post(retry))
        .route("/dashboard/parked/{id}/skip", post(skip))
}

#[derive(Debug, Default, Deserialize)]
struct ParkedQuery {
    status: Option<String>,
    done: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    op: Operator,
    Query(query): Query<ParkedQuery>,
) -> PageResult {
    op.require(Permission::Read)?;
    let status = crate::http::read_params::one_of(
        "status",
        filled(&query.status).or(Some("parked")),
        &parking::STATUSES,
    )?;
    let rows = parking::list(&state.database, status.as_deref(), 200)
        .await
        .map_err(|error| crate::http::ApiError::Internal(error.into()))?;
    let operate = may(&op, Permission::Operate);
    let body = html! {
        h1 { "Parked reactions" }
        p { "A workflow reaction that failed for good is set aside here, so the workflow \
             carries on for every other payment. Fix the cause, then retry; or skip it, \
             saying why." }
        @if let Some(done) = filled(&query.done) {
            p.notice role="status" { (done) }
        }
        form.filters method="get" action="/dashboard/parked" {
            (select("status", "Status", &parking::STATUSES, status.as_deref()))
            button type="submit" { "Filter" }
        }
        @if rows.is_empty() { p.empty { "Nothing parked." } } @else {
            div.scroll { table.data.parked {
                thead { tr { th { "Parked" } th { "Workflow" } th { "Event" } th { "Error" } th { "Attempts" } th { "Status" } @if operate { th { "Act" } } } }
                tbody { @for row in &rows { tr {
                    td { (when(row.parked_at)) }
                    td { (row.subscriber) }
                    td { (row.event_type) " of " (row.aggregate_type) " " code { (row.aggregate_id) } " (#" (row.position) ")" }
                    td { (row.error) }
                    td.num { (row.attempts) }
                    td { (badge(&row.status))
                        @if let Some(actor) = &row.acted_by { br; small { "by " (actor) @if let Some(note) = &row.note { ": " (note) } } } }
                    @if operate { td {
                        @if row.status == "parked" {
                            form.inline method="post" action={ "/dashboard/parked/" (row.parked_id) "/retry" } {
                                (csrf_field(&op))
                                button type="submit" { "Retry" }
                            }
                            form.inline method="post" action={ "/dashboard/parked/" (row.parked_id) "/skip" } {
                                (csrf_field(&op))
                                label { span.visually-hidden { "Why skip" } input type="text" name="note" placeholder="why skip" required; }
                                button type="submit" { "Skip" }
                            }
                        }
                    } }
                } } }
            } }
        }
    };
    Ok(page(&op, "Parked", body))
}

#[derive(Debug, Deserialize)]
struct DecisionForm {
    note: Option<String>,
}

async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OperatorForm { operator: op, form }: OperatorForm<DecisionForm>,
) -> PageResult {
    op.require(Permission::Operate)?;
    let note = filled(&form.note);
    parked_api::decide(
        &state,
        &id,
        OperatorDecision::Retry,
        &op.principal.actor_id,
        note,
    )
    .await?;
    Ok(see_other(&format!(
        "/dashboard/parked{}",
        query_string(&[(
            "done",
            Some("Retry asked for; the workflow runs it shortly.")
        )])
    )))
}

async fn skip(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OperatorForm { operator: op, form }: OperatorForm<DecisionForm>,
) -> PageResult {
    op.require(Permission::Operate)?;
    let note = filled(&form.note).ok_or_else(|| {
        crate::http::ApiError::Invalid("say why the reaction is skipped (kept on the row)".into())
    })?;
    parked_api::decide(
        &state,
        &id,
        OperatorDecision::Skip,
        &op.principal.actor_id,
        Some(note),
    )
    .await?;
    Ok(see_other(&format!(
        "/dashboard/parked{}",
        query_string(&[("done", Some("Skipped."))])
    )))
}
