//! Stripe: the outbound client, webhook signatures, the processing of stored deliveries,
//! the catch-up job and diagnostics. The inbox table itself lives in
//! [`crate::store::inbox`]; the HTTP routes in [`crate::http::stripe_webhook`].

pub mod catch_up;
pub mod client;
pub mod diagnostics;
pub mod gateway;
pub mod processing;
pub mod resync;
pub mod signature;

use std::sync::{Arc, Mutex, RwLock};

use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use catch_up::{CatchUpOptions, CatchUpReport, CatchUpStatus};
pub use client::{
    idempotency_key, CheckoutCreated, CheckoutRequest, CheckoutTarget, EventPage, KeyMode,
    ListedEvent, PaymentIntentSummary, RefundSummary, StripeApiError, StripeClient,
};
pub use processing::{DeliveryProcessor, ProcessError, ProcessOutcome, WorkerOptions};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::store::inbox::Inbox;
use crate::store::Database;

/// Knobs for the Stripe side of an [`crate::startup::Application`].
#[derive(Clone)]
pub struct StripeOptions {
    /// Applies stored events to the ledger. Without one, deliveries are stored and stay
    /// `received` until a build with a processor runs.
    pub processor: Option<Arc<dyn DeliveryProcessor>>,
    /// Process each new delivery right after it is stored (best effort; the worker
    /// retries). Off, everything waits for the worker.
    pub process_inline: bool,
    pub worker: WorkerOptions,
    pub catch_up: CatchUpOptions,
    /// Refused deliveries kept in `webhook_signature_failures`.
    pub signature_failures_kept: i64,
}

impl Default for StripeOptions {
    fn default() -> Self {
        StripeOptions {
            processor: None,
            process_inline: true,
            worker: WorkerOptions::default(),
            catch_up: CatchUpOptions::default(),
            // Enough to see a pattern (a misconfigured secret, a scanner); small enough
            // that a flood of forged requests cannot grow the database.
            signature_failures_kept: 1000,
        }
    }
}

/// Everything the Stripe routes and tasks share.
#[derive(Clone)]
pub struct StripeRuntime {
    pub inbox: Inbox,
    /// The client and webhook secrets in use; replaced when an admin saves new Stripe
    /// settings (no restart).
    credentials: Arc<RwLock<StripeCredentials>>,
    pub options: StripeOptions,
    pub catch_up_status: Arc<Mutex<Option<CatchUpStatus>>>,
}

/// The Stripe account this process talks to.
#[derive(Clone, Default)]
pub struct StripeCredentials {
    /// `None` when no secret key is configured.
    pub client: Option<StripeClient>,
    pub webhook_secrets: Arc<Vec<SecretString>>,
    /// The secret key's mode: `Some(true)` for `sk_live_…`/`rk_live_…`, `Some(false)` for
    /// test keys; events of the other mode are not applied.
    pub livemode: Option<bool>,
}

impl StripeCredentials {
    /// The client and secrets `settings` describe.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let client = settings
            .stripe
            .secret_key
            .as_ref()
            .map(|key| {
                StripeClient::new(
                    key,
                    settings.stripe.api_base.as_ref(),
                    settings.public_url.clone(),
                )
            })
            .transpose()
            .map_err(|error| anyhow::anyhow!("STRIPE_SECRET_KEY / STRIPE_API_BASE: {error}"))?;
        let livemode = settings.stripe.secret_key.as_ref().and_then(|key| {
            let key = key.expose_secret();
            if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
                Some(true)
            } else if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
                Some(false)
            } else {
                None
            }
        });
        Ok(StripeCredentials {
            client,
            webhook_secrets: Arc::new(settings.stripe.webhook_secrets.clone()),
            livemode,
        })
    }
}

impl StripeRuntime {
    pub fn new(
        settings: &Settings,
        database: Database,
        options: StripeOptions,
    ) -> anyhow::Result<Self> {
        Ok(StripeRuntime {
            inbox: if settings.webhook_group_commit {
                Inbox::new(database)
            } else {
                Inbox::new(database).with_single_commits()
            },
            credentials: Arc::new(RwLock::new(StripeCredentials::from_settings(settings)?)),
            options,
            catch_up_status: Arc::new(Mutex::new(None)),
        })
    }

    /// The Stripe client in use now (`None`: not configured).
    pub fn client(&self) -> Option<StripeClient> {
        self.credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .client
            .clone()
    }

    /// The mode of the secret key in use now (`None`: no key, or one of unknown form).
    pub fn livemode(&self) -> Option<bool> {
        self.credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .livemode
    }

    /// The webhook signing secrets in use now.
    pub fn webhook_secrets(&self) -> Arc<Vec<SecretString>> {
        self.credentials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .webhook_secrets
            .clone()
    }

    /// Switches to another account or key; requests already under way finish with the
    /// old client.
    pub fn replace_credentials(&self, credentials: StripeCredentials) {
        *self.credentials.write().unwrap_or_else(|p| p.into_inner()) = credentials;
    }

    /// The retry worker (when there is a processor) and the catch-up job (when there is
    /// an interval; each run uses the client of the moment and is skipped without one).
    pub fn spawn_background(
        &self,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(processor) = &self.options.processor {
            tasks.push(processing::spawn_worker(
                self.inbox.clone(),
                processor.clone(),
                self.options.worker.clone(),
                metrics,
                shutdown.clone(),
            ));
        }
        {
            let runtime = self.clone();
            tasks.extend(catch_up::spawn(
                self.inbox.clone(),
                move || runtime.client(),
                self.options.catch_up.clone(),
                self.catch_up_status.clone(),
                shutdown,
            ));
        }
        tasks
    }

    /// Processes one stored delivery now, if a processor is configured. Best effort: a
    /// failure is recorded on the row and the worker retries.
    pub async fn process_now(&self, event_id: &str, metrics: &Metrics) {
        let Some(processor) = &self.options.processor else {
            return;
        };
        let delivery = match self.inbox.get(event_id).await {
            Ok(Some(delivery)) => delivery,
            Ok(None) => return,
            Err(error) => {
                warn!(event_id, error = %error, "could not load a stored stripe event; the worker will retry");
                return;
            }
        };
        if let Err(error) = processing::process_one(
            &self.inbox,
            processor.as_ref(),
            &self.options.worker,
            metrics,
            &delivery,
        )
        .await
        {
            warn!(event_id, error = %error, "could not record a processing outcome; the worker will retry");
        }
    }

    /// One catch-up run now (operators, tests). What it inserts is due at once, for the
    /// worker: processing here too could race the worker for the same row.
    pub async fn catch_up_now(&self) -> Result<CatchUpReport, catch_up::CatchUpError> {
        let Some(client) = self.client() else {
            return Ok(CatchUpReport::default());
        };
        let result = catch_up::run_once(&self.inbox, &client, &self.options.catch_up).await;
        let status = CatchUpStatus::from_result(&result);
        crate::shared_status::save_catch_up(self.inbox.database(), &status).await;
        *self
            .catch_up_status
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(status);
        result
    }
}
