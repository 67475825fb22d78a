//! Helpers shared by the aggregates' tests: fixed instants and the replay check.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;

use crate::{Currency, Money};

/// A fixed instant, `minutes` after 2026-03-01 10:00 UTC, so tests never read a clock.
pub(crate) fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap() + Duration::minutes(minutes)
}

pub(crate) fn eur(amount_minor: i64) -> Money {
    Money::new(amount_minor, Currency::parse("eur").unwrap())
}

/// Runs commands one after another through `handle`, as the framework would, and returns
/// the live aggregate and every event written.
pub(crate) async fn run<A: Aggregate>(
    commands: Vec<A::Command>,
    services: &A::Services,
) -> (A, Vec<A::Event>)
where
    A::Error: std::fmt::Debug,
{
    let mut aggregate = A::default();
    let mut events = Vec::new();
    for command in commands {
        let sink = EventSink::default();
        aggregate
            .handle(command, services, &sink)
            .await
            .expect("every command in a replay scenario succeeds");
        events.extend(sink.collect().await);
    }
    (aggregate, events)
}

/// Sends the events through JSON, as the journal stores them, then folds them into a
/// fresh aggregate; asserts that the result serializes exactly like `live`.
pub(crate) fn assert_replay_reproduces<A: Aggregate>(live: &A, events: &[A::Event]) {
    let stored = serde_json::to_string(events).unwrap();
    let loaded: Vec<A::Event> = serde_json::from_str(&stored).unwrap();
    let mut replayed = A::default();
    for event in loaded {
        replayed.apply(event);
    }
    assert_eq!(
        serde_json::to_value(&replayed).unwrap(),
        serde_json::to_value(live).unwrap()
    );
}
