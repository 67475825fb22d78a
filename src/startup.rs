//! Building and running one Latchkey process: pool, migrations, background tasks, router.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Settings;
use crate::cqrs::Buses;
use crate::gateways::{Gateways, LiveGateways};
use crate::http::{self, AppState};
use crate::integrations::stripe::gateway::PaymentProcessor;
use crate::integrations::stripe::{StripeOptions, StripeRuntime};
use crate::metrics::Metrics;
use crate::projections_runtime;
use crate::reconciler::{Clock, Reconciler, ReconcilerOptions, SystemClock};
use crate::store::journal::Journal;
use crate::store::repository::AppendSignal;
use crate::store::subscription::{self, Subscriber, SubscriptionOptions, SubscriptionRuntime};
use crate::store::{Database, PoolSize};
use crate::workflows::captures::CaptureWorkflow;
use crate::workflows::device_sessions::DeviceSessionWorkflow;
use crate::workflows::door_access::{DoorAccessWorkflow, RetryPolicy};
use crate::workflows::refunds::RefundWorkflow;
use crate::workflows::schedule::{self, ScheduleOptions};
use latchkey_aggregates::door::MAX_ISSUE_ATTEMPTS;

/// Knobs that tests and the demo turn; production uses the defaults.
#[derive(Clone, Default)]
pub struct BuildOptions {
    pub pool_size: PoolSize,
    pub subscriptions: SubscriptionOptions,
    /// Extra journal subscribers to run beside the built-in ones.
    pub subscribers: Vec<Arc<dyn Subscriber>>,
    /// Do not run the read models (`projections_runtime`); for tests of the journal alone.
    pub without_projections: bool,
    /// Replaces the gateways built from the settings (tests inject fakes or clients of
    /// simulators here).
    pub gateways: Option<Gateways>,
    /// Stripe webhook processing, retry worker and catch-up.
    pub stripe: StripeOptions,
    /// The workflows and their scheduled jobs.
    pub workflows: WorkflowOptions,
    /// How often this instance looks for settings saved by another one, beside the
    /// notifications (default [`crate::settings_sync::CHECK_INTERVAL`]).
    pub settings_check_interval: Option<Duration>,
}

/// Workflow tuning; `enabled: false` leaves the journal without process managers (tests
/// of other parts that drive aggregates by hand).
#[derive(Clone)]
pub struct WorkflowOptions {
    pub enabled: bool,
    /// First retry delay of a failed TTLock call, doubled per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Issue attempts per door code before it is left failed.
    pub access_code_attempts: u32,
    pub schedule: ScheduleOptions,
    /// How long an opened device session waits for its relay before it is cancelled.
    pub session_grace_seconds: u32,
    pub reconciler: ReconcilerOptions,
    /// The reconciler's clock, also the password reset links' (`AppState::clock`); the
    /// wall clock unless a test moves time by hand.
    pub clock: Option<Arc<dyn Clock>>,
    /// The mail worker's pace and retries.
    pub mail: crate::mail::worker::MailWorkerOptions,
    /// Replaces the settings' `LATCHKEY_SMTP_URL` and `LATCHKEY_MAIL_FROM` (tests that
    /// build on a shared set-up point its mail at their SMTP sink here).
    pub mail_settings: Option<crate::mail::MailSettings>,
}

impl Default for WorkflowOptions {
    fn default() -> Self {
        WorkflowOptions {
            enabled: true,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(600),
            access_code_attempts: MAX_ISSUE_ATTEMPTS,
            schedule: ScheduleOptions::default(),
            session_grace_seconds: 120,
            reconciler: ReconcilerOptions::default(),
            clock: None,
            mail: Default::default(),
            mail_settings: None,
        }
    }
}

/// A built, listening application that has not started serving yet.
pub struct Application {
    listener: TcpListener,
    port: u16,
    state: AppState,
    subscriptions: SubscriptionRuntime,
    appended: AppendSignal,
    shutdown: CancellationToken,
    background: Vec<JoinHandle<()>>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, BuildOptions::default()).await
    }

    /// Connects, migrates, binds the listener and starts the background tasks.
    pub async fn build_with(settings: Settings, options: BuildOptions) -> anyhow::Result<Self> {
        let database = Database::connect(&settings.database_url, options.pool_size).await?;
        database.migrate().await?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("could not listen on LATCHKEY_LISTEN={}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let metrics = Arc::new(Metrics::default());
        let journal = Journal::new(database.clone());
        let appended = AppendSignal::default();
        let shutdown = CancellationToken::new();
        let subscriptions = SubscriptionRuntime::new(
            journal.clone(),
            appended.clone(),
            options.subscriptions.clone(),
            metrics.clone(),
        );
        let mut background = Vec::new();
        if let Database::Postgres(pool) = &database {
            background.push(subscription::listen_for_appends(
                pool.clone(),
                appended.clone(),
                shutdown.clone(),
            ));
        }
        background.push(crate::store::ledger::spawn_sealer(
            database.clone(),
            appended.clone(),
            settings.ledger.clone(),
            shutdown.child_token(),
        ));
        for subscriber in options.subscribers {
            background.push(subscriptions.spawn(subscriber, shutdown.child_token()));
        }
        if !options.without_projections {
            projections_runtime::ensure_checkpoints(&database).await?;
            let task = projections_runtime::ProjectionTask {
                runtime: subscriptions.clone(),
                database: database.clone(),
                appended: appended.clone(),
                options: options.subscriptions.clone(),
                metrics: metrics.clone(),
            };
            background.push(task.spawn(shutdown.child_token()));
        }
        let settings = Arc::new(settings);
        let settings_store =
            crate::settings_store::SettingsStore::load(database.clone(), settings.clone()).await?;
        // The environment overlaid with what admins saved on the settings page.
        let effective = settings_store.effective();
        let mut stripe = StripeRuntime::new(&effective, database.clone(), options.stripe)?;
        let gateways = match options.gateways {
            Some(gateways) => gateways,
            None => Gateways::from_settings(&effective, stripe.client().as_ref())?,
        };
        let gateways = LiveGateways::new(gateways);
        let ports = gateways.ports();
        let buses = Arc::new(Buses::new(&database, &appended, &ports));
        if stripe.options.processor.is_none() {
            // Stripe events become Payment facts unless a test supplies its own processor.
            // The clone shares the live credentials (the key's mode follows a settings
            // save) and holds no processor itself.
            let key_mode = stripe.clone();
            stripe.options.processor = Some(Arc::new(
                PaymentProcessor::new(buses.clone(), database.clone()).checking_mode_of(key_mode),
            ));
        }
        background.extend(stripe.spawn_background(metrics.clone(), shutdown.child_token()));
        let mail = crate::mail::Mail::from_settings(
            options
                .workflows
                .mail_settings
                .as_ref()
                .unwrap_or(&settings.mail),
        )?;
        let clock: Arc<dyn Clock> = options
            .workflows
            .clock
            .clone()
            .unwrap_or_else(|| Arc::new(SystemClock));
        if options.workflows.enabled {
            let outbox = Arc::new(crate::mail::outbox::MailOutbox);
            background.push(subscriptions.spawn(outbox, shutdown.child_token()));
            let worker = crate::mail::worker::MailWorker {
                database: database.clone(),
                mail: mail.clone(),
                public_url: settings.public_url.clone(),
                options: options.workflows.mail.clone(),
            };
            background.push(worker.spawn(shutdown.child_token()));
            let door_access = DoorAccessWorkflow::new(
                buses.clone(),
                database.clone(),
                RetryPolicy {
                    base: options.workflows.retry_base,
                    max: options.workflows.retry_max,
                    attempts: options.workflows.access_code_attempts,
                },
                settings.access.deadline,
            )
            .revoking_on_dispute(settings.dispute_revokes_access);
            background.push(subscriptions.spawn(Arc::new(door_access), shutdown.child_token()));
            let refunds = RefundWorkflow::new(database.clone());
            background.push(subscriptions.spawn(Arc::new(refunds), shutdown.child_token()));
            let captures = CaptureWorkflow::new(database.clone(), buses.clone());
            background.push(subscriptions.spawn(Arc::new(captures), shutdown.child_token()));
            let sessions = DeviceSessionWorkflow::new(
                buses.clone(),
                clock.clone(),
                options.workflows.session_grace_seconds,
            )
            .ending_sessions_on_dispute(settings.dispute_revokes_access);
            background.push(subscriptions.spawn(Arc::new(sessions), shutdown.child_token()));
            let reconciler = Reconciler::new(
                buses.clone(),
                database.clone(),
                clock.clone(),
                ports.relays.clone(),
                options.workflows.reconciler.clone(),
            );
            background.push(Arc::new(reconciler).spawn(
                subscriptions.leases().clone(),
                appended.clone(),
                shutdown.child_token(),
            ));
            background.push(schedule::spawn_worker(
                database.clone(),
                buses.clone(),
                options.workflows.schedule.clone(),
                shutdown.child_token(),
            ));
        }
        let checkout_limits = Arc::new(crate::http::checkout_limits::CheckoutLimits::new(
            settings.security.checkout_per_address_per_minute,
            settings.security.checkout_per_target_per_minute,
        ));
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let instance: Arc<str> = format!("pid {} / {}", std::process::id(), &suffix[..8]).into();
        let state = AppState {
            instance,
            checkout_limits,
            mail,
            clock,
            settings,
            settings_store,
            database,
            journal,
            metrics,
            buses,
            gateways,
            stripe,
        };
        background.push(crate::shared_status::spawn_publisher(
            state.clone(),
            shutdown.child_token(),
        ));
        background.push(crate::settings_sync::spawn(
            state.clone(),
            options
                .settings_check_interval
                .unwrap_or(crate::settings_sync::CHECK_INTERVAL),
            shutdown.child_token(),
        ));
        Ok(Application {
            listener,
            port,
            state,
            subscriptions,
            appended,
            shutdown,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn subscriptions(&self) -> &SubscriptionRuntime {
        &self.subscriptions
    }

    /// The signal every append of this process raises; command buses must share it.
    pub fn append_signal(&self) -> &AppendSignal {
        &self.appended
    }

    /// Cancelling this token stops the server gracefully and every background task.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains in-flight requests and
    /// waits for the background tasks to stop.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let router = http::router(self.state.clone());
        self.state.metrics.set_gauge("latchkey_up", &[], 1.0);
        info!(port = self.port, "serving");
        let served = http::serve::serve(
            self.listener,
            router,
            &self.state.settings.security.limits,
            self.shutdown.clone(),
        )
        .await;
        self.shutdown.cancel();
        for task in self.background {
            let _ = task.await;
        }
        self.subscriptions.leases().close().await;
        self.state.database.close().await;
        info!("stopped");
        served.context("the HTTP server failed")
    }
}

/// Resolves when the process receives SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
