//! The reconciler: makes every relay match what the sessions' events say it should be.
//!
//! It keeps a watch list of live sessions: seeded at start from the sessions read model
//! (as of that projection's checkpoint), then kept current by reading the journal's tail
//! itself on every append, so a session opened a moment ago is acted on at once rather
//! than when the read model catches up. For each session it decides from a fresh replay
//! of the session's events — never from the read model — at the reconciler's `now`
//! ([`decide`]):
//!
//! | session | decision |
//! |---|---|
//! | opened, grace not over | switch the relay ON (the device also gets its own auto-off timer) |
//! | opened, grace over | cancel the session (the workflow then cancels the authorization) |
//! | opened, its payment no longer capturable (cancelled, expired, released) | cancel the session, never ON |
//! | active, relay observed OFF before the end | switch the relay ON again |
//! | active, end time reached | finish: relay OFF, then completed |
//! | finishing | finish again: retry OFF until Shelly confirms |
//!
//! Between passes it sleeps until the next thing falls due (an end time, a grace period's
//! end, a retry), at most `interval`, and wakes at once on an append. After a start (a
//! crash, a deploy, a takeover) it first reads every live session's relay back, so what
//! happened while nobody was watching is recorded before anything is decided.
//!
//! A sweep (every 5 minutes by default) reads the relays no session holds and switches
//! OFF any found ON, recording each correction (audited as `reconciliation`).
//!
//! Failed relay commands are retried with a growing pause per session, so an offline
//! device is not hammered (and the journal not flooded) during its grace period. On
//! PostgreSQL one instance runs the reconciler (a fenced lease, `store::lease`); another
//! takes over within seconds if it dies or loses its lock, and the old one stops at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use latchkey_aggregates::device::DeviceCommand;
use latchkey_aggregates::session::services::RelayGateway;
use latchkey_aggregates::session::{
    DeviceSession, SessionCommand, SessionState, RELAY_AUTO_OFF_MARGIN_SECONDS,
};
use latchkey_aggregates::Actor;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cqrs::{Buses, CommandMetadata};
use crate::on_pool;
use crate::projections_runtime::checkpoint_name;
use crate::store::journal::{self, Cursor, Journal};
use crate::store::lease::Leases;
use crate::store::repository::AppendSignal;
use crate::store::Database;
use crate::workflows::schedule::backoff;

/// Where the reconciler's `now` comes from; tests move it by hand.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;

    /// Changes whenever the clock jumps (a test moving time by hand), so a reconciler
    /// asleep until the next end time recomputes it. The wall clock never jumps.
    fn jumps(&self) -> Option<watch::Receiver<u64>> {
        None
    }
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
    /// The longest sleep between passes. Appends wake the reconciler at once and it
    /// sleeps only until the next end time, so this is a safety net, not the pace.
    pub interval: Duration,
    /// First pause after a failed relay command of one session; doubles up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How often the sweep reads every free device's relay and turns OFF one that is ON
    /// with no session paying for it.
    pub sweep_interval: Duration,
    /// How often an instance that does not run the reconciler tries to take it over
    /// (PostgreSQL): the holder's death is noticed within this time.
    pub takeover_interval: Duration,
}

impl Default for ReconcilerOptions {
    fn default() -> Self {
        ReconcilerOptions {
            interval: Duration::from_secs(5),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(30),
            sweep_interval: Duration::from_secs(300),
            takeover_interval: Duration::from_secs(2),
        }
    }
}

/// What the reconciler does about one session at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send ON: an opened session within its grace period, or an active one whose relay
    /// was found OFF before its end.
    SwitchOn,
    /// An opened session whose relay never came ON within the grace period.
    Cancel,
    /// Time is up (active past its end, or finishing): send OFF until confirmed.
    Finish,
    /// An ended session whose OFF the relay never confirmed: send OFF until it does,
    /// unless another session holds the device by now (its relay is that session's).
    SwitchOff,
    /// Nothing to do now; act again at `until` (an active session's end).
    Wait { until: Option<DateTime<Utc>> },
    /// Not the reconciler's: queued (the Device promotes it), or ended with the relay
    /// confirmed OFF (or never switched ON).
    NotLive,
}

/// The reconciler's decision for `session` (a replay of its events) at `now`. Pure: the
/// same events and instant always give the same decision, which the property tests
/// compare with an independent fold of the events.
pub fn decide(session: &DeviceSession, now: DateTime<Utc>) -> Decision {
    match session.state() {
        Some(SessionState::Opened) if session.grace_expired(now) => Decision::Cancel,
        Some(SessionState::Opened) => Decision::SwitchOn,
        Some(SessionState::Active) => match session.ends_at() {
            Some(end) if now >= end => Decision::Finish,
            _ if session.relay_observed() == Some(false) => Decision::SwitchOn,
            end => Decision::Wait { until: end },
        },
        Some(SessionState::Finishing) => Decision::Finish,
        Some(_) if session.off_unconfirmed() => Decision::SwitchOff,
        _ => Decision::NotLive,
    }
}

/// What one pass did, for tests and logs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub switched_on: usize,
    pub finished: usize,
    /// OFFs sent again for ended sessions whose relay never confirmed the first.
    pub switched_off: usize,
    pub cancelled: usize,
    pub failed: usize,
    /// The relays read back (the first pass after a start).
    pub read_back: usize,
    /// When the next pass has something to do, if anything is scheduled.
    pub next_due: Option<DateTime<Utc>>,
}

/// The sessions the reconciler looks after, and how far into the journal it has looked.
struct Watchlist {
    /// `None` until seeded (at the first pass).
    cursor: Option<Cursor>,
    sessions: BTreeSet<String>,
}

pub struct Reconciler {
    buses: Arc<Buses>,
    database: Database,
    journal: Journal,
    clock: Arc<dyn Clock>,
    /// For the sweep's reads of relays no session holds.
    relays: Arc<dyn RelayGateway>,
    options: ReconcilerOptions,
    watchlist: tokio::sync::Mutex<Watchlist>,
    /// session id → (failed commands in a row, not before).
    retry: Mutex<HashMap<String, (u32, DateTime<Utc>)>>,
    /// device uid → the auto-off asked of it (answered, or refused for good).
    auto_off: Mutex<HashMap<String, u64>>,
}

/// The advisory-lock name of the reconciler singleton.
const LOCK_NAME: &str = "reconciler";

/// Journal events read per query while following the tail.
const TAIL_PAGE: i64 = 500;

/// How soon to look again at a journal tail held back behind a running transaction.
const HELD_BACK_RECHECK_MS: i64 = 20;

/// The shortest pause between passes, so a session that is due again at once (a refused
/// command) cannot spin the loop.
const MIN_PAUSE: Duration = Duration::from_millis(10);

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
            journal: Journal::new(database.clone()),
            database,
            clock,
            relays,
            options,
            watchlist: tokio::sync::Mutex::new(Watchlist {
                cursor: None,
                sessions: BTreeSet::new(),
            }),
            retry: Mutex::new(HashMap::new()),
            auto_off: Mutex::new(HashMap::new()),
        }
    }

    /// The live sessions from the read model, and the journal position it reflects (read
    /// first, so the table is at least that recent; later events come from the tail).
    async fn seed(&self) -> anyhow::Result<(Cursor, Vec<String>)> {
        let cursor = journal::current_checkpoint(&self.database, &checkpoint_name("sessions"))
            .await?
            .unwrap_or(Cursor::START);
        // Live sessions, and ended ones whose OFF the relay never confirmed.
        let sql = "SELECT session_id FROM sessions WHERE state IN ('opened', 'active', 'finishing') \
                   OR (relay_commanded = FALSE AND (relay_observed IS NULL OR relay_observed = TRUE) \
                       AND state IN ('cancelled', 'failed', 'force_ended')) \
                   ORDER BY session_id";
        let live: Vec<String> =
            on_pool!(&self.database, pool => sqlx::query_scalar(sql).fetch_all(pool).await)?;
        Ok((cursor, live))
    }

    /// Brings the watch list up to date with the journal; returns it, whether it was
    /// seeded just now (the first pass after a start), and whether events are held back
    /// (on PostgreSQL, committed behind a transaction still running: look again shortly).
    async fn watched(&self) -> anyhow::Result<(Vec<String>, bool, bool)> {
        let mut watchlist = self.watchlist.lock().await;
        let seeded_now = watchlist.cursor.is_none();
        let mut cursor = match watchlist.cursor {
            Some(cursor) => cursor,
            None => {
                let (cursor, live) = self.seed().await?;
                watchlist.sessions.extend(live);
                cursor
            }
        };
        loop {
            let events = self.journal.read_after(cursor, TAIL_PAGE).await?;
            for event in &events {
                if event.aggregate_type == "DeviceSession" {
                    watchlist.sessions.insert(event.aggregate_id.clone());
                }
            }
            if let Some(last) = events.last() {
                cursor = last.cursor();
            }
            if events.len() < TAIL_PAGE as usize {
                break;
            }
        }
        watchlist.cursor = Some(cursor);
        let held_back = self.journal.has_events_after(cursor).await?;
        Ok((
            watchlist.sessions.iter().cloned().collect(),
            seeded_now,
            held_back,
        ))
    }

    async fn forget(&self, session_id: &str) {
        self.watchlist.lock().await.sessions.remove(session_id);
    }

    /// One pass over every watched session.
    pub async fn pass(&self) -> anyhow::Result<PassReport> {
        let now = self.clock.now();
        let mut report = PassReport::default();
        let (sessions, just_started, held_back) = self.watched().await?;
        if held_back {
            report.next_due = Some(now + chrono::Duration::milliseconds(HELD_BACK_RECHECK_MS));
        }
        for session_id in sessions {
            let (mut session, _) = self.buses.sessions.load(&session_id).await?;
            // An ended session's relay is not read back (the session no longer holds it);
            // its OFF is simply sent again.
            if just_started
                && !matches!(
                    decide(&session, now),
                    Decision::NotLive | Decision::SwitchOff
                )
            {
                // Nobody watched this relay for a while: record what it is doing now.
                self.read_back(&session_id, now).await;
                report.read_back += 1;
                session = self.buses.sessions.load(&session_id).await?.0;
            }
            let command = match decide(&session, now) {
                Decision::NotLive => {
                    self.forget(&session_id).await;
                    self.clear(&session_id);
                    continue;
                }
                Decision::Wait { until } => {
                    report.next_due = earliest(report.next_due, until);
                    continue;
                }
                _ if !self.due(&session_id, now) => {
                    report.next_due = earliest(report.next_due, self.retry_at(&session_id));
                    report.next_due = earliest(report.next_due, session.grace_ends_at());
                    continue;
                }
                Decision::Cancel => {
                    report.cancelled += 1;
                    SessionCommand::CancelSession {
                        reason: "the relay did not come ON within the grace period".into(),
                        actor: Actor::System,
                        at: now,
                    }
                }
                Decision::SwitchOn => match self.uncapturable(&session).await? {
                    // A session waiting for its relay never gets it on an authorization
                    // that can no longer be captured (cancelled, expired, released).
                    Some(reason) => {
                        report.cancelled += 1;
                        SessionCommand::CancelSession {
                            reason,
                            actor: Actor::System,
                            at: now,
                        }
                    }
                    None => {
                        report.switched_on += 1;
                        SessionCommand::SwitchRelayOn {
                            actor: Actor::System,
                            at: now,
                        }
                    }
                },
                Decision::Finish => {
                    report.finished += 1;
                    SessionCommand::FinishSession {
                        actor: Actor::System,
                        at: now,
                    }
                }
                Decision::SwitchOff => {
                    if self.device_held_by_another(&session, &session_id).await? {
                        self.forget(&session_id).await;
                        self.clear(&session_id);
                        continue;
                    }
                    report.switched_off += 1;
                    SessionCommand::SwitchRelayOff {
                        actor: Actor::System,
                        at: now,
                    }
                }
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
                    (after.last_relay_error().is_some()
                        && matches!(
                            after.state(),
                            Some(SessionState::Opened | SessionState::Finishing)
                        ))
                        || after.off_unconfirmed()
                }
                Err(error) => {
                    tracing::warn!(session_id = %session_id, error = %error, "reconciler command failed");
                    true
                }
            };
            if stuck {
                report.failed += 1;
                self.back_off(&session_id, now);
                report.next_due = earliest(report.next_due, self.retry_at(&session_id));
                report.next_due = earliest(report.next_due, after.grace_ends_at());
            } else {
                self.clear(&session_id);
                report.next_due = earliest(report.next_due, next_due(&after, now));
            }
        }
        Ok(report)
    }

    /// Why an opened session's payment can no longer pay for it, if it cannot. Checked
    /// before every first ON: the payment may have been cancelled while the session
    /// waited in the queue. A session with no payment journal (tests of the reconciler
    /// alone) is not judged.
    async fn uncapturable(&self, session: &DeviceSession) -> anyhow::Result<Option<String>> {
        let (Some(SessionState::Opened), Some(terms)) = (session.state(), session.terms()) else {
            return Ok(None);
        };
        let (payment, _) = self
            .buses
            .payments
            .load(&terms.payment_id.to_string())
            .await?;
        if !payment.is_started() || payment.can_start_session() {
            return Ok(None);
        }
        Ok(Some(format!(
            "the payment can no longer be captured (it is {}); the relay is not switched on",
            payment.status()
        )))
    }

    /// Whether another session holds `session`'s device now: then the relay is that
    /// session's to command, and an OFF left over from this one must not reach it.
    async fn device_held_by_another(
        &self,
        session: &DeviceSession,
        session_id: &str,
    ) -> anyhow::Result<bool> {
        let Some(terms) = session.terms() else {
            return Ok(false);
        };
        let (device, _) = self.buses.devices.load(&terms.device_uid).await?;
        Ok(device
            .holder_session()
            .is_some_and(|holder| holder.to_string() != session_id))
    }

    /// Reads the session's relay and records what it found (`RelayStateObserved`, or a
    /// finishing session completed by an OFF that did land). An unreachable relay is
    /// logged; the decision that follows retries as usual.
    async fn read_back(&self, session_id: &str, now: DateTime<Utc>) {
        let command = SessionCommand::CheckRelay {
            actor: Actor::System,
            at: now,
        };
        let metadata = CommandMetadata::new(Actor::System.to_string(), "reconciler");
        match self
            .buses
            .sessions
            .execute(session_id, command, metadata)
            .await
        {
            Ok(()) => tracing::info!(session_id, "reconciler: relay read back"),
            Err(error) => {
                tracing::warn!(session_id, error = %error, "reconciler: could not read the relay back")
            }
        }
    }

    /// Reads the relay of every device no session holds, and switches OFF each one found ON
    /// (someone switched it behind our back, or an OFF was lost). Each correction is a
    /// `RelaySwitched` by the system, audited as `reconciliation`. A relay an operator
    /// deliberately switched ON is left alone while its own timer runs
    /// ([`MANUAL_ON_AUTO_OFF_SECONDS`](latchkey_aggregates::device::MANUAL_ON_AUTO_OFF_SECONDS)); once that has run out, a relay still ON is
    /// corrected like any other. Returns how many relays were corrected.
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
            if device.holder_session().is_some() || device.manual_on_stands_at(self.clock.now()) {
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

    /// Sets each device's own auto-off to its longest plan plus the relay margin, the
    /// safety net behind every ON's timer (Shelly reference §7): a relay switched ON by
    /// any means turns itself off even if every command after it is lost. Asked once per
    /// device and longest plan; a device that cannot be configured (Shelly Cloud) is not
    /// asked again, one that is unreachable is asked at the next sweep. Returns how many
    /// devices were configured.
    pub async fn configure_auto_offs(&self) -> anyhow::Result<usize> {
        let sql = "SELECT device_uid FROM catalogue_devices ORDER BY device_uid";
        let devices: Vec<String> =
            on_pool!(&self.database, pool => sqlx::query_scalar(sql).fetch_all(pool).await)?;
        let mut configured = 0;
        for device_uid in devices {
            let (device, _) = self.buses.devices.load(&device_uid).await?;
            let (Some(target), Some(minutes)) =
                (device.relay_target(), device.longest_plan_minutes())
            else {
                continue;
            };
            let seconds = u64::from(minutes) * 60 + RELAY_AUTO_OFF_MARGIN_SECONDS;
            if self.auto_off_asked(&device_uid) == Some(seconds) {
                continue;
            }
            match self.relays.configure_auto_off(target, seconds).await {
                Ok(()) => {
                    tracing::info!(device_uid = %device_uid, seconds, "device auto-off configured");
                    configured += 1;
                }
                Err(error) if error.is_retryable() => {
                    tracing::warn!(device_uid = %device_uid, error = %error, "device auto-off: device unreachable; asking again at the next sweep");
                    continue;
                }
                Err(error) => {
                    tracing::info!(device_uid = %device_uid, error = %error, "device auto-off not available; each ON's own timer remains the safety net");
                }
            }
            self.auto_off
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(device_uid, seconds);
        }
        Ok(configured)
    }

    fn auto_off_asked(&self, device_uid: &str) -> Option<u64> {
        self.auto_off
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(device_uid)
            .copied()
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

    fn retry_at(&self, session_id: &str) -> Option<DateTime<Utc>> {
        self.retry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(session_id)
            .map(|(_, not_before)| *not_before)
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

    /// Runs passes until `shutdown`: every `interval`, and at once after an append. On
    /// PostgreSQL only the instance holding the reconciler's fenced lease runs them
    /// ([`crate::store::lease`]); one that loses it stops at once, and every holding
    /// starts afresh (watch list seeded again, relays read back).
    pub fn spawn(
        self: Arc<Self>,
        leases: Leases,
        appended: AppendSignal,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let takeover = self.options.takeover_interval;
            leases
                .run(LOCK_NAME, takeover, &shutdown, |token| {
                    let reconciler = self.clone();
                    let appended = appended.clone();
                    async move { reconciler.run(&appended, &token).await }
                })
                .await;
        })
    }

    /// Forgets what an earlier holding learned, so this one starts like a fresh
    /// instance: the next pass seeds the watch list and reads every relay back.
    async fn start_afresh(&self) {
        let mut watchlist = self.watchlist.lock().await;
        watchlist.cursor = None;
        watchlist.sessions.clear();
        drop(watchlist);
        self.retry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        self.auto_off
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }

    async fn run(&self, appended: &AppendSignal, shutdown: &CancellationToken) {
        tracing::info!("reconciler running in this instance");
        self.start_afresh().await;
        let mut wake = appended.subscribe();
        let mut jumps = self.clock.jumps();
        let mut last_sweep = tokio::time::Instant::now();
        if let Err(error) = self.configure_auto_offs().await {
            tracing::warn!(error = %error, "reconciler: configuring device auto-offs failed");
        }
        while !shutdown.is_cancelled() {
            let pause = match self.pass().await {
                Ok(report) => self.pause_until(report.next_due),
                Err(error) => {
                    tracing::warn!(error = %error, "reconciler pass failed");
                    self.options.interval
                }
            };
            if last_sweep.elapsed() >= self.options.sweep_interval {
                last_sweep = tokio::time::Instant::now();
                if let Err(error) = self.configure_auto_offs().await {
                    tracing::warn!(error = %error, "reconciler: configuring device auto-offs failed");
                }
                if let Err(error) = self.sweep().await {
                    tracing::warn!(error = %error, "reconciler sweep failed");
                }
            }
            let until_sweep = self
                .options
                .sweep_interval
                .saturating_sub(last_sweep.elapsed());
            tokio::select! {
                _ = wake.changed() => {}
                _ = jumped(&mut jumps) => {}
                _ = tokio::time::sleep(pause.min(until_sweep).max(MIN_PAUSE)) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// How long to sleep for something due at `next_due`: at most `interval`.
    fn pause_until(&self, next_due: Option<DateTime<Utc>>) -> Duration {
        let Some(due) = next_due else {
            return self.options.interval;
        };
        // A millisecond late rather than early: the pass compares with `now >= end`.
        (due - self.clock.now() + chrono::Duration::milliseconds(1))
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(self.options.interval)
    }
}

/// The earlier of two optional instants.
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When `session` next needs the reconciler, judged at `now`.
fn next_due(session: &DeviceSession, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match decide(session, now) {
        Decision::Wait { until } => until,
        Decision::NotLive => None,
        Decision::SwitchOn | Decision::Cancel | Decision::Finish | Decision::SwitchOff => Some(now),
    }
}

/// Resolves when the clock jumps; never for a clock that does not (or no longer can).
async fn jumped(jumps: &mut Option<watch::Receiver<u64>>) {
    let changed = match jumps {
        Some(receiver) => receiver.changed().await.is_ok(),
        None => false,
    };
    if !changed {
        *jumps = None;
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests;
