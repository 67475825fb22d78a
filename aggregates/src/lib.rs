//! Latchkey's write model: four event-sourced aggregates on cqrs-es 0.5, with no I/O of
//! their own. External effects (Stripe, TTLock, Shelly) are reached through the service
//! traits each aggregate declares in its `services` module; the application implements
//! them, and tests use the fakes behind the `testing` feature.
//!
//! | aggregate | `TYPE` | id | module |
//! |---|---|---|---|
//! | [`Payment`](payment::Payment) | `"Payment"` | our payment UUID | [`payment`] |
//! | [`Door`](door::Door) | `"Door"` | door uid (TTLock lock id as text) | [`door`] |
//! | [`Device`](device::Device) | `"Device"` | device uid | [`device`] |
//! | [`DeviceSession`](session::DeviceSession) | `"DeviceSession"` | our session UUID | [`session`] |
//!
//! Shared value types: [`Money`] (integer minor units + [`Currency`], never floating point)
//! and [`Actor`] (who asked: guest, stripe, system or `operator:<id>`).
//!
//! # Conventions
//!
//! - Commands carry `actor` and `at`. Aggregates never read the clock, so tests and
//!   replays are deterministic; times that matter later (a countdown's end, a code's
//!   validity) are decided in `handle` and stored in the event.
//! - Events are past-tense facts, serialized internally tagged (`{"type": "PaymentSucceeded",
//!   …}`); `event_type()` is the variant name and `event_version()` is [`EVENT_VERSION`].
//!   Every event has `at`, the instant Latchkey decided it. Events recording a human
//!   decision carry the `actor`; otherwise the application puts the actor in metadata.
//! - Business refusals are errors (one thiserror enum per aggregate, with messages a
//!   person can act on); a repeated command that is already satisfied succeeds with no
//!   events, so workflows may safely deliver the same fact twice.
//! - Every external call from `handle` may run twice (cqrs-es retries a command after a
//!   concurrency conflict), so each carries an idempotency key derived from our ids, or is
//!   idempotent by nature.
//!
//! # Event catalogue
//!
//! Amounts are [`Money`]; `stripe_event` is `{id, created}` of the Stripe event the fact
//! came from; `status` is the payment status *after* the event.
//!
//! ## Payment
//!
//! | event | when | fields |
//! |---|---|---|
//! | `CheckoutStarted` | a guest starts checkout; locks the price | `payment_id, target {kind: door, door_uid \| kind: device, device_uid, plan_id}, price, guest_email, at` |
//! | `CheckoutSessionCreated` | the app created the Stripe Checkout Session | `checkout_session_id, payment_intent_id?, expires_at?, at` |
//! | `PaymentAuthorized` | funds held for manual capture | `payment_intent_id, amount_capturable, status, stripe_event, at` |
//! | `PaymentFailed` | an attempt failed (the guest may retry) | `payment_intent_id, reason, attempt, status, stripe_event, at` |
//! | `PaymentSucceeded` | Stripe collected the money | `payment_intent_id, charge_id?, amount_received, status, stripe_event, at` |
//! | `DuplicateConfirmationIgnored` | the same success reported again (audit `duplicate_payment_ignored`) | `payment_intent_id, stripe_event, at` |
//! | `RefundRecorded` | Stripe's cumulative refunded total changed (down when a refund failed) | `charge_id, amount_refunded (cumulative), refunded_increase (may be negative), status, stripe_event, at, charge_amount_refunded?, refund_id?, refund_request_id?` |
//! | `StripeReportIgnored` | a stale, repeated or contradicted Stripe report | `report (authorization\|failure\|refund\|cancellation\|checkout_expiry\|dispute\|success), reason, stripe_event, at` | |
//! | `PaymentCaptureOrdered` | someone decided to capture; the capture job asks Stripe | `payment_intent_id, amount_to_capture, actor, at` |
//! | `PaymentCaptureRequested` | Stripe accepted our capture (old journals: the command asked Stripe itself) | `payment_intent_id, amount_to_capture, at` |
//! | `PaymentCaptureFailed` | Stripe refused our capture for good (audit `capture_failed`) | `payment_intent_id, reason, at` |
//! | `PaymentCancellationOrdered` | someone decided to release the authorization; the cancellation job asks Stripe | `payment_intent_id, reason, actor, at` |
//! | `PaymentCancellationRequested` | Stripe accepted our release of the authorization | `payment_intent_id, reason, at` |
//! | `PaymentCancellationFailed` | Stripe refused to release the authorization | `payment_intent_id, reason, at` |
//! | `PaymentCancelled` | Stripe cancelled the PaymentIntent | `payment_intent_id, cancellation_reason?, status, stripe_event, at` |
//! | `CheckoutExpired` | the Checkout Session expired unpaid | `checkout_session_id, status, stripe_event, at` |
//! | `RefundRequested` | (first design, old journals only) someone decided to refund; Stripe accepted | `refund_request_id, amount, reason, actor, stripe_refund_id, expected_amount_refunded, at` |
//! | `RefundOrdered` | someone decided to refund; journalled before Stripe is asked | `refund_request_id, amount, reason, actor, at, asked_for_the_rest` |
//! | `RefundSubmitted` | Stripe answered our refund request with a refund | `refund_request_id, stripe_refund_id, amount, refund_status, at` |
//! | `RefundSubmissionFailed` | Stripe refused our refund request | `refund_request_id, reason, at` |
//! | `StripeRefundReported` | `refund.created/updated/failed` | `refund_id, charge_id, amount, refund_status, refund_created, refund_request_id?, failure_reason?, stripe_event, at` |
//! | `PaymentDisputed` | the bank opened a dispute | `dispute_id, amount, reason, stripe_event, at` |
//! | `PaymentAmountMismatch` | a Stripe amount differs from the expected one (audit `amount_mismatch`); below → money kept, access held; above / other currency → refused | `expected, reported, direction (below\|above\|other_currency), report, stripe_event, at` |
//! | `PaymentAccessGranted` | an operator granted access to a held (underpaid) payment | `reason, actor, at` |
//! | `DisputeFundsWithdrawn` | a dispute took the amount back (net revenue down) | `dispute_id, amount, stripe_event, at` |
//! | `DisputeFundsReinstated` | a won dispute gave it back (net revenue up) | `dispute_id, amount, stripe_event, at` |
//! | `DisputeClosed` | Stripe closed a dispute | `dispute_id, status, stripe_event, at` |
//!
//! ## Door
//!
//! | event | when | fields |
//! |---|---|---|
//! | `DoorRegistered` | a door is added | `door_uid, lock_id, name, location, time_zone, price, access_minutes, actor, at` |
//! | `DoorDetailsChanged` | name, location, time zone or duration changed | `name, location, time_zone, access_minutes, actor, at` (values after) |
//! | `DoorPriceChanged` | the price for new checkouts changed | `previous_price, price, actor, at` |
//! | `DoorMaintenanceStarted` / `DoorMaintenanceEnded` | status set to maintenance / active | `reason, actor, at` |
//! | `PassageModeObserved` | TTLock reported a different passage mode | `enabled, at` |
//! | `AccessCodeRequested` | first request of a payment's code | `payment_id, access_minutes, at` |
//! | `AccessCodeIssued` | TTLock created the code | `payment_id, attempt, passcode_id, code, valid_from, valid_to, remotely_revocable, at` |
//! | `AccessCodeIssueFailed` | an issue attempt failed | `payment_id, attempt, reason, retryable, at` |
//! | `AccessCodeRevoked` | code deleted, or revoked before one existed (`passcode_id` null) | `payment_id, passcode_id?, reason, actor, at` |
//! | `AccessCodeRevocationPending` | deleting failed; retried later | `payment_id, passcode_id, reason, attempt, error, actor, at` |
//! | `AccessCodeExpired` | housekeeping found the window over | `payment_id, passcode_id, valid_to, at` |
//!
//! ## Device
//!
//! | event | when | fields |
//! |---|---|---|
//! | `DeviceRegistered` | a device is added | `device_uid, name, location, time_zone, shelly_device_id, shelly_channel, plans [{plan_id, name, minutes, price}], actor, at` |
//! | `DeviceDetailsChanged` | any detail changed | `name, location, time_zone, shelly_device_id, shelly_channel, actor, at` (values after) |
//! | `DevicePlansChanged` | the plan list changed | `plans, actor, at` |
//! | `DeviceMaintenanceStarted` / `DeviceMaintenanceEnded` | status set to maintenance / active | `reason, actor, at` |
//! | `DeviceReserved` | a session now holds the relay (free device, or promoted from the queue) | `session_id, payment_id, from_queue, at` |
//! | `DeviceReservationQueued` | the device is busy; the session waits | `session_id, payment_id, position, at` |
//! | `DeviceReleased` | the holding session ended | `session_id, at` |
//! | `QueuedSessionWithdrawn` | a queued session left before its turn | `session_id, at` |
//! | `RelaySwitched` | relay switched by hand or by a reconciler sweep | `on, is_on, reason, actor, at` |
//!
//! ## DeviceSession
//!
//! | event | when | fields |
//! |---|---|---|
//! | `SessionQueued` | created while the device is busy | `terms {session_id, payment_id, device_uid, relay {shelly_device_id, channel}, plan_id, plan_minutes, grace_seconds}, at` |
//! | `SessionOpened` | holds the device (created so, or promoted); grace starts | `terms, grace_ends_at, at` |
//! | `RelayOnRequested` | ON sent (audit `shelly_on_*` follows) | `attempt, auto_off_seconds, at` |
//! | `RelayOnSucceeded` | relay confirmed ON (`shelly_on_success`) | `attempt, at` |
//! | `RelayOnFailed` | ON failed (`shelly_on_failed`) | `attempt, error, retryable, at` |
//! | `SessionActivated` | first ON confirmation; the countdown starts | `started_at, ends_at` |
//! | `SessionFinishing` | time is up; OFF follows | `at` |
//! | `RelayOffRequested` | OFF sent | `attempt, at` |
//! | `RelayOffSucceeded` | relay confirmed OFF (`shelly_off_success`) | `attempt, at` |
//! | `RelayOffFailed` | OFF failed (`shelly_off_failed`); still finishing | `attempt, error, retryable, at` |
//! | `RelayStateObserved` | a status read differs from the last known state | `is_on, at` |
//! | `SessionCompleted` | OFF confirmed after the time was up | `at` |
//! | `SessionCancelled` | never started (grace over, payment gone) | `reason, at` |
//! | `SessionFailed` | never started: the relay refused for good | `reason, at` |
//! | `SessionForceEnded` | ended early by someone | `reason, actor, at` |

pub mod actor;
pub mod device;
pub mod door;
pub mod money;
pub mod payment;
pub mod planted;
pub mod session;
pub mod upcast;

#[cfg(test)]
mod golden;

#[cfg(any(test, feature = "testing"))]
mod fake;
#[cfg(test)]
mod test_support;

pub use actor::Actor;
pub use money::{Currency, InvalidCurrency, MajorAmountError, MinorUnits, Money};

/// The version every event has today. A changed event shape gets a new version and an
/// upcaster in the application; stored events are never edited.
pub const EVENT_VERSION: &str = "1";
