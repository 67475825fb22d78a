//! Login rate limiting: failed passwords and codes are counted per account and per
//! client address within a sliding window; at the limit, logins are refused (even with
//! the right password) until the oldest failure in the window ages out.

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

/// The counters one attempt counts against, each with its limit.
fn scopes(
    settings: &AccountSettings,
    email: &str,
    address: Option<std::net::IpAddr>,
) -> Vec<(String, u32)> {
    let mut scopes = vec![(
        format!("account:{}", email.trim().to_lowercase()),
        settings.max_failures_per_account,
    )];
    if let Some(ip) = address {
        scopes.push((format!("address:{ip}"), settings.max_failures_per_address));
    }
    scopes
}

/// `Some` when any scope of this attempt is at its limit.
pub async fn check(
    database: &Database,
    settings: &AccountSettings,
    email: &str,
    address: Option<std::net::IpAddr>,
) -> StoreResult<Option<Limited>> {
    let since = now_ms() - millis(settings.failure_window);
    let mut retry_at: Option<i64> = None;
    for (scope, limit) in scopes(settings, email, address) {
        let limit = i64::from(limit.max(1));
        // The failure whose ageing-out brings the count below the limit.
        let sql = "SELECT at_ms FROM login_failures WHERE scope = $1 AND at_ms > $2 \
                   ORDER BY at_ms DESC LIMIT 1 OFFSET $3";
        let nth: Option<i64> = on_pool!(database, pool => {
            sqlx::query_scalar(sql).bind(&scope).bind(since).bind(limit - 1).fetch_optional(pool).await
        })?;
        if let Some(at) = nth {
            let until = at + millis(settings.failure_window);
            retry_at = Some(retry_at.map_or(until, |current| current.max(until)));
        }
    }
    Ok(retry_at.map(|retry_at_ms| Limited { retry_at_ms }))
}

/// Counts one failed password or code against the account and the address.
pub async fn record_failure(
    database: &Database,
    settings: &AccountSettings,
    email: &str,
    address: Option<std::net::IpAddr>,
) -> StoreResult<()> {
    let now = now_ms();
    for (scope, _) in scopes(settings, email, address) {
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
