//! Who is calling the operator/auditor API, and what they may do.
//!
//! A request authenticates with `Authorization: Bearer <token>`: either the bootstrap
//! `LATCHKEY_API_TOKEN` (role admin, only while no enrolled admin account exists) or a token from the `api_tokens` table (stored as a
//! SHA-256; compared by hash lookup, the bootstrap token in constant time). A token owned
//! by a user acts with that user's current role and stops working when the user is
//! deactivated. Without a bearer token, a logged-in dashboard session (the session
//! cookie) authenticates too; its non-GET calls must carry the session's CSRF token in
//! `X-CSRF-Token`, since a cookie is sent by the browser on its own.
//!
//! Roles: auditors read everything and change nothing; operators also act on doors,
//! devices and sessions; admins also refund and change settings.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use super::{ApiError, AppState};
use crate::on_pool;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Auditor,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Auditor => "auditor",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "auditor" => Some(Role::Auditor),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// What a request wants to do; each route asks for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Read any list, report, journal or health page.
    Read,
    /// Act on doors, devices and sessions (maintenance, relay, force end, sync).
    Operate,
    /// Move money (refunds).
    Refund,
    /// Change settings, users and tokens.
    Administer,
}

impl Role {
    pub fn allows(self, permission: Permission) -> bool {
        match permission {
            Permission::Read => true,
            Permission::Operate => matches!(self, Role::Operator | Role::Admin),
            Permission::Refund | Permission::Administer => self == Role::Admin,
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Stable id for the audit log, e.g. `token:ops-laptop`, `user:ann@example.com` or
    /// `bootstrap`.
    pub actor_id: String,
    pub role: Role,
}

/// The header a cookie-authenticated API call carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

impl Principal {
    /// 403 unless the caller's role allows `permission`.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the {} role may not do this; ask an {} to",
                self.role.as_str(),
                match permission {
                    Permission::Read | Permission::Operate => "operator or admin",
                    Permission::Refund | Permission::Administer => "admin",
                }
            )))
        }
    }

    /// Metadata for a command this caller sends through the API.
    pub fn command_metadata(&self) -> crate::cqrs::CommandMetadata {
        crate::cqrs::CommandMetadata::new(self.actor().to_string(), "api")
    }

    /// The actor written into commands' metadata and human-decision events.
    pub fn actor(&self) -> latchkey_aggregates::Actor {
        latchkey_aggregates::Actor::Operator {
            id: self.actor_id.clone(),
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(header) = parts.headers.get(AUTHORIZATION) else {
            return from_session_cookie(parts, state).await;
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthenticated(
                    "the Authorization header must be `Bearer <API token>`".into(),
                )
            })?;
        if let Some(bootstrap) = &state.settings.api_token {
            if constant_time_eq(token.as_bytes(), bootstrap.expose_secret().as_bytes()) {
                return bootstrap_principal(state).await;
            }
        }
        match lookup_token(state, token).await? {
            Some(principal) => Ok(principal),
            None => Err(ApiError::Unauthenticated(
                "unknown or revoked API token".into(),
            )),
        }
    }
}

/// The bootstrap token's admin, while no enrolled admin account exists. Once one does, the
/// token would be an admin credential without a second factor, never rotated and shared
/// by whoever set up the server: it is refused from then on.
async fn bootstrap_principal(state: &AppState) -> Result<Principal, ApiError> {
    if !state.settings.security.bootstrap_token_always {
        let admins = crate::accounts::users::enrolled_admins(&state.database)
            .await
            .map_err(|error| ApiError::Internal(error.into()))?;
        if admins > 0 {
            return Err(ApiError::Unauthenticated(
                "LATCHKEY_API_TOKEN only bootstraps a server without an admin account; an \
                 admin exists now: use a token from the account page or `latchkey token \
                 create`, and unset LATCHKEY_API_TOKEN"
                    .into(),
            ));
        }
    }
    Ok(Principal {
        actor_id: "bootstrap".to_string(),
        role: Role::Admin,
    })
}

/// The principal of a logged-in dashboard session, for API calls the pages make.
async fn from_session_cookie(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let unauthenticated = || {
        ApiError::Unauthenticated(
            "send Authorization: Bearer <API token>, or log in at /login".into(),
        )
    };
    let cookie =
        crate::accounts::sessions::cookie_value(&parts.headers).ok_or_else(unauthenticated)?;
    let login =
        crate::accounts::sessions::lookup(&state.database, &state.settings.accounts, &cookie)
            .await
            .map_err(|error| ApiError::Internal(error.into()))?
            .filter(|login| login.stage == crate::accounts::SessionStage::Full)
            .ok_or_else(unauthenticated)?;
    let user = crate::accounts::users::by_id(&state.database, &login.user_id)
        .await
        .map_err(|error| ApiError::Internal(error.into()))?
        .filter(|user| user.is_active() && user.is_fully_enrolled())
        .ok_or_else(unauthenticated)?;
    if !parts.method.is_safe() {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !constant_time_eq(sent.as_bytes(), login.csrf_token.as_bytes()) {
            return Err(ApiError::Forbidden(
                "a call authenticated by the session cookie must send the page's CSRF token \
                 in the X-CSRF-Token header"
                    .into(),
            ));
        }
    }
    Ok(Principal::of_user(&user))
}

impl Principal {
    /// The principal of a logged-in user: their current role, named by email.
    pub fn of_user(user: &crate::accounts::User) -> Principal {
        Principal {
            actor_id: format!("user:{}", user.email),
            role: user.role,
        }
    }
}

/// SHA-256 of a token, hex: what `api_tokens` stores.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

async fn lookup_token(state: &AppState, token: &str) -> Result<Option<Principal>, ApiError> {
    // A user's token takes the user's role now (not the one at creation) and dies with
    // the user's deactivation.
    let sql = "SELECT t.role, t.label, u.role, u.email, u.deactivated_ms IS NOT NULL \
               FROM api_tokens t LEFT JOIN users u ON u.user_id = t.user_id \
               WHERE t.token_hash = $1 AND t.revoked_at IS NULL";
    let hash = token_hash(token);
    type Row = (String, String, Option<String>, Option<String>, Option<bool>);
    let row: Option<Row> = on_pool!(&state.database, pool => {
        sqlx::query_as(sql).bind(&hash).fetch_optional(pool).await
    })
    .map_err(|error| ApiError::Internal(error.into()))?;
    Ok(
        row.and_then(|(token_role, label, user_role, email, deactivated)| {
            match (user_role, email) {
                (Some(role), Some(email)) if deactivated != Some(true) => {
                    Role::parse(&role).map(|role| Principal {
                        actor_id: format!("user:{email}"),
                        role,
                    })
                }
                (Some(_), _) => None,
                _ => Role::parse(&token_role).map(|role| Principal {
                    actor_id: format!("token:{label}"),
                    role,
                }),
            }
        }),
    )
}

/// Issues a new random API token with `role`; returns the token (shown once).
pub async fn create_token(
    database: &crate::store::Database,
    role: Role,
    label: &str,
) -> anyhow::Result<String> {
    use rand::RngCore;
    let mut bytes = [0_u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = format!("lk_{}", hex::encode(bytes));
    let token_id = uuid::Uuid::new_v4().to_string();
    let last4 = token[token.len() - 4..].to_string();
    let sql = "INSERT INTO api_tokens (token_hash, role, label, token_id, last4) \
               VALUES ($1, $2, $3, $4, $5)";
    on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(token_hash(&token))
            .bind(role.as_str())
            .bind(label)
            .bind(&token_id)
            .bind(&last4)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    Ok(token)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_the_design_says() {
        assert!(Role::Auditor.allows(Permission::Read));
        assert!(!Role::Auditor.allows(Permission::Operate));
        assert!(Role::Operator.allows(Permission::Operate));
        assert!(!Role::Operator.allows(Permission::Refund));
        assert!(Role::Admin.allows(Permission::Refund));
        assert!(Role::Admin.allows(Permission::Administer));
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
