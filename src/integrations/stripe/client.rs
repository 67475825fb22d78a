//! The outbound Stripe client: the only module that imports async-stripe.
//!
//! async-stripe (1.0 line) builds every request: paths, form encoding with Stripe's
//! bracket notation, auth and `Stripe-Version` headers, error parsing. We ask it for the
//! response as a generic JSON value and read the handful of fields we need ourselves:
//! the generated response structs refuse a whole object when one required field is
//! missing or renamed between API versions (async-stripe issues #182, #347, #456, #482),
//! and an event we list for catch-up must be stored as a whole, not as the subset a
//! struct knows.
//!
//! Every POST carries an `Idempotency-Key` derived from our own ids, and retries reuse
//! it, so a retried call (here, or after a crash, by the caller) never charges twice.

use std::collections::HashMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_client_core::{RequestBuilder, StripeMethod};
use tracing::{debug, warn};
use url::Url;

/// Per-attempt limit. Stripe answers in well under a second; a slow attempt is retried
/// with the same key, which Stripe deduplicates.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts per call for network errors, timeouts, 409 (key in use), 429 and 5xx.
const MAX_ATTEMPTS: u32 = 3;

/// First retry delay, doubled per retry.
const RETRY_BACKOFF: Duration = Duration::from_millis(200);

/// Events per page of the Events API (its maximum).
const EVENTS_PAGE: i64 = 100;

/// Why a call failed. The HTTP layer answers 502 for all of these; callers branch on
/// `Stripe` (e.g. a declined capture) versus the rest (transient, retry later).
#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    /// Stripe answered with an error object.
    #[error("Stripe refused the request (HTTP {status}, {kind}{}): {message}", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Stripe {
        status: u16,
        /// `type`: `card_error`, `invalid_request_error`, `idempotency_error`, …
        kind: String,
        code: Option<String>,
        decline_code: Option<String>,
        message: String,
    },
    #[error("could not reach Stripe: {0}")]
    Network(String),
    #[error("Stripe did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Stripe's answer could not be read: {0}")]
    Decode(String),
    #[error("the Stripe client is misconfigured: {0}")]
    Config(String),
}

impl StripeApiError {
    pub fn retryable(&self) -> bool {
        match self {
            StripeApiError::Network(_) | StripeApiError::Timeout(_) => true,
            StripeApiError::Stripe { status, .. } => matches!(status, 409 | 429 | 500..=599),
            StripeApiError::Decode(_) | StripeApiError::Config(_) => false,
        }
    }

    fn from_stripe(error: StripeError) -> Self {
        match error {
            StripeError::Stripe(api, status) => StripeApiError::Stripe {
                status,
                kind: api.type_.as_str().to_string(),
                code: api.code.as_ref().map(|code| code.as_str().to_string()),
                decline_code: api.decline_code.clone(),
                message: api
                    .message
                    .clone()
                    .unwrap_or_else(|| "no message".to_string()),
            },
            StripeError::ClientError(message) => StripeApiError::Network(message),
            StripeError::Timeout => StripeApiError::Timeout(ATTEMPT_TIMEOUT),
            StripeError::JSONDeserialize(message) => StripeApiError::Decode(message),
            StripeError::ConfigError(message) => StripeApiError::Config(message),
        }
    }
}

/// Test or live, from the secret key's prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    Test,
    Live,
    Unknown,
}

impl KeyMode {
    pub fn of(key: &str) -> Self {
        if key.starts_with("sk_test_") || key.starts_with("rk_test_") || key.starts_with("pk_test_")
        {
            KeyMode::Test
        } else if key.starts_with("sk_live_")
            || key.starts_with("rk_live_")
            || key.starts_with("pk_live_")
        {
            KeyMode::Live
        } else {
            KeyMode::Unknown
        }
    }
}

/// What a Checkout is for; decides the metadata we attach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckoutTarget {
    Door { door_uid: String },
    Device { device_uid: String, plan_id: String },
}

/// A Checkout Session to create for one payment.
#[derive(Clone, Debug)]
pub struct CheckoutRequest {
    /// Our payment id: the idempotency key and `latchkey_payment_id`.
    pub payment_id: String,
    pub target: CheckoutTarget,
    /// Minor units.
    pub amount: i64,
    /// Lower-case ISO 4217.
    pub currency: String,
    /// The line item's name, shown to the guest.
    pub description: String,
    pub email: Option<String>,
    /// Paths on `LATCHKEY_PUBLIC_URL` (e.g. `/access/{token}`, `/pay/{door_uid}`).
    pub success_path: String,
    pub cancel_path: String,
    /// Unix seconds; `None`: Stripe's default (24 h after creation).
    pub expires_at: Option<i64>,
}

/// A created Checkout Session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckoutCreated {
    pub session_id: String,
    /// Where to send the guest.
    pub url: String,
    /// Present when Stripe creates the PaymentIntent with the session.
    pub payment_intent: Option<String>,
    /// When Stripe expires the session if unpaid.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The PaymentIntent fields the ledger reads.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct PaymentIntentSummary {
    pub id: String,
    pub status: String,
    pub amount: i64,
    #[serde(default)]
    pub amount_received: i64,
    #[serde(default)]
    pub amount_capturable: i64,
    pub currency: String,
    #[serde(default)]
    pub capture_method: Option<String>,
    #[serde(default)]
    pub latest_charge: Option<String>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
}

/// A created refund.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RefundSummary {
    pub id: String,
    pub amount: i64,
    pub status: Option<String>,
    pub payment_intent: Option<String>,
}

/// One event from the Events API, kept whole.
#[derive(Clone, Debug)]
pub struct ListedEvent {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub livemode: bool,
    pub api_version: Option<String>,
    /// The event as JSON text.
    pub raw: String,
}

/// One page of events, newest first (Stripe's order).
#[derive(Clone, Debug, Default)]
pub struct EventPage {
    pub events: Vec<ListedEvent>,
    pub has_more: bool,
}

/// Which events of the Events API to list (see [`StripeClient::list_events`]).
#[derive(Clone, Copy, Debug)]
pub struct EventQuery<'a> {
    pub position: EventPosition<'a>,
    /// Only these types (`types[]`); empty lists every type.
    pub types: &'a [&'a str],
}

#[derive(Clone, Copy, Debug)]
pub enum EventPosition<'a> {
    /// Created after `created_after` (Unix seconds), older than `starting_after`.
    Older {
        created_after: i64,
        starting_after: Option<&'a str>,
    },
    /// Just newer than `ending_before`.
    Newer { ending_before: &'a str },
}

#[derive(Deserialize)]
struct SessionFields {
    id: String,
    url: Option<String>,
    payment_intent: Option<serde_json::Value>,
    #[serde(default)]
    expires_at: Option<i64>,
}

#[derive(Deserialize)]
struct EventFields {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    #[serde(default)]
    livemode: bool,
    api_version: Option<String>,
}

/// The idempotency key of one of our commands on one payment.
pub fn idempotency_key(payment_id: &str, action: &str) -> String {
    format!("latchkey:{payment_id}:{action}")
}

/// A configured Stripe account.
#[derive(Clone)]
pub struct StripeClient {
    inner: stripe::Client,
    public_url: Url,
    mode: KeyMode,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl StripeClient {
    /// `api_base` is Stripe's (`https://api.stripe.com`) or a simulator's.
    pub fn new(
        secret_key: &SecretString,
        api_base: Option<&Url>,
        public_url: Url,
    ) -> Result<Self, StripeApiError> {
        let mut builder = stripe::ClientBuilder::new(secret_key.expose_secret())
            .timeout(ATTEMPT_TIMEOUT)
            .app_info(
                "latchkey",
                Some(env!("CARGO_PKG_VERSION").to_string()),
                None,
            );
        if let Some(base) = api_base {
            // async-stripe appends `v1/...` to the base as text: it needs the trailing
            // slash, which `Url` gives a bare host but not a path.
            let mut base = base.to_string();
            if !base.ends_with('/') {
                base.push('/');
            }
            builder = builder.url(base);
        }
        let inner = builder.build().map_err(StripeApiError::from_stripe)?;
        Ok(StripeClient {
            inner,
            public_url,
            mode: KeyMode::of(secret_key.expose_secret()),
        })
    }

    pub fn mode(&self) -> KeyMode {
        self.mode
    }

    /// A door payment: charged at once.
    pub async fn create_door_checkout(
        &self,
        request: &CheckoutRequest,
    ) -> Result<CheckoutCreated, StripeApiError> {
        self.create_checkout(request, false).await
    }

    /// A device payment: authorised only (`capture_method=manual`), captured once the
    /// relay is on, cancelled if it never comes on.
    pub async fn create_device_checkout(
        &self,
        request: &CheckoutRequest,
    ) -> Result<CheckoutCreated, StripeApiError> {
        self.create_checkout(request, true).await
    }

    async fn create_checkout(
        &self,
        request: &CheckoutRequest,
        manual_capture: bool,
    ) -> Result<CheckoutCreated, StripeApiError> {
        use stripe_checkout::checkout_session::{
            CreateCheckoutSession, CreateCheckoutSessionLineItems,
            CreateCheckoutSessionLineItemsPriceData, CreateCheckoutSessionPaymentIntentData,
            CreateCheckoutSessionPaymentIntentDataCaptureMethod, ProductData,
        };
        use stripe_checkout::CheckoutSessionMode;

        let metadata = checkout_metadata(request);
        // Any string parses (unknown codes become `Currency::Unknown`; Stripe judges).
        let Ok(currency) = request.currency.parse::<stripe_types::Currency>();
        let mut price = CreateCheckoutSessionLineItemsPriceData::new(currency);
        price.unit_amount = Some(request.amount);
        price.product_data = Some(ProductData::new(request.description.clone()));
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price_data = Some(price);
        item.quantity = Some(1);
        let mut intent = CreateCheckoutSessionPaymentIntentData::new();
        // Metadata on the session is not copied to its PaymentIntent; payment_intent.*
        // and charge.* events are matched through this copy.
        intent.metadata = Some(metadata.clone());
        if manual_capture {
            intent.capture_method =
                Some(CreateCheckoutSessionPaymentIntentDataCaptureMethod::Manual);
        }
        let mut create = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Payment)
            .line_items(vec![item])
            .success_url(self.public_link(&request.success_path)?)
            .cancel_url(self.public_link(&request.cancel_path)?)
            .client_reference_id(request.payment_id.clone())
            .metadata(metadata)
            .payment_intent_data(intent);
        if let Some(email) = &request.email {
            create = create.customer_email(email.clone());
        }
        if let Some(expires_at) = request.expires_at {
            create = create.expires_at(expires_at);
        }
        let key = idempotency_key(&request.payment_id, "checkout");
        let session: SessionFields = self.post(create.build(), &key).await?;
        let payment_intent = session.payment_intent.and_then(|value| match value {
            serde_json::Value::String(id) => Some(id),
            serde_json::Value::Object(object) => object
                .get("id")
                .and_then(|id| id.as_str())
                .map(str::to_string),
            _ => None,
        });
        Ok(CheckoutCreated {
            session_id: session.id,
            url: session.url.ok_or_else(|| {
                StripeApiError::Decode("the Checkout Session has no url".to_string())
            })?,
            payment_intent,
            expires_at: session
                .expires_at
                .and_then(|at| chrono::DateTime::from_timestamp(at, 0)),
        })
    }

    /// Captures an authorised PaymentIntent (all of it, or `amount`).
    pub async fn capture(
        &self,
        payment_intent: &str,
        amount: Option<i64>,
        idempotency_key: &str,
    ) -> Result<PaymentIntentSummary, StripeApiError> {
        let mut capture = stripe_core::payment_intent::CapturePaymentIntent::new(payment_intent);
        if let Some(amount) = amount {
            capture = capture.amount_to_capture(amount);
        }
        self.post(capture.build(), idempotency_key).await
    }

    /// Cancels a PaymentIntent (releases an authorisation).
    pub async fn cancel(
        &self,
        payment_intent: &str,
        idempotency_key: &str,
    ) -> Result<PaymentIntentSummary, StripeApiError> {
        let cancel = stripe_core::payment_intent::CancelPaymentIntent::new(payment_intent);
        self.post(cancel.build(), idempotency_key).await
    }

    /// Refunds a PaymentIntent (the remainder, or `amount`); `metadata` travels on the
    /// refund and its `refund.*` events.
    pub async fn refund(
        &self,
        payment_intent: &str,
        amount: Option<i64>,
        metadata: HashMap<String, String>,
        idempotency_key: &str,
    ) -> Result<RefundSummary, StripeApiError> {
        let mut refund = stripe_core::refund::CreateRefund::new()
            .payment_intent(payment_intent)
            .metadata(metadata);
        if let Some(amount) = amount {
            refund = refund.amount(amount);
        }
        self.post(refund.build(), idempotency_key).await
    }

    pub async fn retrieve_payment_intent(
        &self,
        payment_intent: &str,
    ) -> Result<PaymentIntentSummary, StripeApiError> {
        let retrieve = stripe_core::payment_intent::RetrievePaymentIntent::new(payment_intent);
        self.get(retrieve.build()).await
    }

    /// An object as Stripe returns it, e.g. `("payment_intents", "pi_…")` or
    /// `("checkout/sessions", "cs_…")`: for re-syncing a payment from Stripe's own state.
    pub async fn retrieve_raw(
        &self,
        collection: &str,
        id: &str,
    ) -> Result<serde_json::Value, StripeApiError> {
        let request = RequestBuilder::new(StripeMethod::Get, format!("/{collection}/{id}"));
        self.get(request).await
    }

    /// One page of the Events API, in Stripe's order (newest first). `Older` pages walk
    /// back in time (the previous page's last id is the next `starting_after`); `Newer`
    /// lists the events just after a known one (`ending_before`), the way forward.
    pub async fn list_events(&self, query: &EventQuery<'_>) -> Result<EventPage, StripeApiError> {
        let mut list = stripe_core::event::ListEvent::new()
            .limit(EVENTS_PAGE)
            .types(
                query
                    .types
                    .iter()
                    .map(|kind| kind.to_string())
                    .collect::<Vec<_>>(),
            );
        match query.position {
            EventPosition::Older {
                created_after,
                starting_after,
            } => {
                list = list.created(stripe_types::RangeQueryTs::gt(created_after));
                if let Some(cursor) = starting_after {
                    list = list.starting_after(cursor);
                }
            }
            EventPosition::Newer { ending_before } => list = list.ending_before(ending_before),
        }
        let page: serde_json::Value = self.get(list.build()).await?;
        let has_more = page
            .get("has_more")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let data = page
            .get("data")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        let mut events = Vec::with_capacity(data.len());
        for value in data {
            let fields: EventFields = serde_json::from_value(value.clone()).map_err(|error| {
                StripeApiError::Decode(format!("an event in the list: {error}"))
            })?;
            events.push(ListedEvent {
                id: fields.id,
                event_type: fields.event_type,
                created: fields.created,
                livemode: fields.livemode,
                api_version: fields.api_version,
                raw: value.to_string(),
            });
        }
        Ok(EventPage { events, has_more })
    }

    /// The first page of the Events API: a cheap call that proves key and reachability.
    pub async fn test_connection(&self) -> Result<(), StripeApiError> {
        let list = stripe_core::event::ListEvent::new().limit(1);
        let _: serde_json::Value = self.get(list.build()).await?;
        Ok(())
    }

    fn public_link(&self, path: &str) -> Result<String, StripeApiError> {
        self.public_url
            .join(path)
            .map(|url| url.to_string())
            .map_err(|error| {
                StripeApiError::Config(format!("LATCHKEY_PUBLIC_URL + {path:?}: {error}"))
            })
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        request: RequestBuilder,
        idempotency_key: &str,
    ) -> Result<T, StripeApiError> {
        let key = IdempotencyKey::new(idempotency_key)
            .map_err(|error| StripeApiError::Config(error.to_string()))?;
        self.send(request, Some(key)).await
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        request: RequestBuilder,
    ) -> Result<T, StripeApiError> {
        self.send(request, None).await
    }

    /// Sends with bounded retries; every attempt carries the same idempotency key.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: RequestBuilder,
        key: Option<IdempotencyKey>,
    ) -> Result<T, StripeApiError> {
        let path = request.path.clone();
        let mut attempt = 1;
        loop {
            let strategy = match &key {
                Some(key) => RequestStrategy::Idempotent(key.clone()),
                None => RequestStrategy::Once,
            };
            let result = clone_request(&request)
                .customize::<miniserde::json::Value>()
                .request_strategy(strategy)
                .send(&self.inner)
                .await
                .map_err(StripeApiError::from_stripe);
            match result {
                Ok(value) => {
                    debug!(path = %path, attempt, "stripe call succeeded");
                    let text = miniserde::json::to_string(&value);
                    return serde_json::from_str(&text)
                        .map_err(|error| StripeApiError::Decode(format!("{path}: {error}")));
                }
                Err(error) if error.retryable() && attempt < MAX_ATTEMPTS => {
                    warn!(path = %path, attempt, error = %error, "stripe call failed; retrying with the same idempotency key");
                    tokio::time::sleep(RETRY_BACKOFF * 2u32.pow(attempt - 1)).await;
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

fn clone_request(request: &RequestBuilder) -> RequestBuilder {
    RequestBuilder {
        query: request.query.clone(),
        body: request.body.clone(),
        path: request.path.clone(),
        method: request.method,
    }
}

/// The metadata keys API.md promises on our Checkout Sessions and PaymentIntents.
fn checkout_metadata(request: &CheckoutRequest) -> HashMap<String, String> {
    let mut metadata = HashMap::from([(
        "latchkey_payment_id".to_string(),
        request.payment_id.clone(),
    )]);
    match &request.target {
        CheckoutTarget::Door { door_uid } => {
            metadata.insert("latchkey_kind".into(), "door".into());
            metadata.insert("latchkey_door_uid".into(), door_uid.clone());
        }
        CheckoutTarget::Device {
            device_uid,
            plan_id,
        } => {
            metadata.insert("latchkey_kind".into(), "device".into());
            metadata.insert("latchkey_device_uid".into(), device_uid.clone());
            metadata.insert("latchkey_plan_id".into(), plan_id.clone());
        }
    }
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_mode_comes_from_the_prefix() {
        assert_eq!(KeyMode::of("sk_test_abc"), KeyMode::Test);
        assert_eq!(KeyMode::of("sk_live_abc"), KeyMode::Live);
        assert_eq!(KeyMode::of("rk_live_abc"), KeyMode::Live);
        assert_eq!(KeyMode::of("whatever"), KeyMode::Unknown);
    }

    #[test]
    fn idempotency_keys_derive_from_our_ids() {
        assert_eq!(idempotency_key("p1", "checkout"), "latchkey:p1:checkout");
    }
}
