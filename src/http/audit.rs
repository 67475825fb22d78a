//! `GET /api/audit`: the audit log projection, newest first, keyset-paginated on the
//! journal position.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use latchkey_projections::audit::{self, AuditEntry, AuditFilter};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::auth::{Permission, Principal};
use super::read_params::{self, internal, ReadQuery};
use super::{ApiError, AppState};
use crate::projections_runtime::PooledConn;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/audit", get(list))
}

/// An audit entry as API.md shapes it (plus the event it came from).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    /// The event's journal position.
    pub position: i64,
    /// When Latchkey decided it (the event's own time).
    pub at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// See the README's action table, e.g. `payment_confirmed`, `shelly_on_failed`.
    pub action: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    /// `guest`, `stripe`, `system` or `operator:<id>`.
    pub actor: Option<String>,
    /// The event's fields (passcodes masked).
    #[schema(value_type = Object)]
    pub details: Value,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(entry: AuditEntry) -> Self {
        AuditEntryView {
            position: entry.position,
            at: entry.at,
            recorded_at: entry.recorded_at,
            action: entry.action,
            aggregate_type: entry.aggregate_type,
            aggregate_id: entry.aggregate_id,
            sequence: entry.sequence,
            event_type: entry.event_type,
            actor: entry.actor,
            details: entry.details,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntryView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// An action name, e.g. `payment_refunded`.
    pub action: Option<String>,
    /// Payment, Door, Device or DeviceSession.
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    /// Who acted, as recorded: `operator:token:ops-laptop`, `stripe`, `guest`, `system`…
    pub actor: Option<String>,
    /// At or after (RFC 3339 or YYYY-MM-DD).
    pub from: Option<String>,
    /// Before (RFC 3339 or YYYY-MM-DD).
    pub to: Option<String>,
    /// 1–200, default 50.
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Audit entries, newest first.
#[utoipa::path(get, path = "/api/audit", tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 422, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ReadQuery(query): ReadQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    principal.require(Permission::Read)?;
    let actions = audit::known_actions();
    let filter = AuditFilter {
        action: read_params::one_of("action", query.action.as_deref(), &actions)?,
        aggregate_type: read_params::text("aggregate_type", query.aggregate_type.as_deref())?,
        aggregate_id: read_params::text("aggregate_id", query.aggregate_id.as_deref())?,
        actor: read_params::text("actor", query.actor.as_deref())?,
        from: read_params::time("from", query.from.as_deref())?,
        to: read_params::time("to", query.to.as_deref())?,
    };
    let limit = read_params::limit(query.limit.as_deref())?;
    let before = match query.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(
            read_params::decode_cursor(cursor, 1)?[0]
                .parse::<i64>()
                .map_err(|_| ApiError::Invalid("cursor is not one this API returned".into()))?,
        ),
    };
    let mut pooled = PooledConn::acquire(&state.database)
        .await
        .map_err(internal)?;
    let entries = audit::list(&mut pooled.conn(), &filter, before, limit).await?;
    let next_cursor = match entries.last() {
        Some(last) if entries.len() as i64 == limit => {
            Some(read_params::encode_cursor(&[&last.position.to_string()]))
        }
        _ => None,
    };
    Ok(Json(AuditPage {
        items: entries.into_iter().map(AuditEntryView::from).collect(),
        next_cursor,
    }))
}
