//! Starting a payment: lock the price, create the Stripe Checkout Session, give the guest
//! a capability link.
//!
//! The order matters for never losing a payment: the Payment is started (price locked)
//! before Stripe is called, so a webhook that races back always finds it; the Checkout
//! Session is created with an idempotency key derived from the payment id, so a retry never
//! creates a second one; and every Stripe id is remembered for later lookups.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use latchkey_aggregates::payment::{LockedOffer, PaymentCommand, PaymentTarget};
use latchkey_aggregates::{Actor, Money};
use serde::Serialize;
use uuid::Uuid;

use super::{refs, tokens};
use crate::cqrs::CommandMetadata;
use crate::http::{ApiError, AppState};

/// What we ask the payment provider for.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckoutRequest {
    pub payment_id: Uuid,
    pub target: PaymentTarget,
    pub price: Money,
    /// Shown on the provider's page, e.g. "Room 12 — 120 minutes".
    pub description: String,
    pub guest_email: String,
    /// Devices authorize now and capture once the relay is ON.
    pub manual_capture: bool,
    pub success_url: String,
    pub cancel_url: String,
    pub idempotency_key: String,
    /// When the provider expires the unpaid checkout (`None`: the provider's default).
    pub expires_at: Option<DateTime<Utc>>,
}

/// What the provider created.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckoutCreated {
    pub checkout_session_id: String,
    pub url: String,
    pub payment_intent_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A provider failure; its message is the provider's own.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CheckoutError {
    pub message: String,
}

/// Creates hosted checkout pages (Stripe Checkout in production).
#[async_trait]
pub trait CheckoutGateway: Send + Sync {
    async fn create_checkout(
        &self,
        request: CheckoutRequest,
    ) -> Result<CheckoutCreated, CheckoutError>;
}

/// The answer to a started checkout (`POST /api/checkout/...`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StartedCheckout {
    pub payment_id: Uuid,
    /// Stripe Checkout's page for this payment.
    #[schema(format = "uri")]
    pub checkout_url: String,
    /// The guest's page for this payment (`/access/{token}` or `/session/{token}`).
    #[schema(format = "uri")]
    pub status_url: String,
}

/// Guest emails: one `@`, something on each side, a dot in the domain, no spaces, at most
/// 254 characters (the SMTP limit). Stripe re-validates; this catches typos early.
pub fn parse_email(raw: &str) -> Result<String, ApiError> {
    let email = raw.trim();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if valid {
        Ok(email.to_string())
    } else {
        Err(ApiError::Invalid(format!(
            "{email:?} is not a valid email address"
        )))
    }
}

/// Starts a door payment.
pub async fn start_door_checkout(
    state: &AppState,
    door_uid: &str,
    email: &str,
) -> Result<StartedCheckout, ApiError> {
    let email = parse_email(email)?;
    let (door, _) = state.buses.doors.load(door_uid).await?;
    if !door.is_registered() {
        return Err(ApiError::NotFound(format!("no door {door_uid}")));
    }
    if !door.is_accepting_payments() {
        return Err(ApiError::Conflict(format!(
            "door {door_uid} is in maintenance; payments are paused until it is active again"
        )));
    }
    let (Some(price), Some(minutes)) = (door.price().cloned(), door.access_minutes()) else {
        return Err(ApiError::Conflict(format!(
            "door {door_uid} has no price yet"
        )));
    };
    let door_name = door.name().unwrap_or(door_uid).to_string();
    let description = format!("{door_name} — {minutes} minutes");
    let target = PaymentTarget::Door {
        door_uid: door_uid.to_string(),
    };
    let offer = lock_offer(&target, &price, minutes, door_name, None);
    start(state, target, price, offer, description, email, false).await
}

/// Starts a device payment for one of its plans (authorized now, captured when the relay
/// is confirmed ON).
pub async fn start_device_checkout(
    state: &AppState,
    device_uid: &str,
    plan_id: &str,
    email: &str,
) -> Result<StartedCheckout, ApiError> {
    let email = parse_email(email)?;
    let (device, _) = state.buses.devices.load(device_uid).await?;
    if !device.is_registered() {
        return Err(ApiError::NotFound(format!("no device {device_uid}")));
    }
    let plan = device
        .plan(plan_id)
        .cloned()
        .ok_or_else(|| ApiError::Invalid(format!("device {device_uid} has no plan {plan_id:?}")))?;
    if !device.is_accepting_sessions() {
        return Err(ApiError::Conflict(format!(
            "device {device_uid} is not taking new sessions (maintenance or a full queue)"
        )));
    }
    let device_name = device.name().unwrap_or(device_uid).to_string();
    let description = format!("{device_name} — {}", plan.name);
    let target = PaymentTarget::Device {
        device_uid: device_uid.to_string(),
        plan_id: plan.plan_id.clone(),
    };
    let offer = lock_offer(
        &target,
        &plan.price,
        plan.minutes,
        device_name,
        Some(plan.name.clone()),
    );
    start(state, target, plan.price, offer, description, email, true).await
}

/// The offer as the catalogue makes it now, with its hash (see [`LockedOffer`]). The hash
/// covers a versioned, `|`-separated line of every field, so equal offers hash equal on
/// any machine and any edit changes it.
pub fn lock_offer(
    target: &PaymentTarget,
    price: &Money,
    minutes: u32,
    target_name: String,
    plan_name: Option<String>,
) -> LockedOffer {
    use sha2::{Digest, Sha256};
    let (kind, uid, plan_id) = match target {
        PaymentTarget::Door { door_uid } => ("door", door_uid.as_str(), ""),
        PaymentTarget::Device {
            device_uid,
            plan_id,
        } => ("device", device_uid.as_str(), plan_id.as_str()),
    };
    let line = format!(
        "offer-v1|{kind}|{uid}|{plan_id}|{}|{}|{minutes}|{target_name}|{}",
        price.amount_minor,
        price.currency,
        plan_name.as_deref().unwrap_or("")
    );
    LockedOffer {
        minutes,
        target_name,
        plan_name,
        hash: hex::encode(Sha256::digest(line.as_bytes())),
    }
}

async fn start(
    state: &AppState,
    target: PaymentTarget,
    price: Money,
    offer: LockedOffer,
    description: String,
    guest_email: String,
    manual_capture: bool,
) -> Result<StartedCheckout, ApiError> {
    state.require_stripe()?;
    let payment_id = Uuid::new_v4();
    let id = payment_id.to_string();
    let metadata = CommandMetadata::new(Actor::Guest.to_string(), "checkout");
    let (kind, pay_page) = match &target {
        PaymentTarget::Door { door_uid } => ("door", format!("pay/{door_uid}")),
        PaymentTarget::Device { device_uid, .. } => ("device", format!("use/{device_uid}")),
    };
    let start = PaymentCommand::StartCheckout {
        payment_id,
        target: target.clone(),
        price: price.clone(),
        guest_email: guest_email.clone(),
        actor: Actor::Guest,
        at: Utc::now(),
        offer: Some(Box::new(offer)),
    };
    state
        .buses
        .payments
        .execute(&id, start, metadata.clone())
        .await?;

    let token = tokens::generate();
    tokens::store(&state.database, &token, payment_id, kind)
        .await
        .map_err(|error| ApiError::Internal(error.into()))?;
    let public = state.settings.public_url.as_str().trim_end_matches('/');
    let status_page = if kind == "door" { "access" } else { "session" };
    let status_url = format!("{public}/{status_page}/{token}");
    let request = CheckoutRequest {
        payment_id,
        target,
        price,
        description,
        guest_email,
        manual_capture,
        success_url: status_url.clone(),
        cancel_url: format!("{public}/{pay_page}?cancelled=1"),
        idempotency_key: format!("latchkey-checkout-{payment_id}"),
        expires_at: Some(checkout_expires_at(
            Utc::now(),
            state.settings.access.checkout_expires,
        )),
    };
    let created = state
        .gateways
        .current()
        .checkout
        .create_checkout(request)
        .await
        .map_err(|error| {
            ApiError::Upstream(format!("Stripe could not start the checkout: {error}"))
        })?;
    refs::remember(&state.database, &created.checkout_session_id, payment_id)
        .await
        .map_err(|error| ApiError::Internal(error.into()))?;
    if let Some(intent) = &created.payment_intent_id {
        refs::remember(&state.database, intent, payment_id)
            .await
            .map_err(|error| ApiError::Internal(error.into()))?;
    }
    let record = PaymentCommand::RecordCheckoutSession {
        checkout_session_id: created.checkout_session_id.clone(),
        payment_intent_id: created.payment_intent_id.clone(),
        expires_at: created.expires_at,
        actor: Actor::Guest,
        at: Utc::now(),
    };
    state.buses.payments.execute(&id, record, metadata).await?;
    tracing::info!(payment_id = %payment_id, checkout_session = %created.checkout_session_id, "checkout started");
    Ok(StartedCheckout {
        payment_id,
        checkout_url: created.url,
        status_url,
    })
}

/// When a Checkout Session created at `now` expires: `lifetime` later, kept a minute
/// inside Stripe's 30-minute to 24-hour window, since Stripe measures it from its own
/// clock at creation, a moment after ours.
pub fn checkout_expires_at(now: DateTime<Utc>, lifetime: std::time::Duration) -> DateTime<Utc> {
    let leeway = chrono::Duration::minutes(1);
    let shortest =
        chrono::Duration::minutes(crate::config::CHECKOUT_EXPIRES_MINUTES_MIN as i64) + leeway;
    let longest =
        chrono::Duration::minutes(crate::config::CHECKOUT_EXPIRES_MINUTES_MAX as i64) - leeway;
    let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(longest);
    now + lifetime.clamp(shortest, longest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkout_expiry_stays_inside_stripes_window() {
        let now = Utc::now();
        let minutes = |m: u64| std::time::Duration::from_secs(m * 60);
        assert_eq!(
            checkout_expires_at(now, minutes(30)),
            now + chrono::Duration::minutes(31)
        );
        assert_eq!(
            checkout_expires_at(now, minutes(120)),
            now + chrono::Duration::minutes(120)
        );
        assert_eq!(
            checkout_expires_at(now, minutes(24 * 60)),
            now + chrono::Duration::minutes(24 * 60 - 1)
        );
    }

    #[test]
    fn emails_are_checked_for_shape() {
        assert_eq!(
            parse_email(" guest@example.com ").unwrap(),
            "guest@example.com"
        );
        for bad in [
            "",
            "guest",
            "guest@",
            "@example.com",
            "a b@example.com",
            "guest@example",
            "a@b@c.com",
        ] {
            assert!(parse_email(bad).is_err(), "{bad}");
        }
        assert!(parse_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }
}
