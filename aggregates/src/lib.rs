//! WIP
pub mod actor;
pub mod device;
pub mod door;
#[cfg(any(test, feature = "testing"))]
mod fake;
pub mod money;
pub mod payment;
pub mod session;

pub use actor::Actor;
pub use money::{Currency, Money};

/// The version every event has today.
pub const EVENT_VERSION: &str = "1";
#[cfg(test)]
mod test_support;
