//! Upcasters: how a stored event of an older version is read by today's code.
//!
//! Events are facts and are never edited in the journal. When an event's shape must change
//! (a renamed or retyped field, a new required field), the event gets a new version
//! (`event_version()`), and an [`Upcaster`] here turns the old payload into the new one
//! when it is read: by the repository when an aggregate is loaded (wired into cqrs-es in
//! `src/cqrs.rs`), by the projections (`EventRecord::decode`) and by replay. Adding a
//! field with `#[serde(default)]` needs no new version.
//!
//! The golden files under `tests/fixtures/events/` (see [`crate::golden`]) keep one
//! payload of every event type and version ever shipped; their test fails when today's
//! code can no longer read one of them through these upcasters.

use serde_json::Value;

/// One step from `from_version` to `to_version` of one event type.
#[derive(Clone, Copy, Debug)]
pub struct Upcaster {
    pub aggregate_type: &'static str,
    pub event_type: &'static str,
    pub from_version: &'static str,
    pub to_version: &'static str,
    pub upcast: fn(Value) -> Value,
}

/// Every upcaster, in any order. None yet: every event is still at version 1.
pub static UPCASTERS: &[Upcaster] = &[];

/// The version today's code writes for an event type.
pub fn current_version(_aggregate_type: &str, _event_type: &str) -> &'static str {
    crate::EVENT_VERSION
}

/// Whether `(event_type, version)` has an upcaster (for cqrs-es' `can_upcast`).
pub fn find(aggregate_type: &str, event_type: &str, version: &str) -> Option<&'static Upcaster> {
    UPCASTERS.iter().find(|upcaster| {
        upcaster.aggregate_type == aggregate_type
            && upcaster.event_type == event_type
            && upcaster.from_version == version
    })
}

/// Brings a stored payload to today's version of its event type, or says which upcaster
/// is missing.
pub fn to_current(
    aggregate_type: &str,
    event_type: &str,
    version: &str,
    mut payload: Value,
) -> Result<Value, String> {
    let current = current_version(aggregate_type, event_type);
    let mut version = version.to_string();
    // Each step moves to another version; a registry is finite, so this ends.
    for _ in 0..=UPCASTERS.len() {
        if version == current {
            return Ok(payload);
        }
        let Some(step) = find(aggregate_type, event_type, &version) else {
            break;
        };
        payload = (step.upcast)(payload);
        version = step.to_version.to_string();
    }
    Err(format!(
        "no upcaster from version {version} of {aggregate_type} {event_type} to version \
         {current}: add one to latchkey_aggregates::upcast::UPCASTERS"
    ))
}
