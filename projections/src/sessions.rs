//! `sessions`: one row per device session, with its state, countdown and relay state.
//!
//! `remaining_seconds` is not stored: it depends on the reader's clock, so it is computed
//! when read ([`SessionRow::remaining_seconds`]), the same way the aggregate does.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use latchkey_aggregates::session::{SessionEvent, SessionTerms};
use serde::Serialize;

use crate::db::{Conn, Filters, Param, Row};
use crate::{EventRecord, Projection, ProjectionError, Table};

pub struct SessionsProjection;

const TABLES: &[Table] = &[Table {
    name: "sessions",
    key: &["session_id"],
}];

/// Creates the row on the session's first event (queued or opened) and updates it on a
/// promotion from the queue.
const UPSERT_CREATED: &str = "INSERT INTO sessions (session_id, payment_id, device_uid, plan_id, \
     plan_minutes, grace_seconds, state, queued_at, opened_at, grace_ends_at, on_attempts, \
     off_attempts, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, 0, $11) \
     ON CONFLICT (session_id) DO UPDATE SET state = excluded.state, \
     opened_at = excluded.opened_at, grace_ends_at = excluded.grace_ends_at, \
     updated_at = excluded.updated_at";

#[async_trait]
impl Projection for SessionsProjection {
    fn name(&self) -> &'static str {
        "sessions"
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    async fn apply(
        &self,
        conn: &mut Conn<'_>,
        event: &EventRecord<'_>,
    ) -> Result<(), ProjectionError> {
        if event.aggregate_type != "DeviceSession" {
            return Ok(());
        }
        let id = event.aggregate_id;
        let update = |set: &str| format!("UPDATE sessions SET {set} WHERE session_id = $1");
        match event.decode::<SessionEvent>()? {
            SessionEvent::SessionQueued { terms, at } => {
                let params = created_params(id, &terms, "queued", Some(at), None, None, at);
                conn.execute(UPSERT_CREATED, &params).await?;
            }
            SessionEvent::SessionOpened {
                terms,
                grace_ends_at,
                at,
            } => {
                let params = created_params(
                    id,
                    &terms,
                    "opened",
                    None,
                    Some(at),
                    Some(grace_ends_at),
                    at,
                );
                conn.execute(UPSERT_CREATED, &params).await?;
            }
            SessionEvent::RelayOnRequested { attempt, at, .. } => {
                let sql = update("relay_commanded = $2, on_attempts = $3, updated_at = $4");
                let params = [id.into(), true.into(), i64::from(attempt).into(), at.into()];
                conn.execute(&sql, &params).await?;
            }
            SessionEvent::RelayOffRequested { attempt, at } => {
                let sql = update("relay_commanded = $2, off_attempts = $3, updated_at = $4");
                let params = [
                    id.into(),
                    false.into(),
                    i64::from(attempt).into(),
                    at.into(),
                ];
                conn.execute(&sql, &params).await?;
            }
            SessionEvent::RelayOnSucceeded { at, .. } => {
                let sql = update("relay_observed = $2, last_relay_error = NULL, updated_at = $3");
                conn.execute(&sql, &[id.into(), true.into(), at.into()])
                    .await?;
            }
            SessionEvent::RelayOffSucceeded { at, .. } => {
                let sql = update("relay_observed = $2, last_relay_error = NULL, updated_at = $3");
                conn.execute(&sql, &[id.into(), false.into(), at.into()])
                    .await?;
            }
            SessionEvent::RelayOnFailed { error, at, .. }
            | SessionEvent::RelayOffFailed { error, at, .. } => {
                let sql = update("last_relay_error = $2, updated_at = $3");
                conn.execute(&sql, &[id.into(), error.into(), at.into()])
                    .await?;
            }
            SessionEvent::RelayStateObserved { is_on, at } => {
                let sql = update("relay_observed = $2, updated_at = $3");
                conn.execute(&sql, &[id.into(), is_on.into(), at.into()])
                    .await?;
            }
            SessionEvent::SessionActivated {
                started_at,
                ends_at,
            } => {
                let sql =
                    update("state = 'active', started_at = $2, ends_at = $3, updated_at = $2");
                conn.execute(&sql, &[id.into(), started_at.into(), ends_at.into()])
                    .await?;
            }
            SessionEvent::SessionFinishing { at } => {
                let sql = update("state = 'finishing', updated_at = $2");
                conn.execute(&sql, &[id.into(), at.into()]).await?;
            }
            SessionEvent::SessionCompleted { at } => {
                end(conn, id, "completed", None, None, at).await?;
            }
            SessionEvent::SessionCancelled { reason, at } => {
                end(conn, id, "cancelled", Some(reason), None, at).await?;
            }
            SessionEvent::SessionFailed { reason, at } => {
                end(conn, id, "failed", Some(reason), None, at).await?;
            }
            SessionEvent::SessionForceEnded { reason, actor, at } => {
                let actor = Some(actor.to_string());
                end(conn, id, "force_ended", Some(reason), actor, at).await?;
            }
        }
        Ok(())
    }
}

fn created_params(
    id: &str,
    terms: &SessionTerms,
    state: &str,
    queued_at: Option<DateTime<Utc>>,
    opened_at: Option<DateTime<Utc>>,
    grace_ends_at: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> [Param; 11] {
    [
        id.into(),
        terms.payment_id.to_string().into(),
        terms.device_uid.as_str().into(),
        terms.plan_id.as_str().into(),
        i64::from(terms.plan_minutes).into(),
        i64::from(terms.grace_seconds).into(),
        state.into(),
        queued_at.into(),
        opened_at.into(),
        grace_ends_at.into(),
        at.into(),
    ]
}

async fn end(
    conn: &mut Conn<'_>,
    id: &str,
    state: &str,
    reason: Option<String>,
    ended_by: Option<String>,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let sql = "UPDATE sessions SET state = $2, end_reason = $3, ended_by = $4, ended_at = $5, \
               updated_at = $5 WHERE session_id = $1";
    let params = [
        id.into(),
        state.into(),
        reason.into(),
        ended_by.into(),
        at.into(),
    ];
    conn.execute(sql, &params).await?;
    Ok(())
}

/// One row of `sessions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SessionRow {
    pub session_id: String,
    pub payment_id: String,
    pub device_uid: String,
    pub plan_id: String,
    pub plan_minutes: i64,
    pub grace_seconds: i64,
    pub state: String,
    pub queued_at: Option<DateTime<Utc>>,
    pub opened_at: Option<DateTime<Utc>>,
    pub grace_ends_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub relay_commanded: Option<bool>,
    pub relay_observed: Option<bool>,
    pub on_attempts: i64,
    pub off_attempts: i64,
    pub last_relay_error: Option<String>,
    pub end_reason: Option<String>,
    pub ended_by: Option<String>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "session_id, payment_id, device_uid, plan_id, plan_minutes, \
     grace_seconds, state, queued_at, opened_at, grace_ends_at, started_at, ends_at, ended_at, \
     relay_commanded, relay_observed, on_attempts, off_attempts, last_relay_error, end_reason, \
     ended_by, updated_at";

impl SessionRow {
    fn from_row(row: &Row) -> Result<Self, ProjectionError> {
        Ok(SessionRow {
            session_id: row.get("session_id")?,
            payment_id: row.get("payment_id")?,
            device_uid: row.get("device_uid")?,
            plan_id: row.get("plan_id")?,
            plan_minutes: row.get("plan_minutes")?,
            grace_seconds: row.get("grace_seconds")?,
            state: row.get("state")?,
            queued_at: row.get("queued_at")?,
            opened_at: row.get("opened_at")?,
            grace_ends_at: row.get("grace_ends_at")?,
            started_at: row.get("started_at")?,
            ends_at: row.get("ends_at")?,
            ended_at: row.get("ended_at")?,
            relay_commanded: row.get("relay_commanded")?,
            relay_observed: row.get("relay_observed")?,
            on_attempts: row.get("on_attempts")?,
            off_attempts: row.get("off_attempts")?,
            last_relay_error: row.get("last_relay_error")?,
            end_reason: row.get("end_reason")?,
            ended_by: row.get("ended_by")?,
            updated_at: row.get("updated_at")?,
        })
    }

    /// Paid seconds left at `now`: counted only while active, zero once the time is up
    /// (finishing, completed), none before the countdown starts or after an early end.
    pub fn remaining_seconds(&self, now: DateTime<Utc>) -> Option<i64> {
        match self.state.as_str() {
            "active" => self
                .ends_at
                .map(|ends_at| (ends_at - now).num_seconds().max(0)),
            "finishing" | "completed" => Some(0),
            _ => None,
        }
    }
}

/// Filters of `GET /api/sessions`.
#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    pub state: Option<String>,
    pub device_uid: Option<String>,
    pub payment_id: Option<String>,
}

/// Sessions matching `filter`, most recently changed first, at most `limit`.
pub async fn list(
    conn: &mut Conn<'_>,
    filter: &SessionFilter,
    limit: i64,
) -> Result<Vec<SessionRow>, ProjectionError> {
    let mut filters = Filters::default();
    let equal = [
        ("state", &filter.state),
        ("device_uid", &filter.device_uid),
        ("payment_id", &filter.payment_id),
    ];
    for (column, value) in equal {
        if let Some(value) = value {
            filters.add(&format!("{column} = ?"), vec![value.clone().into()]);
        }
    }
    let limit = filters.push(limit.into());
    let sql = format!(
        "SELECT {COLUMNS} FROM sessions {} ORDER BY updated_at DESC, session_id DESC LIMIT {limit}",
        filters.where_clause()
    );
    let rows = conn.fetch_all(&sql, filters.params()).await?;
    rows.iter().map(SessionRow::from_row).collect()
}

/// How many sessions are in `state` now.
pub async fn count_in_state(conn: &mut Conn<'_>, state: &str) -> Result<i64, ProjectionError> {
    let row = conn
        .fetch_optional(
            "SELECT COUNT(*) AS n FROM sessions WHERE state = $1",
            &[state.into()],
        )
        .await?;
    match row {
        Some(row) => row.get("n"),
        None => Ok(0),
    }
}

/// Every session, by id; for tests and diffs.
pub async fn all(conn: &mut Conn<'_>) -> Result<Vec<SessionRow>, ProjectionError> {
    let sql = format!("SELECT {COLUMNS} FROM sessions ORDER BY session_id");
    let rows = conn.fetch_all(&sql, &[]).await?;
    rows.iter().map(SessionRow::from_row).collect()
}
