//! What the Shelly simulator accepts and how it behaves on the reference's unconfirmed
//! points.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::sim::env_or;

/// How the cloud answers a request over its rate limit. Sources disagree (reference §2):
/// node-red-contrib-shelly saw HTTP 401, mdon/shelly HTTP 429, other code a v1 envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverLimitAnswer {
    /// HTTP 401 with `{}`: indistinguishable from a bad key.
    Http401,
    /// HTTP 429 with `{"error":"TOO_MANY_REQUESTS"}`.
    Http429,
    /// HTTP 200 with `{"isok":false,"errors":{"max_req":"Request limit reached!"}}`.
    MaxReq,
}

/// A simulated device.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SimDeviceSpec {
    /// Cloud device id (12 lower-case hex digits).
    pub id: String,
    /// Relay outputs (`switch:0` …).
    pub channels: u32,
    /// Model code reported by the cloud (e.g. `SNPL-00112EU`).
    #[serde(default = "default_code")]
    pub code: String,
    /// Device-side `auto_off` config (Gen2 `auto_off_delay`), seconds; `None` = disabled.
    #[serde(default)]
    pub auto_off_delay_s: Option<u64>,
}

fn default_code() -> String {
    "SNSW-001X16EU".into()
}

#[derive(Debug, Clone)]
pub struct ShellySimConfig {
    /// The accepted `SHELLY_AUTH_KEY`.
    pub auth_key: SecretString,
    /// Minimum spacing between accepted cloud requests (Shelly: one per second).
    pub rate_limit_interval_ms: u64,
    pub over_limit_answer: OverLimitAnswer,
    /// Whether an ON sent to a relay that is already ON with a running timer restarts
    /// the timer with the new `toggle_after` (Gen1 does; Gen2/cloud unconfirmed).
    pub repeated_on_restarts_timer: bool,
    /// How long a request whose answer is dropped (or sent to an offline LAN device) is
    /// held open.
    pub drop_hold_ms: u64,
    pub devices: Vec<SimDeviceSpec>,
}

impl Default for ShellySimConfig {
    fn default() -> Self {
        Self {
            auth_key: SecretString::from("latchkey-demo-shelly-key"),
            rate_limit_interval_ms: 1_000,
            over_limit_answer: OverLimitAnswer::Http401,
            repeated_on_restarts_timer: true,
            drop_hold_ms: 30_000,
            devices: vec![
                SimDeviceSpec {
                    id: "3c61052d7e90".into(),
                    channels: 1,
                    code: "SNPL-00112EU".into(),
                    auto_off_delay_s: None,
                },
                SimDeviceSpec {
                    id: "a8032ab1c2d3".into(),
                    channels: 2,
                    code: "SNSW-102P16EU".into(),
                    auto_off_delay_s: None,
                },
            ],
        }
    }
}

impl ShellySimConfig {
    /// Defaults, with the auth key from `SHELLY_AUTH_KEY` when set.
    pub fn from_env() -> Self {
        Self {
            auth_key: SecretString::from(env_or("SHELLY_AUTH_KEY", "latchkey-demo-shelly-key")),
            ..Self::default()
        }
    }
}
