//! The Door aggregate's `LockGateway` port on the TTLock client.
//!
//! The port speaks in lock ids and passcode ids; TTLock also needs to know whether a lock
//! has a gateway (which decides between a revocable custom code and a random period code,
//! and how to delete). That comes from the lock list, cached here and refreshed when a lock
//! is not in it yet.
//!
//! When the lock has a gateway but the gateway (or the lock behind it) is not working and
//! the door allows it (`offline_fallback`), the code is a random period code instead: it
//! needs no gateway (TTLock computes it and the lock checks it by algorithm), but it is cut
//! to whole hours and cannot be deleted remotely. The answer says so
//! ([`IssuedPasscode::fallback`]), so the journal and the guest's page do too.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use latchkey_aggregates::door::services::{
    IssuedPasscode, LockError, LockGateway, PasscodeRequest,
};
use latchkey_aggregates::door::{CodeFallback, PasscodeKind};
use tracing::warn;

use super::{AccessCodeRequest, DeleteMode, TtlockClient, TtlockError};

pub struct TtlockLockGateway {
    client: TtlockClient,
    /// lock id → has a gateway.
    gateways: Mutex<HashMap<i64, bool>>,
}

impl TtlockLockGateway {
    pub fn new(client: TtlockClient) -> Self {
        TtlockLockGateway {
            client,
            gateways: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, lock_id: i64) -> Option<bool> {
        self.gateways
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&lock_id)
            .copied()
    }

    async fn has_gateway(&self, lock_id: i64) -> Result<bool, LockError> {
        if let Some(known) = self.cached(lock_id) {
            return Ok(known);
        }
        let locks = self.client.list_locks().await.map_err(lock_error)?;
        let mut cache = self
            .gateways
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for lock in &locks {
            cache.insert(lock.lock_id, lock.has_gateway);
        }
        cache.get(&lock_id).copied().ok_or_else(|| {
            LockError::permanent(format!(
                "lock {lock_id} is not in this TTLock account's lock list; check the door's uid"
            ))
        })
    }
}

fn lock_error(error: TtlockError) -> LockError {
    if error.is_retryable() {
        LockError::retryable(error.to_string())
    } else {
        LockError::permanent(error.to_string())
    }
}

#[async_trait]
impl LockGateway for TtlockLockGateway {
    async fn issue_passcode(&self, request: PasscodeRequest) -> Result<IssuedPasscode, LockError> {
        let has_gateway = self.has_gateway(request.lock_id).await?;
        let mut access = AccessCodeRequest {
            lock_id: request.lock_id,
            has_gateway,
            name: request.name,
            idempotency_key: format!("latchkey-access-{}", request.payment_id),
            valid_from: request.valid_from,
            valid_until: request.valid_to,
        };
        let mut fallback = None;
        let issued = match self.client.issue_access_code(&access).await {
            // The gateway did not write anything (reference §5.2: -2012, -3002, -3034..-3036):
            // a period code needs no gateway, and the door allows one.
            Err(error @ TtlockError::GatewayOffline { .. })
                if has_gateway && request.period_fallback =>
            {
                warn!(
                    lock_id = request.lock_id,
                    payment_id = %request.payment_id,
                    error = %error,
                    "gateway not working; falling back to a random period code"
                );
                fallback = Some(CodeFallback {
                    kind: PasscodeKind::RandomPeriod,
                    reason: error.to_string(),
                });
                access.has_gateway = false;
                self.client.issue_access_code(&access).await
            }
            other => other,
        }
        .map_err(lock_error)?;
        Ok(IssuedPasscode {
            passcode_id: issued.keyboard_pwd_id,
            code: issued.code,
            valid_from: issued.valid_from,
            valid_to: issued.valid_until,
            remotely_revocable: issued.remotely_revocable,
            fallback,
        })
    }

    async fn delete_passcode(&self, lock_id: i64, passcode_id: i64) -> Result<(), LockError> {
        let mode = if self.has_gateway(lock_id).await? {
            DeleteMode::ViaGateway
        } else {
            DeleteMode::CloudOnly
        };
        // Deleting twice is fine: TTLock's "no such passcode" comes back as AlreadyAbsent.
        self.client
            .delete_passcode(lock_id, passcode_id, mode)
            .await
            .map(|_| ())
            .map_err(lock_error)
    }

    async fn delete_passcodes_named(&self, lock_id: i64, name: &str) -> Result<u32, LockError> {
        let found = self
            .client
            .list_passcodes(lock_id, Some(name))
            .await
            .map_err(lock_error)?;
        let mut deleted = 0;
        // `searchStr` also matches codes and parts of names: only exact names count.
        for record in found
            .iter()
            .filter(|record| record.name.as_deref() == Some(name))
        {
            self.delete_passcode(lock_id, record.keyboard_pwd_id)
                .await?;
            deleted += 1;
        }
        Ok(deleted)
    }
}
