//! Operator accounts (issue 9): users with roles, argon2id passwords, TOTP second factor
//! with backup codes, database-held dashboard sessions with CSRF tokens, login rate
//! limiting and per-user API tokens.
//!
//! Everything here is storage and rules; the pages live in `crate::ui::account` and the
//! JSON API's authentication in `crate::http::auth`. Times are unix milliseconds.

pub mod password;
pub mod rate_limit;
pub mod resets;
pub mod sessions;
pub mod tokens;
pub mod totp;
pub mod users;

use std::time::Duration;

pub use sessions::{LoginSession, SessionStage};
pub use users::User;

/// Session and rate-limit knobs (from the environment; tests shorten them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSettings {
    /// A session unused for this long ends.
    pub session_idle: Duration,
    /// A session ends this long after login, used or not.
    pub session_lifetime: Duration,
    /// Failed logins per account within `failure_window` before each further try must
    /// wait (1 s after the last failure, doubling per failure, at most
    /// `account_backoff_max`): guessing slows to a crawl, but the account's owner is
    /// never locked out for longer than that.
    pub max_failures_per_account: u32,
    pub account_backoff_max: Duration,
    /// Failed logins per client address within `failure_window`.
    pub max_failures_per_address: u32,
    pub failure_window: Duration,
}

impl Default for AccountSettings {
    fn default() -> Self {
        AccountSettings {
            session_idle: Duration::from_secs(30 * 60),
            session_lifetime: Duration::from_secs(12 * 60 * 60),
            max_failures_per_account: 10,
            account_backoff_max: Duration::from_secs(60),
            max_failures_per_address: 30,
            failure_window: Duration::from_secs(15 * 60),
        }
    }
}

/// The storage error of this module: database trouble, never user input.
pub type StoreResult<T> = Result<T, sqlx::Error>;

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// `n` random bytes from the OS-seeded generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut bytes = [0_u8; N];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// SHA-256 of a secret, hex: what the tables keep instead of session ids, tokens and
/// backup codes (all high-entropy, so a fast hash suffices).
pub fn secret_hash(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Milliseconds of a duration, saturating.
pub fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
