//! **Payment** (`TYPE = "Payment"`, id = our payment UUID): one guest payment for a door or
//! a device plan, from checkout to its last refund.
//!
//! Statuses: `pending → authorized → succeeded → partially_refunded → refunded`, or
//! `failed`, `cancelled`, `expired`. The price is locked by `CheckoutStarted`. Stripe's
//! facts may arrive in any order, any number of times; the aggregate converges to the same
//! status and totals whatever the order (see `aggregate.rs` for how).

mod aggregate;
pub mod commands;
pub mod error;
pub mod events;
pub mod refunds;
pub mod services;

#[cfg(test)]
mod capture_tests;
#[cfg(test)]
mod money_fact_tests;
#[cfg(test)]
mod refund_tests;
#[cfg(test)]
mod tests;

pub use aggregate::{AmountMismatch, Payment};
pub use commands::{PaymentCommand, RefundSubmissionOutcome, StripeAnswer};
pub use error::PaymentError;
pub use events::{
    AmountMismatchDirection, DisputeUpdate, LockedOffer, PaymentEvent, PaymentKind, PaymentStatus,
    PaymentTarget, StripeEventRef, StripeReport,
};
pub use refunds::RefundStatus;
pub use services::{PaymentGateway, PaymentServices};
