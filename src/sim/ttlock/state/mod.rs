//! The TTLock simulator's world: accounts and tokens, locks with gateways, passcodes in
//! the cloud and on the lock, and the keypad rules that decide whether a code opens.
//!
//! The cloud record and the lock's memory are kept apart on purpose: a custom code
//! deleted through the gateway leaves the lock, a custom code deleted in the cloud only
//! does not, and a random code stays valid on the lock by algorithm whatever the cloud
//! says. That difference is what the refund tests need to see.

use std::collections::{BTreeMap, HashMap, HashSet};

use md5::Md5;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest;

use super::config::{SimLockSpec, TtlockSimConfig};
use crate::sim::{Faults, RequestLog};

mod passcodes;

use passcodes::keypad_verdict;

const HOUR_MS: i64 = 3_600_000;
/// Random period and permanent codes die unless entered once within 24 h of the start.
const FIRST_USE_WINDOW_MS: i64 = 24 * HOUR_MS;
/// One-time random codes work once, within 6 h of the start.
const ONE_TIME_WINDOW_MS: i64 = 6 * HOUR_MS;
/// Hour-granular period codes are documented up to a year; the simulator refuses longer
/// rather than model the month granularity beyond.
const PERIOD_MAX_MS: i64 = 366 * 24 * HOUR_MS;

/// A TTLock error answer: HTTP 200 with `errcode`/`errmsg`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub errcode: i64,
    pub errmsg: String,
}

impl ApiError {
    pub(crate) fn new(errcode: i64, errmsg: impl Into<String>) -> Self {
        Self {
            errcode,
            errmsg: errmsg.into(),
        }
    }

    pub(crate) fn body(&self) -> Value {
        json!({ "errcode": self.errcode, "errmsg": self.errmsg, "description": self.errmsg })
    }
}

type ApiResult = Result<Value, ApiError>;

/// The action-endpoint success body.
pub(crate) fn action_ok() -> Value {
    json!({ "errcode": 0, "errmsg": "none error message", "description": "表示成功或是" })
}

/// Counters tests assert on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TtlockSimStats {
    pub password_grants: u64,
    pub refresh_grants: u64,
    /// Requests answered 10003/10004 (unknown or expired token).
    pub rejected_tokens: u64,
    /// `/v3` requests that passed authentication.
    pub api_calls: u64,
}

/// What the keypad says when a code is typed at a given instant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryResult {
    pub opens: bool,
    pub keyboard_pwd_id: Option<i64>,
    /// Why, in words (e.g. "after the end of its validity").
    pub reason: String,
}

/// A passcode as tests see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PasscodeView {
    pub keyboard_pwd_id: i64,
    pub code: String,
    pub custom: bool,
    pub keyboard_pwd_type: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    /// The cloud still lists it.
    pub in_cloud: bool,
    /// The lock would accept it (before checking the window).
    pub on_lock: bool,
    pub first_used_ms: Option<i64>,
    pub uses: u32,
}

/// A lock as tests see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LockView {
    pub lock_id: i64,
    pub alias: String,
    pub has_gateway: bool,
    pub gateway_online: bool,
    pub passage_mode: bool,
    pub passcodes: Vec<PasscodeView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeKind {
    /// `keyboardPwdType` 1 (one-time), 2 (permanent) or 3 (period).
    Random(i64),
    Custom,
}

#[derive(Debug, Clone)]
struct SimPasscode {
    id: i64,
    code: String,
    name: String,
    kind: CodeKind,
    start_ms: i64,
    end_ms: i64,
    created_ms: i64,
    in_cloud: bool,
    /// Custom: written by the gateway and not removed since. Random: not blacklisted.
    on_lock: bool,
    first_used_ms: Option<i64>,
    uses: u32,
}

#[derive(Debug, Clone)]
struct SimLock {
    spec: SimLockSpec,
    gateway_online: bool,
    passage_mode: bool,
    auto_unlock: bool,
    passcodes: Vec<SimPasscode>,
    /// Random windows (type, start, end) issued and then deleted: re-issuing them is -1026.
    deleted_random_windows: HashSet<(i64, i64, i64)>,
}

impl SimLock {
    fn new(spec: SimLockSpec) -> Self {
        Self {
            spec,
            gateway_online: true,
            passage_mode: false,
            auto_unlock: false,
            passcodes: Vec::new(),
            deleted_random_windows: HashSet::new(),
        }
    }

    /// Gateway writes (add/delete type 2) need a gateway that is online.
    fn gateway_reachable(&self) -> Result<(), ApiError> {
        if !self.spec.has_gateway {
            return Err(ApiError::new(
                -2012,
                "The lock is not connected to any gateway.",
            ));
        }
        if !self.gateway_online {
            return Err(ApiError::new(
                -3002,
                "The gateway is offline. Please check and try again.",
            ));
        }
        Ok(())
    }
}

struct Token {
    expires_at_ms: i64,
}

/// All mutable simulator state, behind one mutex.
pub(crate) struct World {
    pub config: TtlockSimConfig,
    pub faults: Faults,
    pub requests: RequestLog,
    pub stats: TtlockSimStats,
    tokens: HashMap<String, Token>,
    refresh_tokens: HashSet<String>,
    locks: BTreeMap<i64, SimLock>,
    last_passcode_id: i64,
}

/// Typed access to merged query + form parameters; a missing or malformed field is -3.
pub(crate) struct Params<'a>(pub &'a BTreeMap<String, String>);

impl Params<'_> {
    fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn req_str(&self, name: &str) -> Result<&str, ApiError> {
        self.str(name)
            .filter(|value| !value.is_empty())
            .ok_or_else(|| ApiError::new(-3, format!("invalid parameter: {name} is required")))
    }

    fn opt_i64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.str(name) {
            None | Some("") => Ok(None),
            Some(raw) => raw.parse().map(Some).map_err(|_| {
                ApiError::new(-3, format!("invalid parameter: {name} must be an integer"))
            }),
        }
    }

    fn req_i64(&self, name: &str) -> Result<i64, ApiError> {
        self.opt_i64(name)?
            .ok_or_else(|| ApiError::new(-3, format!("invalid parameter: {name} is required")))
    }
}

impl World {
    pub(crate) fn new(config: TtlockSimConfig) -> Self {
        let locks = config
            .locks
            .iter()
            .map(|spec| (spec.lock_id, SimLock::new(spec.clone())))
            .collect();
        Self {
            config,
            faults: Faults::default(),
            requests: RequestLog::default(),
            stats: TtlockSimStats::default(),
            tokens: HashMap::new(),
            refresh_tokens: HashSet::new(),
            locks,
            last_passcode_id: 90_412_200,
        }
    }

    // ----- OAuth -------------------------------------------------------------------

    /// `POST /oauth2/token`: password grant, or `grant_type=refresh_token`.
    pub(crate) fn oauth(&mut self, params: &Params<'_>, now_ms: i64) -> ApiResult {
        use secrecy::ExposeSecret;
        // Both spellings are in use (reference §3.1).
        let client_id = params.str("clientId").or(params.str("client_id"));
        let client_secret = params.str("clientSecret").or(params.str("client_secret"));
        if client_id != Some(self.config.client_id.as_str()) {
            return Err(ApiError::new(10000, "client_id does not exist"));
        }
        if client_secret != Some(self.config.client_secret.expose_secret()) {
            return Err(ApiError::new(10001, "invalid client"));
        }
        if params.str("grant_type") == Some("refresh_token") {
            let refresh = params.req_str("refresh_token")?.to_owned();
            if !self.refresh_tokens.contains(&refresh) {
                return Err(ApiError::new(10011, "invalid refresh_token"));
            }
            self.stats.refresh_grants += 1;
            let refresh = if self.config.rotate_refresh_token {
                self.refresh_tokens.remove(&refresh);
                self.new_refresh_token()
            } else {
                refresh
            };
            let access = self.new_access_token(now_ms);
            return Ok(json!({
                "access_token": access,
                "refresh_token": refresh,
                "expires_in": self.config.token_lifetime_s,
            }));
        }
        let password = params.req_str("password")?;
        if password.len() != 32 || !password.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::new(30005, "password must be md5 encrypted"));
        }
        let expected = hex::encode(Md5::digest(self.config.password.expose_secret().as_bytes()));
        if params.str("username") != Some(self.config.username.as_str())
            || !password.eq_ignore_ascii_case(&expected)
        {
            return Err(ApiError::new(10007, "invalid account or invalid password"));
        }
        self.stats.password_grants += 1;
        let access = self.new_access_token(now_ms);
        let refresh = self.new_refresh_token();
        Ok(json!({
            "access_token": access,
            "uid": 778_812,
            "refresh_token": refresh,
            "expires_in": self.config.token_lifetime_s,
        }))
    }

    fn new_access_token(&mut self, now_ms: i64) -> String {
        let token = format!("{:032x}", rand::random::<u128>());
        let lifetime_ms = i64::try_from(self.config.token_lifetime_s)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000);
        self.tokens.insert(
            token.clone(),
            Token {
                expires_at_ms: now_ms.saturating_add(lifetime_ms),
            },
        );
        token
    }

    fn new_refresh_token(&mut self) -> String {
        let token = format!("{:032x}", rand::random::<u128>());
        self.refresh_tokens.insert(token.clone());
        token
    }

    /// Control: every access token expires now; optionally refresh tokens are revoked.
    pub(crate) fn expire_tokens(&mut self, now_ms: i64, refresh_too: bool) {
        for token in self.tokens.values_mut() {
            token.expires_at_ms = token.expires_at_ms.min(now_ms);
        }
        if refresh_too {
            self.refresh_tokens.clear();
        }
    }

    /// The common checks of every `/v3` call: `clientId`, `accessToken`, `date`.
    pub(crate) fn authorize(&mut self, params: &Params<'_>, now_ms: i64) -> Result<(), ApiError> {
        if params.str("clientId") != Some(self.config.client_id.as_str()) {
            return Err(ApiError::new(10000, "client_id does not exist"));
        }
        let token = params.str("accessToken").unwrap_or_default();
        match self.tokens.get(token) {
            None => {
                self.stats.rejected_tokens += 1;
                return Err(ApiError::new(10003, "token does not exist"));
            }
            Some(found) if now_ms >= found.expires_at_ms => {
                self.stats.rejected_tokens += 1;
                return Err(ApiError::new(10004, "invalid token"));
            }
            Some(_) => {}
        }
        let date = params.opt_i64("date")?.unwrap_or(0);
        if (date - now_ms).abs() > self.config.date_tolerance_ms {
            return Err(ApiError::new(
                80000,
                "date must be current time, in 5 minutes",
            ));
        }
        self.stats.api_calls += 1;
        Ok(())
    }

    // ----- Locks -------------------------------------------------------------------

    fn lock(&self, params: &Params<'_>) -> Result<&SimLock, ApiError> {
        let lock_id = params.req_i64("lockId")?;
        self.locks
            .get(&lock_id)
            .ok_or_else(|| ApiError::new(-1003, "The lock does not exist."))
    }

    fn lock_mut(&mut self, params: &Params<'_>) -> Result<&mut SimLock, ApiError> {
        let lock_id = params.req_i64("lockId")?;
        self.locks
            .get_mut(&lock_id)
            .ok_or_else(|| ApiError::new(-1003, "The lock does not exist."))
    }

    /// `GET /v3/lock/list`.
    pub(crate) fn lock_list(&self, params: &Params<'_>) -> ApiResult {
        let (page_no, page_size) = paging(params, 1000)?;
        let alias_filter = params.str("lockAlias").unwrap_or_default().to_lowercase();
        let matching: Vec<&SimLock> = self
            .locks
            .values()
            .filter(|lock| lock.spec.alias.to_lowercase().contains(&alias_filter))
            .collect();
        let items = page_of(&matching, page_no, page_size)
            .iter()
            .map(|lock| lock_item(lock))
            .collect::<Vec<_>>();
        Ok(page_body(items, page_no, page_size, matching.len()))
    }

    /// `GET /v3/lock/detail`.
    pub(crate) fn lock_detail(&self, params: &Params<'_>) -> ApiResult {
        let lock = self.lock(params)?;
        let mut item = lock_item(lock);
        item["timezoneRawOffset"] =
            json!(i64::from(self.config.hour_truncation_offset_minutes) * 60_000);
        item["passageMode"] = json!(if lock.passage_mode { 1 } else { 2 });
        item["keyboardPwdVersion"] = json!(4);
        item["autoLockTime"] = json!(-1);
        Ok(item)
    }

    /// `GET /v3/lock/getPassageModeConfiguration`.
    pub(crate) fn passage_mode(&self, params: &Params<'_>) -> ApiResult {
        let lock = self.lock(params)?;
        let cyclic = if lock.passage_mode {
            json!([{ "isAllDay": 1, "startTime": 0, "endTime": 1440, "weekDays": [1,2,3,4,5,6,7] }])
        } else {
            json!([])
        };
        Ok(json!({
            "passageMode": if lock.passage_mode { 1 } else { 2 },
            "cyclicConfig": cyclic,
            "autoUnlock": if lock.auto_unlock { 1 } else { 2 },
        }))
    }

    // ----- Keypad and control --------------------------------------------------------

    /// Types `code` on the lock's keypad at `at_ms`.
    pub(crate) fn enter(&mut self, lock_id: i64, code: &str, at_ms: i64) -> Option<EntryResult> {
        let lock = self.locks.get_mut(&lock_id)?;
        let mut reason = "no such code on the lock".to_owned();
        for passcode in lock.passcodes.iter_mut().filter(|p| p.code == code) {
            if !passcode.on_lock {
                reason = "the code was removed from the lock".to_owned();
                continue;
            }
            match keypad_verdict(passcode, at_ms) {
                Ok(()) => {
                    passcode.first_used_ms.get_or_insert(at_ms);
                    passcode.uses += 1;
                    return Some(EntryResult {
                        opens: true,
                        keyboard_pwd_id: Some(passcode.id),
                        reason: "valid".to_owned(),
                    });
                }
                Err(why) => reason = why.to_owned(),
            }
        }
        Some(EntryResult {
            opens: false,
            keyboard_pwd_id: None,
            reason,
        })
    }

    pub(crate) fn add_lock(&mut self, spec: SimLockSpec) {
        self.locks
            .entry(spec.lock_id)
            .or_insert_with(|| SimLock::new(spec));
    }

    pub(crate) fn set_gateway_online(&mut self, lock_id: i64, online: bool) -> bool {
        self.locks
            .get_mut(&lock_id)
            .map(|lock| lock.gateway_online = online)
            .is_some()
    }

    pub(crate) fn set_passage_mode(
        &mut self,
        lock_id: i64,
        enabled: bool,
        auto_unlock: bool,
    ) -> bool {
        self.locks
            .get_mut(&lock_id)
            .map(|lock| {
                lock.passage_mode = enabled;
                lock.auto_unlock = auto_unlock;
            })
            .is_some()
    }

    pub(crate) fn views(&self) -> Vec<LockView> {
        self.locks.values().map(lock_view).collect()
    }

    fn next_passcode_id(&mut self) -> i64 {
        self.last_passcode_id += 1;
        self.last_passcode_id
    }

    /// Cuts to the whole hour in the configured lock time zone (reference: unconfirmed
    /// whether TTLock truncates in the lock's zone or UTC).
    fn truncate_hour(&self, ms: i64) -> i64 {
        let offset_ms = i64::from(self.config.hour_truncation_offset_minutes) * 60_000;
        let local = ms + offset_ms;
        local - local.rem_euclid(HOUR_MS) - offset_ms
    }
}

fn paging(params: &Params<'_>, page_size_max: i64) -> Result<(usize, usize), ApiError> {
    let page_no = params.req_i64("pageNo")?;
    let page_size = params.req_i64("pageSize")?;
    if page_no < 1 || !(1..=page_size_max).contains(&page_size) {
        return Err(ApiError::new(-3, "invalid parameter: pageNo/pageSize"));
    }
    Ok((
        usize::try_from(page_no).unwrap_or(1),
        usize::try_from(page_size).unwrap_or(1),
    ))
}

fn page_of<T>(items: &[T], page_no: usize, page_size: usize) -> &[T] {
    let start = (page_no - 1).saturating_mul(page_size).min(items.len());
    let end = start.saturating_add(page_size).min(items.len());
    &items[start..end]
}

fn page_body(list: Vec<Value>, page_no: usize, page_size: usize, total: usize) -> Value {
    json!({
        "list": list,
        "pageNo": page_no,
        "pageSize": page_size,
        "pages": total.div_ceil(page_size),
        "total": total,
    })
}

fn lock_item(lock: &SimLock) -> Value {
    let spec = &lock.spec;
    json!({
        "lockId": spec.lock_id,
        "lockName": format!("S31_{:06x}", spec.lock_id & 0xff_ffff),
        "lockAlias": spec.alias,
        "lockMac": format!("C1:22:{:02X}:{:02X}:{:02X}:07", (spec.lock_id >> 16) & 0xff, (spec.lock_id >> 8) & 0xff, spec.lock_id & 0xff),
        "electricQuantity": 84,
        "featureValue": "E4C354CD1F3",
        "hasGateway": if spec.has_gateway { 1 } else { 0 },
        "lockData": "<opaque>",
        "groupId": 0,
        "groupName": "",
        "date": 1_700_000_000_000_i64,
    })
}

fn lock_view(lock: &SimLock) -> LockView {
    LockView {
        lock_id: lock.spec.lock_id,
        alias: lock.spec.alias.clone(),
        has_gateway: lock.spec.has_gateway,
        gateway_online: lock.gateway_online,
        passage_mode: lock.passage_mode,
        passcodes: lock
            .passcodes
            .iter()
            .map(|p| PasscodeView {
                keyboard_pwd_id: p.id,
                code: p.code.clone(),
                custom: p.kind == CodeKind::Custom,
                keyboard_pwd_type: match p.kind {
                    CodeKind::Random(pwd_type) => pwd_type,
                    CodeKind::Custom => 3,
                },
                start_ms: p.start_ms,
                end_ms: p.end_ms,
                in_cloud: p.in_cloud,
                on_lock: p.on_lock,
                first_used_ms: p.first_used_ms,
                uses: p.uses,
            })
            .collect(),
    }
}
