//! The `users` table: who may log in, with which role, and their second factor.

use crate::http::auth::Role;
use crate::on_pool;
use crate::store::Database;

use super::{now_ms, secret_hash, StoreResult};

/// One operator account. `Debug` leaves out the password hash and the TOTP secret.
#[derive(Clone)]
pub struct User {
    pub user_id: String,
    pub email: String,
    pub role: Role,
    pub password_hash: String,
    pub must_change_password: bool,
    /// As stored: sealed under the master key when one is configured.
    pub totp_secret: Option<StoredTotpSecret>,
    pub totp_confirmed: bool,
    pub totp_last_step: Option<i64>,
    pub deactivated_ms: Option<i64>,
    pub created_ms: i64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .field("role", &self.role)
            .field("must_change_password", &self.must_change_password)
            .field("totp_confirmed", &self.totp_confirmed)
            .field("deactivated_ms", &self.deactivated_ms)
            .finish_non_exhaustive()
    }
}

/// A TOTP secret as the `users` table keeps it. With `LATCHKEY_MASTER_KEY` set it is
/// sealed (AES-256-GCM, the user's id as associated data, so it cannot be moved to
/// another account): `sealed:<key id>:<hex>`. Without a master key it is stored as typed
/// (base32) — the documented fallback — and sealed the next time the user enrols.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredTotpSecret(String);

const SEALED_PREFIX: &str = "sealed:";

impl std::fmt::Debug for StoredTotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredTotpSecret([REDACTED])")
    }
}

impl StoredTotpSecret {
    fn seal(
        user_id: &str,
        secret: &str,
        key: Option<&crate::secrets::MasterKey>,
    ) -> anyhow::Result<StoredTotpSecret> {
        Ok(match key {
            None => StoredTotpSecret(secret.to_string()),
            Some(key) => {
                let sealed = key.seal(&associated_data(user_id), secret)?;
                StoredTotpSecret(format!(
                    "{SEALED_PREFIX}{}:{}",
                    sealed.key_id, sealed.ciphertext
                ))
            }
        })
    }

    /// The base32 secret; `None` when it is sealed and `key` cannot open it (no key, or
    /// another one): the user must then be reset and enrol again.
    pub fn reveal(&self, user_id: &str, key: Option<&crate::secrets::MasterKey>) -> Option<String> {
        let Some(sealed) = self.0.strip_prefix(SEALED_PREFIX) else {
            return Some(self.0.clone());
        };
        let (key_id, ciphertext) = sealed.rsplit_once(':')?;
        let sealed = crate::secrets::Sealed {
            ciphertext: ciphertext.to_string(),
            key_id: key_id.to_string(),
        };
        match key?.open(&associated_data(user_id), &sealed) {
            Ok(secret) => Some(secret),
            Err(error) => {
                tracing::warn!(user_id, %error, "a stored TOTP secret does not open");
                None
            }
        }
    }

    pub fn is_sealed(&self) -> bool {
        self.0.starts_with(SEALED_PREFIX)
    }
}

fn associated_data(user_id: &str) -> String {
    format!("totp_secret:{user_id}")
}

impl User {
    pub fn is_active(&self) -> bool {
        self.deactivated_ms.is_none()
    }

    /// Whether the account may use the dashboard and the API: a chosen password and a
    /// confirmed second factor.
    pub fn is_fully_enrolled(&self) -> bool {
        !self.must_change_password && self.totp_confirmed
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    user_id: String,
    email: String,
    role: String,
    password_hash: String,
    must_change_password: bool,
    totp_secret: Option<String>,
    totp_confirmed: bool,
    totp_last_step: Option<i64>,
    deactivated_ms: Option<i64>,
    created_ms: i64,
}

impl UserRow {
    fn into_user(self) -> Option<User> {
        Some(User {
            role: Role::parse(&self.role)?,
            user_id: self.user_id,
            email: self.email,
            password_hash: self.password_hash,
            must_change_password: self.must_change_password,
            totp_secret: self.totp_secret.map(StoredTotpSecret),
            totp_confirmed: self.totp_confirmed,
            totp_last_step: self.totp_last_step,
            deactivated_ms: self.deactivated_ms,
            created_ms: self.created_ms,
        })
    }
}

const COLUMNS: &str = "user_id, email, role, password_hash, must_change_password, totp_secret, \
     totp_confirmed, totp_last_step, deactivated_ms, created_ms";

/// Why a user could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateUserError {
    #[error("{0}")]
    Invalid(String),
    #[error("a user with the email {0} already exists")]
    Duplicate(String),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// Lower-cased, trimmed email; `Err` in words when it cannot be an address.
pub fn normalise_email(email: &str) -> Result<String, String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if valid {
        Ok(email)
    } else {
        Err(format!(
            "{email:?} is not an email address such as ann@example.com"
        ))
    }
}

/// Creates a user; `must_change_password` for one-time passwords handed over by others.
pub async fn create(
    database: &Database,
    email: &str,
    role: Role,
    password_hash: &str,
    must_change_password: bool,
) -> Result<User, CreateUserError> {
    let email = normalise_email(email).map_err(CreateUserError::Invalid)?;
    if by_email(database, &email).await?.is_some() {
        return Err(CreateUserError::Duplicate(email));
    }
    let user_id = uuid::Uuid::new_v4().to_string();
    let now = now_ms();
    let sql = "INSERT INTO users (user_id, email, role, password_hash, must_change_password, \
               created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $6)";
    let inserted = on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(&user_id)
            .bind(&email)
            .bind(role.as_str())
            .bind(password_hash)
            .bind(must_change_password)
            .bind(now)
            .execute(pool)
            .await.map(|done| done.rows_affected())
    });
    match inserted {
        Ok(_) => {}
        // Two creations racing past the check above: the unique index decides.
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
            return Err(CreateUserError::Duplicate(email))
        }
        Err(error) => return Err(error.into()),
    }
    tracing::info!(user_id, role = role.as_str(), "user created");
    by_id(database, &user_id)
        .await?
        .ok_or(CreateUserError::Store(sqlx::Error::RowNotFound))
}

pub async fn by_id(database: &Database, user_id: &str) -> StoreResult<Option<User>> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE user_id = $1");
    let row: Option<UserRow> = on_pool!(database, pool => {
        sqlx::query_as(&sql).bind(user_id).fetch_optional(pool).await
    })?;
    Ok(row.and_then(UserRow::into_user))
}

pub async fn by_email(database: &Database, email: &str) -> StoreResult<Option<User>> {
    let Ok(email) = normalise_email(email) else {
        return Ok(None);
    };
    let sql = format!("SELECT {COLUMNS} FROM users WHERE email = $1");
    let row: Option<UserRow> = on_pool!(database, pool => {
        sqlx::query_as(&sql).bind(&email).fetch_optional(pool).await
    })?;
    Ok(row.and_then(UserRow::into_user))
}

/// Every user, by email.
pub async fn list(database: &Database) -> StoreResult<Vec<User>> {
    let sql = format!("SELECT {COLUMNS} FROM users ORDER BY email");
    let rows: Vec<UserRow> =
        on_pool!(database, pool => sqlx::query_as(&sql).fetch_all(pool).await)?;
    Ok(rows.into_iter().filter_map(UserRow::into_user).collect())
}

/// Active admins, so the last one cannot lock everyone out.
pub async fn active_admins(database: &Database) -> StoreResult<i64> {
    let sql = "SELECT COUNT(*) FROM users WHERE role = 'admin' AND deactivated_ms IS NULL";
    on_pool!(database, pool => sqlx::query_scalar(sql).fetch_one(pool).await)
}

/// Active admins who have finished enrolment (own password, confirmed second factor):
/// from the first one on, the bootstrap token is refused.
pub async fn enrolled_admins(database: &Database) -> StoreResult<i64> {
    let sql = "SELECT COUNT(*) FROM users WHERE role = 'admin' AND deactivated_ms IS NULL \
               AND totp_confirmed = $1 AND must_change_password = $2";
    on_pool!(database, pool => sqlx::query_scalar(sql).bind(true).bind(false).fetch_one(pool).await)
}

async fn execute(database: &Database, sql: &str, binds: &[Bind<'_>]) -> StoreResult<u64> {
    on_pool!(database, pool => {
        let mut query = sqlx::query(sql);
        for bind in binds {
            query = match bind {
                Bind::Text(text) => query.bind(*text),
                Bind::Int(value) => query.bind(*value),
                Bind::Bool(value) => query.bind(*value),
            };
        }
        query.execute(pool).await.map(|done| done.rows_affected())
    })
}

/// A parameter of [`execute`]; keeps each update a one-liner on both backends.
enum Bind<'a> {
    Text(&'a str),
    Int(i64),
    Bool(bool),
}

/// Stores a new password hash; `must_change` marks it one-time.
pub async fn set_password(
    database: &Database,
    user_id: &str,
    password_hash: &str,
    must_change: bool,
) -> StoreResult<()> {
    let sql = "UPDATE users SET password_hash = $1, must_change_password = $2, updated_ms = $3 \
               WHERE user_id = $4";
    execute(
        database,
        sql,
        &[
            Bind::Text(password_hash),
            Bind::Bool(must_change),
            Bind::Int(now_ms()),
            Bind::Text(user_id),
        ],
    )
    .await
    .map(|_| ())
}

/// An admin's password reset: a one-time password, and every session and API token of
/// the user ends (the reset usually means the old credentials are not theirs alone).
pub async fn reset_password(
    database: &Database,
    user_id: &str,
    one_time_password_hash: &str,
) -> StoreResult<()> {
    set_password(database, user_id, one_time_password_hash, true).await?;
    super::sessions::delete_all_for_user(database, user_id).await?;
    super::tokens::revoke_all_for_user(database, user_id).await?;
    tracing::info!(user_id, "password reset; sessions and tokens revoked");
    Ok(())
}

pub async fn set_role(database: &Database, user_id: &str, role: Role) -> StoreResult<()> {
    let sql = "UPDATE users SET role = $1, updated_ms = $2 WHERE user_id = $3";
    execute(
        database,
        sql,
        &[
            Bind::Text(role.as_str()),
            Bind::Int(now_ms()),
            Bind::Text(user_id),
        ],
    )
    .await?;
    // Sessions and tokens read the role from the user on every request; nothing to
    // revoke.
    tracing::info!(user_id, role = role.as_str(), "user role changed");
    Ok(())
}

/// Deactivates a user: they cannot log in, their sessions end, their tokens stop working.
pub async fn deactivate(database: &Database, user_id: &str) -> StoreResult<()> {
    let now = now_ms();
    let sql = "UPDATE users SET deactivated_ms = $1, updated_ms = $1 WHERE user_id = $2 \
               AND deactivated_ms IS NULL";
    execute(database, sql, &[Bind::Int(now), Bind::Text(user_id)]).await?;
    super::sessions::delete_all_for_user(database, user_id).await?;
    super::tokens::revoke_all_for_user(database, user_id).await?;
    tracing::info!(user_id, "user deactivated");
    Ok(())
}

/// Lets a deactivated user log in again (their old tokens stay revoked).
pub async fn reactivate(database: &Database, user_id: &str) -> StoreResult<()> {
    let sql = "UPDATE users SET deactivated_ms = NULL, updated_ms = $1 WHERE user_id = $2";
    execute(database, sql, &[Bind::Int(now_ms()), Bind::Text(user_id)]).await?;
    tracing::info!(user_id, "user reactivated");
    Ok(())
}

/// Starts (or restarts) TOTP enrolment with a fresh secret, unconfirmed; the secret is
/// sealed under `key` when there is one.
pub async fn begin_totp(
    database: &Database,
    user_id: &str,
    secret: &str,
    key: Option<&crate::secrets::MasterKey>,
) -> anyhow::Result<()> {
    let stored = StoredTotpSecret::seal(user_id, secret, key)?;
    let secret = stored.0.as_str();
    let sql = "UPDATE users SET totp_secret = $1, totp_confirmed = $2, totp_last_step = NULL, \
               updated_ms = $3 WHERE user_id = $4 AND totp_confirmed = $2";
    execute(
        database,
        sql,
        &[
            Bind::Text(secret),
            Bind::Bool(false),
            Bind::Int(now_ms()),
            Bind::Text(user_id),
        ],
    )
    .await?;
    Ok(())
}

/// Confirms enrolment after a valid code and stores the backup codes' hashes.
pub async fn confirm_totp(
    database: &Database,
    user_id: &str,
    step: i64,
    backup_codes: &[String],
) -> StoreResult<()> {
    let sql = "UPDATE users SET totp_confirmed = $1, totp_last_step = $2, updated_ms = $3 \
               WHERE user_id = $4";
    execute(
        database,
        sql,
        &[
            Bind::Bool(true),
            Bind::Int(step),
            Bind::Int(now_ms()),
            Bind::Text(user_id),
        ],
    )
    .await?;
    replace_backup_codes(database, user_id, backup_codes).await?;
    tracing::info!(user_id, "two-factor enrolment confirmed");
    Ok(())
}

/// Records an accepted TOTP step; false when that step (or a later one) was already
/// used, which makes each code good once even when two logins race.
pub async fn use_totp_step(database: &Database, user_id: &str, step: i64) -> StoreResult<bool> {
    let sql = "UPDATE users SET totp_last_step = $1 WHERE user_id = $2 \
               AND (totp_last_step IS NULL OR totp_last_step < $1)";
    Ok(execute(database, sql, &[Bind::Int(step), Bind::Text(user_id)]).await? == 1)
}

/// Clears the second factor (an admin's "reset 2FA"): the user enrols again at next
/// login; their sessions end.
pub async fn reset_totp(database: &Database, user_id: &str) -> StoreResult<()> {
    let sql = "UPDATE users SET totp_secret = NULL, totp_confirmed = $1, totp_last_step = NULL, \
               updated_ms = $2 WHERE user_id = $3";
    execute(
        database,
        sql,
        &[Bind::Bool(false), Bind::Int(now_ms()), Bind::Text(user_id)],
    )
    .await?;
    replace_backup_codes(database, user_id, &[]).await?;
    // Whoever held the lost factor may hold a session or a token too: both end.
    super::sessions::delete_all_for_user(database, user_id).await?;
    super::tokens::revoke_all_for_user(database, user_id).await?;
    tracing::info!(user_id, "two-factor reset");
    Ok(())
}

/// Replaces a user's backup codes with `codes` (stored hashed).
pub async fn replace_backup_codes(
    database: &Database,
    user_id: &str,
    codes: &[String],
) -> StoreResult<()> {
    let mut tx = database.begin().await?;
    crate::on_backend!(&mut tx, conn => {
        sqlx::query("DELETE FROM user_backup_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
        for code in codes {
            sqlx::query("INSERT INTO user_backup_codes (user_id, code_hash) VALUES ($1, $2)")
                .bind(user_id)
                .bind(salted_code_hash(code, &hex::encode(super::random_bytes::<16>())))
                .execute(&mut *conn)
                .await?;
        }
    });
    match tx {
        crate::store::Tx::Postgres(tx) => tx.commit().await,
        crate::store::Tx::Sqlite(tx) => tx.commit().await,
    }
}

/// How a backup code is stored: `s1$<salt>$<SHA-256 of salt, NUL, code>`, a random salt
/// per code, so two users' equal codes (or a precomputed table) tell nothing. Codes
/// carry 50 random bits, so a fast hash is enough once salted.
fn salted_code_hash(code: &str, salt_hex: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(salt_hex.as_bytes())
        .chain_update([0])
        .chain_update(code.as_bytes())
        .finalize();
    format!("s1${salt_hex}${}", hex::encode(digest))
}

/// Whether `stored` (salted, or the unsalted SHA-256 of codes issued before salting)
/// is the hash of `code`.
fn backup_code_matches(stored: &str, code: &str) -> bool {
    let expected = match stored
        .strip_prefix("s1$")
        .and_then(|rest| rest.split_once('$'))
    {
        Some((salt, _)) => salted_code_hash(code, salt),
        None => secret_hash(code),
    };
    crate::http::auth::constant_time_eq(expected.as_bytes(), stored.as_bytes())
}

/// Spends one backup code; true when it was valid and unused.
pub async fn use_backup_code(database: &Database, user_id: &str, typed: &str) -> StoreResult<bool> {
    let code = super::totp::normalise_backup_code(typed);
    let sql = "SELECT code_hash FROM user_backup_codes WHERE user_id = $1 AND used_ms IS NULL";
    let unused: Vec<String> = on_pool!(database, pool => {
        sqlx::query_scalar(sql).bind(user_id).fetch_all(pool).await
    })?;
    let Some(matching) = unused
        .iter()
        .find(|stored| backup_code_matches(stored, &code))
    else {
        return Ok(false);
    };
    let sql = "UPDATE user_backup_codes SET used_ms = $1 WHERE user_id = $2 AND code_hash = $3 \
               AND used_ms IS NULL";
    let used = execute(
        database,
        sql,
        &[
            Bind::Int(now_ms()),
            Bind::Text(user_id),
            Bind::Text(matching),
        ],
    )
    .await?
        == 1;
    if used {
        tracing::info!(user_id, "backup code used");
    }
    Ok(used)
}

/// How many unused backup codes a user has left.
pub async fn backup_codes_left(database: &Database, user_id: &str) -> StoreResult<i64> {
    let sql = "SELECT COUNT(*) FROM user_backup_codes WHERE user_id = $1 AND used_ms IS NULL";
    on_pool!(database, pool => sqlx::query_scalar(sql).bind(user_id).fetch_one(pool).await)
}
