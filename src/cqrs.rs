//! One command bus per aggregate: cqrs-es over the journal, plus bounded retries of
//! optimistic-concurrency conflicts.
//!
//! Two commands racing on one aggregate both load version N and both try to append N+1;
//! the journal's primary key lets one win. The loser is not lost: it reloads the aggregate
//! (now at N+1), re-runs `handle` against the new state, and appends N+2. Only after
//! [`CONFLICT_ATTEMPTS_MAX`] consecutive conflicts does the caller see a conflict error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, EventStore as _};
use rand::Rng;
use tracing::{debug, warn};

use latchkey_aggregates::device::{Device, DeviceServices};
use latchkey_aggregates::door::{Door, DoorServices};
use latchkey_aggregates::payment::{Payment, PaymentGateway, PaymentServices};
use latchkey_aggregates::session::{DeviceSession, SessionServices};

use crate::gateways::Gateways;
use crate::store::lease::{self, Fence};
use crate::store::repository::{AppendSignal, JournalRepository};
use crate::store::Database;

/// How many times a command is tried when it keeps losing races. Each retry re-reads the
/// aggregate, so contention has to be extreme for all of them to fail.
pub const CONFLICT_ATTEMPTS_MAX: u32 = 12;

/// Upper bound of the random pause before a retry, so racing writers spread out.
const CONFLICT_JITTER_MAX_MS: u64 = 25;

pub type EventStore<A> = PersistedEventStore<JournalRepository, A>;

/// Who asked for a command and through which door; stored beside each event it produced.
#[derive(Clone, Debug, Default)]
pub struct CommandMetadata {
    /// `guest`, `stripe`, `system`, `operator:<id>`, …
    pub actor: String,
    /// `api`, `webhook`, `reconciler`, `workflow`, `cli`, …
    pub source: String,
    pub request_id: Option<String>,
    /// Extra context (e.g. the Stripe event id that caused the command).
    pub extra: Vec<(String, String)>,
}

impl CommandMetadata {
    pub fn new(actor: impl Into<String>, source: impl Into<String>) -> Self {
        CommandMetadata {
            actor: actor.into(),
            source: source.into(),
            ..Default::default()
        }
    }

    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    fn into_map(self) -> HashMap<String, String> {
        let mut map = HashMap::from([
            ("actor".to_string(), self.actor),
            ("source".to_string(), self.source),
        ]);
        if let Some(request_id) = self.request_id {
            map.insert("request_id".to_string(), request_id);
        }
        map.extend(self.extra);
        map
    }
}

/// Executes commands against one aggregate type, and loads its current state.
pub struct CommandBus<A: Aggregate> {
    framework: CqrsFramework<A, EventStore<A>>,
    /// A second store over the same journal, for reads: cqrs-es keeps its own private.
    reader: EventStore<A>,
}

/// Runs the domain's upcasters ([`latchkey_aggregates::upcast`]) when cqrs-es loads an
/// aggregate, so old event versions reach `apply` in today's shape.
struct RegistryUpcaster {
    aggregate_type: &'static str,
}

impl cqrs_es::persist::EventUpcaster for RegistryUpcaster {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        latchkey_aggregates::upcast::find(self.aggregate_type, event_type, event_version).is_some()
    }

    fn upcast(
        &self,
        mut event: cqrs_es::persist::SerializedEvent,
    ) -> cqrs_es::persist::SerializedEvent {
        if let Some(step) = latchkey_aggregates::upcast::find(
            self.aggregate_type,
            &event.event_type,
            &event.event_version,
        ) {
            event.payload = (step.upcast)(std::mem::take(&mut event.payload));
            event.event_version = step.to_version.to_string();
        }
        event
    }
}

fn upcasters<A: Aggregate>() -> Vec<Box<dyn cqrs_es::persist::EventUpcaster>> {
    vec![Box::new(RegistryUpcaster {
        aggregate_type: A::TYPE,
    })]
}

impl<A> CommandBus<A>
where
    A: Aggregate,
    A::Command: Clone,
{
    pub fn new(database: Database, appended: AppendSignal, services: A::Services) -> Self {
        let store = PersistedEventStore::new_event_store(JournalRepository::new(
            database.clone(),
            appended.clone(),
        ))
        .with_upcasters(upcasters::<A>());
        let reader =
            PersistedEventStore::new_event_store(JournalRepository::new(database, appended))
                .with_upcasters(upcasters::<A>());
        CommandBus {
            framework: CqrsFramework::new(store, Vec::new(), services),
            reader,
        }
    }

    /// The aggregate's current state and version (0 when it has no events yet).
    pub async fn load(&self, id: &str) -> Result<(A, usize), AggregateError<A::Error>> {
        let context = self.reader.load_aggregate(id).await?;
        Ok((context.aggregate, context.current_sequence))
    }

    /// Executes `command` on aggregate `id`, retrying lost races (see the module docs).
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: CommandMetadata,
    ) -> Result<(), AggregateError<A::Error>> {
        // A singleton's command carries its epoch and runs only while that epoch is the
        // lease's, holding it for the whole command (see `store::lease`).
        let fence = Fence::current();
        let mut metadata = metadata;
        let guard = match &fence {
            Some(fence) => {
                metadata
                    .extra
                    .push((lease::METADATA_SINGLETON.into(), fence.name.clone()));
                metadata
                    .extra
                    .push((lease::METADATA_EPOCH.into(), fence.epoch.to_string()));
                let guard = fence.hold().await.map_err(|error| {
                    warn!(
                        aggregate_type = A::TYPE,
                        aggregate_id = id,
                        error = %error,
                        "command from a stale singleton refused"
                    );
                    AggregateError::UnexpectedError(Box::new(error))
                })?;
                Some(guard)
            }
            None => None,
        };
        let result = self.execute_with_retries(id, command, metadata).await;
        if let Some(guard) = guard {
            guard.release().await;
        }
        result
    }

    async fn execute_with_retries(
        &self,
        id: &str,
        command: A::Command,
        metadata: CommandMetadata,
    ) -> Result<(), AggregateError<A::Error>> {
        let metadata = metadata.into_map();
        let mut attempt = 1;
        loop {
            match self
                .framework
                .execute_with_metadata(id, command.clone(), metadata.clone())
                .await
            {
                Err(AggregateError::AggregateConflict) if attempt < CONFLICT_ATTEMPTS_MAX => {
                    debug!(
                        aggregate_type = A::TYPE,
                        aggregate_id = id,
                        attempt,
                        "conflict; retrying"
                    );
                    let pause = rand::thread_rng()
                        .gen_range(0..=CONFLICT_JITTER_MAX_MS * u64::from(attempt));
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

/// The command bus of every aggregate, sharing one journal.
pub struct Buses {
    pub payments: CommandBus<Payment>,
    pub doors: CommandBus<Door>,
    pub devices: CommandBus<Device>,
    pub sessions: CommandBus<DeviceSession>,
    /// Stripe for the money jobs (refund, capture, release), which call it outside any
    /// command so that a command re-run after a conflict never repeats a money move.
    pub payment_gateway: Arc<dyn PaymentGateway>,
}

impl Buses {
    pub fn new(database: &Database, appended: &AppendSignal, gateways: &Gateways) -> Self {
        Buses {
            payments: CommandBus::new(
                database.clone(),
                appended.clone(),
                PaymentServices::new(gateways.payments.clone()),
            ),
            doors: CommandBus::new(
                database.clone(),
                appended.clone(),
                DoorServices::new(gateways.locks.clone()),
            ),
            devices: CommandBus::new(
                database.clone(),
                appended.clone(),
                DeviceServices::new(gateways.relays.clone()),
            ),
            sessions: CommandBus::new(
                database.clone(),
                appended.clone(),
                SessionServices::new(gateways.relays.clone()),
            ),
            payment_gateway: gateways.payments.clone(),
        }
    }
}
