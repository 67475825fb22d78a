//! `latchkey replay TYPE ID [--at TIME]`: an aggregate's state after the events recorded
//! at or before a time, by replaying them through the aggregate's own `apply`. The same
//! function serves `GET /api/aggregates/{type}/{id}?at=`.

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use latchkey_aggregates::device::Device;
use latchkey_aggregates::door::Door;
use latchkey_aggregates::payment::Payment;
use latchkey_aggregates::session::DeviceSession;
use serde::Serialize;
use serde_json::Value;

use crate::config::Settings;
use crate::store::journal::{Journal, JournalEvent};
use crate::store::{Database, PoolSize};

/// The aggregate types an auditor can replay, as their `TYPE` spells them.
pub const AGGREGATE_TYPES: &[&str] =
    &[Payment::TYPE, Door::TYPE, Device::TYPE, DeviceSession::TYPE];

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Payment, Door, Device or DeviceSession.
    pub aggregate_type: String,
    /// The aggregate id (a payment or session UUID, a door or device uid).
    pub aggregate_id: String,
    /// Only events recorded at or before this RFC 3339 time (default: all).
    #[arg(long)]
    pub at: Option<DateTime<Utc>>,
}

/// An aggregate's state at a time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplayedState {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub at: Option<DateTime<Utc>>,
    /// The sequence number of the last event applied.
    pub version: i64,
    pub events_applied: usize,
    pub last_recorded_at: DateTime<Utc>,
    pub state: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("unknown aggregate type {0:?}; expected one of Payment, Door, Device, DeviceSession")]
    UnknownType(String),
    #[error("no {0} {1:?} has events recorded at or before that time")]
    NotFound(String, String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Replays `aggregate_type`/`aggregate_id` up to `at` (inclusive).
pub async fn state_at(
    journal: &Journal,
    aggregate_type: &str,
    aggregate_id: &str,
    at: Option<DateTime<Utc>>,
) -> Result<ReplayedState, ReplayError> {
    if !AGGREGATE_TYPES.contains(&aggregate_type) {
        return Err(ReplayError::UnknownType(aggregate_type.to_owned()));
    }
    let events = journal
        .aggregate_events(aggregate_type, aggregate_id, at)
        .await
        .map_err(anyhow::Error::from)?;
    let Some(last) = events.last() else {
        return Err(ReplayError::NotFound(
            aggregate_type.to_owned(),
            aggregate_id.to_owned(),
        ));
    };
    let state = match aggregate_type {
        "Payment" => fold::<Payment>(&events)?,
        "Door" => fold::<Door>(&events)?,
        "Device" => fold::<Device>(&events)?,
        _ => fold::<DeviceSession>(&events)?,
    };
    Ok(ReplayedState {
        aggregate_type: aggregate_type.to_owned(),
        aggregate_id: aggregate_id.to_owned(),
        at,
        version: last.sequence,
        events_applied: events.len(),
        last_recorded_at: last.recorded_at,
        state,
    })
}

/// Applies `events` in order to a fresh aggregate and serializes the result.
pub fn fold<A: Aggregate>(events: &[JournalEvent]) -> anyhow::Result<Value> {
    let mut aggregate = A::default();
    for event in events {
        let upcast = latchkey_aggregates::upcast::to_current(
            &event.aggregate_type,
            &event.event_type,
            &event.event_version,
            event.payload.clone(),
        )
        .map_err(|reason| anyhow::anyhow!("cannot read position {}: {reason}", event.position))?;
        let payload: A::Event = serde_json::from_value(upcast).map_err(|error| {
            anyhow::anyhow!(
                "cannot read {} {} sequence {} ({}): {error}",
                event.aggregate_type,
                event.aggregate_id,
                event.sequence,
                event.event_type
            )
        })?;
        aggregate.apply(payload);
    }
    Ok(serde_json::to_value(&aggregate)?)
}

pub async fn run(settings: &Settings, args: ReplayArgs) -> anyhow::Result<()> {
    let database = Database::connect(&settings.database_url, PoolSize::default()).await?;
    let journal = Journal::new(database);
    let replayed = state_at(&journal, &args.aggregate_type, &args.aggregate_id, args.at).await?;
    println!("{}", serde_json::to_string_pretty(&replayed)?);
    Ok(())
}
