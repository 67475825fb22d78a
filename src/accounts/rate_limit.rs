//! Login rate limiting. Failed passwords and codes are counted per client address and per
//! account within a sliding window:
//! - an address at its limit is refused until its oldest failure ages out (a flood from
//!   one place stops; behind a proxy the address is the client's, see
//!   `crate::net_policy::TrustedProxies`);
//! - an account past its free failures slows down instead (exponential backoff from the
//!   last failure, capped), so an attacker spraying one account gets a guess a minute at
//!   most while the right password still works within that minute — nobody can lock an
//!   operator out by failing on purpose.

use crate::on_pool;
use crate::store::Database;

use super::{millis, now_ms, AccountSettings, StoreResult};

/// A login refused for too many failures, and when the next try is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    pub retry_at_ms: i64,
}

impl Limited {
    /// Whole seconds until the next try (at least 1).
    pub fn retry_after_seconds(&self, now: i64) -> i64 {
        ((self.retry_at_ms - now + 999) / 1000).max(1)
    }
}

fn account_scope(email: &str) -> String {
    format!("account:{}", email.trim().to_lowercase())
}

fn address_scope(ip: std::net::IpAddr) -> String {
    format!("address:{ip}")
}

/// `Some` when this attempt must wait: its address is at its limit, or its account is
/// within its backoff.
pub async fn check(
    database: &Database,
    settings: &AccountSettings,
    email: &str,
    address: Option<std::net::IpAddr>,
) -> StoreResult<Option<Limited>> {
    let now = now_ms();
    let since = now - millis(settings.failure_window);
    let mut retry_at: Option<i64> = None;
    if let Some(ip) = address {
        let limit = i64::from(settings.max_failures_per_address.max(1));
        // The failure whose ageing-out brings the count below the limit.
        let sql = "SELECT at_ms FROM login_failures WHERE scope = $1 AND at_ms > $2 \
                   ORDER BY at_ms DESC LIMIT 1 OFFSET $3";
        let nth: Option<i64> = on_pool!(database, pool => {
            sqlx::query_scalar(sql).bind(address_scope(ip)).bind(since).bind(limit - 1).fetch_optional(pool).await
        })?;
        retry_at = nth.map(|at| at + millis(settings.failure_window));
    }
    let sql = "SELECT COUNT(*), MAX(at_ms) FROM login_failures WHERE scope = $1 AND at_ms > $2";
    let (failures, last): (i64, Option<i64>) = on_pool!(database, pool => {
        sqlx::query_as(sql).bind(account_scope(email)).bind(since).fetch_one(pool).await
    })?;
    let free = i64::from(settings.max_failures_per_account);
    if let (Some(last), true) = (last, failures >= free) {
        let doublings = u32::try_from(failures - free).unwrap_or(u32::MAX).min(30);
        let backoff_ms = 1000_i64
            .saturating_mul(1 << doublings)
            .min(millis(settings.account_backoff_max));
        let until = last + backoff_ms;
        if until > now {
            retry_at = Some(retry_at.map_or(until, |current| current.max(until)));
        }
    }
    Ok(retry_at
        .filter(|at| *at > now)
        .map(|retry_at_ms| Limited { retry_at_ms }))
}

/// Counts one failed password or code against the account and the address.
pub async fn record_failure(
    database: &Database,
    settings: &AccountSettings,
    email: &str,
    address: Option<std::net::IpAddr>,
) -> StoreResult<()> {
    let now = now_ms();
    let mut scopes = vec![account_scope(email)];
    scopes.extend(address.map(address_scope));
    for scope in scopes {
        let sql = "INSERT INTO login_failures (scope, at_ms) VALUES ($1, $2)";
        on_pool!(database, pool => sqlx::query(sql).bind(&scope).bind(now).execute(pool).await.map(|done| done.rows_affected()))?;
    }
    // Old rows only cost space; drop them as we go.
    let sql = "DELETE FROM login_failures WHERE at_ms < $1";
    let horizon = now - millis(settings.failure_window) * 2;
    on_pool!(database, pool => sqlx::query(sql).bind(horizon).execute(pool).await.map(|done| done.rows_affected()))?;
    tracing::warn!(
        address = address.map(|ip| ip.to_string()).unwrap_or_default(),
        "failed login attempt"
    );
    Ok(())
}
