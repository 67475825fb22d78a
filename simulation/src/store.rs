//! The journal, in memory: every aggregate's state and version, and every event in global
//! order. Stands in for the SQL event store (see the crate docs for why); what the real
//! store guarantees — appends are atomic per command, a stale version is a conflict — is
//! what [`Store::commit`] guarantees.

use std::collections::BTreeMap;

use cqrs_es::{Aggregate, DomainEvent};
use latchkey_aggregates::device::Device;
use latchkey_aggregates::door::Door;
use latchkey_aggregates::payment::Payment;
use latchkey_aggregates::session::DeviceSession;
use serde_json::Value;

/// One journalled event, as subscribers see it (the shape of `JournalEvent`).
#[derive(Clone, Debug)]
pub struct Entry {
    pub position: usize,
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub sequence: usize,
    pub event_type: String,
    pub payload: Value,
}

#[derive(Clone, Debug, Default)]
pub struct Stream<A> {
    pub state: A,
    pub version: usize,
}

#[derive(Default)]
pub struct Store {
    pub payments: BTreeMap<String, Stream<Payment>>,
    pub doors: BTreeMap<String, Stream<Door>>,
    pub devices: BTreeMap<String, Stream<Device>>,
    pub sessions: BTreeMap<String, Stream<DeviceSession>>,
    pub journal: Vec<Entry>,
}

/// Picks the map of one aggregate type.
pub trait Streams<A: Aggregate> {
    fn streams(&mut self) -> &mut BTreeMap<String, Stream<A>>;
    fn streams_ref(&self) -> &BTreeMap<String, Stream<A>>;
}

macro_rules! streams {
    ($aggregate:ty, $field:ident) => {
        impl Streams<$aggregate> for Store {
            fn streams(&mut self) -> &mut BTreeMap<String, Stream<$aggregate>> {
                &mut self.$field
            }
            fn streams_ref(&self) -> &BTreeMap<String, Stream<$aggregate>> {
                &self.$field
            }
        }
    };
}
streams!(Payment, payments);
streams!(Door, doors);
streams!(Device, devices);
streams!(DeviceSession, sessions);

impl Store {
    /// The aggregate's state and version (0: no events yet).
    pub fn load<A>(&self, id: &str) -> (A, usize)
    where
        A: Aggregate + Clone,
        Store: Streams<A>,
    {
        self.streams_ref()
            .get(id)
            .map(|stream| (stream.state.clone(), stream.version))
            .unwrap_or_default()
    }

    pub fn version<A>(&self, id: &str) -> usize
    where
        A: Aggregate,
        Store: Streams<A>,
    {
        self.streams_ref()
            .get(id)
            .map_or(0, |stream| stream.version)
    }

    /// Appends `events` produced by a command that loaded version `expected`; `state` is
    /// the aggregate with them applied. Returns the new entries, or `None` on a conflict.
    pub fn commit<A>(
        &mut self,
        id: &str,
        expected: usize,
        state: A,
        events: Vec<A::Event>,
    ) -> Option<Vec<Entry>>
    where
        A: Aggregate,
        Store: Streams<A>,
    {
        if self.version::<A>(id) != expected {
            return None;
        }
        if events.is_empty() {
            return Some(Vec::new());
        }
        let mut entries = Vec::with_capacity(events.len());
        for (offset, event) in events.into_iter().enumerate() {
            let entry = Entry {
                position: self.journal.len() + 1,
                aggregate_type: A::TYPE,
                aggregate_id: id.to_string(),
                sequence: expected + offset + 1,
                event_type: event.event_type(),
                payload: serde_json::to_value(&event).unwrap_or(Value::Null),
            };
            self.journal.push(entry.clone());
            entries.push(entry);
        }
        let version = expected + entries.len();
        self.streams()
            .insert(id.to_string(), Stream { state, version });
        Some(entries)
    }
}
