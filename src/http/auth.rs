//! Who is calling an operator or auditor route. For now one bootstrap bearer token
//! (`LATCHKEY_API_TOKEN`) with the admin role; accounts and their roles plug in here
//! later without changing the handlers, which only ask for a [`Role`].

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// What a caller may do. Admin ⊇ operator ⊇ auditor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
    Auditor,
}

impl Role {
    fn rank(self) -> u8 {
        match self {
            Role::Auditor => 1,
            Role::Operator => 2,
            Role::Admin => 3,
        }
    }

    /// Whether this role may do what `required` may.
    pub fn permits(self, required: Role) -> bool {
        self.rank() >= required.rank()
    }
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    pub role: Role,
    /// For audit metadata: who acted.
    pub actor: String,
}

impl Caller {
    /// 403 unless the caller's role covers `required`.
    pub fn require(&self, required: Role) -> Result<(), ApiError> {
        if self.role.permits(required) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {required:?} role; you have {:?}",
                self.role
            )))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(token) = &state.settings.api_token else {
            return Err(ApiError::NotConfigured(
                "operator routes need LATCHKEY_API_TOKEN to be set".to_string(),
            ));
        };
        let presented = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::Unauthenticated(
                    "send Authorization: Bearer <LATCHKEY_API_TOKEN>".to_string(),
                )
            })?;
        if tokens_match(presented.trim(), token.expose_secret()) {
            Ok(Caller {
                role: Role::Admin,
                actor: "api_token".to_string(),
            })
        } else {
            Err(ApiError::Unauthenticated(
                "the bearer token is not valid".to_string(),
            ))
        }
    }
}

/// Constant-time comparison. Hashing first makes the compared lengths equal, so the
/// time taken reveals neither the token's length nor how much of it matched.
fn tokens_match(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest() {
        assert!(Role::Admin.permits(Role::Auditor));
        assert!(Role::Operator.permits(Role::Operator));
        assert!(!Role::Auditor.permits(Role::Operator));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("ab", "abc"));
        assert!(!tokens_match("abd", "abc"));
    }
}
