//! Configuration of the TTLock client. The app builds it from `TTLOCK_CLIENT_ID`,
//! `TTLOCK_CLIENT_SECRET`, `TTLOCK_USERNAME`, `TTLOCK_PASSWORD` and `TTLOCK_API_BASE`.

use secrecy::SecretString;
use url::Url;

/// The documented host for accounts outside mainland China.
pub const DEFAULT_API_BASE: &str = "https://euapi.ttlock.com";

/// Gateway writes are synchronous on TTLock's side and take seconds (the cloud waits for
/// the gateway to talk to the lock over Bluetooth), so the default leaves room for them.
pub const DEFAULT_TIMEOUT_MS: u64 = 20_000;

/// Everything the TTLock client needs. `Debug` is derived: `SecretString` prints as
/// `[REDACTED]`, so logging the config never leaks the secret or the password.
#[derive(Debug, Clone)]
pub struct TtlockConfig {
    /// `TTLOCK_API_BASE`; `https://euapi.ttlock.com` unless the account is in China.
    pub api_base: Url,
    /// The developer application's id (`TTLOCK_CLIENT_ID`).
    pub client_id: String,
    /// The developer application's secret (`TTLOCK_CLIENT_SECRET`).
    pub client_secret: SecretString,
    /// The TTLock **app** account that administers the locks (`TTLOCK_USERNAME`).
    pub username: String,
    /// That account's plain password (`TTLOCK_PASSWORD`); the client sends its MD5 as the
    /// API requires and never sends or logs it in clear.
    pub password: SecretString,
    /// Upper bound on each HTTP exchange with TTLock, connection included.
    pub timeout_ms: u64,
}

impl TtlockConfig {
    /// A config with the default timeout.
    pub fn new(
        api_base: Url,
        client_id: impl Into<String>,
        client_secret: SecretString,
        username: impl Into<String>,
        password: SecretString,
    ) -> Self {
        Self {
            api_base,
            client_id: client_id.into(),
            client_secret,
            username: username.into(),
            password,
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}
