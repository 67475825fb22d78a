//! Shelly relay client (see `reference/shelly.md`): Shelly Cloud Control API v2 for
//! devices reached through the cloud, local Gen2 JSON-RPC for devices with a LAN address.
//!
//! - [`config`]: [`ShellyConfig`], [`ShellyCloudConfig`], [`ShellyTarget`].
//! - [`client`]: [`ShellyClient`]: `switch` (ON always arms the device's own auto-off)
//!   and `status`; a lost answer is settled by reading the relay back.
//! - [`rate_limit`]: the process-wide pacer for the cloud's ~1 request/second limit.
//! - `cloud`, `local`: the two wire protocols. [`error`]: [`ShellyError`].

pub mod client;
mod cloud;
pub mod config;
pub mod error;
pub mod gateway;
mod local;
pub mod rate_limit;
pub mod types;

pub use client::ShellyClient;
pub use config::{ShellyCloudConfig, ShellyConfig, ShellyTarget};
pub use error::ShellyError;
pub use types::{Confirmation, RelayCommand, RelayStatus, SwitchOutcome};
