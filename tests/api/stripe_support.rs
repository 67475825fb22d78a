//! Shared set-up for the Stripe tests: an app with Stripe configured (and, optionally,
//! pointed at the simulator), a counting processor that can be told to fail, and helpers
//! to sign and post webhook deliveries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use latchkey::integrations::stripe::signature;
use latchkey::integrations::stripe::{
    DeliveryProcessor, ProcessError, ProcessOutcome, StripeOptions, StripeRuntime, WorkerOptions,
};
use latchkey::metrics::Metrics;
use latchkey::sim::stripe::{StripeSimConfig, StripeSimHandle};
use latchkey::startup::{Application, BuildOptions};
use latchkey::store::inbox::InboxDelivery;
use latchkey::store::PoolSize;
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::helpers::{fast_subscriptions, test_settings, TestDatabase};

pub const SECRET: &str = "whsec_test_secret";
pub const OLD_SECRET: &str = "whsec_previous_secret";
pub const API_KEY: &str = "sk_test_latchkey_simulated";
pub const TOKEN: &str = "operator-token-for-tests";

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var("TEST_LOG").is_ok() {
        latchkey::telemetry::init(Default::default(), std::io::stdout);
    }
});

/// What to configure on a Stripe test app.
#[derive(Clone)]
pub struct Setup {
    pub webhook_secrets: Vec<&'static str>,
    pub api_base: Option<String>,
    pub api_token: Option<&'static str>,
    pub processor: Option<Arc<dyn DeliveryProcessor>>,
    pub worker: WorkerOptions,
    pub process_inline: bool,
    pub catch_up_interval: Option<Duration>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            webhook_secrets: vec![SECRET],
            api_base: None,
            api_token: Some(TOKEN),
            processor: None,
            worker: fast_worker(),
            process_inline: true,
            // Tests run the job on demand (POST /api/stripe/catch-up) unless they ask.
            catch_up_interval: None,
        }
    }
}

pub fn fast_worker() -> WorkerOptions {
    WorkerOptions {
        poll_interval: Duration::from_millis(50),
        backoff_base: Duration::from_millis(300),
        backoff_max: Duration::from_secs(2),
        lease: Duration::from_secs(10),
        attempt_timeout: Duration::from_secs(5),
        ..WorkerOptions::default()
    }
}

pub struct StripeApp {
    pub address: String,
    pub client: reqwest::Client,
    pub stripe: StripeRuntime,
    pub metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

pub async fn spawn_stripe_app(database: &TestDatabase, setup: Setup) -> StripeApp {
    LazyLock::force(&TRACING);
    let mut settings = test_settings(&database.url);
    settings.api_token = setup.api_token.map(|t| SecretString::from(t.to_string()));
    settings.stripe.webhook_secrets = setup
        .webhook_secrets
        .iter()
        .map(|s| SecretString::from(s.to_string()))
        .collect();
    if let Some(base) = &setup.api_base {
        settings.stripe.secret_key = Some(SecretString::from(API_KEY.to_string()));
        settings.stripe.api_base = Some(base.parse().unwrap());
    }
    let options = BuildOptions {
        pool_size: PoolSize {
            max_connections: 10,
        },
        subscriptions: fast_subscriptions(),
        subscribers: Vec::new(),
        without_projections: false,
        gateways: None,
        workflows: Default::default(),
        settings_check_interval: None,
        stripe: StripeOptions {
            processor: setup.processor.clone(),
            worker: setup.worker.clone(),
            process_inline: setup.process_inline,
            catch_up: latchkey::integrations::stripe::CatchUpOptions {
                interval: setup.catch_up_interval,
                ..Default::default()
            },
            ..StripeOptions::default()
        },
    };
    let application = Application::build_with(settings, options).await.unwrap();
    let port = application.port();
    let stripe = application.state().stripe.clone();
    let metrics = application.state().metrics.clone();
    let shutdown = application.shutdown_token();
    let server = tokio::spawn(application.run_until_stopped());
    StripeApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        stripe,
        metrics,
        shutdown,
        server,
    }
}

impl StripeApp {
    pub fn webhook_url(&self) -> String {
        format!("{}/api/stripe/webhook", self.address)
    }

    /// Posts `body` with the given `Stripe-Signature` header (or none).
    pub async fn post_webhook(&self, body: &str, header: Option<&str>) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(header) = header {
            request = request.header("stripe-signature", header);
        }
        request.send().await.unwrap()
    }

    /// Posts `body` signed now with `SECRET`.
    pub async fn post_signed(&self, body: &str) -> reqwest::Response {
        let header = signature::header(body.as_bytes(), &[SECRET], now());
        self.post_webhook(body, Some(&header)).await
    }

    pub async fn get_authorized(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
    }

    pub async fn deliveries(&self) -> Vec<Value> {
        let response = self
            .get_authorized("/api/stripe/deliveries?limit=200")
            .await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["items"].as_array().unwrap().clone()
    }

    pub async fn delivery(&self, event_id: &str) -> Option<Value> {
        self.deliveries()
            .await
            .into_iter()
            .find(|item| item["event_id"] == event_id)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A Stripe-shaped event (the envelope of a real one).
pub fn event(id: &str, kind: &str) -> String {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2026-09-30.endive",
        "created": now(),
        "data": { "object": { "id": "pi_test_1", "object": "payment_intent", "amount": 500,
                              "amount_received": 500, "currency": "eur", "status": "succeeded",
                              "metadata": { "latchkey_payment_id": "p-1" } } },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": kind,
    })
    .to_string()
}

pub fn unique_event_id() -> String {
    format!("evt_test_{}", uuid::Uuid::new_v4().simple())
}

/// Counts calls per event; fails the first `fail_first` calls; ignores `*.ignored`.
#[derive(Default)]
pub struct CountingProcessor {
    pub fail_first: AtomicUsize,
    pub calls: AtomicUsize,
    pub per_event: Mutex<HashMap<String, usize>>,
    pub always_fail: bool,
}

impl CountingProcessor {
    pub fn failing_first(k: usize) -> Arc<Self> {
        Arc::new(CountingProcessor {
            fail_first: AtomicUsize::new(k),
            ..Default::default()
        })
    }

    pub fn calls_for(&self, event_id: &str) -> usize {
        self.per_event
            .lock()
            .unwrap()
            .get(event_id)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait]
impl DeliveryProcessor for CountingProcessor {
    async fn process(&self, delivery: &InboxDelivery) -> Result<ProcessOutcome, ProcessError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        *self
            .per_event
            .lock()
            .unwrap()
            .entry(delivery.event_id.clone())
            .or_default() += 1;
        if self.always_fail {
            return Err(ProcessError::retryable(format!("injected failure {call}")));
        }
        if self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1))
            .is_ok()
        {
            return Err(ProcessError::retryable(format!("injected failure {call}")));
        }
        if delivery.event_type.ends_with(".ignored") {
            return Ok(ProcessOutcome::Ignored {
                reason: "not an event the ledger consumes".to_string(),
            });
        }
        let payment_id = delivery.json().ok().and_then(|event| {
            event["data"]["object"]["metadata"]["latchkey_payment_id"]
                .as_str()
                .map(str::to_string)
        });
        Ok(ProcessOutcome::Processed { payment_id })
    }
}

/// A simulator on a free port.
pub async fn spawn_sim() -> StripeSimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    latchkey::sim::stripe::spawn(
        listener,
        StripeSimConfig::new(API_KEY, vec![SECRET.to_string()]),
    )
    .unwrap()
}

/// Polls until `check` holds (10 s at most).
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
