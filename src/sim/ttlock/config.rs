//! What the TTLock simulator accepts and how it behaves on the reference's unconfirmed
//! points.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::sim::env_or;

/// A lock the simulated account administers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SimLockSpec {
    pub lock_id: i64,
    pub alias: String,
    /// With a gateway, custom passcodes can be written and deleted remotely.
    pub has_gateway: bool,
}

#[derive(Debug, Clone)]
pub struct TtlockSimConfig {
    /// Accepted credentials (the same variables the client reads).
    pub client_id: String,
    pub client_secret: SecretString,
    pub username: String,
    /// Plain password; the simulator expects its MD5 on the wire.
    pub password: SecretString,
    /// `expires_in` of issued access tokens (TTLock: 90 days). Small values let tests
    /// watch the client refresh before expiry.
    pub token_lifetime_s: u64,
    /// Whether a refresh returns a new refresh token and revokes the old one
    /// (unconfirmed; the documentation's example returns the same value).
    pub rotate_refresh_token: bool,
    /// How far `date` may be from the simulator's clock (TTLock: 5 minutes, else 80000).
    pub date_tolerance_ms: i64,
    /// Offset of the lock's time zone used to cut random-code windows to whole hours
    /// (unconfirmed whether TTLock cuts in the lock's zone or in UTC); 0 = UTC.
    pub hour_truncation_offset_minutes: i32,
    /// Whether deleting a *random* code through the gateway (`deleteType=2`) makes the
    /// lock refuse it (unconfirmed). Default false: assume it keeps working.
    pub random_delete_via_gateway_revokes: bool,
    /// Custom passcodes per lock before -3009 (current documentation: 250).
    pub custom_passcode_capacity: usize,
    /// How long a request whose answer is dropped is held open.
    pub drop_hold_ms: u64,
    pub locks: Vec<SimLockSpec>,
}

impl Default for TtlockSimConfig {
    fn default() -> Self {
        Self {
            client_id: "latchkey-demo-client".into(),
            client_secret: SecretString::from("latchkey-demo-secret"),
            username: "demo@latchkey.test".into(),
            password: SecretString::from("latchkey-demo-password"),
            token_lifetime_s: 7_776_000,
            rotate_refresh_token: false,
            date_tolerance_ms: 5 * 60 * 1000,
            hour_truncation_offset_minutes: 0,
            random_delete_via_gateway_revokes: false,
            custom_passcode_capacity: 250,
            drop_hold_ms: 30_000,
            locks: vec![
                SimLockSpec {
                    lock_id: 4_410_021,
                    alias: "Room 12".into(),
                    has_gateway: true,
                },
                SimLockSpec {
                    lock_id: 4_410_022,
                    alias: "Garden gate".into(),
                    has_gateway: false,
                },
            ],
        }
    }
}

impl TtlockSimConfig {
    /// Defaults, with the credentials taken from `TTLOCK_CLIENT_ID`,
    /// `TTLOCK_CLIENT_SECRET`, `TTLOCK_USERNAME` and `TTLOCK_PASSWORD` when set, so
    /// `latchkey sim ttlock` accepts whatever the app is configured with.
    pub fn from_env() -> Self {
        let defaults = Self::default();
        Self {
            client_id: env_or("TTLOCK_CLIENT_ID", &defaults.client_id),
            client_secret: SecretString::from(env_or(
                "TTLOCK_CLIENT_SECRET",
                "latchkey-demo-secret",
            )),
            username: env_or("TTLOCK_USERNAME", &defaults.username),
            password: SecretString::from(env_or("TTLOCK_PASSWORD", "latchkey-demo-password")),
            ..defaults
        }
    }
}
