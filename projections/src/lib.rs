//! The read models: each a pure fold of journal events into its own tables (issue 8).
//!
//! | projection | tables | what it answers |
//! |---|---|---|
//! | [`payments`] | `payments` | the payments list and detail, with filters |
//! | [`sessions`] | `sessions` | device sessions with their countdown and relay state |
//! | [`audit`] | `audit_log` | one entry per event, with an action name ([`audit::ACTIONS`]) |
//! | [`revenue`] | `revenue`, `revenue_targets`, `revenue_payments` | gross, refunds, net and count per local day, target and currency |
//! | [`catalogue`] | `catalogue_doors`, `catalogue_devices` | doors, devices and plans as operators and guests see them |
//!
//! Every projection implements [`Projection`]: it is handed each event of the journal in
//! global order (as an [`EventRecord`]) together with the open transaction of its batch
//! (a [`Conn`]), and writes only its own tables. The application's subscription runtime
//! commits those writes together with the projection's checkpoint, so each event is
//! applied exactly once. Nothing here reads the clock or anything outside the event and
//! the projection's own tables, which is what makes a rebuild from position 0 give the
//! same rows (`latchkey rebuild --check` proves it on a live database).
//!
//! Buckets that depend on a time zone (the local day of a payment) are computed when the
//! event is projected, in the door's or device's zone as known at that point of the
//! journal.

pub mod audit;
pub mod catalogue;
pub mod db;
pub mod payments;
pub mod revenue;
pub mod sessions;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

pub use chrono_tz;
pub use db::{Conn, Param, Row};

/// One journal event, borrowed from the application's own event type.
#[derive(Clone, Copy, Debug)]
pub struct EventRecord<'a> {
    pub position: i64,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a Value,
    pub metadata: &'a Value,
    pub recorded_at: DateTime<Utc>,
}

impl EventRecord<'_> {
    /// The payload as the aggregate's event enum (serde-tagged by `type`).
    /// Older versions are brought to today's shape by the upcasters first.
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, ProjectionError> {
        let current =
            latchkey_aggregates::upcast::current_version(self.aggregate_type, self.event_type);
        if self.event_version != current {
            let payload = latchkey_aggregates::upcast::to_current(
                self.aggregate_type,
                self.event_type,
                self.event_version,
                self.payload.clone(),
            )
            .map_err(|reason| ProjectionError::Payload {
                aggregate_type: self.aggregate_type.to_owned(),
                event_type: self.event_type.to_owned(),
                position: self.position,
                source: serde::de::Error::custom(reason),
            })?;
            return serde_json::from_value(payload).map_err(|source| ProjectionError::Payload {
                aggregate_type: self.aggregate_type.to_owned(),
                event_type: self.event_type.to_owned(),
                position: self.position,
                source,
            });
        }
        E::deserialize(self.payload).map_err(|source| ProjectionError::Payload {
            aggregate_type: self.aggregate_type.to_owned(),
            event_type: self.event_type.to_owned(),
            position: self.position,
            source,
        })
    }

    /// A text field of the metadata (`actor`, `source`, …).
    pub fn metadata_text(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A stored event this version cannot read: an upcaster is missing. The batch fails
    /// and is retried rather than skipped, so the projection never silently drifts.
    #[error("cannot read {aggregate_type} event {event_type} at position {position}: {source}")]
    Payload {
        aggregate_type: String,
        event_type: String,
        position: i64,
        source: serde_json::Error,
    },
}

/// A table a projection owns, with the columns that identify a row (for diffs).
#[derive(Clone, Copy, Debug)]
pub struct Table {
    pub name: &'static str,
    pub key: &'static [&'static str],
}

/// A read model fed by the journal.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Stable short name (`payments`, …): the CLI's `rebuild NAME` and the metrics label.
    fn name(&self) -> &'static str;

    /// Every table this projection writes, helpers included. A rebuild empties them all.
    fn tables(&self) -> &'static [Table];

    /// Folds one event into the tables. Events of other aggregates are ignored.
    async fn apply(
        &self,
        conn: &mut Conn<'_>,
        event: &EventRecord<'_>,
    ) -> Result<(), ProjectionError>;

    /// Folds consecutive events in order; the same result as [`Projection::apply`] on each,
    /// which is what it does unless a projection can write a batch in fewer statements
    /// (the audit log inserts many rows per statement). Rebuilds use it.
    async fn apply_batch(
        &self,
        conn: &mut Conn<'_>,
        events: &[EventRecord<'_>],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(conn, event).await?;
        }
        Ok(())
    }

    /// Empties the projection's tables before a rebuild from position 0.
    async fn reset(&self, conn: &mut Conn<'_>) -> Result<(), ProjectionError> {
        for table in self.tables() {
            conn.execute(&format!("DELETE FROM {}", table.name), &[])
                .await?;
        }
        Ok(())
    }
}

/// Every projection, in the order they are registered.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(payments::PaymentsProjection),
        Arc::new(sessions::SessionsProjection),
        Arc::new(audit::AuditProjection),
        Arc::new(revenue::RevenueProjection),
        Arc::new(catalogue::CatalogueProjection),
    ]
}

/// The `at` every domain event carries (`started_at` for `SessionActivated`), if any.
pub fn event_time(payload: &Value) -> Option<DateTime<Utc>> {
    #[derive(Deserialize)]
    struct Timed {
        at: Option<DateTime<Utc>>,
        started_at: Option<DateTime<Utc>>,
    }
    let timed = Timed::deserialize(payload).ok()?;
    timed.at.or(timed.started_at)
}

/// Parses an IANA zone name; an unknown or empty one counts as UTC, so a bad catalogue
/// entry never stops a projection (and gives the same answer on every rebuild).
pub fn zone(name: &str) -> chrono_tz::Tz {
    name.parse().unwrap_or(chrono_tz::UTC)
}
