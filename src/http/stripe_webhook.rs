//! Stripe's side of the HTTP surface: the webhook endpoint and the operator views of the
//! inbox.
//!
//! The webhook answers 2xx only once the event is committed to the inbox: Stripe treats
//! 2xx as "delivered" and never sends it again. Processing happens afterwards (inline in
//! a task, then the retry worker), so a slow or failing ledger never makes Stripe retry
//! or disable the endpoint.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tracing::{info, warn};

use super::auth::{Permission, Principal};
use super::read_params::{self, ReadQuery};
use super::{ApiError, AppState};
use crate::integrations::stripe::{diagnostics, signature};
use crate::store::inbox::{now_ms, Cursor, Inserted, NewDelivery, Source};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/stripe/webhook", post(receive))
        .route("/api/stripe/deliveries", get(list_deliveries))
        .route("/api/stripe/deliveries/{event_id}", get(get_delivery))
        .route(
            "/api/stripe/deliveries/{event_id}/retry",
            post(retry_delivery),
        )
        .route("/api/stripe/diagnostics", get(get_diagnostics))
        .route("/api/stripe/catch-up", post(run_catch_up))
}

/// The envelope fields we index on. Everything else stays in the stored raw body.
#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    #[serde(default)]
    livemode: bool,
    #[serde(default)]
    api_version: Option<String>,
}

/// What the webhook answers Stripe once the delivery is stored.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct WebhookReceipt {
    pub received: bool,
    pub event_id: String,
    /// True when this event id was stored before (Stripe sent it again).
    pub duplicate: bool,
    /// For a repeat: the stored delivery's status.
    #[schema(value_type = Option<DeliveryStatus>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[utoipa::path(post, path = "/api/stripe/webhook", tag = "stripe",
    params(("Stripe-Signature" = Option<String>, Header, description = "Stripe's signature of the raw body (`t=…,v1=…`)")),
    request_body(content = String, content_type = "application/json", description = "The event exactly as Stripe sent it: signed bytes, read raw"),
    responses((status = 200, description = "Durably stored (or a repeat)", body = WebhookReceipt),
        (status = 400, description = "Signed, but not a Stripe event (JSON with id, type, created)"),
        (status = 401, description = "No or a wrong signature, or too old a timestamp"),
        (status = 413, description = "The body is larger than the server's limit"),
        (status = 503, description = "No `STRIPE_WEBHOOK_SECRET`")))]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let stripe = &state.stripe;
    let webhook_secrets = stripe.webhook_secrets();
    if webhook_secrets.is_empty() {
        return Err(ApiError::NotConfigured(
            "Stripe webhooks are not configured: set STRIPE_WEBHOOK_SECRET to the endpoint's signing secret (whsec_…)".to_string(),
        ));
    }
    let header = headers
        .get(signature::HEADER)
        .map(|value| value.to_str().unwrap_or_default());
    let now = chrono::Utc::now().timestamp();
    if let Err(error) = signature::verify(&body, header, &webhook_secrets, now) {
        state.metrics.increment(
            "latchkey_webhook_signature_failures_total",
            &[("reason", error.reason())],
        );
        warn!(
            reason = error.reason(),
            body_length = body.len(),
            "stripe webhook signature refused"
        );
        if let Err(db_error) = stripe
            .inbox
            .record_signature_failure(
                error.reason(),
                &body,
                stripe.options.signature_failures_kept,
            )
            .await
        {
            warn!(error = %db_error, "could not record a webhook signature failure");
        }
        return Err(ApiError::Unauthenticated(format!(
            "Stripe webhook signature verification failed: {error}"
        )));
    }
    // Stripe only signs valid JSON events, so this answers forgers with a valid secret
    // (tests) rather than Stripe.
    let envelope: Envelope = serde_json::from_slice(&body).map_err(|error| {
        ApiError::BadRequest(format!(
            "the signed body is not a Stripe event (JSON with id, type, created): {error}"
        ))
    })?;
    let payload = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the body is not UTF-8".to_string()))?;
    let inline = stripe.options.processor.is_some() && stripe.options.process_inline;
    // Processing inline holds the row for a lease; otherwise the worker may take it now.
    let due_at = if inline {
        now_ms() + stripe.options.worker.lease_ms()
    } else {
        now_ms()
    };
    let delivery = NewDelivery {
        event_id: &envelope.id,
        event_type: &envelope.event_type,
        api_version: envelope.api_version.as_deref(),
        livemode: envelope.livemode,
        stripe_created: envelope.created,
        payload,
        source: Source::Webhook,
    };
    let inserted = stripe
        .inbox
        .store(&delivery, due_at)
        .await
        .map_err(|error| anyhow::Error::new(error).context("storing a stripe delivery"))?;
    match inserted {
        Inserted::New => {
            state
                .metrics
                .increment("latchkey_stripe_webhooks_total", &[("outcome", "stored")]);
            info!(event_id = %envelope.id, event_type = %envelope.event_type, "stripe event stored");
            if inline {
                let stripe = stripe.clone();
                let metrics = state.metrics.clone();
                let event_id = envelope.id.clone();
                tokio::spawn(async move { stripe.process_now(&event_id, &metrics).await });
            }
            Ok((
                StatusCode::OK,
                Json(WebhookReceipt {
                    received: true,
                    event_id: envelope.id,
                    duplicate: false,
                    status: None,
                }),
            ))
        }
        Inserted::Duplicate { status } => {
            state.metrics.increment(
                "latchkey_stripe_webhooks_total",
                &[("outcome", "duplicate")],
            );
            info!(event_id = %envelope.id, status = %status, "stripe event already stored");
            Ok((
                StatusCode::OK,
                Json(WebhookReceipt {
                    received: true,
                    event_id: envelope.id,
                    duplicate: true,
                    status: Some(status),
                }),
            ))
        }
    }
}

/// Stripe failed us: 502 with Stripe's own message, which names what to fix.
impl From<crate::integrations::stripe::StripeApiError> for ApiError {
    fn from(error: crate::integrations::stripe::StripeApiError) -> Self {
        ApiError::Upstream(error.to_string())
    }
}

/// The inbox statuses a list can be filtered by.
pub const DELIVERY_STATUSES: &[&str] = &["received", "processed", "failed", "ignored"];

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1–200, default 50.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
}

/// Where a stored delivery stands.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Received,
    Processed,
    Failed,
    Ignored,
}

/// A page of stored deliveries, newest first.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<crate::store::inbox::DeliveryRow>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/stripe/deliveries", tag = "stripe",
    params(ListQuery),
    responses((status = 200, body = DeliveryPage), (status = 400, description = "A malformed query string"), (status = 422, description = "A bad `limit`, `status` or `cursor`")),
    security(("bearer" = [])))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    ReadQuery(query): ReadQuery<ListQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    principal.require(Permission::Read)?;
    let limit = read_params::limit(query.limit.as_deref())?;
    let status = read_params::one_of("status", query.status.as_deref(), DELIVERY_STATUSES)?;
    let cursor = query
        .cursor
        .as_deref()
        .map(|raw| {
            Cursor::decode(raw)
                .ok_or_else(|| ApiError::Invalid("cursor is not one this API returned".to_string()))
        })
        .transpose()?;
    let items = state
        .stripe
        .inbox
        .list(limit, cursor.as_ref(), status.as_deref())
        .await
        .map_err(anyhow::Error::new)?;
    let next_cursor = (items.len() as i64 == limit)
        .then(|| items.last())
        .flatten()
        .map(|last| {
            Cursor {
                received_at: last.received_at,
                event_id: last.event_id.clone(),
            }
            .encode()
        });
    Ok(Json(DeliveryPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/api/stripe/deliveries/{event_id}", tag = "stripe",
    params(("event_id" = String, Path, description = "Stripe event id")),
    responses((status = 200, body = crate::store::inbox::DeliveryRow)),
    security(("bearer" = [])))]
pub async fn get_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path(event_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::Read)?;
    let row = state
        .stripe
        .inbox
        .row(&event_id)
        .await
        .map_err(anyhow::Error::new)?
        .ok_or_else(|| ApiError::NotFound(format!("no stored Stripe event {event_id}")))?;
    Ok(Json(row))
}

/// Processes a stored delivery again now: for a `failed` row (its retries used up, or
/// not yet due) once an operator has fixed the cause. The same processing as a webhook's.
#[utoipa::path(post, path = "/api/stripe/deliveries/{event_id}/retry", tag = "stripe",
    params(("event_id" = String, Path, description = "Stripe event id")),
    responses(
        (status = 202, description = "Re-queued and attempted: the delivery as it is now", body = crate::store::inbox::DeliveryRow),
        (status = 409, description = "Processed or ignored: nothing to retry")),
    security(("bearer" = [])))]
pub async fn retry_delivery(
    State(state): State<AppState>,
    principal: Principal,
    Path(event_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::Operate)?;
    let row = retry(&state, &event_id, &principal.actor_id).await?;
    Ok((StatusCode::ACCEPTED, Json(row)))
}

/// Re-queues `event_id` and, with a processor, runs one attempt at once; the delivery as
/// it is afterwards. Shared by the JSON route and the dashboard's retry button.
pub async fn retry(
    state: &AppState,
    event_id: &str,
    actor_id: &str,
) -> Result<crate::store::inbox::DeliveryRow, ApiError> {
    let inbox = &state.stripe.inbox;
    let stored = inbox
        .row(event_id)
        .await
        .map_err(anyhow::Error::new)?
        .ok_or_else(|| ApiError::NotFound(format!("no stored Stripe event {event_id}")))?;
    let inline = state.stripe.options.processor.is_some();
    // Attempting here holds the row for a lease, so the worker does not take it meanwhile.
    let due_at = if inline {
        now_ms() + state.stripe.options.worker.lease_ms()
    } else {
        now_ms()
    };
    if !inbox
        .requeue(event_id, due_at)
        .await
        .map_err(anyhow::Error::new)?
    {
        return Err(ApiError::Conflict(format!(
            "Stripe event {event_id} is {}; only failed or waiting deliveries can be retried",
            stored.status
        )));
    }
    info!(
        event_id,
        actor = actor_id,
        "stripe delivery retry requested"
    );
    if inline {
        state.stripe.process_now(event_id, &state.metrics).await;
    }
    inbox
        .row(event_id)
        .await
        .map_err(anyhow::Error::new)?
        .ok_or_else(|| ApiError::NotFound(format!("no stored Stripe event {event_id}")))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiagnosticsQuery {
    /// `true` to make one call to Stripe's API and report how it went.
    #[param(value_type = Option<bool>)]
    test: Option<String>,
}

#[utoipa::path(get, path = "/api/stripe/diagnostics", tag = "stripe",
    params(DiagnosticsQuery),
    responses((status = 200, description = "Keys (their mode, never the keys), secrets, deliveries, last error", body = diagnostics::Diagnostics), (status = 400, description = "A malformed query string"), (status = 422, description = "`test` is not `true` or `false`")),
    security(("bearer" = [])))]
pub async fn get_diagnostics(
    State(state): State<AppState>,
    principal: Principal,
    ReadQuery(query): ReadQuery<DiagnosticsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::Read)?;
    let test = match query.test.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::Invalid(format!(
                "test must be true or false, not {other:?}"
            )))
        }
    };
    let report = diagnostics::collect(&state.settings, &state.stripe, test)
        .await
        .map_err(anyhow::Error::new)?;
    Ok(Json(report))
}

#[utoipa::path(post, path = "/api/stripe/catch-up", tag = "stripe",
    responses((status = 200, description = "What was found", body = crate::integrations::stripe::catch_up::CatchUpReport), (status = 502, description = "Stripe refused or did not answer"), (status = 503, description = "Stripe is not configured")),
    security(("bearer" = [])))]
pub async fn run_catch_up(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<impl IntoResponse, ApiError> {
    principal.require(Permission::Operate)?;
    if state.stripe.client().is_none() {
        return Err(ApiError::NotConfigured(
            "Stripe is not configured: set STRIPE_SECRET_KEY".to_string(),
        ));
    }
    let report = state
        .stripe
        .catch_up_now()
        .await
        .map_err(|error| match error {
            crate::integrations::stripe::catch_up::CatchUpError::Stripe(error) => error.into(),
            other => ApiError::Internal(anyhow::Error::new(other)),
        })?;
    Ok(Json(report))
}
