//! Configuration of the Shelly client. The app builds the cloud part from
//! `SHELLY_AUTH_KEY` and `SHELLY_SERVER`; devices with a LAN address need no credentials.

use secrecy::SecretString;
use url::Url;

/// Shelly Cloud allows "1 request per second" per account; 1.1 s between our requests
/// keeps network jitter from squeezing two of them into one server-side second.
pub const DEFAULT_CLOUD_INTERVAL_MS: u64 = 1_100;
/// The cloud forwards commands to the device and waits for it; a few seconds is normal.
pub const DEFAULT_CLOUD_TIMEOUT_MS: u64 = 10_000;
/// After an over-limit answer, wait this long before the next request: longer than the
/// pacing interval, so whoever else shares the key gets its second too.
pub const DEFAULT_OVER_LIMIT_BACKOFF_MS: u64 = 2_000;
/// Over-limit answers tolerated per call before giving up with `RateLimited`.
pub const DEFAULT_OVER_LIMIT_RETRIES_MAX: u32 = 3;
/// Calls allowed to wait for the pacer; at 1.1 s each this is about 18 minutes of
/// backlog, past which callers get `QueueFull` instead of waiting without bound.
pub const DEFAULT_QUEUE_MAX: usize = 1_000;
/// Devices on the LAN answer in milliseconds; seconds means unreachable.
pub const DEFAULT_LOCAL_TIMEOUT_MS: u64 = 5_000;
/// Added to the session's remaining time when arming the device's auto-off: the timer
/// must not cut a session short because clocks or delivery drift; our own OFF command
/// normally arrives first.
pub const DEFAULT_AUTO_OFF_MARGIN_S: u64 = 60;
/// Pause before reading a relay back after a lost answer, so a command still in flight
/// through the cloud has landed.
pub const DEFAULT_READBACK_DELAY_MS: u64 = 1_000;

/// How to reach one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShellyTarget {
    /// Through Shelly Cloud, by the 12-hex-digit device id from the app.
    Cloud { device_id: String },
    /// Directly over the LAN (Gen2+ RPC), e.g. `http://192.168.1.50`.
    Local { base_url: Url },
}

impl ShellyTarget {
    /// How errors and logs name the device.
    pub fn label(&self) -> String {
        match self {
            Self::Cloud { device_id } => device_id.clone(),
            Self::Local { base_url } => base_url.to_string(),
        }
    }
}

/// Everything the Shelly client needs.
#[derive(Debug, Clone)]
pub struct ShellyConfig {
    /// `None` when `SHELLY_AUTH_KEY`/`SHELLY_SERVER` are unset; local devices still work.
    pub cloud: Option<ShellyCloudConfig>,
    pub local_timeout_ms: u64,
    pub auto_off_margin_s: u64,
    pub readback_delay_ms: u64,
    /// Where LAN devices may be called (`LATCHKEY_DEVICE_NETWORKS`); private ranges by
    /// default, never loopback unless named.
    pub device_networks: crate::net_policy::DeviceNetworks,
}

impl ShellyConfig {
    pub fn new(cloud: Option<ShellyCloudConfig>) -> Self {
        Self {
            cloud,
            local_timeout_ms: DEFAULT_LOCAL_TIMEOUT_MS,
            auto_off_margin_s: DEFAULT_AUTO_OFF_MARGIN_S,
            readback_delay_ms: DEFAULT_READBACK_DELAY_MS,
            device_networks: crate::net_policy::DeviceNetworks::default(),
        }
    }
}

/// Shelly Cloud access. `Debug` is derived: the key prints as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct ShellyCloudConfig {
    /// `SHELLY_SERVER`, e.g. `https://shelly-38-eu.shelly.cloud`.
    pub server: Url,
    /// `SHELLY_AUTH_KEY`; whoever holds it controls every device of the account.
    pub auth_key: SecretString,
    pub timeout_ms: u64,
    /// Minimum spacing between two requests from this process.
    pub min_interval_ms: u64,
    pub over_limit_backoff_ms: u64,
    pub over_limit_retries_max: u32,
    pub queue_max: usize,
}

impl ShellyCloudConfig {
    pub fn new(server: Url, auth_key: SecretString) -> Self {
        Self {
            server,
            auth_key,
            timeout_ms: DEFAULT_CLOUD_TIMEOUT_MS,
            min_interval_ms: DEFAULT_CLOUD_INTERVAL_MS,
            over_limit_backoff_ms: DEFAULT_OVER_LIMIT_BACKOFF_MS,
            over_limit_retries_max: DEFAULT_OVER_LIMIT_RETRIES_MAX,
            queue_max: DEFAULT_QUEUE_MAX,
        }
    }
}
