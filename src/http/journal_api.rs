//! The auditors' view of the journal itself: `GET /api/events` (global order),
//! `GET /api/aggregates/{type}/{id}?at=` (state at a time, by replay) and
//! `GET /api/verify` (the hash chains).
//!
//! Door passcodes are masked (`"code": "***"`) for every role: auditors read the whole
//! history but need no live codes, and a code in an API answer ends up in scripts, logs
//! and spreadsheets. An admin who must see one (a guest at the door without their page)
//! adds `reveal_codes=true`; the reveal is logged with the admin's id (`passcodes
//! revealed`, target `latchkey::audit`).

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Permission, Principal};
use super::read_params::{self, internal, ReadQuery};
use super::{ApiError, AppState};
use crate::cli::replay::{self, ReplayError, ReplayedState};
use crate::cli::verify::verify_journal;
use crate::store::journal::{EventFilter, JournalEvent};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/events", get(events))
        .route(
            "/api/aggregates/{aggregate_type}/{id}",
            get(aggregate_state),
        )
        .route("/api/verify", get(verify))
}

/// A journal event as API.md shapes it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JournalEventView {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    #[schema(value_type = Object)]
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

impl From<JournalEvent> for JournalEventView {
    fn from(event: JournalEvent) -> Self {
        JournalEventView {
            position: event.position,
            aggregate_type: event.aggregate_type,
            aggregate_id: event.aggregate_id,
            sequence: event.sequence,
            event_type: event.event_type,
            event_version: event.event_version,
            payload: event.payload,
            metadata: event.metadata,
            recorded_at: event.recorded_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<JournalEventView>,
    /// The position to pass as `after` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events after this position (default 0: from the start).
    pub after: Option<String>,
    /// 1–200, default 50.
    pub limit: Option<String>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    /// `true`: show door passcodes unmasked (admins only; logged).
    pub reveal_codes: Option<String>,
}

/// The journal in global (position) order.
#[utoipa::path(get, path = "/api/events", tag = "auditors",
    params(EventQuery),
    responses(
        (status = 200, body = EventPage),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 422, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    ReadQuery(query): ReadQuery<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    principal.require(Permission::Read)?;
    let after = match query.after.as_deref() {
        None => 0,
        Some(value) => value
            .parse::<i64>()
            .ok()
            .filter(|after| *after >= 0)
            .ok_or_else(|| {
                ApiError::Invalid(format!(
                    "after must be a journal position (0 or more), not {value:?}"
                ))
            })?,
    };
    let limit = read_params::limit(query.limit.as_deref())?;
    let filter = EventFilter {
        after,
        until: None,
        aggregate_type: read_params::text("aggregate_type", query.aggregate_type.as_deref())?,
        aggregate_id: read_params::text("aggregate_id", query.aggregate_id.as_deref())?,
    };
    let reveal = reveal_codes(&principal, query.reveal_codes.as_deref(), "/api/events")?;
    let mut events = state.journal.page(&filter, limit).await.map_err(internal)?;
    if !reveal {
        for event in &mut events {
            mask_passcodes(&mut event.payload);
        }
    }
    let next_cursor = match events.last() {
        Some(last) if events.len() as i64 == limit => Some(last.position.to_string()),
        _ => None,
    };
    Ok(Json(EventPage {
        items: events.into_iter().map(JournalEventView::from).collect(),
        next_cursor,
    }))
}

/// An aggregate's state after the events recorded at or before `at`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AggregateStateView {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub at: Option<DateTime<Utc>>,
    /// Sequence number of the last event applied.
    pub version: i64,
    pub events_applied: usize,
    pub last_recorded_at: DateTime<Utc>,
    /// The aggregate, serialized as the domain defines it.
    #[schema(value_type = Object)]
    pub state: Value,
}

impl From<ReplayedState> for AggregateStateView {
    fn from(replayed: ReplayedState) -> Self {
        AggregateStateView {
            aggregate_type: replayed.aggregate_type,
            aggregate_id: replayed.aggregate_id,
            at: replayed.at,
            version: replayed.version,
            events_applied: replayed.events_applied,
            last_recorded_at: replayed.last_recorded_at,
            state: replayed.state,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AtQuery {
    /// RFC 3339 time; only events recorded at or before it are replayed (default: now).
    pub at: Option<String>,
    /// `true`: show door passcodes unmasked (admins only; logged).
    pub reveal_codes: Option<String>,
}

/// Replays one aggregate to a point in time.
#[utoipa::path(get, path = "/api/aggregates/{aggregate_type}/{id}", tag = "auditors",
    params(
        ("aggregate_type" = String, Path, description = "Payment, Door, Device or DeviceSession"),
        ("id" = String, Path, description = "Aggregate id"),
        AtQuery),
    responses(
        (status = 200, body = AggregateStateView),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 404, body = super::openapi::ErrorBody),
        (status = 422, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn aggregate_state(
    State(state): State<AppState>,
    principal: Principal,
    Path((aggregate_type, id)): Path<(String, String)>,
    ReadQuery(query): ReadQuery<AtQuery>,
) -> Result<Json<AggregateStateView>, ApiError> {
    principal.require(Permission::Read)?;
    let at = read_params::time("at", query.at.as_deref())?;
    let reveal = reveal_codes(&principal, query.reveal_codes.as_deref(), "/api/aggregates")?;
    match replay::state_at(&state.journal, &aggregate_type, &id, at).await {
        Ok(mut replayed) => {
            if !reveal {
                mask_passcodes(&mut replayed.state);
            }
            Ok(Json(replayed.into()))
        }
        Err(error @ (ReplayError::UnknownType(_) | ReplayError::NotFound(..))) => {
            Err(ApiError::NotFound(error.to_string()))
        }
        Err(ReplayError::Failed(error)) => Err(ApiError::Internal(error)),
    }
}

/// Whether this answer may carry passcodes: only when an admin asks, and then logged.
fn reveal_codes(principal: &Principal, asked: Option<&str>, route: &str) -> Result<bool, ApiError> {
    match asked {
        None | Some("false") => Ok(false),
        Some("true") => {
            principal.require(Permission::Administer)?;
            tracing::warn!(
                target: "latchkey::audit",
                actor = principal.actor_id,
                route,
                "passcodes revealed"
            );
            Ok(true)
        }
        Some(other) => Err(ApiError::Invalid(format!(
            "reveal_codes must be true or false, not {other:?}"
        ))),
    }
}

/// Replaces every door passcode (a string under a `code` key, at any depth) with `***`.
pub fn mask_passcodes(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "code" && value.is_string() {
                    *value = Value::String("***".to_string());
                } else {
                    mask_passcodes(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_passcodes),
        _ => {}
    }
}

/// The outcome of recomputing every hash chain.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyView {
    /// True when every chain is intact.
    pub ok: bool,
    pub events_checked: u64,
    pub aggregates_checked: u64,
    /// The first broken link, in words; `null` when intact.
    pub broken: Option<String>,
}

/// Recomputes every aggregate's hash chain.
#[utoipa::path(get, path = "/api/verify", tag = "auditors",
    responses(
        (status = 200, body = VerifyView),
        (status = 401, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn verify(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<VerifyView>, ApiError> {
    principal.require(Permission::Read)?;
    let outcome = verify_journal(&state.journal).await?;
    Ok(Json(VerifyView {
        ok: outcome.broken.is_none(),
        events_checked: outcome.events_checked,
        aggregates_checked: outcome.aggregates_checked,
        broken: outcome.broken.map(|link| link.to_string()),
    }))
}
