//! Rate limits for the pages that send mail to an address a stranger types: "lost your
//! link?" (guests) and "forgot password" (operators). Without them either page is a way
//! to flood someone's inbox from our server, or to hammer it to learn which addresses we
//! know (the answers are the same either way, but the mail is not).
//!
//! Each request that gets through is counted twice, against the typed address and against
//! the client's address, in `mail_requests`, within a sliding window; at either limit the
//! request is refused (429) without being counted, so a flood never extends its own ban.
//! The counts do not depend on whether the address is known, so a refusal tells nothing
//! about it either.

use std::net::IpAddr;
use std::time::Duration;

use crate::on_pool;
use crate::store::Database;

/// How many requests one purpose allows per typed address and per client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests per typed email within `window`: enough to retry after a typo in a spam
    /// filter, too few to flood an inbox.
    pub per_email: i64,
    /// Requests per client address within `window`: a family at one hotel's Wi-Fi, not a
    /// script trying addresses.
    pub per_address: i64,
    pub window: Duration,
}

/// "Lost your link?": 3 per email and 10 per client address per hour.
pub const LOST_LINK: Limits = Limits {
    per_email: 3,
    per_address: 10,
    window: Duration::from_secs(3600),
};

/// "Forgot password": 3 per email and 10 per client address per hour.
pub const PASSWORD_RESET: Limits = Limits {
    per_email: 3,
    per_address: 10,
    window: Duration::from_secs(3600),
};

/// Longer than every purpose's window: rows older than this are deleted.
const HORIZON_MS: i64 = 24 * 3600 * 1000;

fn email_scope(purpose: &str, email: &str) -> String {
    format!("{purpose}:email:{}", email.trim().to_lowercase())
}

fn address_scope(purpose: &str, address: IpAddr) -> String {
    format!("{purpose}:address:{address}")
}

/// Counts this request and returns true, or returns false (not counted) when the typed
/// address or the client's address is at its limit.
pub async fn admit(
    database: &Database,
    purpose: &str,
    limits: Limits,
    email: &str,
    address: Option<IpAddr>,
    now_ms: i64,
) -> Result<bool, sqlx::Error> {
    let since = now_ms - i64::try_from(limits.window.as_millis()).unwrap_or(i64::MAX);
    let mut scopes = vec![(email_scope(purpose, email), limits.per_email)];
    scopes.extend(address.map(|ip| (address_scope(purpose, ip), limits.per_address)));
    for (scope, limit) in &scopes {
        let sql = "SELECT COUNT(*) FROM mail_requests WHERE scope = $1 AND at_ms > $2";
        let count: i64 = on_pool!(database, pool => {
            sqlx::query_scalar(sql).bind(scope).bind(since).fetch_one(pool).await
        })?;
        if count >= *limit {
            tracing::warn!(purpose, scope = %scope, "mail request refused: at its limit");
            return Ok(false);
        }
    }
    for (scope, _) in &scopes {
        let sql = "INSERT INTO mail_requests (scope, at_ms) VALUES ($1, $2)";
        on_pool!(database, pool => {
            sqlx::query(sql).bind(scope).bind(now_ms).execute(pool).await.map(|_| ())
        })?;
    }
    // Rows older than any window only cost space; drop them as we go.
    let sql = "DELETE FROM mail_requests WHERE at_ms <= $1";
    on_pool!(database, pool => {
        sqlx::query(sql).bind(now_ms - HORIZON_MS).execute(pool).await.map(|_| ())
    })?;
    Ok(true)
}
