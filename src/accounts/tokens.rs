//! API tokens owned by users: created on the account page (shown once, stored as a
//! SHA-256), listed by label and last four characters, revocable. A user's token acts
//! with the user's current role and stops working when the user is deactivated.

use crate::on_pool;
use crate::store::Database;

use super::{random_bytes, secret_hash, StoreResult, User};

/// A token as its owner sees it later: never the token itself.
#[derive(Clone, Debug)]
pub struct TokenInfo {
    pub token_id: String,
    pub label: String,
    pub last4: String,
    pub created_at: String,
    pub revoked: bool,
}

/// Issues a token for `user`; returns it (the only time it is visible).
pub async fn create_for_user(database: &Database, user: &User, label: &str) -> StoreResult<String> {
    let token = format!("lk_{}", hex::encode(random_bytes::<32>()));
    let token_id = uuid::Uuid::new_v4().to_string();
    let last4 = token[token.len() - 4..].to_string();
    let sql = "INSERT INTO api_tokens (token_hash, role, label, user_id, token_id, last4) \
               VALUES ($1, $2, $3, $4, $5, $6)";
    on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(secret_hash(&token))
            .bind(user.role.as_str())
            .bind(label)
            .bind(&user.user_id)
            .bind(&token_id)
            .bind(&last4)
            .execute(pool)
            .await.map(|done| done.rows_affected())
    })?;
    tracing::info!(user_id = user.user_id, token_id, "api token created");
    Ok(token)
}

/// A user's tokens, newest first.
pub async fn list_for_user(database: &Database, user_id: &str) -> StoreResult<Vec<TokenInfo>> {
    let sql = "SELECT token_id, label, last4, CAST(created_at AS TEXT), revoked_at IS NOT NULL \
               FROM api_tokens WHERE user_id = $1 ORDER BY created_at DESC";
    type Row = (Option<String>, String, Option<String>, String, bool);
    let rows: Vec<Row> =
        on_pool!(database, pool => sqlx::query_as(sql).bind(user_id).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(|(token_id, label, last4, created_at, revoked)| TokenInfo {
            token_id: token_id.unwrap_or_default(),
            label,
            last4: last4.unwrap_or_default(),
            created_at,
            revoked,
        })
        .collect())
}

/// Revokes one of the user's tokens; false when it is not theirs or already revoked.
pub async fn revoke(database: &Database, user_id: &str, token_id: &str) -> StoreResult<bool> {
    let sql = "UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP WHERE user_id = $1 \
               AND token_id = $2 AND revoked_at IS NULL";
    let revoked = on_pool!(database, pool => {
        sqlx::query(sql).bind(user_id).bind(token_id).execute(pool).await.map(|done| done.rows_affected())
    })? == 1;
    if revoked {
        tracing::info!(user_id, token_id, "api token revoked");
    }
    Ok(revoked)
}

/// Revokes every token of a user (deactivation).
pub async fn revoke_all_for_user(database: &Database, user_id: &str) -> StoreResult<()> {
    let sql = "UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP WHERE user_id = $1 \
               AND revoked_at IS NULL";
    on_pool!(database, pool => sqlx::query(sql).bind(user_id).execute(pool).await.map(|done| done.rows_affected()))?;
    Ok(())
}

/// A token as `latchkey token list` shows it: never the token, only its last four.
#[derive(Clone, Debug)]
pub struct TokenRow {
    pub token_id: Option<String>,
    pub label: String,
    pub role: String,
    /// The owning user's email, for tokens made on the account page.
    pub owner: Option<String>,
    pub last4: Option<String>,
    pub created_at: String,
    pub revoked: bool,
}

/// Every API token, oldest first.
pub async fn list_all(database: &Database) -> StoreResult<Vec<TokenRow>> {
    let sql = "SELECT t.token_id, t.label, t.role, u.email, t.last4, \
               CAST(t.created_at AS TEXT), t.revoked_at IS NOT NULL \
               FROM api_tokens t LEFT JOIN users u ON u.user_id = t.user_id \
               ORDER BY t.created_at, t.label";
    type Row = (
        Option<String>,
        String,
        String,
        Option<String>,
        Option<String>,
        String,
        bool,
    );
    let rows: Vec<Row> = on_pool!(database, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(
            |(token_id, label, role, owner, last4, created_at, revoked)| TokenRow {
                token_id,
                label,
                role,
                owner,
                last4,
                created_at,
                revoked,
            },
        )
        .collect())
}

/// Revokes the live token whose id is `id_or_label`, else every live token labelled so
/// (tokens made before ids existed have only a label); returns how many.
pub async fn revoke_by_id_or_label(database: &Database, id_or_label: &str) -> StoreResult<u64> {
    let sql = "UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP WHERE token_id = $1 \
               AND revoked_at IS NULL";
    let by_id = on_pool!(database, pool => {
        sqlx::query(sql).bind(id_or_label).execute(pool).await.map(|done| done.rows_affected())
    })?;
    if by_id > 0 {
        tracing::info!(token_id = id_or_label, "api token revoked");
        return Ok(by_id);
    }
    let sql = "UPDATE api_tokens SET revoked_at = CURRENT_TIMESTAMP WHERE label = $1 \
               AND revoked_at IS NULL";
    let by_label = on_pool!(database, pool => {
        sqlx::query(sql).bind(id_or_label).execute(pool).await.map(|done| done.rows_affected())
    })?;
    if by_label > 0 {
        tracing::info!(
            label = id_or_label,
            revoked = by_label,
            "api tokens revoked"
        );
    }
    Ok(by_label)
}
