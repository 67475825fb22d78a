//! Dashboard sessions: a random 256-bit id in an HttpOnly, SameSite=Strict cookie; the
//! table keeps only its SHA-256, the user, the login stage and the session's CSRF token.
//! A session ends after `session_idle` unused or `session_lifetime` after login.

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};

use crate::on_pool;
use crate::store::Database;

use super::{millis, now_ms, random_bytes, secret_hash, AccountSettings, StoreResult};

/// The cookie that carries the session id.
pub const COOKIE_NAME: &str = "latchkey_session";

/// How far into its login a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionStage {
    /// The password was right; the second factor is outstanding.
    Code,
    /// Logged in.
    Full,
}

impl SessionStage {
    fn as_str(self) -> &'static str {
        match self {
            SessionStage::Code => "code",
            SessionStage::Full => "full",
        }
    }
}

/// One stored session.
#[derive(Clone, Debug)]
pub struct LoginSession {
    pub session_hash: String,
    pub user_id: String,
    pub stage: SessionStage,
    pub csrf_token: String,
    pub created_ms: i64,
    pub last_seen_ms: i64,
}

impl LoginSession {
    /// Whether the session is still within both its idle timeout and its lifetime.
    pub fn is_live(&self, settings: &AccountSettings, now: i64) -> bool {
        now - self.last_seen_ms < millis(settings.session_idle)
            && now - self.created_ms < millis(settings.session_lifetime)
    }
}

/// Starts a session; returns the cookie value (shown to the browser only) and the row.
pub async fn create(
    database: &Database,
    user_id: &str,
    stage: SessionStage,
) -> StoreResult<(String, LoginSession)> {
    let id = hex::encode(random_bytes::<32>());
    let session = LoginSession {
        session_hash: secret_hash(&id),
        user_id: user_id.to_string(),
        stage,
        csrf_token: hex::encode(random_bytes::<32>()),
        created_ms: now_ms(),
        last_seen_ms: now_ms(),
    };
    let sql = "INSERT INTO user_sessions (session_hash, user_id, stage, csrf_token, created_ms, \
               last_seen_ms) VALUES ($1, $2, $3, $4, $5, $6)";
    on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(&session.session_hash)
            .bind(&session.user_id)
            .bind(stage.as_str())
            .bind(&session.csrf_token)
            .bind(session.created_ms)
            .bind(session.last_seen_ms)
            .execute(pool)
            .await.map(|done| done.rows_affected())
    })?;
    tracing::info!(user_id, stage = stage.as_str(), "session started");
    Ok((id, session))
}

/// The live session a cookie value names, touched as used; an expired one is deleted.
pub async fn lookup(
    database: &Database,
    settings: &AccountSettings,
    cookie_value: &str,
) -> StoreResult<Option<LoginSession>> {
    let hash = secret_hash(cookie_value);
    let sql = "SELECT user_id, stage, csrf_token, created_ms, last_seen_ms FROM user_sessions \
               WHERE session_hash = $1";
    let row: Option<(String, String, String, i64, i64)> = on_pool!(database, pool => {
        sqlx::query_as(sql).bind(&hash).fetch_optional(pool).await
    })?;
    let Some((user_id, stage, csrf_token, created_ms, last_seen_ms)) = row else {
        return Ok(None);
    };
    let stage = if stage == "full" {
        SessionStage::Full
    } else {
        SessionStage::Code
    };
    let mut session = LoginSession {
        session_hash: hash,
        user_id,
        stage,
        csrf_token,
        created_ms,
        last_seen_ms,
    };
    let now = now_ms();
    if !session.is_live(settings, now) {
        delete(database, &session.session_hash).await?;
        tracing::info!(user_id = session.user_id, "session expired");
        return Ok(None);
    }
    // Writing on every request would make each page view a write; a fraction of the idle
    // timeout is precise enough.
    if now - session.last_seen_ms >= touch_interval(settings) {
        let sql = "UPDATE user_sessions SET last_seen_ms = $1 WHERE session_hash = $2";
        on_pool!(database, pool => {
            sqlx::query(sql).bind(now).bind(&session.session_hash).execute(pool).await.map(|done| done.rows_affected())
        })?;
        session.last_seen_ms = now;
    }
    Ok(Some(session))
}

fn touch_interval(settings: &AccountSettings) -> i64 {
    (millis(settings.session_idle) / 10).min(60_000)
}

/// Ends one session.
pub async fn delete(database: &Database, session_hash: &str) -> StoreResult<()> {
    let sql = "DELETE FROM user_sessions WHERE session_hash = $1";
    on_pool!(database, pool => sqlx::query(sql).bind(session_hash).execute(pool).await.map(|done| done.rows_affected()))?;
    Ok(())
}

/// Ends every session of a user ("log out everywhere", deactivation, 2FA reset).
pub async fn delete_all_for_user(database: &Database, user_id: &str) -> StoreResult<u64> {
    let sql = "DELETE FROM user_sessions WHERE user_id = $1";
    let ended = on_pool!(database, pool => {
        sqlx::query(sql).bind(user_id).execute(pool).await.map(|done| done.rows_affected())
    })?;
    tracing::info!(user_id, ended, "all sessions of a user ended");
    Ok(ended)
}

/// Ends every session of a user but `keep` (a password change: whoever else was logged in
/// with the old password is logged out; the person who changed it stays).
pub async fn delete_others_for_user(
    database: &Database,
    user_id: &str,
    keep_session_hash: &str,
) -> StoreResult<u64> {
    let sql = "DELETE FROM user_sessions WHERE user_id = $1 AND session_hash <> $2";
    let ended = on_pool!(database, pool => {
        sqlx::query(sql).bind(user_id).bind(keep_session_hash).execute(pool).await.map(|done| done.rows_affected())
    })?;
    tracing::info!(user_id, ended, "other sessions of a user ended");
    Ok(ended)
}

/// The session id from the request's `Cookie` header(s), if any.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    read_cookie(headers, COOKIE_NAME)
}

/// One cookie's value from the request's `Cookie` header(s).
pub fn read_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// `Set-Cookie` for a cookie only this site's requests carry: HttpOnly, SameSite=Strict,
/// path `/`, Secure when the public URL is https. `None` as value clears it.
pub fn set_cookie(
    name: &str,
    value: Option<&str>,
    secure: bool,
) -> (axum::http::HeaderName, HeaderValue) {
    let mut cookie = match value {
        Some(value) => format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict"),
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    };
    if secure {
        cookie.push_str("; Secure");
    }
    let value = HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""));
    (SET_COOKIE, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=1; latchkey_session=abc"),
        );
        assert_eq!(cookie_value(&headers).as_deref(), Some("abc"));
        headers.clear();
        headers.append(COOKIE, HeaderValue::from_static("latchkey_session="));
        assert_eq!(cookie_value(&headers), None);
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_on_https() {
        let (_, plain) = set_cookie(COOKIE_NAME, Some("x"), false);
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(!plain.contains("Secure"));
        let (_, secure) = set_cookie(COOKIE_NAME, Some("x"), true);
        assert!(secure.to_str().unwrap().ends_with("; Secure"));
    }

    #[test]
    fn idle_and_absolute_limits_both_end_a_session() {
        let settings = AccountSettings {
            session_idle: std::time::Duration::from_secs(10),
            session_lifetime: std::time::Duration::from_secs(100),
            ..AccountSettings::default()
        };
        let session = LoginSession {
            session_hash: String::new(),
            user_id: String::new(),
            stage: SessionStage::Full,
            csrf_token: String::new(),
            created_ms: 0,
            last_seen_ms: 95_000,
        };
        assert!(session.is_live(&settings, 99_000));
        assert!(!session.is_live(&settings, 100_000), "absolute lifetime");
        let idle = LoginSession {
            last_seen_ms: 0,
            ..session
        };
        assert!(!idle.is_live(&settings, 10_000), "idle timeout");
    }
}
