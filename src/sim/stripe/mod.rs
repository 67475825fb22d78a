//! A Stripe simulator, wire-faithful for the subset Latchkey uses: Checkout Sessions,
//! PaymentIntent capture/cancel/retrieve (a capture can be made to decline), refunds and
//! the Events API, with Stripe's
//! form-encoded requests, bearer auth, idempotency-key replay and error shapes; a hosted
//! checkout page where test cards decide the outcome; and correctly signed webhook
//! deliveries that can be told to duplicate, reorder, delay or drop events.
//!
//! Runs as `latchkey sim stripe --listen ADDR` or in-process through [`spawn`].

mod api;
pub mod state;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use state::{card_outcome, CardOutcome, RecordedRequest, SimError};
pub use webhooks::{DeliveryMode, DeliveryRecord};

use state::SimState;
use webhooks::Deliverer;

/// Webhook requests give up after this; a hung endpoint must not pile up tasks.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// How often open Checkout Sessions are checked against their `expires_at` (whole
/// seconds, as Stripe's timestamps).
const EXPIRY_SWEEP: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct StripeSimConfig {
    /// The only API key accepted (`sk_test_…`).
    pub secret_key: String,
    /// Deliveries are signed once per secret (several during a rotation).
    pub webhook_secrets: Vec<String>,
    /// Where events are POSTed; `None` until set (events are still listed).
    pub webhook_url: Option<String>,
    /// Base of checkout page links; defaults to `http://{listen address}`.
    pub public_base: Option<String>,
    /// `payment_status` of a completed manual-capture Checkout Session. Stripe's
    /// documentation found does not say (reference: unconfirmed); `unpaid` is the
    /// stricter assumption for the ledger, `paid` the other possibility.
    pub manual_capture_payment_status: String,
}

impl StripeSimConfig {
    /// Accepts `secret_key`, signs with `webhook_secrets`, delivers nowhere yet.
    pub fn new(secret_key: impl Into<String>, webhook_secrets: Vec<String>) -> Self {
        StripeSimConfig {
            secret_key: secret_key.into(),
            webhook_secrets,
            webhook_url: None,
            public_base: None,
            manual_capture_payment_status: "unpaid".to_string(),
        }
    }
}

pub(crate) struct Shared {
    config: StripeSimConfig,
    checkout_base: String,
    state: Mutex<SimState>,
    deliverer: Deliverer,
    /// (requests left to fail, status): makes the next API requests fail before they
    /// execute, as a Stripe outage does, to exercise the client's retries.
    failures: Mutex<(u32, u16)>,
    /// (event list requests to answer, then how many to fail with 500): stops a client
    /// paging through `/v1/events` half-way.
    event_list_failures: Mutex<(u32, u32)>,
    /// (POSTs left to delay, delay): the next POSTs execute (and their webhooks go out)
    /// at once, but their answers come back only after the delay — a slow Stripe, whose
    /// webhooks overtake its answers.
    answer_delays: Mutex<(u32, Duration)>,
}

impl Shared {
    /// Consumes one injected failure, if any is left.
    fn injected_failure(&self) -> Option<SimError> {
        let mut failures = lock(&self.failures);
        if failures.0 == 0 {
            return None;
        }
        failures.0 -= 1;
        Some(SimError {
            status: failures.1,
            kind: "api_error",
            code: None,
            decline_code: None,
            message: "Simulated Stripe failure; retry with the same idempotency key.".to_string(),
            param: None,
        })
    }

    /// Whether this `/v1/events` request is one to fail (see `fail_event_lists_after`).
    fn event_list_fails(&self) -> bool {
        let mut plan = lock(&self.event_list_failures);
        match *plan {
            (0, 0) => false,
            (0, count) => {
                plan.1 = count - 1;
                true
            }
            (skip, _) => {
                plan.0 = skip - 1;
                false
            }
        }
    }

    /// Consumes one answer delay, if any is left.
    fn answer_delay(&self) -> Option<Duration> {
        let mut delays = lock(&self.answer_delays);
        if delays.0 == 0 {
            return None;
        }
        delays.0 -= 1;
        Some(delays.1)
    }

    fn lock_state(&self) -> MutexGuard<'_, SimState> {
        // The state is plain data mutated under the lock; a panic cannot leave it torn
        // in a way later requests would trip on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running simulator.
pub struct StripeSimHandle {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

/// Serves the simulator on `listener` until the handle is stopped (or dropped with its
/// runtime).
pub fn spawn(listener: TcpListener, config: StripeSimConfig) -> std::io::Result<StripeSimHandle> {
    let addr = listener.local_addr()?;
    let checkout_base = config
        .public_base
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"))
        .trim_end_matches('/')
        .to_string();
    let http = reqwest::Client::builder()
        .timeout(WEBHOOK_TIMEOUT)
        .build()
        .map_err(std::io::Error::other)?;
    let deliverer = Deliverer {
        http,
        url: Arc::new(Mutex::new(config.webhook_url.clone())),
        secrets: Arc::new(Mutex::new(config.webhook_secrets.clone())),
        mode: Arc::new(Mutex::new(DeliveryMode::Normal)),
        log: Arc::new(Mutex::new(Vec::new())),
    };
    let shared = Arc::new(Shared {
        config,
        checkout_base,
        state: Mutex::new(SimState::default()),
        deliverer,
        failures: Mutex::new((0, 500)),
        event_list_failures: Mutex::new((0, 0)),
        answer_delays: Mutex::new((0, Duration::ZERO)),
    });
    let shutdown = CancellationToken::new();
    let router = api::router(shared.clone());
    let stop = shutdown.clone();
    let sweeper = shared.clone();
    let sweeping = shutdown.clone();
    tokio::spawn(async move {
        while !sweeping.is_cancelled() {
            let events = sweeper
                .lock_state()
                .expire_due(chrono::Utc::now().timestamp());
            sweeper.deliverer.dispatch(events);
            tokio::select! {
                _ = tokio::time::sleep(EXPIRY_SWEEP) => {}
                _ = sweeping.cancelled() => {}
            }
        }
    });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::warn!(error = %error, "the Stripe simulator stopped");
        }
    });
    Ok(StripeSimHandle {
        addr,
        shared,
        shutdown,
        task,
    })
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl StripeSimHandle {
    /// The API base to give the client (`STRIPE_API_BASE`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_webhook_url(&self, url: impl Into<String>) {
        *lock(&self.shared.deliverer.url) = Some(url.into());
    }

    pub fn set_webhook_secrets(&self, secrets: Vec<String>) {
        *lock(&self.shared.deliverer.secrets) = secrets;
    }

    /// The next `count` API requests fail with `status` before doing anything.
    pub fn fail_next(&self, count: u32, status: u16) {
        *lock(&self.shared.failures) = (count, status);
    }

    /// After `skip` more `/v1/events` list requests are answered, the next `count` fail
    /// with 500 (a client paging through the list is stopped half-way).
    pub fn fail_event_lists_after(&self, skip: u32, count: u32) {
        *lock(&self.shared.event_list_failures) = (skip, count);
    }

    /// Moves every stored event `seconds` into the past, as if they were created then
    /// (their order is kept).
    pub fn backdate_events(&self, seconds: i64) {
        for event in &mut self.shared.lock_state().events {
            if let Some(created) = event["created"].as_i64() {
                event["created"] = serde_json::json!(created - seconds);
            }
        }
    }

    /// The next `count` POSTs are executed at once but answered after `delay`.
    pub fn delay_next_answers(&self, count: u32, delay: Duration) {
        *lock(&self.shared.answer_delays) = (count, delay);
    }

    /// Makes refund `refund_id` fail later, as Stripe's test card 4000 0000 0000 5126 does.
    pub fn fail_refund(&self, refund_id: &str) -> Result<Value, SimError> {
        let origin = state::Origin {
            request_id: None,
            idempotency_key: None,
        };
        let (refund, events) = self.shared.lock_state().fail_refund(refund_id, &origin)?;
        self.shared.deliverer.dispatch(events);
        Ok(refund)
    }

    /// The issuer declines the next capture of PaymentIntent `intent_id` (402 `card_error`,
    /// `card_declined`); the authorization stays `requires_capture`.
    pub fn decline_next_capture(&self, intent_id: &str) -> Result<(), SimError> {
        self.shared.lock_state().decline_next_capture(intent_id)
    }

    pub fn set_delivery(&self, mode: DeliveryMode) {
        *lock(&self.shared.deliverer.mode) = mode;
    }

    /// Expires an open Checkout Session now, as `POST /v1/checkout/sessions/{id}/expire`
    /// (or its `expires_at` passing) does: `checkout.session.expired` is delivered.
    pub fn expire_checkout_session(&self, session_id: &str) -> Result<Value, SimError> {
        let (session, events) = self
            .shared
            .lock_state()
            .expire_session(session_id, &state::Origin::default())?;
        self.shared.deliverer.dispatch(events);
        Ok(session)
    }

    /// Applies a promotion code to an open Checkout Session: Stripe will collect
    /// `amount_off` less than the price.
    pub fn apply_discount(&self, session_id: &str, amount_off: i64) -> Result<(), SimError> {
        self.shared
            .lock_state()
            .apply_discount(session_id, amount_off)
    }

    /// Opens a dispute on a PaymentIntent's charge (`charge.dispute.created`, then
    /// `charge.dispute.funds_withdrawn`); returns the dispute.
    pub fn create_dispute(&self, payment_intent_id: &str) -> Result<Value, SimError> {
        let (dispute, events) = self
            .shared
            .lock_state()
            .create_dispute(payment_intent_id, &state::Origin::default())?;
        self.shared.deliverer.dispatch(events);
        Ok(dispute)
    }

    /// Closes a dispute `won` or `lost`.
    pub fn close_dispute(&self, dispute_id: &str, status: &str) -> Result<Value, SimError> {
        let (dispute, events) = self.shared.lock_state().close_dispute(
            dispute_id,
            status,
            &state::Origin::default(),
        )?;
        self.shared.deliverer.dispatch(events);
        Ok(dispute)
    }

    /// Pays a Checkout Session with a test card, as the checkout page would.
    pub fn pay(&self, session_id: &str, card: &str) -> Result<Value, SimError> {
        let (intent, events) = self.shared.lock_state().pay(
            session_id,
            card,
            None,
            &self.shared.config.manual_capture_payment_status,
        )?;
        self.shared.deliverer.dispatch(events);
        Ok(intent)
    }

    /// Every request the API received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock_state().requests.clone()
    }

    /// Every event created, in creation order.
    pub fn events(&self) -> Vec<Value> {
        self.shared.lock_state().events.clone()
    }

    /// Every webhook delivery attempt.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        lock(&self.shared.deliverer.log).clone()
    }

    /// Delivers a stored event again (as Stripe's "resend").
    pub async fn redeliver(&self, event_id: &str) -> bool {
        let event = self
            .shared
            .lock_state()
            .events
            .iter()
            .find(|event| event["id"] == event_id)
            .cloned();
        match event {
            Some(event) => {
                self.shared.deliverer.deliver(&event).await;
                true
            }
            None => false,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}
