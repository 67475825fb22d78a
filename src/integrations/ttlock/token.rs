//! The OAuth access token, obtained with the account's credentials, cached, refreshed
//! before it expires and after TTLock says it is invalid.
//!
//! One mutex guards the cache, so concurrent callers that all find the token stale (or
//! all got 10004) cause a single refresh: the first refreshes, the others wait and reuse.

use std::time::Duration;

use md5::{Digest, Md5};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{info, warn};

use super::error::TtlockError;
use super::transport::{Method, Params, Transport};
use super::wire::TokenResponse;

/// Refresh this long before expiry at most. TTLock tokens live 90 days; a day of margin
/// leaves room for TTLock being down when the refresh is due.
const REFRESH_MARGIN_MAX: Duration = Duration::from_secs(24 * 3600);

/// Never trust a lifetime shorter than this: a zero or negative `expires_in` would make
/// every call log in again.
const LIFETIME_MIN: Duration = Duration::from_secs(1);

struct Token {
    access: SecretString,
    refresh: Option<SecretString>,
    /// When we stop using the token and refresh it: a tenth of its life before expiry,
    /// capped at [`REFRESH_MARGIN_MAX`].
    refresh_at: Instant,
    /// When TTLock will reject it; a token past `refresh_at` but before this is still
    /// used if a refresh fails for a transient reason.
    expires_at: Instant,
}

pub(crate) struct TokenCache {
    client_id: String,
    client_secret: SecretString,
    username: String,
    /// Lower-case hex MD5 of the account password, which is what `/oauth2/token` takes.
    password_md5: SecretString,
    slot: Mutex<Option<Token>>,
}

impl TokenCache {
    pub(crate) fn new(
        client_id: String,
        client_secret: SecretString,
        username: String,
        password: &SecretString,
    ) -> Self {
        Self {
            client_id,
            client_secret,
            username,
            password_md5: password_md5(password),
            slot: Mutex::new(None),
        }
    }

    /// A usable access token, logging in or refreshing first if needed.
    pub(crate) async fn get(&self, transport: &Transport) -> Result<SecretString, TtlockError> {
        let mut slot = self.slot.lock().await;
        let now = Instant::now();
        if let Some(token) = slot.as_ref() {
            if now < token.refresh_at {
                return Ok(token.access.clone());
            }
        }
        let previous_refresh = slot.as_ref().and_then(|token| token.refresh.clone());
        let renewed = match previous_refresh {
            Some(refresh) => match self.refresh_grant(transport, &refresh).await {
                // Any TTLock verdict on the refresh token (10011 invalid, or anything else)
                // means it is no good: log in again with the account credentials.
                Err(error) if error.errcode().is_some() => {
                    warn!(%error, "TTLock refused the refresh token; logging in again");
                    self.password_grant(transport).await
                }
                other => other,
            },
            None => self.password_grant(transport).await,
        };
        match renewed {
            Ok(token) => {
                let access = token.access.clone();
                *slot = Some(token);
                Ok(access)
            }
            Err(error) => match slot.as_ref() {
                // TTLock is unreachable but the old token has not expired: keep going.
                Some(token) if error.is_retryable() && now < token.expires_at => {
                    Ok(token.access.clone())
                }
                _ => Err(error),
            },
        }
    }

    /// Marks `used` as rejected by TTLock so the next [`get`](Self::get) renews it.
    /// A no-op if another caller already replaced it.
    pub(crate) async fn invalidate(&self, used: &SecretString) {
        let mut slot = self.slot.lock().await;
        if let Some(token) = slot.as_mut() {
            if token.access.expose_secret() == used.expose_secret() {
                let now = Instant::now();
                token.refresh_at = now;
                token.expires_at = now;
            }
        }
    }

    async fn password_grant(&self, transport: &Transport) -> Result<Token, TtlockError> {
        let params: Params = vec![
            ("clientId", self.client_id.clone()),
            (
                "clientSecret",
                self.client_secret.expose_secret().to_owned(),
            ),
            ("username", self.username.clone()),
            ("password", self.password_md5.expose_secret().to_owned()),
        ];
        let token = self.token_request(transport, &params).await?;
        info!("obtained a TTLock access token");
        Ok(token)
    }

    async fn refresh_grant(
        &self,
        transport: &Transport,
        refresh: &SecretString,
    ) -> Result<Token, TtlockError> {
        let params: Params = vec![
            ("clientId", self.client_id.clone()),
            (
                "clientSecret",
                self.client_secret.expose_secret().to_owned(),
            ),
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh.expose_secret().to_owned()),
        ];
        let mut token = self.token_request(transport, &params).await?;
        // The refresh answer may omit the refresh token; the old one stays valid then
        // (it lives 10 years). When present, the new one replaces it.
        if token.refresh.is_none() {
            token.refresh = Some(refresh.clone());
        }
        info!("refreshed the TTLock access token");
        Ok(token)
    }

    async fn token_request(
        &self,
        transport: &Transport,
        params: &Params,
    ) -> Result<Token, TtlockError> {
        let body = transport.send(Method::Post, "oauth2/token", params).await?;
        // Not `decode`: its error text can quote field values, and these are tokens.
        let answer: TokenResponse =
            serde_json::from_value(body).map_err(|_| TtlockError::UnexpectedResponse {
                message: "the token answer lacks access_token or expires_in".into(),
            })?;
        let lifetime =
            Duration::from_secs(u64::try_from(answer.expires_in).unwrap_or(0)).max(LIFETIME_MIN);
        let margin = (lifetime / 10).min(REFRESH_MARGIN_MAX);
        let now = Instant::now();
        Ok(Token {
            access: SecretString::from(answer.access_token),
            refresh: answer.refresh_token.map(SecretString::from),
            refresh_at: now + (lifetime - margin),
            expires_at: now + lifetime,
        })
    }
}

/// TTLock wants the password as the lower-case hex MD5 of the app password.
pub(crate) fn password_md5(password: &SecretString) -> SecretString {
    let digest = Md5::digest(password.expose_secret().as_bytes());
    SecretString::from(hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_sent_as_lowercase_md5_hex() {
        let md5 = password_md5(&SecretString::from("123456"));
        assert_eq!(md5.expose_secret(), "e10adc3949ba59abbe56e057f20f883e");
    }
}
