//! [`TtlockClient`]: the TTLock calls Latchkey makes, each bounded by the configured
//! timeout, authenticated with the cached token, and recorded in the module health.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::sync::Mutex;
use tracing::{info, instrument, warn};

use super::config::TtlockConfig;
use super::error::{PasscodeRejection, TtlockError};
use super::passcode::{
    derive_code, from_millis, millis, whole_hour_window, whole_minute_window, AccessCodeRequest,
    CustomPasscodeRequest, DeleteMode, DeleteOutcome, IssuedPasscode, PasscodeKind, PasscodeRecord,
    PeriodPasscodeRequest, FIRST_USE_WINDOW, PERIOD_MAX,
};
use super::token::TokenCache;
use super::transport::{Method, Params, Transport};
use super::wire::{
    decode, CustomPasscodeResponse, LockItem, LockListPage, PassageModeResponse, PasscodeItem,
    PasscodeListPage, RandomPasscodeResponse,
};
use crate::integrations::health::ModuleHealth;

/// Page size for lock lists; the documented maximum is 1000, 100 keeps answers small.
const LOCK_PAGE_SIZE: u32 = 100;
/// Page size for passcode lists (documented maximum 200).
const PASSCODE_PAGE_SIZE: u32 = 200;
/// Pages read at most per list call: 100 × 100 locks, 20 × 200 passcodes. A bound, so a
/// misbehaving `pages` field cannot make us loop forever.
const PAGES_MAX: u32 = 100;
/// Candidate codes tried when derived codes collide with codes already on the lock.
const CUSTOM_CODE_ATTEMPTS_MAX: u32 = 4;
/// Whole hours the end of a random window is pushed when TTLock says the window was
/// issued and deleted before (-1026). The guest gains an hour per shift, never loses one.
const PERIOD_SHIFTS_MAX: i64 = 3;
/// `keyboardPwdType` of a period ("timed") random passcode.
const PERIOD_PASSCODE_TYPE: &str = "3";
/// `addType` asking the cloud to write the code into the lock through its gateway.
const ADD_VIA_GATEWAY: &str = "2";

/// A lock this account administers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub lock_id: i64,
    /// Bluetooth name, e.g. `S31_9a10fe`.
    pub name: Option<String>,
    /// The name people gave it, e.g. "Room 12".
    pub alias: Option<String>,
    pub mac: Option<String>,
    pub battery_percent: Option<i64>,
    /// Whether a gateway connects the lock to the cloud: custom passcodes and their
    /// revocation need one.
    pub has_gateway: bool,
    /// Capability bitmask as TTLock's hex string.
    pub feature_value: Option<String>,
}

/// The lock's passage mode (door left unlocked during periods).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassageMode {
    pub enabled: bool,
    pub auto_unlock: Option<bool>,
    pub periods: Vec<PassagePeriod>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassagePeriod {
    pub all_day: bool,
    /// Minutes after local midnight.
    pub start_minute: Option<i64>,
    pub end_minute: Option<i64>,
    /// 1 = Monday … 7 = Sunday.
    pub week_days: Vec<i64>,
}

/// TTLock Open API client. Cheap to clone; clones share the token and the gateway lock.
#[derive(Clone)]
pub struct TtlockClient {
    inner: Arc<Inner>,
}

struct Inner {
    client_id: String,
    client_secret: SecretString,
    transport: Transport,
    tokens: TokenCache,
    /// A gateway runs one command at a time and answers -3003 (busy) to a second one, so
    /// gateway writes from this process go one after another.
    gateway_ops: Mutex<()>,
    health: ModuleHealth,
}

impl std::fmt::Debug for TtlockClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlockClient")
            .field("client_id", &self.inner.client_id)
            .finish_non_exhaustive()
    }
}

impl TtlockClient {
    pub fn new(config: TtlockConfig, health: ModuleHealth) -> Result<Self, TtlockError> {
        let transport = Transport::new(config.api_base, config.timeout_ms)?;
        let tokens = TokenCache::new(
            config.client_id.clone(),
            config.client_secret.clone(),
            config.username,
            &config.password,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                client_id: config.client_id,
                client_secret: config.client_secret,
                transport,
                tokens,
                gateway_ops: Mutex::new(()),
                health,
            }),
        })
    }

    pub fn health(&self) -> &ModuleHealth {
        &self.inner.health
    }

    /// Every lock the account administers (for `POST /api/doors/sync`).
    #[instrument(skip_all)]
    pub async fn list_locks(&self) -> Result<Vec<Lock>, TtlockError> {
        let mut locks = Vec::new();
        for page_no in 1..=PAGES_MAX {
            let params: Params = vec![
                ("pageNo", page_no.to_string()),
                ("pageSize", LOCK_PAGE_SIZE.to_string()),
            ];
            let page: LockListPage = decode(self.call(Method::Get, "v3/lock/list", params).await?)?;
            let last = page.list.is_empty() || i64::from(page_no) >= page.pages.unwrap_or(1);
            locks.extend(page.list.into_iter().map(Lock::from));
            if last {
                break;
            }
        }
        Ok(locks)
    }

    /// Issues the guest's door code: a custom code through the gateway when the lock has
    /// one (revocable), else a random period code (not revocable, whole hours).
    /// Repeating the request with the same idempotency key returns the same passcode.
    #[instrument(skip_all, fields(lock_id = request.lock_id, has_gateway = request.has_gateway))]
    pub async fn issue_access_code(
        &self,
        request: &AccessCodeRequest,
    ) -> Result<IssuedPasscode, TtlockError> {
        if request.has_gateway {
            self.issue_derived_custom(request).await
        } else {
            self.issue_period_with_shifts(request).await
        }
    }

    async fn issue_derived_custom(
        &self,
        request: &AccessCodeRequest,
    ) -> Result<IssuedPasscode, TtlockError> {
        let secret = self.inner.client_secret.expose_secret();
        let mut last_error = None;
        for attempt in 0..CUSTOM_CODE_ATTEMPTS_MAX {
            let custom = CustomPasscodeRequest {
                lock_id: request.lock_id,
                name: request.name.clone(),
                code: derive_code(secret, &request.idempotency_key, attempt),
                valid_from: request.valid_from,
                valid_until: request.valid_until,
            };
            match self.add_custom_passcode(&custom).await {
                // Another grant holds this code (or TTLock finds it too simple): the next
                // candidate is as stable for this key as the first one.
                Err(
                    error @ TtlockError::PasscodeRejected {
                        reason: PasscodeRejection::Duplicate | PasscodeRejection::TooSimple,
                        ..
                    },
                ) => last_error = Some(error),
                other => return other,
            }
        }
        Err(last_error.unwrap_or_else(|| {
            TtlockError::InvalidRequest("no candidate custom code was tried".into())
        }))
    }

    async fn issue_period_with_shifts(
        &self,
        request: &AccessCodeRequest,
    ) -> Result<IssuedPasscode, TtlockError> {
        let mut result = Err(TtlockError::InvalidRequest("no window was tried".into()));
        for shift_hours in 0..=PERIOD_SHIFTS_MAX {
            let period = PeriodPasscodeRequest {
                lock_id: request.lock_id,
                name: request.name.clone(),
                valid_from: request.valid_from,
                valid_until: request.valid_until + chrono::Duration::hours(shift_hours),
            };
            result = self.issue_period_passcode(&period).await;
            match &result {
                Err(TtlockError::PasscodeRejected {
                    reason: PasscodeRejection::PeriodReused,
                    ..
                }) => warn!(
                    shift_hours,
                    "window was issued and deleted before; extending"
                ),
                _ => break,
            }
        }
        result
    }

    /// Gets a random period passcode (type 3) for the window rounded to whole hours.
    /// TTLock derives it from (lock, window), so the same window returns the same code.
    #[instrument(skip_all, fields(lock_id = request.lock_id))]
    pub async fn issue_period_passcode(
        &self,
        request: &PeriodPasscodeRequest,
    ) -> Result<IssuedPasscode, TtlockError> {
        let (start, end) = whole_hour_window(request.valid_from, request.valid_until);
        if end <= start || end - start > PERIOD_MAX {
            return Err(TtlockError::InvalidRequest(format!(
                "a period passcode needs 0 < window <= {} days, got {start} .. {end}",
                PERIOD_MAX.num_days()
            )));
        }
        let params: Params = vec![
            ("lockId", request.lock_id.to_string()),
            ("keyboardPwdType", PERIOD_PASSCODE_TYPE.to_owned()),
            ("keyboardPwdName", request.name.clone()),
            ("startDate", millis(start)),
            ("endDate", millis(end)),
        ];
        let body = self
            .call(Method::Post, "v3/keyboardPwd/get", params)
            .await?;
        let answer: RandomPasscodeResponse = decode(body)?;
        info!(
            keyboard_pwd_id = answer.keyboard_pwd_id,
            "random period passcode issued"
        );
        Ok(IssuedPasscode {
            lock_id: request.lock_id,
            keyboard_pwd_id: answer.keyboard_pwd_id,
            code: answer.keyboard_pwd,
            kind: PasscodeKind::RandomPeriod,
            valid_from: start,
            valid_until: end,
            // Deleting a random code in the cloud does not reach the lock (reference §5.1).
            remotely_revocable: false,
            delete_mode: DeleteMode::CloudOnly,
            first_use_deadline: Some(start + FIRST_USE_WINDOW),
            reused_existing: false,
        })
    }

    /// Writes a custom passcode into the lock through its gateway (`addType=2`).
    /// If the lock already holds the same code for the same window (an earlier attempt
    /// whose answer was lost), that passcode is returned with `reused_existing`.
    #[instrument(skip_all, fields(lock_id = request.lock_id))]
    pub async fn add_custom_passcode(
        &self,
        request: &CustomPasscodeRequest,
    ) -> Result<IssuedPasscode, TtlockError> {
        let (start, end) = whole_minute_window(request.valid_from, request.valid_until);
        if end <= start {
            return Err(TtlockError::InvalidRequest(
                "a custom passcode's window must end after it starts".into(),
            ));
        }
        let params: Params = vec![
            ("lockId", request.lock_id.to_string()),
            ("keyboardPwd", request.code.clone()),
            ("keyboardPwdName", request.name.clone()),
            ("startDate", millis(start)),
            ("endDate", millis(end)),
            ("addType", ADD_VIA_GATEWAY.to_owned()),
        ];
        let added = {
            let _gateway = self.inner.gateway_ops.lock().await;
            self.call(Method::Post, "v3/keyboardPwd/add", params).await
        };
        let (keyboard_pwd_id, window, reused_existing) = match added {
            Ok(body) => (
                decode::<CustomPasscodeResponse>(body)?.keyboard_pwd_id,
                (start, end),
                false,
            ),
            Err(
                error @ TtlockError::PasscodeRejected {
                    reason: PasscodeRejection::Duplicate,
                    ..
                },
            ) => match self.find_same_grant(request).await? {
                Some((existing, window)) => (existing, window.unwrap_or((start, end)), true),
                None => return Err(error),
            },
            Err(error) => return Err(error),
        };
        info!(
            keyboard_pwd_id,
            reused_existing, "custom passcode on the lock"
        );
        Ok(IssuedPasscode {
            lock_id: request.lock_id,
            keyboard_pwd_id,
            code: request.code.clone(),
            kind: PasscodeKind::Custom,
            valid_from: window.0,
            valid_until: window.1,
            remotely_revocable: true,
            delete_mode: DeleteMode::ViaGateway,
            first_use_deadline: None,
            reused_existing,
        })
    }

    /// The custom passcode an earlier attempt for the same grant wrote (same code, same
    /// name), with the window the lock holds for it. An attempt whose answer was lost (a
    /// timeout, a crash) may have written it minutes before this one, so the window is
    /// not compared: matching on it would add a second code for one grant.
    async fn find_same_grant(
        &self,
        request: &CustomPasscodeRequest,
    ) -> Result<Option<(i64, Option<(DateTime<Utc>, DateTime<Utc>)>)>, TtlockError> {
        let records = self
            .list_passcodes(request.lock_id, Some(&request.code))
            .await?;
        Ok(records
            .into_iter()
            .find(|record| {
                record.code.as_deref() == Some(request.code.as_str())
                    && record.name.as_deref() == Some(request.name.as_str())
            })
            .map(|record| {
                let window = record.valid_from.zip(record.valid_until);
                (record.keyboard_pwd_id, window)
            }))
    }

    /// Deletes a passcode. A passcode TTLock no longer knows counts as deleted
    /// ([`DeleteOutcome::AlreadyAbsent`]). A retryable error from
    /// [`DeleteMode::ViaGateway`] means the lock still accepts the code: record the
    /// revocation as pending and retry.
    #[instrument(skip_all, fields(lock_id = lock_id, keyboard_pwd_id = keyboard_pwd_id, mode = ?mode))]
    pub async fn delete_passcode(
        &self,
        lock_id: i64,
        keyboard_pwd_id: i64,
        mode: DeleteMode,
    ) -> Result<DeleteOutcome, TtlockError> {
        let params: Params = vec![
            ("lockId", lock_id.to_string()),
            ("keyboardPwdId", keyboard_pwd_id.to_string()),
            ("deleteType", mode.wire_value().to_owned()),
        ];
        let deleted = {
            let _gateway = match mode {
                DeleteMode::ViaGateway => Some(self.inner.gateway_ops.lock().await),
                DeleteMode::CloudOnly => None,
            };
            self.call(Method::Post, "v3/keyboardPwd/delete", params)
                .await
        };
        match deleted {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(TtlockError::PasscodeNotFound) => Ok(DeleteOutcome::AlreadyAbsent),
            Err(error) => Err(error),
        }
    }

    /// The lock's passcodes, optionally filtered by TTLock's `searchStr` (name or code).
    #[instrument(skip_all, fields(lock_id = lock_id))]
    pub async fn list_passcodes(
        &self,
        lock_id: i64,
        search: Option<&str>,
    ) -> Result<Vec<PasscodeRecord>, TtlockError> {
        let mut records = Vec::new();
        for page_no in 1..=PAGES_MAX {
            let mut params: Params = vec![
                ("lockId", lock_id.to_string()),
                ("pageNo", page_no.to_string()),
                ("pageSize", PASSCODE_PAGE_SIZE.to_string()),
                // Newest first: the passcode we look for is usually the latest.
                ("orderBy", "1".to_owned()),
            ];
            if let Some(search) = search {
                params.push(("searchStr", search.to_owned()));
            }
            let body = self
                .call(Method::Get, "v3/lock/listKeyboardPwd", params)
                .await?;
            let page: PasscodeListPage = decode(body)?;
            let last = page.list.is_empty() || i64::from(page_no) >= page.pages.unwrap_or(1);
            records.extend(page.list.into_iter().map(PasscodeRecord::from));
            if last {
                break;
            }
        }
        Ok(records)
    }

    /// Reads the lock's passage-mode configuration.
    #[instrument(skip_all, fields(lock_id = lock_id))]
    pub async fn passage_mode(&self, lock_id: i64) -> Result<PassageMode, TtlockError> {
        let params: Params = vec![("lockId", lock_id.to_string())];
        let body = self
            .call(Method::Get, "v3/lock/getPassageModeConfiguration", params)
            .await?;
        let answer: PassageModeResponse = decode(body)?;
        Ok(PassageMode {
            enabled: answer.passage_mode == 1,
            auto_unlock: answer.auto_unlock.map(|value| value == 1),
            periods: answer
                .cyclic_config
                .into_iter()
                .map(|period| PassagePeriod {
                    all_day: period.is_all_day == Some(1),
                    start_minute: period.start_time,
                    end_minute: period.end_time,
                    week_days: period.week_days,
                })
                .collect(),
        })
    }

    /// One authenticated API call, with the module health updated from its outcome.
    async fn call(
        &self,
        method: Method,
        path: &'static str,
        params: Params,
    ) -> Result<Value, TtlockError> {
        let outcome = self.call_with_token(method, path, &params).await;
        match &outcome {
            Err(error) if error.degrades_module() => {
                warn!(%error, path, "TTLock call failed");
                self.inner.health.record_error(error);
            }
            _ => self.inner.health.record_ok(),
        }
        outcome
    }

    /// Adds the common parameters and, when TTLock says the token is unknown (10003) or
    /// expired (10004), renews it and repeats the call once, so callers never see it.
    async fn call_with_token(
        &self,
        method: Method,
        path: &'static str,
        params: &Params,
    ) -> Result<Value, TtlockError> {
        let mut renewed = false;
        loop {
            let token = self.inner.tokens.get(&self.inner.transport).await?;
            let mut all: Params = Vec::with_capacity(params.len() + 3);
            all.push(("clientId", self.inner.client_id.clone()));
            all.push(("accessToken", token.expose_secret().to_owned()));
            // Milliseconds, within 5 minutes of TTLock's clock (else 80000).
            all.push(("date", Utc::now().timestamp_millis().to_string()));
            all.extend(params.iter().cloned());
            match self.inner.transport.send(method, path, &all).await {
                Err(TtlockError::TokenRejected { errcode })
                    if !renewed && (errcode == 10003 || errcode == 10004) =>
                {
                    info!(errcode, "TTLock rejected the access token; renewing it");
                    self.inner.tokens.invalidate(&token).await;
                    renewed = true;
                }
                other => return other,
            }
        }
    }
}

impl From<LockItem> for Lock {
    fn from(item: LockItem) -> Self {
        Self {
            lock_id: item.lock_id,
            name: item.lock_name,
            alias: item.lock_alias,
            mac: item.lock_mac,
            battery_percent: item.electric_quantity,
            has_gateway: item.has_gateway == Some(1),
            feature_value: item.feature_value,
        }
    }
}

impl From<PasscodeItem> for PasscodeRecord {
    fn from(item: PasscodeItem) -> Self {
        let instant = |millis: Option<i64>| millis.and_then(from_millis);
        Self {
            keyboard_pwd_id: item.keyboard_pwd_id,
            code: item.keyboard_pwd,
            name: item.keyboard_pwd_name,
            keyboard_pwd_type: item.keyboard_pwd_type,
            is_custom: item.is_custom == Some(1),
            valid_from: instant(item.start_date),
            valid_until: instant(item.end_date),
        }
    }
}
