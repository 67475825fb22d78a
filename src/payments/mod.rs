//! The application side of payments: starting a checkout, the guest's capability token,
//! and finding which payment a Stripe object belongs to.

pub mod checkout;
pub mod refs;
pub mod stripe_facts;
pub mod tokens;
