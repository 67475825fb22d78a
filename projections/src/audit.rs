//! `audit_log`: one entry per journal event, with an action name people search by.
//!
//! The mapping from `(aggregate type, event type)` to the action lives in one table,
//! [`ACTIONS`]; the README's audit section lists it. An event type missing from the table
//! (a new event, or an aggregate this crate does not know) is still logged, under its
//! event type in snake case, so the audit log never loses an entry.
//!
//! The actor is the event's own `actor` field when it records a human decision, else the
//! metadata's `actor` (who sent the command). Details are the event's payload without its
//! `type` tag; secrets (a door's access `code`) are masked, since auditors read
//! everything but need no passcodes.

use std::sync::LazyLock;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use latchkey_aggregates::Actor;
use serde::Serialize;
use serde_json::Value;

use crate::db::{Conn, Filters, Param, Row};
use crate::{event_time, EventRecord, Projection, ProjectionError, Table};

pub struct AuditProjection;

const TABLES: &[Table] = &[Table {
    name: "audit_log",
    key: &["position"],
}];

/// How an event becomes an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Always this action.
    Fixed(&'static str),
    /// `system` when the actor is Latchkey itself (a reconciler sweep), else `other`.
    BySystemActor {
        system: &'static str,
        other: &'static str,
    },
}

/// Every event of the catalogue and its audit action.
pub const ACTIONS: &[(&str, &str, Rule)] = &[
    ("Payment", "CheckoutStarted", Rule::Fixed("payment_started")),
    (
        "Payment",
        "CheckoutSessionCreated",
        Rule::Fixed("checkout_session_created"),
    ),
    (
        "Payment",
        "PaymentAuthorized",
        Rule::Fixed("payment_authorized"),
    ),
    ("Payment", "PaymentFailed", Rule::Fixed("payment_failed")),
    (
        "Payment",
        "PaymentSucceeded",
        Rule::Fixed("payment_confirmed"),
    ),
    (
        "Payment",
        "DuplicateConfirmationIgnored",
        Rule::Fixed("duplicate_payment_ignored"),
    ),
    ("Payment", "RefundRecorded", Rule::Fixed("payment_refunded")),
    (
        "Payment",
        "StripeReportIgnored",
        Rule::Fixed("stripe_report_ignored"),
    ),
    (
        "Payment",
        "PaymentCaptureRequested",
        Rule::Fixed("payment_capture_requested"),
    ),
    (
        "Payment",
        "PaymentCancellationRequested",
        Rule::Fixed("payment_cancellation_requested"),
    ),
    (
        "Payment",
        "PaymentCancelled",
        Rule::Fixed("payment_cancelled"),
    ),
    (
        "Payment",
        "CheckoutExpired",
        Rule::Fixed("checkout_expired"),
    ),
    (
        "Payment",
        "RefundRequested",
        Rule::Fixed("refund_requested"),
    ),
    ("Payment", "RefundOrdered", Rule::Fixed("refund_requested")),
    (
        "Payment",
        "RefundSubmitted",
        Rule::Fixed("refund_submitted"),
    ),
    (
        "Payment",
        "RefundSubmissionFailed",
        Rule::Fixed("refund_submission_failed"),
    ),
    (
        "Payment",
        "StripeRefundReported",
        Rule::Fixed("stripe_refund_reported"),
    ),
    (
        "Payment",
        "PaymentDisputed",
        Rule::Fixed("payment_disputed"),
    ),
    (
        "Payment",
        "PaymentCaptureOrdered",
        Rule::Fixed("payment_capture_ordered"),
    ),
    (
        "Payment",
        "PaymentCaptureFailed",
        Rule::Fixed("capture_failed"),
    ),
    (
        "Payment",
        "PaymentCancellationOrdered",
        Rule::Fixed("authorization_release_ordered"),
    ),
    (
        "Payment",
        "PaymentCancellationFailed",
        Rule::Fixed("authorization_release_failed"),
    ),
    (
        "Payment",
        "PaymentAmountMismatch",
        Rule::Fixed("amount_mismatch"),
    ),
    (
        "Payment",
        "PaymentAccessGranted",
        Rule::Fixed("access_granted"),
    ),
    (
        "Payment",
        "DisputeFundsWithdrawn",
        Rule::Fixed("dispute_funds_withdrawn"),
    ),
    (
        "Payment",
        "DisputeFundsReinstated",
        Rule::Fixed("dispute_funds_reinstated"),
    ),
    ("Payment", "DisputeClosed", Rule::Fixed("dispute_closed")),
    ("Door", "DoorRegistered", Rule::Fixed("door_registered")),
    ("Door", "DoorDetailsChanged", Rule::Fixed("door_updated")),
    (
        "Door",
        "DoorPriceChanged",
        Rule::Fixed("door_price_changed"),
    ),
    (
        "Door",
        "DoorMaintenanceStarted",
        Rule::Fixed("door_maintenance_on"),
    ),
    (
        "Door",
        "DoorMaintenanceEnded",
        Rule::Fixed("door_maintenance_off"),
    ),
    (
        "Door",
        "PassageModeObserved",
        Rule::Fixed("passage_mode_observed"),
    ),
    (
        "Door",
        "AccessCodeRequested",
        Rule::Fixed("access_code_requested"),
    ),
    (
        "Door",
        "AccessCodeIssued",
        Rule::Fixed("access_code_issued"),
    ),
    (
        "Door",
        "AccessCodeIssueFailed",
        Rule::Fixed("access_code_failed"),
    ),
    (
        "Door",
        "AccessCodeRevoked",
        Rule::Fixed("access_code_revoked"),
    ),
    (
        "Door",
        "AccessCodeRevocationPending",
        Rule::Fixed("access_code_revocation_failed"),
    ),
    (
        "Door",
        "AccessCodeExpired",
        Rule::Fixed("access_code_expired"),
    ),
    (
        "Door",
        "AccessCompensationDecided",
        Rule::Fixed("access_compensation_decided"),
    ),
    (
        "Door",
        "AccessCodeReissueRequested",
        Rule::Fixed("access_code_reissued"),
    ),
    (
        "Door",
        "StrayPasscodesRemoved",
        Rule::Fixed("stray_passcodes_removed"),
    ),
    (
        "Door",
        "DoorOfflineFallbackChanged",
        Rule::Fixed("door_offline_fallback_changed"),
    ),
    (
        "Device",
        "DeviceRegistered",
        Rule::Fixed("device_registered"),
    ),
    (
        "Device",
        "DeviceDetailsChanged",
        Rule::Fixed("device_updated"),
    ),
    (
        "Device",
        "DevicePlansChanged",
        Rule::Fixed("device_plans_changed"),
    ),
    (
        "Device",
        "DeviceMaintenanceStarted",
        Rule::Fixed("device_maintenance_on"),
    ),
    (
        "Device",
        "DeviceMaintenanceEnded",
        Rule::Fixed("device_maintenance_off"),
    ),
    ("Device", "DeviceReserved", Rule::Fixed("device_reserved")),
    (
        "Device",
        "DeviceReservationQueued",
        Rule::Fixed("device_queued"),
    ),
    ("Device", "DeviceReleased", Rule::Fixed("device_released")),
    (
        "Device",
        "QueuedSessionWithdrawn",
        Rule::Fixed("queued_session_withdrawn"),
    ),
    (
        "Device",
        "RelaySwitched",
        Rule::BySystemActor {
            system: "reconciliation",
            other: "relay_switched",
        },
    ),
    (
        "DeviceSession",
        "SessionQueued",
        Rule::Fixed("session_queued"),
    ),
    (
        "DeviceSession",
        "SessionOpened",
        Rule::Fixed("session_opened"),
    ),
    (
        "DeviceSession",
        "RelayOnRequested",
        Rule::Fixed("shelly_on_requested"),
    ),
    (
        "DeviceSession",
        "RelayOnSucceeded",
        Rule::Fixed("shelly_on_success"),
    ),
    (
        "DeviceSession",
        "RelayOnFailed",
        Rule::Fixed("shelly_on_failed"),
    ),
    (
        "DeviceSession",
        "SessionActivated",
        Rule::Fixed("session_activated"),
    ),
    (
        "DeviceSession",
        "SessionFinishing",
        Rule::Fixed("session_finishing"),
    ),
    (
        "DeviceSession",
        "RelayOffRequested",
        Rule::Fixed("shelly_off_requested"),
    ),
    (
        "DeviceSession",
        "RelayOffSucceeded",
        Rule::Fixed("shelly_off_success"),
    ),
    (
        "DeviceSession",
        "RelayOffFailed",
        Rule::Fixed("shelly_off_failed"),
    ),
    (
        "DeviceSession",
        "RelayStateObserved",
        Rule::Fixed("relay_state_observed"),
    ),
    (
        "DeviceSession",
        "SessionCompleted",
        Rule::Fixed("session_completed"),
    ),
    (
        "DeviceSession",
        "SessionCancelled",
        Rule::Fixed("session_cancelled"),
    ),
    (
        "DeviceSession",
        "SessionFailed",
        Rule::Fixed("session_failed"),
    ),
    (
        "DeviceSession",
        "SessionForceEnded",
        Rule::Fixed("session_force_ended"),
    ),
];

/// Every action name the table can produce, for validating the `action` filter.
pub fn known_actions() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = ACTIONS
        .iter()
        .flat_map(|(_, _, rule)| match *rule {
            Rule::Fixed(action) => vec![action],
            Rule::BySystemActor { system, other } => vec![system, other],
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// The action of one event, given who caused it.
pub fn action_for(aggregate_type: &str, event_type: &str, actor: Option<&str>) -> String {
    let rule = ACTIONS
        .iter()
        .find(|(aggregate, event, _)| *aggregate == aggregate_type && *event == event_type)
        .map(|(_, _, rule)| *rule);
    match rule {
        Some(Rule::Fixed(action)) => action.to_owned(),
        Some(Rule::BySystemActor { system, other }) => {
            if actor == Some("system") {
                system.to_owned()
            } else {
                other.to_owned()
            }
        }
        None => snake_case(event_type),
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (index, character) in name.chars().enumerate() {
        if character.is_ascii_uppercase() {
            if index > 0 {
                out.push('_');
            }
            out.push(character.to_ascii_lowercase());
        } else {
            out.push(character);
        }
    }
    out
}

/// Who caused the event: the payload's `actor` (an [`Actor`]) if it has one, else the
/// command metadata's `actor`.
pub fn actor_of(event: &EventRecord<'_>) -> Option<String> {
    let from_payload = event
        .payload
        .get("actor")
        .and_then(|actor| serde_json::from_value::<Actor>(actor.clone()).ok())
        .map(|actor| actor.to_string());
    from_payload.or_else(|| event.metadata_text("actor").map(str::to_owned))
}

/// The payload without its `type` tag, with passcodes masked.
pub fn details_of(payload: &Value) -> Value {
    let mut details = payload.clone();
    if let Value::Object(map) = &mut details {
        map.remove("type");
        if map.contains_key("code") {
            map.insert("code".to_owned(), Value::String("***".to_owned()));
        }
    }
    details
}

const INSERT_INTO: &str = "INSERT INTO audit_log (position, at, recorded_at, action, \
     aggregate_type, aggregate_id, sequence, event_type, actor, details) VALUES ";

/// Parameters per row of `audit_log`.
const COLUMN_COUNT: usize = 10;

/// Rows per multi-row `INSERT` in [`Projection::apply_batch`]: 1,000 parameters, far
/// below both backends' limits (65,535 and 32,766).
const ROWS_PER_INSERT: usize = 100;

/// The parameters of one entry.
fn entry_params(event: &EventRecord<'_>) -> [Param; COLUMN_COUNT] {
    let actor = actor_of(event);
    let action = action_for(event.aggregate_type, event.event_type, actor.as_deref());
    let at = event_time(event.payload).unwrap_or(event.recorded_at);
    [
        event.position.into(),
        at.into(),
        event.recorded_at.into(),
        action.into(),
        event.aggregate_type.into(),
        event.aggregate_id.into(),
        event.sequence.into(),
        event.event_type.into(),
        actor.into(),
        details_of(event.payload).to_string().into(),
    ]
}

/// `INSERT … VALUES ($1, …, $10), ($11, …), …` for `rows` entries.
fn insert_sql(rows: usize) -> String {
    let tuples: Vec<String> = (0..rows)
        .map(|row| {
            let placeholders: Vec<String> = (1..=COLUMN_COUNT)
                .map(|column| format!("${}", row * COLUMN_COUNT + column))
                .collect();
            format!("({})", placeholders.join(", "))
        })
        .collect();
    format!(
        "{INSERT_INTO}{} ON CONFLICT (position) DO NOTHING",
        tuples.join(", ")
    )
}

#[async_trait]
impl Projection for AuditProjection {
    fn name(&self) -> &'static str {
        "audit_log"
    }

    fn tables(&self) -> &'static [Table] {
        TABLES
    }

    async fn apply(
        &self,
        conn: &mut Conn<'_>,
        event: &EventRecord<'_>,
    ) -> Result<(), ProjectionError> {
        static INSERT_ONE: LazyLock<String> = LazyLock::new(|| insert_sql(1));
        conn.execute(&INSERT_ONE, &entry_params(event)).await?;
        Ok(())
    }

    async fn apply_batch(
        &self,
        conn: &mut Conn<'_>,
        events: &[EventRecord<'_>],
    ) -> Result<(), ProjectionError> {
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let params: Vec<Param> = chunk.iter().flat_map(entry_params).collect();
            conn.execute(&insert_sql(chunk.len()), &params).await?;
        }
        Ok(())
    }
}

/// One audit entry (API.md's shape plus the event it came from).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    pub position: i64,
    pub at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub action: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub actor: Option<String>,
    pub details: Value,
}

const COLUMNS: &str = "position, at, recorded_at, action, aggregate_type, aggregate_id, \
     sequence, event_type, actor, details";

impl AuditEntry {
    fn from_row(row: &Row) -> Result<Self, ProjectionError> {
        let details: String = row.get("details")?;
        Ok(AuditEntry {
            position: row.get("position")?,
            at: row.get("at")?,
            recorded_at: row.get("recorded_at")?,
            action: row.get("action")?,
            aggregate_type: row.get("aggregate_type")?,
            aggregate_id: row.get("aggregate_id")?,
            sequence: row.get("sequence")?,
            event_type: row.get("event_type")?,
            actor: row.get("actor")?,
            details: serde_json::from_str(&details).unwrap_or(Value::String(details)),
        })
    }
}

/// Filters of `GET /api/audit`.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub aggregate_type: Option<String>,
    pub aggregate_id: Option<String>,
    /// Who acted, as stored (`operator:token:ops`, `stripe`, `guest`, …).
    pub actor: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// A page of entries, newest first, with positions below `before` if given.
pub async fn list(
    conn: &mut Conn<'_>,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditEntry>, ProjectionError> {
    let mut filters = Filters::default();
    let equal = [
        ("action", &filter.action),
        ("aggregate_type", &filter.aggregate_type),
        ("aggregate_id", &filter.aggregate_id),
        ("actor", &filter.actor),
    ];
    for (column, value) in equal {
        if let Some(value) = value {
            filters.add(&format!("{column} = ?"), vec![value.clone().into()]);
        }
    }
    if let Some(from) = filter.from {
        filters.add("at >= ?", vec![from.into()]);
    }
    if let Some(to) = filter.to {
        filters.add("at < ?", vec![to.into()]);
    }
    if let Some(before) = before {
        filters.add("position < ?", vec![before.into()]);
    }
    let limit = filters.push(limit.into());
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_log {} ORDER BY position DESC LIMIT {limit}",
        filters.where_clause()
    );
    let rows = conn.fetch_all(&sql, filters.params()).await?;
    rows.iter().map(AuditEntry::from_row).collect()
}

/// Every entry in position order; for tests and diffs.
pub async fn all(conn: &mut Conn<'_>) -> Result<Vec<AuditEntry>, ProjectionError> {
    let sql = format!("SELECT {COLUMNS} FROM audit_log ORDER BY position");
    let rows = conn.fetch_all(&sql, &[]).await?;
    rows.iter().map(AuditEntry::from_row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogued_event_has_one_action() {
        for (index, (aggregate, event, _)) in ACTIONS.iter().enumerate() {
            let duplicates = ACTIONS
                .iter()
                .skip(index + 1)
                .filter(|(a, e, _)| a == aggregate && e == event)
                .count();
            assert_eq!(duplicates, 0, "{aggregate} {event} is listed twice");
        }
        assert_eq!(ACTIONS.len(), 27 + 16 + 10 + 15);
    }

    #[test]
    fn actions_follow_the_table_and_fall_back_to_snake_case() {
        assert_eq!(
            action_for("Payment", "PaymentSucceeded", Some("stripe")),
            "payment_confirmed"
        );
        assert_eq!(
            action_for("Device", "RelaySwitched", Some("system")),
            "reconciliation"
        );
        assert_eq!(
            action_for("Device", "RelaySwitched", Some("operator:alice")),
            "relay_switched"
        );
        assert_eq!(action_for("Counter", "AddedTwice", None), "added_twice");
    }

    #[test]
    fn details_drop_the_tag_and_mask_codes() {
        let payload =
            serde_json::json!({"type": "AccessCodeIssued", "code": "123456", "attempt": 1});
        assert_eq!(
            details_of(&payload),
            serde_json::json!({"code": "***", "attempt": 1})
        );
    }
}
