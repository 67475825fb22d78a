//! Sessions: the active ones with their remaining time (counted down in the browser by
//! the script, and right at every load without it), a force-end form with a required
//! reason for operators, and the history.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use latchkey_projections::sessions::{self, SessionFilter, SessionRow};
use maud::{html, Markup};
use serde::Deserialize;

use super::{
    badge, csrf_field, filled, may, page, see_other, select, when_opt, HtmlError, Operator,
    OperatorForm, PageResult,
};
use crate::http::auth::Permission;
use crate::http::extract::ApiJson;
use crate::http::operator_actions::{self, ForceEndBody};
use crate::http::read_params::{self, internal, DEFAULT_LIMIT, MAX_LIMIT};
use crate::http::sessions::STATES;
use crate::http::{ApiError, AppState};
use crate::projections_runtime::PooledConn;

/// States in which a session holds (or is about to hold) its device.
const LIVE_STATES: [&str; 4] = ["active", "opened", "queued", "finishing"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/sessions", get(list))
        .route("/dashboard/sessions/live", get(live))
        .route("/dashboard/sessions/{id}/force-end", post(force_end))
}

#[derive(Debug, Default, Deserialize)]
struct HistoryQuery {
    state: Option<String>,
    device: Option<String>,
    payment: Option<String>,
    ended: Option<String>,
}

async fn live_sessions(state: &AppState) -> Result<Vec<SessionRow>, ApiError> {
    let mut pooled = PooledConn::acquire(&state.database)
        .await
        .map_err(internal)?;
    let mut rows = Vec::new();
    for live_state in LIVE_STATES {
        let filter = SessionFilter {
            state: Some(live_state.to_string()),
            ..SessionFilter::default()
        };
        rows.extend(sessions::list(&mut pooled.conn(), &filter, MAX_LIMIT).await?);
    }
    Ok(rows)
}

async fn list(
    State(state): State<AppState>,
    op: Operator,
    Query(query): Query<HistoryQuery>,
) -> PageResult {
    op.require(Permission::Read)?;
    let filter = SessionFilter {
        state: read_params::one_of("state", filled(&query.state), STATES)?,
        device_uid: filled(&query.device).map(str::to_owned),
        payment_id: filled(&query.payment).map(str::to_owned),
    };
    let live = live_sessions(&state).await?;
    let history = {
        let mut pooled = PooledConn::acquire(&state.database)
            .await
            .map_err(internal)?;
        sessions::list(&mut pooled.conn(), &filter, DEFAULT_LIMIT)
            .await
            .map_err(ApiError::from)?
    };
    let now = Utc::now();
    let body = html! {
        h1 { "Sessions" }
        @if let Some(ended) = filled(&query.ended) {
            p.notice role="status" { "Session " code { (ended) } " was ended; its relay is being switched OFF." }
        }
        h2 { "Live" }
        div #live-sessions data-refresh="/dashboard/sessions/live" data-every="5" {
            (live_table(&op, &live, now))
        }
        h2 { "History" }
        form.filters method="get" action="/dashboard/sessions" {
            (select("state", "State", STATES, filter.state.as_deref()))
            label { "Device" input type="text" name="device" value=[filter.device_uid.as_deref()] size="8"; }
            label { "Payment" input type="text" name="payment" value=[filter.payment_id.as_deref()]; }
            button type="submit" { "Filter" }
        }
        @if history.is_empty() {
            p.empty { "No sessions match these filters." }
        } @else {
            div.scroll { table {
                thead { tr { th { "Session" } th { "State" } th { "Device" } th { "Plan" } th { "Started" } th { "Ended" } th { "Ended by" } th { "Payment" } } }
                tbody {
                    @for row in &history {
                        tr {
                            td { code { (short(&row.session_id)) } }
                            td { (badge(&row.state)) }
                            td { a href={ "/dashboard/devices/" (row.device_uid) } { (row.device_uid) } }
                            td { (row.plan_id) " (" (row.plan_minutes) " min)" }
                            td { (when_opt(row.started_at)) }
                            td { (when_opt(row.ended_at)) }
                            td { (row.ended_by.as_deref().unwrap_or("")) @if let Some(reason) = &row.end_reason { " — " (reason) } }
                            td { a href={ "/dashboard/payments/" (row.payment_id) } { (short(&row.payment_id)) } }
                        }
                    }
                }
            } }
        }
    };
    Ok(page(&op, "Sessions", body))
}

async fn live(State(state): State<AppState>, op: Operator) -> Result<Response, HtmlError> {
    op.require(Permission::Read)?;
    let live = live_sessions(&state).await?;
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        live_table(&op, &live, Utc::now()),
    )
        .into_response())
}

fn live_table(op: &Operator, rows: &[SessionRow], now: DateTime<Utc>) -> Markup {
    html! {
        @if rows.is_empty() {
            p.empty { "No live sessions." }
        } @else {
            div.scroll { table.sessions {
                thead { tr { th { "Session" } th { "State" } th { "Device" } th { "Remaining" } th { "Relay" }
                    @if may(op, Permission::Operate) { th { "Force end" } } } }
                tbody {
                    @for row in rows {
                        tr data-session=(row.session_id) {
                            td { code { (short(&row.session_id)) } }
                            td { (badge(&row.state)) }
                            td { a href={ "/dashboard/devices/" (row.device_uid) } { (row.device_uid) } }
                            td { (remaining(row, now)) }
                            td { (relay(row.relay_observed)) }
                            @if may(op, Permission::Operate) {
                                td {
                                    form.inline method="post" action={ "/dashboard/sessions/" (row.session_id) "/force-end" } {
                                        (csrf_field(op))
                                        label { span.visually-hidden { "Reason for ending " (short(&row.session_id)) }
                                            input type="text" name="reason" required placeholder="reason"; }
                                        button.danger type="submit" { "Force end" }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
    }
}

/// The time left as `mm:ss`, with the end time for the script to count down to.
fn remaining(row: &SessionRow, now: DateTime<Utc>) -> Markup {
    match (row.remaining_seconds(now), row.ends_at) {
        (Some(seconds), Some(ends_at)) if row.state == "active" => html! {
            time.remaining datetime=(ends_at.to_rfc3339()) data-ends-at=(ends_at.to_rfc3339()) { (clock(seconds)) }
        },
        (Some(seconds), _) => html! { (clock(seconds)) },
        _ => html! { "—" },
    }
}

/// `1:05:09`, `4:05`.
pub fn clock(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (hours, minutes, secs) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{secs:02}")
    } else {
        format!("{minutes}:{secs:02}")
    }
}

fn relay(observed: Option<bool>) -> &'static str {
    match observed {
        Some(true) => "ON",
        Some(false) => "OFF",
        None => "unknown",
    }
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[derive(Debug, Default, Deserialize)]
struct ForceEndForm {
    reason: Option<String>,
}

async fn force_end(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OperatorForm { operator: op, form }: OperatorForm<ForceEndForm>,
) -> PageResult {
    op.require(Permission::Operate)?;
    let reason = filled(&form.reason).map(str::to_owned).ok_or_else(|| {
        ApiError::Invalid(
            "say why the session is ended (the reason is kept in the audit log)".into(),
        )
    })?;
    let _ended = operator_actions::force_end(
        State(state),
        op.principal.clone(),
        Path(id.clone()),
        ApiJson(ForceEndBody { reason }),
    )
    .await?;
    Ok(see_other(&format!("/dashboard/sessions?ended={id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_read_as_minutes_and_seconds() {
        assert_eq!(clock(0), "0:00");
        assert_eq!(clock(65), "1:05");
        assert_eq!(clock(3_909), "1:05:09");
        assert_eq!(clock(-5), "0:00");
    }
}
