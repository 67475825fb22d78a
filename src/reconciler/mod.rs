//! The reconciler: makes every relay match what the sessions' events say it should be.
//!
//! Each pass finds the live sessions (opened, active, finishing) in the sessions read
//! model, then decides from a fresh replay of each session's events — never from the read
//! model — at the reconciler's `now`:
//!
//! | session | decision |
//! |---|---|
//! | opened, grace not over | switch the relay ON (the device also gets its own auto-off timer) |
//! | opened, grace over | cancel the session (the workflow then cancels the authorization) |
//! | active, end time reached | finish: relay OFF, then completed |
//! | finishing | finish again: retry OFF until Shelly confirms |
//!
//! A sweep (every 5 minutes by default) reads the relays no session holds and switches
//! OFF any found ON, recording each correction (audited as `reconciliation`).
//!
//! Failed relay commands are retried with a growing pause per session, so an offline
//! device is not hammered (and the journal not flooded) during its grace period. On
//! PostgreSQL one instance runs the reconciler (an advisory lock); another takes over
//! within seconds if it dies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use latchkey_aggregates::device::DeviceCommand;
use latchkey_aggregates::session::services::RelayGateway;
use latchkey_aggregates::session::{SessionCommand, SessionState};
use latchkey_aggregates::Actor;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cqrs::{Buses, CommandMetadata};
use crate::on_pool;
use crate::store::repository::AppendSignal;
use crate::store::subscription::try_advisory_lock;
use crate::store::Database;
use crate::workflows::schedule::backoff;

/// Where the reconciler's `now` comes from; tests move it by hand.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Tuning; the defaults meet "ON within 1 s of the payment, OFF within 1 s of the end".
#[derive(Clone, Debug)]
pub struct ReconcilerOptions {
    /// A pass runs at least this often, and also on every append.
    pub interval: Duration,
    /// First pause after a failed relay command of one session; doubles up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How often the sweep reads every free device's relay and turns OFF one that is ON
    /// with no session paying for it.
    pub sweep_interval: Duration,
}

impl Default for ReconcilerOptions {
    fn default() -> Self {
        ReconcilerOptions {
            interval: Duration::from_millis(500),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(300),
        }
    }
}

/// What one pass did, for tests and logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub switched_on: usize,
    pub finished: usize,
    pub cancelled: usize,
    pub failed: usize,
}

pub struct Reconciler {
    buses: Arc<Buses>,
    database: Database,
    clock: Arc<dyn Clock>,
    /// For the sweep's reads of relays no session holds.
    relays: Arc<dyn RelayGateway>,
    options: ReconcilerOptions,
    /// session id → (failed commands in a row, not before).
    retry: Mutex<HashMap<String, (u32, DateTime<Utc>)>>,
}

/// The advisory-lock name of the reconciler singleton.
const LOCK_NAME: &str = "reconciler";

impl Reconciler {
    pub fn new(
        buses: Arc<Buses>,
        database: Database,
        clock: Arc<dyn Clock>,
        relays: Arc<dyn RelayGateway>,
        options: ReconcilerOptions,
    ) -> Self {
        Reconciler {
            buses,
            database,
            clock,
            relays,
            options,
            retry: Mutex::new(HashMap::new()),
        }
    }

    async fn live_sessions(&self) -> Result<Vec<String>, sqlx::Error> {
        let sql =
            "SELECT session_id FROM sessions WHERE state IN ('opened', 'active', 'finishing') \
                   ORDER BY session_id";
        on_pool!(&self.database, pool => sqlx::query_scalar(sql).fetch_all(pool).await)
    }

    /// One pass over every live session.
    pub async fn pass(&self) -> anyhow::Result<PassReport> {
        let now = self.clock.now();
        let mut report = PassReport::default();
        for session_id in self.live_sessions().await? {
            if !self.due(&session_id, now) {
                continue;
            }
            let (session, _) = self.buses.sessions.load(&session_id).await?;
            let command = match session.state() {
                Some(SessionState::Opened) if session.grace_expired(now) => {
                    report.cancelled += 1;
                    SessionCommand::CancelSession {
                        reason: "the relay did not come ON within the grace period".into(),
                        actor: Actor::System,
                        at: now,
                    }
                }
                Some(SessionState::Opened) => {
                    report.switched_on += 1;
                    SessionCommand::SwitchRelayOn {
                        actor: Actor::System,
                        at: now,
                    }
                }
                Some(SessionState::Active) if session.ends_at().is_some_and(|end| now >= end) => {
                    report.finished += 1;
                    SessionCommand::FinishSession {
                        actor: Actor::System,
                        at: now,
                    }
                }
                Some(SessionState::Finishing) => {
                    report.finished += 1;
                    SessionCommand::FinishSession {
                        actor: Actor::System,
                        at: now,
                    }
                }
                _ => continue,
            };
            let metadata = CommandMetadata::new(Actor::System.to_string(), "reconciler");
            let outcome = self
                .buses
                .sessions
                .execute(&session_id, command, metadata)
                .await;
            let (after, _) = self.buses.sessions.load(&session_id).await?;
            let stuck = match outcome {
                Ok(()) | Err(AggregateError::UserError(_)) => {
                    after.last_relay_error().is_some()
                        && matches!(
                            after.state(),
                            Some(SessionState::Opened | SessionState::Finishing)
                        )
                }
                Err(error) => {
                    tracing::warn!(session_id = %session_id, error = %error, "reconciler command failed");
                    true
                }
            };
            if stuck {
                report.failed += 1;
                self.back_off(&session_id, now);
            } else {
                self.clear(&session_id);
            }
        }
        Ok(report)
    }

    /// Reads the relay of every device no session holds, and switches OFF each one found ON
    /// (someone switched it behind our back, or an OFF was lost). Each correction is a
    /// `RelaySwitched` by the system, audited as `reconciliation`. A relay an operator
    /// deliberately left ON (the Device records it) is left alone: it has its own
    /// auto-off timer. Returns how many relays were corrected.
    pub async fn sweep(&self) -> anyhow::Result<usize> {
        let sql = "SELECT device_uid FROM catalogue_devices WHERE holder_session_id IS NULL ORDER BY device_uid";
        let free: Vec<String> =
            on_pool!(&self.database, pool => sqlx::query_scalar(sql).fetch_all(pool).await)?;
        let mut corrected = 0;
        for device_uid in free {
            let (device, _) = self.buses.devices.load(&device_uid).await?;
            let Some(target) = device.relay_target() else {
                continue;
            };
            if device.holder_session().is_some() || device.relay_is_on() == Some(true) {
                continue;
            }
            let observed = match self.relays.status(target).await {
                Ok(outcome) => outcome.is_on,
                Err(error) => {
                    tracing::warn!(device_uid = %device_uid, error = %error, "sweep: could not read the relay");
                    continue;
                }
            };
            if !observed {
                continue;
            }
            let command = DeviceCommand::SwitchRelay {
                on: false,
                reason: "reconciliation: the relay was ON with no paying session".into(),
                actor: Actor::System,
                at: self.clock.now(),
            };
            let metadata = CommandMetadata::new(Actor::System.to_string(), "reconciler");
            match self
                .buses
                .devices
                .execute(&device_uid, command, metadata)
                .await
            {
                Ok(()) => {
                    tracing::info!(device_uid = %device_uid, "sweep: relay switched OFF");
                    corrected += 1;
                }
                Err(error) => {
                    tracing::warn!(device_uid = %device_uid, error = %error, "sweep: OFF failed")
                }
            }
        }
        Ok(corrected)
    }

    fn due(&self, session_id: &str, now: DateTime<Utc>) -> bool {
        let retry = self
            .retry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        retry
            .get(session_id)
            .is_none_or(|(_, not_before)| now >= *not_before)
    }

    fn back_off(&self, session_id: &str, now: DateTime<Utc>) {
        let mut retry = self
            .retry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let failures = retry.get(session_id).map_or(0, |(count, _)| *count) + 1;
        let pause = backoff(self.options.retry_base, self.options.retry_max, failures);
        let not_before = now
            + chrono::Duration::from_std(pause).unwrap_or_else(|_| chrono::Duration::seconds(30));
        retry.insert(session_id.to_string(), (failures, not_before));
    }

    fn clear(&self, session_id: &str) {
        self.retry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(session_id);
    }

    /// Runs passes until `shutdown`: every `interval`, and at once after an append.
    pub fn spawn(
        self: Arc<Self>,
        appended: AppendSignal,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let _lock = match &self.database {
                Database::Postgres(pool) => loop {
                    match try_advisory_lock(pool, LOCK_NAME).await {
                        Ok(Some(connection)) => {
                            break Some(crate::store::subscription::SingletonLock::new(connection))
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(error = %error, "reconciler: could not try its lock")
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                },
                Database::Sqlite(_) => None,
            };
            let mut wake = appended.subscribe();
            let mut last_sweep = tokio::time::Instant::now();
            while !shutdown.is_cancelled() {
                if let Err(error) = self.pass().await {
                    tracing::warn!(error = %error, "reconciler pass failed");
                }
                if last_sweep.elapsed() >= self.options.sweep_interval {
                    last_sweep = tokio::time::Instant::now();
                    if let Err(error) = self.sweep().await {
                        tracing::warn!(error = %error, "reconciler sweep failed");
                    }
                }
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(self.options.interval) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        })
    }
}
