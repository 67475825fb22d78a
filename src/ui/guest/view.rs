//! What a capability token shows: the state of its one payment's door access or device
//! session, computed from the aggregates at the moment of the request. The HTML pages and
//! their JSON twins (`/api/access/{token}`, `/api/session/{token}`) both render these.
//!
//! Nothing here carries the guest's email or any other payment.

use chrono::{DateTime, Utc};
use latchkey_aggregates::device::Device;
use latchkey_aggregates::door::{AccessCodeState, Door};
use latchkey_aggregates::payment::{Payment, PaymentStatus, PaymentTarget};
use latchkey_aggregates::session::{DeviceSession, SessionState};
use serde::Serialize;
use uuid::Uuid;

use crate::http::{ApiError, AppState};
use crate::payments::tokens;

/// One message for every token that leads nowhere, so answers never differ by guess.
pub const UNKNOWN_TOKEN: &str =
    "This link is not valid. Check that you copied the whole link from your payment page.";
/// A token of the wrong shape; said apart so a person can tell a truncated link.
pub const MALFORMED_TOKEN: &str =
    "This link is incomplete: the code at its end should be 43 letters, digits, '-' or '_'.";

/// The payment behind `token`, if it is of `kind` (`door` or `device`).
///
/// Malformed tokens are looked up too, so that every refusal costs the same time: the
/// lookup is by SHA-256, whose time does not depend on how close a guess is.
pub async fn payment_for_token(
    state: &AppState,
    token: &str,
    kind: &str,
) -> Result<Payment, ApiError> {
    let found = tokens::payment_for(&state.database, token)
        .await
        .map_err(|error| ApiError::Internal(error.into()))?;
    if !tokens::well_formed(token) {
        return Err(ApiError::NotFound(MALFORMED_TOKEN.to_string()));
    }
    let Some((payment_id, _)) = found.filter(|(_, found_kind)| found_kind == kind) else {
        return Err(ApiError::NotFound(UNKNOWN_TOKEN.to_string()));
    };
    let (payment, _) = state.buses.payments.load(&payment_id.to_string()).await?;
    if !payment.is_started() {
        return Err(ApiError::NotFound(UNKNOWN_TOKEN.to_string()));
    }
    Ok(payment)
}

/// Where a door payment stands, from the guest's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessState {
    /// Waiting for Stripe to confirm the payment.
    Confirming,
    /// The card was declined; the guest may pay again.
    PaymentFailed,
    /// Paid; the lock is being given the code.
    Issuing,
    /// The passcode works in its window.
    Ready,
    /// No code could be issued in time (maintenance, the lock or its gateway offline), so
    /// the guest is refunded instead; `message` says why and whether the refund is done.
    Refunded,
}

/// The offer locked at checkout (issue 14): what the guest bought, whatever the catalogue
/// says now. `None` for payments started before offers were locked.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct OfferSummary {
    /// Door: access minutes; device: the plan's minutes.
    pub minutes: u32,
    pub price: i64,
    pub currency: String,
    pub plan_name: Option<String>,
    /// SHA-256 over the whole offer; the page shows its first 12 characters.
    pub hash: String,
}

fn offer_summary(payment: &Payment) -> Option<OfferSummary> {
    let offer = payment.locked_offer()?;
    let price = payment.price()?;
    Some(OfferSummary {
        minutes: offer.minutes,
        price: price.amount_minor,
        currency: price.currency.as_str().to_string(),
        plan_name: offer.plan_name.clone(),
        hash: offer.hash.clone(),
    })
}

/// The public shape of a door (what is on its sticker and pay page).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DoorSummary {
    pub door_uid: String,
    pub name: String,
    pub location: String,
    pub time_zone: String,
}

/// `GET /api/access/{token}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct AccessStatus {
    pub state: AccessState,
    pub door: DoorSummary,
    /// The offer locked at checkout.
    pub offer: Option<OfferSummary>,
    pub passcode: Option<String>,
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_to: Option<DateTime<Utc>>,
    /// False for a period passcode (no gateway): it cannot be deleted remotely.
    pub remotely_revocable: Option<bool>,
    /// True when the lock's gateway was not working and the door allows the fallback, so
    /// the code is a random period code: whole hours, not remotely revocable, void if not
    /// used within 24 h of `valid_from`.
    pub offline_fallback: bool,
    /// The decline reason, when `state` is `payment_failed`.
    pub failure_reason: Option<String>,
    /// Where to pay again (the door's pay page), when `state` is `payment_failed`.
    pub retry_url: Option<String>,
    /// When `state` is `refunded`: whether Stripe has reported the refund yet.
    pub refund_completed: Option<bool>,
    /// What the guest should know, in words.
    pub message: String,
}

/// The door access behind `token`: 410 once it expired or was revoked (refund), or when
/// the checkout was abandoned.
pub async fn access(state: &AppState, token: &str) -> Result<AccessStatus, ApiError> {
    let payment = payment_for_token(state, token, "door").await?;
    let Some(PaymentTarget::Door { door_uid }) = payment.target() else {
        return Err(ApiError::NotFound(UNKNOWN_TOKEN.to_string()));
    };
    let (door, _) = state.buses.doors.load(door_uid).await?;
    access_status(&payment, &door, &page_context(state, Utc::now()))
}

/// What every guest page decision needs besides the aggregates: the moment it is decided
/// at and where links point. Kept apart so the decisions are pure functions of the
/// journal's states (the simulation checks them against the journal, `guest_pages.rs`).
#[derive(Clone, Copy, Debug)]
pub struct PageContext<'a> {
    pub now: DateTime<Utc>,
    /// `LATCHKEY_PUBLIC_URL`, the base of the pay-again links.
    pub public_url: &'a str,
}

fn page_context(state: &AppState, now: DateTime<Utc>) -> PageContext<'_> {
    PageContext {
        now,
        public_url: state.settings.public_url.as_str(),
    }
}

impl PageContext<'_> {
    /// `{public_url}/{path}`.
    fn link(&self, path: &str) -> String {
        format!("{}/{path}", self.public_url.trim_end_matches('/'))
    }
}

/// The door page's state for `payment` on `door` at `context.now`: a pure function of
/// the two aggregates. `Err(Gone)` once the code expired or was revoked (refund), or
/// when the checkout was abandoned; `Err(NotFound)` for a payment that is not a door's.
pub fn access_status(
    payment: &Payment,
    door: &Door,
    context: &PageContext<'_>,
) -> Result<AccessStatus, ApiError> {
    let Some(PaymentTarget::Door { door_uid }) = payment.target() else {
        return Err(ApiError::NotFound(UNKNOWN_TOKEN.to_string()));
    };
    let now = context.now;
    let payment_id = payment.payment_id().unwrap_or_default();
    let mut status = AccessStatus {
        state: AccessState::Confirming,
        door: door_summary(door, door_uid),
        offer: offer_summary(payment),
        passcode: None,
        valid_from: None,
        valid_to: None,
        remotely_revocable: None,
        offline_fallback: false,
        failure_reason: None,
        retry_url: None,
        refund_completed: None,
        message: "Confirming your payment…".to_string(),
    };
    match payment.status() {
        PaymentStatus::Pending | PaymentStatus::Authorized => return Ok(status),
        PaymentStatus::Failed => {
            status.state = AccessState::PaymentFailed;
            status.failure_reason = payment.last_failure_reason().map(str::to_string);
            status.retry_url = Some(context.link(&format!("pay/{door_uid}")));
            status.message =
                "Your payment did not go through, so nothing was charged. You can try again."
                    .to_string();
            return Ok(status);
        }
        PaymentStatus::Cancelled | PaymentStatus::Expired => {
            return Err(ApiError::Gone(
                "This payment was not completed, so nothing was charged. Start again from the door's pay page."
                    .to_string(),
            ))
        }
        PaymentStatus::Refunded if compensated(door, payment_id) => {}
        PaymentStatus::Refunded => {
            if let Some(until) = door
                .access_code(payment_id)
                .and_then(|code| still_valid_at(code, door, now))
            {
                return Err(ApiError::Gone(until));
            }
            return Err(ApiError::Gone(
                "Access revoked: this payment was refunded, so its code no longer opens the door."
                    .to_string(),
            ));
        }
        PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded => {}
    }
    let Some(code) = door.access_code(payment_id) else {
        status.state = AccessState::Issuing;
        status.message = ISSUING.to_string();
        return Ok(status);
    };
    match code.state {
        AccessCodeState::Requested | AccessCodeState::Failed => {
            status.state = AccessState::Issuing;
            status.message = ISSUING.to_string();
            Ok(status)
        }
        AccessCodeState::Revoked | AccessCodeState::RevocationPending => {
            if let Some(until) = still_valid_at(code, door, now) {
                return Err(ApiError::Gone(until));
            }
            Err(ApiError::Gone(
                "Access revoked: this code no longer opens the door.".to_string(),
            ))
        }
        AccessCodeState::Expired => Err(expired()),
        AccessCodeState::Compensated => {
            let why = code
                .compensation
                .map_or("no door code could be issued", |rule| rule.describe());
            let refunded = payment.status() == PaymentStatus::Refunded;
            status.state = AccessState::Refunded;
            status.refund_completed = Some(refunded);
            status.message = if refunded {
                format!("We could not open the door ({why}); you were refunded in full.")
            } else {
                format!(
                    "We could not open the door ({why}); you are being refunded in full. \
                     This page updates by itself."
                )
            };
            Ok(status)
        }
        AccessCodeState::Issued
            if latchkey_aggregates::planted::active(
                latchkey_aggregates::planted::Bug::GuestPageIssuingWithLiveCode,
            ) =>
        {
            status.state = AccessState::Issuing;
            status.message = ISSUING.to_string();
            Ok(status)
        }
        AccessCodeState::Issued => {
            if code.valid_to.is_some_and(|end| end <= now) {
                return Err(expired());
            }
            status.state = AccessState::Ready;
            status.passcode = code.code.clone();
            status.valid_from = code.valid_from;
            status.valid_to = code.valid_to;
            status.remotely_revocable = Some(code.remotely_revocable);
            status.offline_fallback = code.fallback.is_some();
            status.message = if status.offline_fallback {
                format!("Type the code on the door's keypad, then press the unlock key. {FALLBACK_NOTE}")
            } else {
                "Type the code on the door's keypad, then press the unlock key.".to_string()
            };
            Ok(status)
        }
    }
}

/// What a guest given a period code because the gateway was not working reads (issue 14).
pub const FALLBACK_NOTE: &str = "The lock's internet gateway is not working, so this is a \
     time-limited code in whole hours that cannot be cancelled remotely: use it once within \
     24 hours of its start, and it stops working by itself at the end time.";

/// What a paid guest waiting for their code reads.
pub const ISSUING: &str = "Paid. Your code is being sent to the lock…";

/// Whether the guest was refunded because no code could be issued (issue 14).
fn compensated(door: &Door, payment_id: Uuid) -> bool {
    door.access_code(payment_id)
        .is_some_and(|code| code.state == AccessCodeState::Compensated)
}

/// For a code the lock keeps offline (no gateway), what its revocation really did: the
/// cloud record is gone but the code opens the door until its end. `None` when the code
/// is gone from the lock (or its time is over anyway).
pub fn still_valid(code: &latchkey_aggregates::door::AccessCode, door: &Door) -> Option<String> {
    still_valid_at(code, door, Utc::now())
}

/// [`still_valid`] at `now`.
pub fn still_valid_at(
    code: &latchkey_aggregates::door::AccessCode,
    door: &Door,
    now: DateTime<Utc>,
) -> Option<String> {
    let until = code
        .still_valid_until
        .or_else(|| {
            (!code.remotely_revocable)
                .then_some(code.valid_to)
                .flatten()
        })
        .filter(|until| *until > now)?;
    let zone = door.time_zone().unwrap_or("UTC");
    let why = if code.fallback.is_some() {
        "its code was issued while the lock's gateway was not working, as a time-limited \
         code the lock checks by itself: it could not be removed remotely"
    } else {
        "this lock has no internet gateway: its code could not be removed remotely"
    };
    Some(format!(
        "Refund recorded, but {why} and keeps opening the door until {}.",
        crate::ui::layout::local_time(until, zone)
    ))
}

fn expired() -> ApiError {
    ApiError::Gone("Expired: this code's time is over and it no longer opens the door.".to_string())
}

fn door_summary(door: &Door, door_uid: &str) -> DoorSummary {
    DoorSummary {
        door_uid: door_uid.to_string(),
        name: door.name().unwrap_or(door_uid).to_string(),
        location: door.location().unwrap_or_default().to_string(),
        time_zone: door.time_zone().unwrap_or("UTC").to_string(),
    }
}

/// `{public_url}/{path}`.
pub fn public_link(state: &AppState, path: &str) -> String {
    format!(
        "{}/{path}",
        state.settings.public_url.as_str().trim_end_matches('/')
    )
}

/// Where a device session stands, from the guest's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionPhase {
    /// Waiting for Stripe to confirm the card.
    Confirming,
    /// The card was declined; the guest may pay again.
    PaymentFailed,
    /// Paid (authorized); the device is busy, the session starts when it frees up.
    Waiting,
    /// The device is being switched on.
    Starting,
    /// On: the countdown runs until `ends_at`.
    Active,
    /// Time is up; the device is being switched off.
    Finishing,
    Finished,
    /// Never started (the device did not come on, or it was cancelled): not charged. The
    /// message says whether Stripe has released the hold yet.
    NotCharged,
    /// The card could not be charged when the device came on (declined, authorization
    /// expired or cancelled): the session was stopped at once.
    ChargeFailed,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceSummary {
    pub device_uid: String,
    pub name: String,
    pub location: String,
    pub time_zone: String,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PlanSummary {
    pub plan_id: String,
    pub name: String,
    pub minutes: u32,
    pub price: i64,
    pub currency: String,
}

/// `GET /api/session/{token}`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SessionStatus {
    pub state: SessionPhase,
    pub device: DeviceSummary,
    pub plan: Option<PlanSummary>,
    /// The offer locked at checkout.
    pub offer: Option<OfferSummary>,
    pub started_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub remaining_seconds: Option<i64>,
    /// While waiting: when the device should be free (an estimate from the sessions
    /// ahead).
    pub expected_start: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
    pub retry_url: Option<String>,
    pub message: String,
}

/// The device session behind `token`: 410 when the checkout was abandoned.
pub async fn session(state: &AppState, token: &str) -> Result<SessionStatus, ApiError> {
    let payment = payment_for_token(state, token, "device").await?;
    let Some(PaymentTarget::Device { device_uid, .. }) = payment.target() else {
        return Err(ApiError::NotFound(UNKNOWN_TOKEN.to_string()));
    };
    let payment_id = payment.payment_id().unwrap_or_default();
    let (device, _) = state.buses.devices.load(device_uid).await?;
    let (session, _) = state.buses.sessions.load(&payment_id.to_string()).await?;
    let mut status = session_status(
        &payment,
        &device,
        &session,
        &page_context(state, Utc::now()),
    )?;
    if status.state == SessionPhase::Waiting {
        status.expected_start = device_frees_at(state, &device, Some(payment_id)).await;
    }
    Ok(status)
}

/// The device page's state for `payment`, its `session` (default when none was opened)
/// on `device` at `context.now`: a pure function of the three aggregates. The estimate of
/// a waiting session's start (`expected_start`) needs the sessions ahead of it, so the
/// caller fills it in.
pub fn session_status(
    payment: &Payment,
    device: &Device,
    session: &DeviceSession,
    context: &PageContext<'_>,
) -> Result<SessionStatus, ApiError> {
    let Some(PaymentTarget::Device {
        device_uid,
        plan_id,
    }) = payment.target()
    else {
        return Err(ApiError::NotFound(UNKNOWN_TOKEN.to_string()));
    };
    let offer = offer_summary(payment);
    // The plan as bought; the catalogue's current plan only for payments older than
    // locked offers (it may have been edited or deleted since).
    let plan = match (&offer, payment.price()) {
        (Some(offer), Some(price)) => Some(PlanSummary {
            plan_id: plan_id.clone(),
            name: offer.plan_name.clone().unwrap_or_else(|| plan_id.clone()),
            minutes: offer.minutes,
            price: price.amount_minor,
            currency: price.currency.as_str().to_string(),
        }),
        _ => device.plan(plan_id).map(|plan| PlanSummary {
            plan_id: plan.plan_id.clone(),
            name: plan.name.clone(),
            minutes: plan.minutes,
            price: plan.price.amount_minor,
            currency: plan.price.currency.as_str().to_string(),
        }),
    };
    let mut status = SessionStatus {
        state: SessionPhase::Confirming,
        device: device_summary(device, device_uid),
        plan,
        offer,
        started_at: session.started_at(),
        ends_at: session.ends_at(),
        remaining_seconds: session.remaining_seconds(context.now),
        expected_start: None,
        failure_reason: None,
        retry_url: None,
        message: "Confirming your payment…".to_string(),
    };
    let (phase, message) = match (session.state(), payment.status()) {
        (None, PaymentStatus::Pending) => (SessionPhase::Confirming, "Confirming your payment…"),
        (None, PaymentStatus::Failed) => {
            status.failure_reason = payment.last_failure_reason().map(str::to_string);
            status.retry_url = Some(context.link(&format!("use/{device_uid}")));
            (
                SessionPhase::PaymentFailed,
                "Your card was not accepted, so nothing was charged. You can try again.",
            )
        }
        // Authorized, then no session could start (the device went into maintenance).
        (None, PaymentStatus::Cancelled) if payment.was_authorized() => (
            SessionPhase::NotCharged,
            RELEASED,
        ),
        (None, PaymentStatus::Authorized) if payment.cancellation_ordered() => {
            (SessionPhase::NotCharged, releasing(payment))
        }
        (None, PaymentStatus::Cancelled | PaymentStatus::Expired) => {
            return Err(ApiError::Gone(
                "This payment was not completed, so nothing was charged. Start again from the device's page."
                    .to_string(),
            ))
        }
        (None, _) => (
            SessionPhase::Starting,
            "Paid. Your session is being set up…",
        ),
        (Some(SessionState::Queued), _) => (
            SessionPhase::Waiting,
            "The device is in use. Your session starts by itself when it is free; you are charged only once it is on.",
        ),
        (Some(SessionState::Opened), _) => (
            SessionPhase::Starting,
            "Switching the device on… You are charged only once it is on.",
        ),
        (Some(SessionState::Active), _) => (SessionPhase::Active, "The device is on."),
        (Some(SessionState::Finishing), _) => (
            SessionPhase::Finishing,
            "Time is up; switching the device off…",
        ),
        (Some(SessionState::Completed | SessionState::ForceEnded), _)
            if payment.capture_failure().is_some() =>
        {
            status.failure_reason = payment.capture_failure().map(str::to_string);
            (
                SessionPhase::ChargeFailed,
                "Your card could not be charged, so the device was switched off. Nothing was taken from your card.",
            )
        }
        (Some(SessionState::ForceEnded), _) if session.started_at().is_none() => {
            (SessionPhase::NotCharged, not_started(payment))
        }
        (Some(SessionState::Completed | SessionState::ForceEnded), _) => {
            (SessionPhase::Finished, "Your session has finished. Thank you!")
        }
        (Some(SessionState::Cancelled | SessionState::Failed), _) => {
            (SessionPhase::NotCharged, not_started(payment))
        }
    };
    status.state = phase;
    status.message = message.to_string();
    Ok(status)
}

/// What a guest whose session could not start reads once Stripe confirmed the release.
pub const RELEASED: &str = "The device could not be started, so your card was not charged: the authorization has been released.";

/// What a guest whose session never started is told: "released" only once Stripe has
/// confirmed it (`PaymentCancelled`), never on our decision alone.
fn not_started(payment: &Payment) -> &'static str {
    match payment.status() {
        PaymentStatus::Cancelled | PaymentStatus::Expired => RELEASED,
        PaymentStatus::Authorized => releasing(payment),
        _ => "The device could not be started, so your card was not charged.",
    }
}

fn releasing(payment: &Payment) -> &'static str {
    if payment.cancellation_failure().is_some() {
        "The device could not be started, so your card will not be charged. Releasing the hold on your card needs an operator; it will be released."
    } else {
        "The device could not be started, so your card will not be charged: the hold on your card is being released."
    }
}

fn device_summary(device: &Device, device_uid: &str) -> DeviceSummary {
    DeviceSummary {
        device_uid: device_uid.to_string(),
        name: device.name().unwrap_or(device_uid).to_string(),
        location: device.location().unwrap_or_default().to_string(),
        time_zone: device.time_zone().unwrap_or("UTC").to_string(),
    }
}

/// When the device should be free: the running session's end (or its plan's length from
/// now if it is still starting) plus the plan length of every queued session ahead of
/// `before` (all of them when `None`). `None` when the device is free now.
pub async fn device_frees_at(
    state: &AppState,
    device: &Device,
    before: Option<Uuid>,
) -> Option<DateTime<Utc>> {
    let holder = device.holder_session()?;
    let now = Utc::now();
    let mut free_at = match state.buses.sessions.load(&holder.to_string()).await {
        Ok((session, _)) => session
            .ends_at()
            .filter(|end| *end > now)
            .unwrap_or_else(|| {
                now + chrono::Duration::minutes(
                    session.terms().map_or(0, |t| i64::from(t.plan_minutes)),
                )
            }),
        Err(_) => now,
    };
    for queued in device.queued_sessions() {
        if Some(queued) == before {
            break;
        }
        if let Ok((session, _)) = state.buses.sessions.load(&queued.to_string()).await {
            let minutes = session
                .terms()
                .map_or(0, |terms| i64::from(terms.plan_minutes));
            free_at += chrono::Duration::minutes(minutes);
        }
    }
    Some(free_at)
}
