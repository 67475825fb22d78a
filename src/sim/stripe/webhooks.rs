//! Delivering the simulator's events to a webhook endpoint the way Stripe does: a JSON
//! POST signed with every configured secret, retried on anything but 2xx. Switches make
//! it misbehave on purpose: duplicates, reversed order, delays, or no delivery at all
//! (the events stay listable, for catch-up).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, warn};

use crate::integrations::stripe::signature;

/// How the simulator delivers the events an operation causes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Each event once, in creation order.
    #[default]
    Normal,
    /// Not delivered (still listed by `GET /v1/events`).
    Off,
    /// Each event `copies` times, all at once.
    Duplicate { copies: usize },
    /// One operation's events in reverse creation order.
    Reverse,
    /// Each event after `delay_ms`.
    Delay { delay_ms: u64 },
}

/// One delivery attempt, for assertions.
#[derive(Clone, Debug, Serialize)]
pub struct DeliveryRecord {
    pub event_id: String,
    pub event_type: String,
    /// HTTP status, or `None` when the endpoint could not be reached.
    pub status: Option<u16>,
}

/// Attempts per delivery: Stripe retries for days; the simulator only a few times, fast.
const ATTEMPTS: u32 = 3;
const RETRY_DELAY: Duration = Duration::from_millis(300);

#[derive(Clone)]
pub struct Deliverer {
    pub http: reqwest::Client,
    pub url: Arc<Mutex<Option<String>>>,
    pub secrets: Arc<Mutex<Vec<String>>>,
    pub mode: Arc<Mutex<DeliveryMode>>,
    pub log: Arc<Mutex<Vec<DeliveryRecord>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Deliverer {
    /// Delivers one operation's events in the background, per the current mode.
    pub fn dispatch(&self, events: Vec<Value>) {
        let mode = lock(&self.mode).clone();
        if events.is_empty() || mode == DeliveryMode::Off {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            match mode {
                DeliveryMode::Off => {}
                DeliveryMode::Normal => {
                    for event in &events {
                        this.deliver(event).await;
                    }
                }
                DeliveryMode::Reverse => {
                    for event in events.iter().rev() {
                        this.deliver(event).await;
                    }
                }
                DeliveryMode::Delay { delay_ms } => {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    for event in &events {
                        this.deliver(event).await;
                    }
                }
                DeliveryMode::Duplicate { copies } => {
                    for event in &events {
                        let sends = (0..copies.max(1)).map(|_| this.deliver(event));
                        futures::future::join_all(sends).await;
                    }
                }
            }
        });
    }

    /// One event, retried a few times until 2xx.
    pub async fn deliver(&self, event: &Value) {
        let Some(url) = lock(&self.url).clone() else {
            debug!("no webhook url configured; event not delivered");
            return;
        };
        let body = event.to_string();
        let event_id = event["id"].as_str().unwrap_or_default().to_string();
        let event_type = event["type"].as_str().unwrap_or_default().to_string();
        for attempt in 1..=ATTEMPTS {
            let secrets = lock(&self.secrets).clone();
            let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let header = signature::header(body.as_bytes(), &refs, chrono::Utc::now().timestamp());
            let sent = self
                .http
                .post(&url)
                .header("content-type", "application/json; charset=utf-8")
                .header("stripe-signature", header)
                .header(
                    "user-agent",
                    "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                )
                .body(body.clone())
                .send()
                .await;
            let status = sent
                .as_ref()
                .ok()
                .map(|response| response.status().as_u16());
            lock(&self.log).push(DeliveryRecord {
                event_id: event_id.clone(),
                event_type: event_type.clone(),
                status,
            });
            match status {
                Some(code) if (200..300).contains(&code) => return,
                _ => {
                    warn!(event_id = %event_id, attempt, status = ?status, "simulated webhook delivery failed");
                    tokio::time::sleep(RETRY_DELAY * attempt).await;
                }
            }
        }
    }
}
