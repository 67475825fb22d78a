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
//! Failed relay commands are retried with a growing pause per session, so an offline
//! device is not hammered (and the journal not flooded) during its grace period. On
//! PostgreSQL one instance runs the reconciler (an advisory lock); another takes over
//! within seconds if it dies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
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
}

impl Default for ReconcilerOptions {
    fn default() -> Self {
        ReconcilerOptions {
            interval: Duration::from_millis(500),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(30),
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
        options: ReconcilerOptions,
    ) -> Self {
        Reconciler {
            buses,
            database,
            clock,
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
            while !shutdown.is_cancelled() {
                if let Err(error) = self.pass().await {
                    tracing::warn!(error = %error, "reconciler pass failed");
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
