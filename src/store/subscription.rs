//! Named subscribers over the journal, each with a durable checkpoint.
//!
//! A subscriber handles events in global order. For each batch the runtime opens one
//! transaction, lets the subscriber write its effects through it, moves the checkpoint in
//! the same transaction, and commits: effects and checkpoint land together or not at all,
//! so a crash at any point neither loses nor repeats an event. The checkpoint moves with a
//! compare-and-set, so two instances that raced on the same batch cannot both commit it.
//!
//! Wake-ups: an append in this process signals at once ([`AppendSignal`]); appends by other
//! processes arrive through PostgreSQL's NOTIFY ([`listen_for_appends`]). A slow poll is
//! kept only as a safety net. A failing projection batch is retried with exponential
//! backoff and never skipped: a projection that silently dropped an event would be wrong
//! forever. A workflow ([`Delivery::Effects`]) whose reaction fails for good — a
//! [`permanent`](super::parking::permanent) error, or `park_after_attempts` failures in a
//! row on one event — parks that event ([`super::parking`]) and moves on, so one poison
//! event never stops the workflow for every other aggregate; transient failures below that
//! count are still retried with backoff.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgListener;
use sqlx::Postgres;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::journal::{self, CheckpointError, Cursor, Journal, JournalEvent};
use super::lease::Leases;
use super::parking;
use super::repository::AppendSignal;
use super::{Database, Tx};
use crate::metrics::Metrics;

/// The NOTIFY channel the journal's trigger signals on.
pub const JOURNAL_CHANNEL: &str = "latchkey_journal";

/// A journal consumer: a projection, a workflow, a test probe.
#[async_trait]
pub trait Subscriber: Send + Sync + 'static {
    /// Unique, stable name; it keys the checkpoint and the singleton lock.
    fn name(&self) -> &str;

    /// Applies one event. Everything written through `tx` commits together with the
    /// checkpoint; an error rolls the whole batch back and it is retried.
    async fn apply(&self, tx: &mut Tx, event: &JournalEvent) -> anyhow::Result<()>;

    /// Deletes the subscriber's own data before a rebuild from position 0.
    async fn reset(&self, _tx: &mut Tx) -> anyhow::Result<()> {
        Ok(())
    }

    /// How the runtime hands events over; projections keep the default.
    fn delivery(&self) -> Delivery {
        Delivery::Transactional
    }

    /// Reacts to one event with effects outside the database transaction (commands on
    /// aggregates, calls out). Used instead of `apply` by [`Delivery::Effects`] subscribers.
    async fn react(&self, _event: &JournalEvent) -> anyhow::Result<()> {
        Ok(())
    }
}

/// How the runtime hands events to a subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// In batches, through `apply`, inside one transaction with the checkpoint: effects
    /// happen exactly once (projections).
    Transactional,
    /// One at a time, through `react`, outside any transaction, the checkpoint moving after
    /// each event (workflows). A crash between an effect and its checkpoint repeats the
    /// event, so reactions must be idempotent — commands on our aggregates are. Holding a
    /// transaction open while reacting would be worse: on SQLite the reaction's own append
    /// would wait for the lock that transaction holds.
    Effects,
}

/// How long [`SubscriptionRuntime::catch_up`] waits for events held back behind another
/// transaction before it reports the blockage.
pub const CATCH_UP_WAIT_MAX: Duration = Duration::from_secs(60);

/// Tuning for the runtime; the defaults suit production.
#[derive(Clone, Debug)]
pub struct SubscriptionOptions {
    /// Events per transaction: larger batches are faster to rebuild, smaller ones keep
    /// SQLite's single write lock free for appends.
    pub batch_size: i64,
    /// Safety-net poll when no wake-up arrives (e.g. events held back behind a slow
    /// transaction that committed nothing of ours).
    pub idle_poll: Duration,
    /// First retry delay after a failed batch; doubles up to `retry_delay_max`.
    pub retry_delay: Duration,
    pub retry_delay_max: Duration,
    /// How often an instance that does not hold a subscriber's lock tries to take it over.
    pub takeover_interval: Duration,
    /// Failures in a row on one event after which a workflow parks it and moves on. With
    /// the default backoff (200 ms doubling to 30 s) twelve attempts span about three
    /// minutes: long enough to ride out a restart of the database or a flapping network,
    /// short enough that other sites' guests are not kept waiting behind one event.
    pub park_after_attempts: u32,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        SubscriptionOptions {
            batch_size: 200,
            idle_poll: Duration::from_millis(500),
            retry_delay: Duration::from_millis(200),
            retry_delay_max: Duration::from_secs(30),
            takeover_interval: Duration::from_secs(2),
            park_after_attempts: 12,
        }
    }
}

/// Runs subscribers; one per process, shared by all of them.
#[derive(Clone)]
pub struct SubscriptionRuntime {
    journal: Journal,
    leases: Leases,
    appended: AppendSignal,
    options: SubscriptionOptions,
    metrics: Arc<Metrics>,
    /// Per subscriber: the position of the event its reactions keep failing on, and how
    /// many times in a row. In memory: a restart starts counting again, which only delays
    /// parking.
    failures: Arc<Mutex<HashMap<String, (i64, u32)>>>,
}

/// What one batch did.
#[derive(Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Nothing new to handle.
    Idle,
    /// This many events were handled and the checkpoint moved.
    Handled(usize),
    /// Another instance moved the checkpoint first; nothing was committed.
    Lost,
}

impl SubscriptionRuntime {
    pub fn new(
        journal: Journal,
        appended: AppendSignal,
        options: SubscriptionOptions,
        metrics: Arc<Metrics>,
    ) -> Self {
        SubscriptionRuntime {
            leases: Leases::new(journal.database().clone(), metrics.clone()),
            journal,
            appended,
            options,
            metrics,
            failures: Arc::default(),
        }
    }

    fn database(&self) -> &Database {
        self.journal.database()
    }

    /// Handles the next batch after the subscriber's checkpoint.
    pub async fn run_batch(&self, subscriber: &dyn Subscriber) -> anyhow::Result<BatchOutcome> {
        match subscriber.delivery() {
            Delivery::Transactional => self.run_transactional_batch(subscriber).await,
            Delivery::Effects => self.run_effects_batch(subscriber).await,
        }
    }

    /// Reacts to events one at a time, moving the checkpoint after each. Retries asked for
    /// by an operator run first; a reaction that fails for good parks its event.
    async fn run_effects_batch(&self, subscriber: &dyn Subscriber) -> anyhow::Result<BatchOutcome> {
        let name = subscriber.name();
        let retried = self.run_retry_requests(subscriber).await?;
        journal::ensure_checkpoint(self.database(), name).await?;
        let mut from = journal::current_checkpoint(self.database(), name)
            .await?
            .unwrap_or(Cursor::START);
        let events = self
            .journal
            .read_after(from, self.options.batch_size)
            .await?;
        if events.is_empty() {
            return Ok(if retried > 0 {
                BatchOutcome::Handled(retried)
            } else {
                BatchOutcome::Idle
            });
        }
        let mut handled = 0;
        for event in &events {
            let parked = match subscriber.react(event).await {
                Ok(()) => None,
                Err(error) => {
                    let error = error.context(format!(
                        "subscriber {name} failed on {} {} sequence {} (position {})",
                        event.aggregate_type, event.aggregate_id, event.sequence, event.position
                    ));
                    let attempts = self.count_failure(name, event.position);
                    if !parking::is_permanent(&error) && attempts < self.options.park_after_attempts
                    {
                        return Err(error);
                    }
                    Some((format!("{error:#}"), attempts))
                }
            };
            let mut tx = self.database().begin().await?;
            if let Some((error, attempts)) = &parked {
                parking::park(&mut tx, name, event, error, *attempts).await?;
            }
            match journal::advance_checkpoint(&mut tx, name, from, event.cursor(), 1).await {
                Ok(()) => tx.commit().await?,
                Err(CheckpointError::Moved) => {
                    tx.rollback().await?;
                    return Ok(BatchOutcome::Lost);
                }
                Err(CheckpointError::Database(error)) => return Err(error.into()),
            }
            self.clear_failures(name);
            if let Some((error, attempts)) = parked {
                self.metrics
                    .increment("latchkey_reactions_parked_total", &[("subscriber", name)]);
                error!(
                    subscriber = name,
                    position = event.position,
                    aggregate_type = %event.aggregate_type,
                    aggregate_id = %event.aggregate_id,
                    event_type = %event.event_type,
                    attempts,
                    error.message = %error,
                    "reaction parked for an operator; the subscriber moves on"
                );
            }
            from = event.cursor();
            handled += 1;
        }
        self.metrics.set_gauge(
            "latchkey_subscription_position",
            &[("subscriber", name)],
            from.position as f64,
        );
        Ok(BatchOutcome::Handled(handled + retried))
    }

    /// Counts one more failure of `subscriber` on the event at `position`; returns the
    /// failures in a row on that event, this one included.
    fn count_failure(&self, subscriber: &str, position: i64) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let entry = failures
            .entry(subscriber.to_string())
            .or_insert((position, 0));
        if entry.0 != position {
            *entry = (position, 0);
        }
        entry.1 += 1;
        entry.1
    }

    fn clear_failures(&self, subscriber: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(subscriber);
    }

    /// Runs the reactions an operator asked to retry: a success resolves the row, a
    /// failure parks it again with its new error. The checkpoint does not move: these
    /// events are behind it already.
    async fn run_retry_requests(&self, subscriber: &dyn Subscriber) -> anyhow::Result<usize> {
        let name = subscriber.name();
        let requests = parking::retry_requests(self.database(), name).await?;
        for request in &requests {
            let outcome = match self.journal.at_position(request.position).await? {
                Some(event) => subscriber.react(&event).await.map_err(|e| format!("{e:#}")),
                None => Err(format!("no event at position {}", request.position)),
            };
            let failure = outcome.err();
            parking::settle_retry(self.database(), &request.parked_id, failure.as_deref()).await?;
            info!(
                subscriber = name,
                parked_id = %request.parked_id,
                position = request.position,
                resolved = failure.is_none(),
                error = failure.as_deref().unwrap_or(""),
                "parked reaction retried"
            );
        }
        Ok(requests.len())
    }

    async fn run_transactional_batch(
        &self,
        subscriber: &dyn Subscriber,
    ) -> anyhow::Result<BatchOutcome> {
        let name = subscriber.name();
        journal::ensure_checkpoint(self.database(), name).await?;
        let mut tx = self.database().begin_subscriber().await?;
        let from = journal::load_checkpoint(&mut tx, name)
            .await?
            .unwrap_or(Cursor::START);
        let events = journal::read_after_in(&mut tx, from, self.options.batch_size).await?;
        let Some(last) = events.last().map(JournalEvent::cursor) else {
            tx.rollback().await?;
            return Ok(BatchOutcome::Idle);
        };
        for event in &events {
            if let Err(error) = subscriber.apply(&mut tx, event).await {
                tx.rollback().await?;
                return Err(error.context(format!(
                    "subscriber {name} failed on {} {} sequence {} (position {})",
                    event.aggregate_type, event.aggregate_id, event.sequence, event.position
                )));
            }
        }
        let handled = i64::try_from(events.len())?;
        match journal::advance_checkpoint(&mut tx, name, from, last, handled).await {
            Ok(()) => {}
            Err(CheckpointError::Moved) => {
                tx.rollback().await?;
                return Ok(BatchOutcome::Lost);
            }
            Err(CheckpointError::Database(error)) => return Err(error.into()),
        }
        tx.commit().await?;
        self.metrics.set_gauge(
            "latchkey_subscription_position",
            &[("subscriber", name)],
            last.position as f64,
        );
        Ok(BatchOutcome::Handled(events.len()))
    }

    /// Handles batches until the subscriber has handled every event committed before the
    /// call; returns how many events it handled. Events held back behind an older
    /// transaction that is still running are waited for, up to [`CATCH_UP_WAIT_MAX`].
    pub async fn catch_up(&self, subscriber: &dyn Subscriber) -> anyhow::Result<u64> {
        let mut total = 0_u64;
        let started = tokio::time::Instant::now();
        loop {
            match self.run_batch(subscriber).await? {
                BatchOutcome::Handled(count) => total += count as u64,
                BatchOutcome::Lost => {}
                BatchOutcome::Idle => {
                    let cursor = journal::current_checkpoint(self.database(), subscriber.name())
                        .await?
                        .unwrap_or(Cursor::START);
                    if !self.journal.has_events_after(cursor).await? {
                        return Ok(total);
                    }
                    if started.elapsed() > CATCH_UP_WAIT_MAX {
                        anyhow::bail!(
                            "subscriber {} is held back by a long-running transaction; \
                             look for idle-in-transaction sessions in pg_stat_activity",
                            subscriber.name()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Deletes the subscriber's data and puts its checkpoint back to the start, in one
    /// transaction; the next batches rebuild it from position 0.
    pub async fn reset(&self, subscriber: &dyn Subscriber) -> anyhow::Result<()> {
        journal::ensure_checkpoint(self.database(), subscriber.name()).await?;
        let mut tx = self.database().begin().await?;
        subscriber.reset(&mut tx).await?;
        journal::reset_checkpoint(&mut tx, subscriber.name()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Runs the subscriber in the background until `shutdown` is cancelled. On PostgreSQL
    /// only one instance runs each subscriber at a time (a fenced lease, see
    /// [`super::lease`]); the others wait and take over within `takeover_interval` if the
    /// holder dies or loses its lock, and a holder that lost it stops at once.
    pub fn spawn(
        &self,
        subscriber: Arc<dyn Subscriber>,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let runtime = self.clone();
        tokio::spawn(async move {
            let name = subscriber.name().to_string();
            runtime
                .leases
                .run(
                    &name,
                    runtime.options.takeover_interval,
                    &shutdown,
                    |token| {
                        let runtime = runtime.clone();
                        let subscriber = subscriber.clone();
                        async move {
                            info!(subscriber = subscriber.name(), "subscriber running");
                            runtime.run_loop(subscriber.as_ref(), &token).await;
                            info!(subscriber = subscriber.name(), "subscriber stopped");
                        }
                    },
                )
                .await;
        })
    }

    /// The process's singleton leases (shared with the projections and the reconciler).
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    async fn run_loop(&self, subscriber: &dyn Subscriber, shutdown: &CancellationToken) {
        let mut wake = self.appended.subscribe();
        let mut delay = self.options.retry_delay;
        while !shutdown.is_cancelled() {
            match self.run_batch(subscriber).await {
                Ok(BatchOutcome::Handled(count)) => {
                    debug!(subscriber = subscriber.name(), count, "batch handled");
                    delay = self.options.retry_delay;
                }
                Ok(BatchOutcome::Lost) => {
                    warn!(
                        subscriber = subscriber.name(),
                        "another instance handled this batch"
                    );
                }
                Ok(BatchOutcome::Idle) => {
                    delay = self.options.retry_delay;
                    tokio::select! {
                        _ = wake.changed() => {}
                        _ = tokio::time::sleep(self.options.idle_poll) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Err(error) => {
                    self.metrics.increment(
                        "latchkey_subscription_failures_total",
                        &[("subscriber", subscriber.name())],
                    );
                    error!(
                        subscriber = subscriber.name(),
                        error.message = %error,
                        error.cause_chain = ?error,
                        retry_in_ms = delay.as_millis() as u64,
                        "subscriber batch failed; it will be retried"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    delay = (delay * 2).min(self.options.retry_delay_max);
                }
            }
        }
    }
}

/// The advisory-lock key of a named singleton: a stable 64-bit hash of its name.
pub fn singleton_key(name: &str) -> i64 {
    // FNV-1a: stable across processes and Rust versions, unlike `DefaultHasher`.
    let mut hasher = Fnv1a::default();
    format!("latchkey:{name}").hash(&mut hasher);
    hasher.finish() as i64
}

#[derive(Default)]
struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.0 == 0 {
            self.0 = 0xcbf2_9ce4_8422_2325;
        }
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Tries to take the named singleton lock on a dedicated connection.
pub async fn try_advisory_lock(
    pool: &sqlx::PgPool,
    name: &str,
) -> Result<Option<PoolConnection<Postgres>>, sqlx::Error> {
    let mut connection = pool.acquire().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(singleton_key(name))
        .fetch_one(&mut *connection)
        .await?;
    Ok(locked.then_some(connection))
}

/// Forwards PostgreSQL NOTIFYs about appends (from any instance) to this process's
/// subscribers. Reconnects on its own after a lost connection.
pub fn listen_for_appends(
    pool: sqlx::PgPool,
    appended: AppendSignal,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(listener) => listener,
                Err(error) => {
                    warn!(error = %error, "journal LISTEN connection failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        _ = shutdown.cancelled() => return,
                    }
                }
            };
            if let Err(error) = listener.listen(JOURNAL_CHANNEL).await {
                warn!(error = %error, "LISTEN failed; retrying");
                continue;
            }
            loop {
                tokio::select! {
                    notification = listener.try_recv() => match notification {
                        Ok(Some(_)) => appended.notify(),
                        // The connection dropped and notifications may have been missed:
                        // wake everyone so they re-read, then reconnect.
                        Ok(None) => appended.notify(),
                        Err(error) => {
                            warn!(error = %error, "journal LISTEN lost; reconnecting");
                            appended.notify();
                            break;
                        }
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    })
}
