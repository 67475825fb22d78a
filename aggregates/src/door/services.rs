//! The port to the door's lock: TTLock passcodes.
//!
//! The application implements [`LockGateway`] with the TTLock Open API. Both calls must be
//! safe to repeat, because cqrs-es may run `handle` twice for one command: TTLock returns
//! the same random passcode for the same lock and validity window, and deleting a passcode
//! that no longer exists (TTLock error -2009) must be reported as success.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::events::CodeFallback;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasscodeRequest {
    /// TTLock's `lockId`.
    pub lock_id: i64,
    /// The payment the code is for; also a good idempotency root for the adapter.
    pub payment_id: Uuid,
    /// `keyboardPwdName`, shown in the TTLock app: `Latchkey <payment id>`.
    pub name: String,
    pub valid_from: DateTime<Utc>,
    pub valid_to: DateTime<Utc>,
    /// A custom code to set (`keyboardPwd/add`); `None` asks TTLock for a random one
    /// (`keyboardPwd/get`), which is what Latchkey does today.
    pub code: Option<String>,
    /// The door allows a random period code when the lock's gateway is not working
    /// (`offline_fallback`); the adapter then says so in [`IssuedPasscode::fallback`].
    #[serde(default)]
    pub period_fallback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedPasscode {
    /// TTLock's `keyboardPwdId`.
    pub passcode_id: i64,
    pub code: String,
    pub valid_from: DateTime<Utc>,
    pub valid_to: DateTime<Utc>,
    /// Whether a cloud delete reaches the lock (it needs a gateway); if not, the code keeps
    /// working until `valid_to` even after it is revoked.
    pub remotely_revocable: bool,
    /// Set when this is a random period code given because the gateway was not working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<CodeFallback>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockErrorKind {
    /// Network trouble, rate limit, lock offline: try again later.
    Retryable,
    /// TTLock refused the request itself (storage full, lock reset): retrying as is will fail.
    Permanent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct LockError {
    pub kind: LockErrorKind,
    pub message: String,
}

impl LockError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            kind: LockErrorKind::Retryable,
            message: message.into(),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: LockErrorKind::Permanent,
            message: message.into(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == LockErrorKind::Retryable
    }
}

#[async_trait]
pub trait LockGateway: Send + Sync {
    async fn issue_passcode(&self, request: PasscodeRequest) -> Result<IssuedPasscode, LockError>;
    async fn delete_passcode(&self, lock_id: i64, passcode_id: i64) -> Result<(), LockError>;
    /// Deletes every passcode on the lock named `name` (an issue attempt whose answer was
    /// lost may have left one the journal does not know); returns how many it deleted.
    async fn delete_passcodes_named(&self, lock_id: i64, name: &str) -> Result<u32, LockError>;
}

/// The Door aggregate's `Services`.
#[derive(Clone)]
pub struct DoorServices {
    pub locks: Arc<dyn LockGateway>,
}

impl DoorServices {
    pub fn new(locks: Arc<dyn LockGateway>) -> Self {
        Self { locks }
    }
}

impl fmt::Debug for DoorServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DoorServices").finish_non_exhaustive()
    }
}

/// A scripted [`LockGateway`] for tests (enable the `testing` feature outside this crate).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use async_trait::async_trait;

    use super::{IssuedPasscode, LockError, LockGateway, PasscodeRequest};
    use crate::fake::{CallLog, Script};

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum LockCall {
        IssuePasscode(PasscodeRequest),
        DeletePasscode { lock_id: i64, passcode_id: i64 },
        DeletePasscodesNamed { lock_id: i64, name: String },
    }

    /// Answers from queued responses. With nothing queued, issuing succeeds with passcode
    /// id `1000 + n` and code `"1234567n"` (n counts issue calls from 1) for exactly the
    /// requested window, remotely revocable; deleting succeeds; deleting by name finds
    /// nothing.
    #[derive(Debug, Default)]
    pub struct FakeLockGateway {
        issues: Script<Result<IssuedPasscode, LockError>>,
        named_deletes: Script<Result<u32, LockError>>,
        deletes: Script<Result<(), LockError>>,
        calls: CallLog<LockCall>,
    }

    impl FakeLockGateway {
        pub fn new() -> Self {
            Self::default()
        }

        pub fn queue_issue(&self, response: Result<IssuedPasscode, LockError>) {
            self.issues.push(response);
        }

        pub fn queue_delete(&self, response: Result<(), LockError>) {
            self.deletes.push(response);
        }

        pub fn queue_delete_named(&self, response: Result<u32, LockError>) {
            self.named_deletes.push(response);
        }

        pub fn calls(&self) -> Vec<LockCall> {
            self.calls.all()
        }
    }

    #[async_trait]
    impl LockGateway for FakeLockGateway {
        async fn issue_passcode(
            &self,
            request: PasscodeRequest,
        ) -> Result<IssuedPasscode, LockError> {
            self.calls.record(LockCall::IssuePasscode(request.clone()));
            let issued_so_far = self
                .calls
                .all()
                .iter()
                .filter(|call| matches!(call, LockCall::IssuePasscode(_)))
                .count();
            self.issues.next().unwrap_or_else(|| {
                Ok(IssuedPasscode {
                    passcode_id: 1000 + i64::try_from(issued_so_far).unwrap_or(0),
                    code: format!("1234567{issued_so_far}"),
                    valid_from: request.valid_from,
                    valid_to: request.valid_to,
                    remotely_revocable: true,
                    fallback: None,
                })
            })
        }

        async fn delete_passcode(&self, lock_id: i64, passcode_id: i64) -> Result<(), LockError> {
            self.calls.record(LockCall::DeletePasscode {
                lock_id,
                passcode_id,
            });
            self.deletes.next().unwrap_or(Ok(()))
        }

        async fn delete_passcodes_named(&self, lock_id: i64, name: &str) -> Result<u32, LockError> {
            self.calls.record(LockCall::DeletePasscodesNamed {
                lock_id,
                name: name.to_owned(),
            });
            self.named_deletes.next().unwrap_or(Ok(0))
        }
    }
}
