//! Operators act on payments, sessions and doors: refund (admins), grant access to a
//! payment held for an amount below its price (admins), force-end a session, sync doors
//! from TTLock's lock list, retry or reissue a door payment's code, release a device
//! payment's hold.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use latchkey_aggregates::door::{AccessCodeState, DoorCommand, ReissueMode};
use latchkey_aggregates::payment::{PaymentCommand, PaymentStatus, PaymentTarget};
use latchkey_aggregates::session::SessionCommand;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::{Permission, Principal};
use super::extract::ApiJson;
use super::{ApiError, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/payments/{id}/refund", post(refund))
        .route("/api/payments/{id}/retry-code", post(retry_code))
        .route("/api/payments/{id}/reissue-code", post(reissue_code))
        .route("/api/payments/{id}/release-hold", post(release_hold))
        .route("/api/payments/{id}/grant-access", post(grant_access))
        .route("/api/sessions/{id}/force-end", post(force_end))
        .route("/api/doors/sync", post(sync_doors))
}

fn uuid_of(kind: &str, id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound(format!("no {kind} {id:?}")))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Minor units; the whole refundable rest when absent.
    #[schema(minimum = 1)]
    pub amount: Option<i64>,
    /// Kept in the audit log (default "refunded by an operator").
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundAccepted {
    pub payment_id: Uuid,
    pub refund_request_id: Uuid,
    /// The refund becomes a fact when Stripe reports it (`charge.refunded`).
    pub status: String,
}

/// Decides a refund (journalled with who and why); the refund job asks Stripe, and the
/// payment's refunded total changes when Stripe reports the refund.
///
/// With an `Idempotency-Key` header (as Stripe's own API takes it) the request may be
/// retried safely: the same key with the same body gets the same answer and one refund;
/// the same key with another body is refused with 409.
#[utoipa::path(post, path = "/api/payments/{id}/refund", tag = "payments",
    params(("id" = String, Path, description = "Payment UUID"),
        ("Idempotency-Key" = Option<String>, Header, max_length = 255, pattern = "^[!-~]+$", description = "1 to 255 visible ASCII characters (a UUID is a good choice); a retry with the same key and body refunds once; another value is refused with 400")),
    request_body = RefundBody,
    responses(
        (status = 202, body = RefundAccepted),
        (status = 400, description = "A malformed `Idempotency-Key`, or a body that is not JSON"),
        (status = 409, description = "More than the refundable rest, a payment not paid, or this `Idempotency-Key` used with another body"),
        (status = 502, description = "Stripe refused or did not answer"),
        (status = 503, description = "Stripe is not configured")),
    security(("bearer" = [])))]
pub async fn refund(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RefundBody>,
) -> Result<(StatusCode, Json<RefundAccepted>), ApiError> {
    let key = idempotency_key(&headers)?;
    let accepted = request_refund(&state, &principal, &id, body, key.as_deref()).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Longest `Idempotency-Key` accepted, as Stripe's.
const IDEMPOTENCY_KEY_MAX_CHARS: usize = 255;

/// The request's `Idempotency-Key`, if any: visible ASCII (no spaces inside; around it
/// they are trimmed), at most 255 characters, as the document's pattern says.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|key| {
            !key.is_empty()
                && key.len() <= IDEMPOTENCY_KEY_MAX_CHARS
                && key.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters (a UUID is a good choice)"
            ))
        })?;
    Ok(Some(key.to_string()))
}

/// The refund request id of `key` on this payment: the same key always names the same
/// request, so a retried POST finds the request it already made.
pub fn refund_request_id_for_key(payment_id: Uuid, key: &str) -> Uuid {
    let digest = Sha256::digest(format!("latchkey refund {payment_id} {key}").as_bytes());
    let mut bytes = [0_u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

const DEFAULT_REFUND_REASON: &str = "refunded by an operator";

/// Decides a refund for `principal` (shared by the API and the dashboard's form).
pub async fn request_refund(
    state: &AppState,
    principal: &Principal,
    id: &str,
    body: RefundBody,
    idempotency_key: Option<&str>,
) -> Result<RefundAccepted, ApiError> {
    principal.require(Permission::Refund)?;
    let payment_id = uuid_of("payment", id)?;
    // The body is checked before the integration: a wrong request is told so (422)
    // whether or not Stripe is configured, as the document's `minimum: 1` says.
    if let Some(amount) = body.amount.filter(|amount| *amount < 1) {
        return Err(ApiError::Invalid(format!(
            "amount must be a positive number of minor units, not {amount}"
        )));
    }
    state.require_stripe()?;
    let (payment, _) = state.buses.payments.load(id).await?;
    let Some(price) = payment.price() else {
        return Err(ApiError::NotFound(format!("no payment {id:?}")));
    };
    let reason = body
        .reason
        .unwrap_or_else(|| DEFAULT_REFUND_REASON.to_string());
    let refund_request_id = match idempotency_key {
        Some(key) => refund_request_id_for_key(payment_id, key),
        None => Uuid::new_v4(),
    };
    let accepted = RefundAccepted {
        payment_id,
        refund_request_id,
        status: "requested".to_string(),
    };
    if let Some(previous) = payment.refund_request(refund_request_id) {
        let same_amount = match body.amount {
            Some(amount) => !previous.asked_for_the_rest && previous.amount_minor == amount,
            None => previous.asked_for_the_rest,
        };
        if !same_amount || previous.reason != reason {
            return Err(ApiError::Conflict(
                "this Idempotency-Key was already used for another refund of this payment (a different amount or reason); use a new key for a new refund".into(),
            ));
        }
        return Ok(accepted);
    }
    let command = PaymentCommand::RequestRefund {
        refund_request_id,
        amount: body.amount.map(|amount| price.with_amount(amount)),
        reason,
        actor: principal.actor(),
        at: Utc::now(),
    };
    state
        .buses
        .payments
        .execute(id, command, principal.command_metadata())
        .await?;
    Ok(accepted)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantAccessBody {
    /// Why; required, kept in the audit log with who decided.
    #[schema(pattern = "\\S")]
    pub reason: String,
}

/// The payment no longer waits for a decision.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccessGranted {
    #[schema(format = "uuid")]
    pub payment_id: String,
    /// Always `false` after a grant.
    pub access_held: bool,
}

/// An admin's decision on a payment Stripe reported below its price (audit
/// `amount_mismatch`): grant the door code or device session anyway. The other decision
/// is a refund (`POST /api/payments/{id}/refund`).
#[utoipa::path(post, path = "/api/payments/{id}/grant-access", tag = "payments",
    params(("id" = String, Path, description = "Payment UUID")),
    request_body = GrantAccessBody,
    responses(
        (status = 200, description = "Granted; the workflows issue the code or start the session", body = AccessGranted),
        (status = 409, description = "The payment is not held")),
    security(("bearer" = [])))]
pub async fn grant_access(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<GrantAccessBody>,
) -> Result<Json<AccessGranted>, ApiError> {
    principal.require(Permission::Refund)?;
    uuid_of("payment", &id)?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::Invalid(
            "reason must say why access is granted".into(),
        ));
    }
    let command = PaymentCommand::GrantAccess {
        reason: body.reason,
        actor: principal.actor(),
        at: Utc::now(),
    };
    state
        .buses
        .payments
        .execute(&id, command, principal.command_metadata())
        .await?;
    tracing::info!(payment_id = %id, "access granted to a held payment");
    Ok(Json(AccessGranted {
        payment_id: id,
        access_held: false,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForceEndBody {
    /// Why; required, kept in the audit log with who did it.
    #[schema(pattern = "\\S")]
    pub reason: String,
}

/// The session after a forced end.
#[derive(Debug, Serialize, ToSchema)]
pub struct ForceEnded {
    #[schema(format = "uuid")]
    pub session_id: String,
    /// The session's state now, e.g. `force_ended`.
    pub state: Option<String>,
}

/// Ends a device session now (relay OFF), recording who and why.
#[utoipa::path(post, path = "/api/sessions/{id}/force-end", tag = "sessions",
    params(("id" = String, Path, description = "Session UUID")),
    request_body = ForceEndBody,
    responses(
        (status = 200, description = "Ended", body = ForceEnded),
        (status = 409, description = "The session has already ended")),
    security(("bearer" = [])))]
pub async fn force_end(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ForceEndBody>,
) -> Result<Json<ForceEnded>, ApiError> {
    principal.require(Permission::Operate)?;
    uuid_of("session", &id)?;
    if body.reason.trim().is_empty() {
        return Err(ApiError::Invalid(
            "reason must say why the session is ended".into(),
        ));
    }
    let command = SessionCommand::ForceEndSession {
        reason: body.reason,
        actor: principal.actor(),
        at: Utc::now(),
    };
    state
        .buses
        .sessions
        .execute(&id, command, principal.command_metadata())
        .await?;
    let (session, _) = state.buses.sessions.load(&id).await?;
    Ok(Json(ForceEnded {
        session_id: id,
        state: serde_json::to_value(session.state())
            .ok()
            .and_then(|state| state.as_str().map(str::to_string)),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SyncedLock {
    pub lock_id: i64,
    pub name: String,
    pub has_gateway: bool,
    /// Whether a door with this uid exists; unregistered locks are added with
    /// `POST /api/doors` (they need a price and an access duration).
    pub registered: bool,
}

/// Reads TTLock's lock list and says which locks are doors here.
#[utoipa::path(post, path = "/api/doors/sync", tag = "catalogue",
    responses(
        (status = 200, body = [SyncedLock]),
        (status = 502, description = "TTLock refused or did not answer"),
        (status = 503, description = "TTLock is not configured")),
    security(("bearer" = [])))]
pub async fn sync_doors(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<SyncedLock>>, ApiError> {
    principal.require(Permission::Operate)?;
    state.require_ttlock()?;
    let Some(client) = state.gateways.current().ttlock.clone() else {
        return Err(ApiError::NotConfigured(
            crate::gateways::NotConfigured::TTLOCK.message(),
        ));
    };
    let locks = client
        .list_locks()
        .await
        .map_err(|error| ApiError::Upstream(error.to_string()))?;
    let mut synced = Vec::with_capacity(locks.len());
    for lock in locks {
        let uid = lock.lock_id.to_string();
        let (door, _) = state.buses.doors.load(&uid).await?;
        if door.is_registered() {
            if let Ok(mode) = client.passage_mode(lock.lock_id).await {
                let command = DoorCommand::RecordPassageMode {
                    enabled: mode.enabled,
                    actor: principal.actor(),
                    at: Utc::now(),
                };
                state
                    .buses
                    .doors
                    .execute(&uid, command, principal.command_metadata())
                    .await?;
            }
        }
        synced.push(SyncedLock {
            lock_id: lock.lock_id,
            name: lock
                .alias
                .clone()
                .or_else(|| lock.name.clone())
                .unwrap_or_default(),
            has_gateway: lock.has_gateway,
            registered: door.is_registered(),
        });
    }
    Ok(Json(synced))
}

/// Where a door payment's code stands after an operator's action. The passcode itself is
/// not shown: the guest's page has it, and the journal keeps it for admins.
#[derive(Debug, Serialize, ToSchema)]
pub struct CodeActionResult {
    pub payment_id: Uuid,
    pub door_uid: String,
    /// `requested`, `issued`, `failed`, `revocation_pending`, `revoked`, `expired` or
    /// `compensated`.
    #[schema(value_type = String)]
    pub state: AccessCodeState,
    pub valid_from: Option<chrono::DateTime<Utc>>,
    pub valid_to: Option<chrono::DateTime<Utc>>,
    /// TTLock's reason when the attempt failed (retried automatically from here).
    pub last_error: Option<String>,
}

/// Tries again to issue a door payment's code that is not live (failed, or never issued
/// because the door was in maintenance), even past the automatic attempt limit.
#[utoipa::path(post, path = "/api/payments/{id}/retry-code", tag = "payments",
    params(("id" = String, Path, description = "Payment UUID")),
    responses(
        (status = 200, body = CodeActionResult),
        (status = 409, description = "The code is live, revoked, expired or compensated; the door is in maintenance; or the payment is not paid")),
    security(("bearer" = [])))]
pub async fn retry_code(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<CodeActionResult>, ApiError> {
    Ok(Json(
        door_code_action(&state, &principal, &id, ReissueMode::Retry).await?,
    ))
}

/// Gives the guest a new door code: a live one is deleted from the lock first (a lock
/// without a gateway keeps it until its end) and the new one ends when the old one did; a
/// code that is not live is issued as by `retry-code`.
#[utoipa::path(post, path = "/api/payments/{id}/reissue-code", tag = "payments",
    params(("id" = String, Path, description = "Payment UUID")),
    responses(
        (status = 200, body = CodeActionResult),
        (status = 409, description = "The door is in maintenance, or the payment is not paid"),
        (status = 502, description = "The lock refused to delete the live code; nothing changed")),
    security(("bearer" = [])))]
pub async fn reissue_code(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<CodeActionResult>, ApiError> {
    Ok(Json(
        door_code_action(&state, &principal, &id, ReissueMode::Replace).await?,
    ))
}

/// Retries or reissues a door payment's code for `principal` (API and dashboard).
pub async fn door_code_action(
    state: &AppState,
    principal: &Principal,
    id: &str,
    mode: ReissueMode,
) -> Result<CodeActionResult, ApiError> {
    principal.require(Permission::Operate)?;
    let payment_id = uuid_of("payment", id)?;
    let (payment, _) = state.buses.payments.load(id).await?;
    let door_uid = match payment.target() {
        None => return Err(ApiError::NotFound(format!("no payment {id:?}"))),
        Some(PaymentTarget::Door { door_uid }) => door_uid.clone(),
        Some(PaymentTarget::Device { .. }) => {
            return Err(ApiError::Conflict(
                "this is a device payment; it has no door code".into(),
            ))
        }
    };
    let status = payment.status();
    if !matches!(
        status,
        PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded
    ) {
        return Err(ApiError::Conflict(format!(
            "the payment is {status}; only a paid payment gets a door code"
        )));
    }
    let command = DoorCommand::ReissueAccessCode {
        payment_id,
        mode,
        locked_minutes: payment.locked_offer().map(|offer| offer.minutes),
        actor: principal.actor(),
        at: Utc::now(),
    };
    state
        .buses
        .doors
        .execute(&door_uid, command, principal.command_metadata())
        .await?;
    let (door, _) = state.buses.doors.load(&door_uid).await?;
    let code = door
        .access_code(payment_id)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the reissued code is missing")))?;
    Ok(CodeActionResult {
        payment_id,
        door_uid,
        state: code.state,
        valid_from: code.valid_from,
        valid_to: code.valid_to,
        last_error: code.last_error.clone(),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    /// Why; required, kept in the audit log with who did it.
    #[schema(pattern = "\\S")]
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReleaseAccepted {
    pub payment_id: Uuid,
    /// The payment's status now; `cancelled` once Stripe reports the release.
    pub status: String,
}

/// Releases a device payment's authorization (the card hold): the guest is not charged.
#[utoipa::path(post, path = "/api/payments/{id}/release-hold", tag = "payments",
    params(("id" = String, Path, description = "Payment UUID")),
    request_body = ReleaseBody,
    responses(
        (status = 202, body = ReleaseAccepted),
        (status = 409, description = "Nothing is held"),
        (status = 502, description = "Stripe refused or did not answer")),
    security(("bearer" = [])))]
pub async fn release_hold(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReleaseBody>,
) -> Result<(StatusCode, Json<ReleaseAccepted>), ApiError> {
    let accepted = release(&state, &principal, &id, body.reason).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Releases a hold for `principal` (API and dashboard). The release itself is the
/// payment's `CancelAuthorization`.
pub async fn release(
    state: &AppState,
    principal: &Principal,
    id: &str,
    reason: String,
) -> Result<ReleaseAccepted, ApiError> {
    principal.require(Permission::Operate)?;
    let payment_id = uuid_of("payment", id)?;
    if reason.trim().is_empty() {
        return Err(ApiError::Invalid(
            "reason must say why the hold is released".into(),
        ));
    }
    let (payment, _) = state.buses.payments.load(id).await?;
    if !payment.is_started() {
        return Err(ApiError::NotFound(format!("no payment {id:?}")));
    }
    let command = PaymentCommand::CancelAuthorization {
        reason,
        actor: principal.actor(),
        at: Utc::now(),
    };
    state
        .buses
        .payments
        .execute(id, command, principal.command_metadata())
        .await?;
    let (payment, _) = state.buses.payments.load(id).await?;
    Ok(ReleaseAccepted {
        payment_id,
        status: payment.status().to_string(),
    })
}
