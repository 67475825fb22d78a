//! An operator's own password reset by email ("forgot password", issue 21 item 1): a link
//! good once, for [`RESET_LIFETIME`] after it was asked for. Admins can still reset anyone
//! with a one-time password (`users::reset_password`); this is for the operator alone.
//!
//! The request stores a `password_resets` row and queues the mail in one transaction. The
//! link's token is minted when the mail is rendered ([`mint_token`]) and only its SHA-256
//! is kept, so neither the reset row nor the outbox's facts hold a usable link. Using the
//! link is a compare-and-set on `used_at_ms`, so two tabs racing still change the password
//! once. Times come from the caller's clock (`AppState::clock`), which tests move.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::mail::outbox::{self, FactRef, NewMail, PASSWORD_RESET};
use crate::on_pool;
use crate::store::Database;

use super::{secret_hash, User};

/// How long a reset link works after it was asked for.
pub const RESET_LIFETIME: Duration = Duration::hours(1);

/// Records a reset for `user`, asked for at `now`, and queues its mail.
pub async fn request(database: &Database, user: &User, now: DateTime<Utc>) -> anyhow::Result<()> {
    let reset_id = uuid::Uuid::new_v4().to_string();
    let expires = now + RESET_LIFETIME;
    let mut tx = database.begin().await?;
    let sql = "INSERT INTO password_resets (reset_id, user_id, requested_at_ms, expires_at_ms) \
               VALUES ($1, $2, $3, $4)";
    crate::on_backend!(&mut tx, conn => {
        sqlx::query(sql)
            .bind(&reset_id)
            .bind(&user.user_id)
            .bind(now.timestamp_millis())
            .bind(expires.timestamp_millis())
            .execute(conn)
            .await
            .map(|_| ())
    })?;
    let mail = NewMail {
        key: format!("password_reset:{reset_id}"),
        kind: PASSWORD_RESET,
        payment_id: "",
        recipient: &user.email,
        facts: json!({"reset_id": reset_id, "user_id": user.user_id, "expires_at": expires}),
    };
    outbox::queue(&mut tx, mail, FactRef::request(Utc::now())).await?;
    tx.commit().await?;
    tracing::info!(user_id = user.user_id, "password reset requested");
    Ok(())
}

/// A fresh token for the reset's link (the mail worker calls this once per rendering);
/// only its hash is stored, replacing any earlier one that was never sent.
pub async fn mint_token(database: &Database, reset_id: &str) -> anyhow::Result<String> {
    let token = crate::payments::tokens::generate();
    let sql = "UPDATE password_resets SET token_hash = $1 WHERE reset_id = $2 \
               AND used_at_ms IS NULL";
    let updated = on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(secret_hash(&token))
            .bind(reset_id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })?;
    anyhow::ensure!(updated == 1, "password reset {reset_id} is gone or used");
    Ok(token)
}

/// The user a link resets, while it is unused and unexpired at `now`.
pub async fn valid_user(
    database: &Database,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>, sqlx::Error> {
    if !crate::payments::tokens::well_formed(token) {
        return Ok(None);
    }
    let sql = "SELECT user_id FROM password_resets WHERE token_hash = $1 \
               AND used_at_ms IS NULL AND expires_at_ms > $2";
    on_pool!(database, pool => {
        sqlx::query_scalar(sql)
            .bind(secret_hash(token))
            .bind(now.timestamp_millis())
            .fetch_optional(pool)
            .await
    })
}

/// Spends the link: true once, for the request that marks it used while it is valid. Every
/// other outstanding link of the same user dies with it.
pub async fn consume(
    database: &Database,
    token: &str,
    user_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let now_ms = now.timestamp_millis();
    let sql = "UPDATE password_resets SET used_at_ms = $1 WHERE token_hash = $2 \
               AND user_id = $3 AND used_at_ms IS NULL AND expires_at_ms > $1";
    let used = on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(now_ms)
            .bind(secret_hash(token))
            .bind(user_id)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })?;
    if used != 1 {
        return Ok(false);
    }
    let sql = "UPDATE password_resets SET used_at_ms = $1 WHERE user_id = $2 \
               AND used_at_ms IS NULL";
    on_pool!(database, pool => {
        sqlx::query(sql).bind(now_ms).bind(user_id).execute(pool).await.map(|_| ())
    })?;
    Ok(true)
}
