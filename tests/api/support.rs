//! Test-only aggregate and subscriber used to exercise the journal without the domain.

use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use latchkey::cqrs::{CommandBus, CommandMetadata};
use latchkey::on_backend;
use latchkey::store::journal::JournalEvent;
use latchkey::store::repository::AppendSignal;
use latchkey::store::subscription::Subscriber;
use latchkey::store::{Database, Tx};
use serde::{Deserialize, Serialize};

/// A running total: enough state for a command to depend on what came before.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Counter {
    total: i64,
}

#[derive(Clone, Debug)]
pub enum CounterCommand {
    Add { amount: i64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CounterEvent {
    Added { amount: i64, total: i64 },
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        "Added".to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct CounterError(String);

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CounterError> {
        match command {
            CounterCommand::Add { amount } if amount <= 0 => {
                Err(CounterError("amount must be positive".into()))
            }
            CounterCommand::Add { amount } => {
                let total = self.total + amount;
                sink.write(CounterEvent::Added { amount, total }, self)
                    .await;
                Ok(())
            }
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CounterEvent::Added { total, .. } => self.total = total,
        }
    }
}

pub fn counter_bus(database: &Database, appended: &AppendSignal) -> CommandBus<Counter> {
    CommandBus::new(database.clone(), appended.clone(), ())
}

pub fn test_metadata() -> CommandMetadata {
    CommandMetadata::new("system", "test")
}

/// Creates the table a [`Recorder`] writes to (portable SQL for both backends).
pub async fn create_recorder_table(database: &Database) {
    let sql = "CREATE TABLE IF NOT EXISTS recorded (\
                   subscriber TEXT NOT NULL, position BIGINT NOT NULL, \
                   aggregate_id TEXT NOT NULL, sequence BIGINT NOT NULL, applied_order BIGINT NOT NULL)";
    latchkey::on_pool!(database, pool => sqlx::query(sql).execute(pool).await.map(|_| ())).unwrap();
}

/// Records every event it is given into `recorded`, with the order it saw them in; can be
/// told to fail once at a given position, or to be slow.
pub struct Recorder {
    pub name: String,
    pub fail_once_at: AtomicI64,
    pub delay_ms: u64,
    /// How many events this instance applied (committed or not).
    pub applied: AtomicI64,
    order: AtomicI64,
}

impl Recorder {
    pub fn new(name: &str) -> Self {
        Recorder {
            name: name.to_string(),
            fail_once_at: AtomicI64::new(-1),
            delay_ms: 0,
            applied: AtomicI64::new(0),
            order: AtomicI64::new(0),
        }
    }
}

#[async_trait]
impl Subscriber for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    async fn apply(&self, tx: &mut Tx, event: &JournalEvent) -> anyhow::Result<()> {
        if self.delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(self.delay_ms)).await;
        }
        let sql =
            "INSERT INTO recorded (subscriber, position, aggregate_id, sequence, applied_order) \
                   VALUES ($1, $2, $3, $4, $5)";
        let order = self.order.fetch_add(1, Ordering::SeqCst);
        self.applied.fetch_add(1, Ordering::SeqCst);
        on_backend!(tx, conn => sqlx::query(sql)
            .bind(&self.name)
            .bind(event.position)
            .bind(&event.aggregate_id)
            .bind(event.sequence)
            .bind(order)
            .execute(conn)
            .await
            .map(|_| ()))?;
        if self
            .fail_once_at
            .compare_exchange(event.position, -1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            anyhow::bail!("injected failure at position {}", event.position);
        }
        Ok(())
    }
}

/// (rows, distinct positions) recorded by one subscriber.
pub async fn recorded_counts(database: &Database, subscriber: &str) -> (i64, i64) {
    let sql = "SELECT COUNT(*), COUNT(DISTINCT position) FROM recorded WHERE subscriber = $1";
    latchkey::on_pool!(database, pool => sqlx::query_as(sql).bind(subscriber).fetch_one(pool).await)
        .unwrap()
}

/// (aggregate_id, sequence) in the order the subscriber applied them.
pub async fn recorded_in_order(database: &Database, subscriber: &str) -> Vec<(String, i64)> {
    let sql =
        "SELECT aggregate_id, sequence FROM recorded WHERE subscriber = $1 ORDER BY applied_order";
    latchkey::on_pool!(database, pool => sqlx::query_as(sql).bind(subscriber).fetch_all(pool).await)
        .unwrap()
}

/// How many events the subscriber's checkpoint says it has handled.
pub async fn events_handled(database: &Database, subscriber: &str) -> i64 {
    let sql = "SELECT events_handled FROM subscription_checkpoints WHERE name = $1";
    latchkey::on_pool!(database, pool => sqlx::query_scalar(sql).bind(subscriber).fetch_one(pool).await).unwrap()
}

/// A checkout provider that records requests and answers with made-up ids, or fails.
#[derive(Default)]
pub struct FakeCheckout {
    pub requests: std::sync::Mutex<Vec<latchkey::payments::checkout::CheckoutRequest>>,
    pub fail_with: std::sync::Mutex<Option<String>>,
}

#[async_trait]
impl latchkey::payments::checkout::CheckoutGateway for FakeCheckout {
    async fn create_checkout(
        &self,
        request: latchkey::payments::checkout::CheckoutRequest,
    ) -> Result<
        latchkey::payments::checkout::CheckoutCreated,
        latchkey::payments::checkout::CheckoutError,
    > {
        if let Some(message) = self.fail_with.lock().unwrap().clone() {
            return Err(latchkey::payments::checkout::CheckoutError { message });
        }
        let id = request.payment_id.simple().to_string();
        let expires_at = request.expires_at;
        self.requests.lock().unwrap().push(request);
        Ok(latchkey::payments::checkout::CheckoutCreated {
            checkout_session_id: format!("cs_test_{id}"),
            url: format!("https://checkout.example/{id}"),
            payment_intent_id: Some(format!("pi_test_{id}")),
            expires_at,
        })
    }
}

/// Gateways made of the domain's fakes plus a [`FakeCheckout`].
pub fn fake_gateways(checkout: std::sync::Arc<FakeCheckout>) -> latchkey::gateways::Gateways {
    use latchkey_aggregates::door::services::testing::FakeLockGateway;
    use latchkey_aggregates::payment::services::testing::FakePaymentGateway;
    use latchkey_aggregates::session::services::testing::FakeRelayGateway;
    latchkey::gateways::Gateways::with(
        std::sync::Arc::new(FakePaymentGateway::new()),
        std::sync::Arc::new(FakeLockGateway::new()),
        std::sync::Arc::new(FakeRelayGateway::new()),
        checkout,
    )
}

/// Reacts (outside any transaction) by recording positions in memory; fails once at a
/// given position, or at another for as long as it is set.
pub struct Reactor {
    pub name: String,
    pub reacted: std::sync::Mutex<Vec<i64>>,
    pub fail_once_at: AtomicI64,
    pub fail_always_at: AtomicI64,
}

impl Reactor {
    pub fn new(name: &str) -> Self {
        Reactor {
            name: name.to_string(),
            reacted: Default::default(),
            fail_once_at: AtomicI64::new(-1),
            fail_always_at: AtomicI64::new(-1),
        }
    }
}

#[async_trait]
impl Subscriber for Reactor {
    fn name(&self) -> &str {
        &self.name
    }

    async fn apply(&self, _tx: &mut Tx, _event: &JournalEvent) -> anyhow::Result<()> {
        anyhow::bail!("a reactor is never given a transaction")
    }

    fn delivery(&self) -> latchkey::store::subscription::Delivery {
        latchkey::store::subscription::Delivery::Effects
    }

    async fn react(&self, event: &JournalEvent) -> anyhow::Result<()> {
        if self
            .fail_once_at
            .compare_exchange(event.position, -1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            anyhow::bail!("injected failure at position {}", event.position);
        }
        if self.fail_always_at.load(Ordering::SeqCst) == event.position {
            anyhow::bail!("always fails at position {}", event.position);
        }
        self.reacted.lock().unwrap().push(event.position);
        Ok(())
    }
}
