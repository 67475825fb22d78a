//! **Device** (`TYPE = "Device"`, id = the device uid): a Shelly-switched device, its usage
//! plans, maintenance, and the one session holding its relay plus the queue behind it.

mod aggregate;
pub mod commands;
pub mod error;
pub mod events;
pub mod services;

#[cfg(test)]
mod tests;

pub use aggregate::{Device, MANUAL_ON_AUTO_OFF_SECONDS, MAX_PLANS, MAX_QUEUE_LENGTH};
pub use commands::DeviceCommand;
pub use error::DeviceError;
pub use events::{DeviceEvent, DeviceStatus, UsagePlan};
pub use services::DeviceServices;
