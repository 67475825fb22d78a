//! Passcode endpoints (`/v3/keyboardPwd/get|add|delete`, `/v3/lock/listKeyboardPwd`) and
//! the keypad's verdict on a typed code.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{
    action_ok, page_body, page_of, paging, ApiError, ApiResult, CodeKind, Params, SimPasscode,
    World, FIRST_USE_WINDOW_MS, ONE_TIME_WINDOW_MS, PERIOD_MAX_MS,
};

impl World {
    /// `POST /v3/keyboardPwd/get`: a random code, deterministic per (lock, type, window).
    pub(crate) fn passcode_get(&mut self, params: &Params<'_>, now_ms: i64) -> ApiResult {
        let pwd_type = params.req_i64("keyboardPwdType")?;
        if !(1..=3).contains(&pwd_type) {
            return Err(ApiError::new(
                -3,
                "simulator supports keyboardPwdType 1, 2 and 3",
            ));
        }
        let start = self.truncate_hour(params.req_i64("startDate")?);
        let end = match pwd_type {
            1 => start + ONE_TIME_WINDOW_MS,
            2 => i64::MAX,
            _ => {
                let end = self.truncate_hour(params.req_i64("endDate")?);
                if end <= start || end - start > PERIOD_MAX_MS {
                    return Err(ApiError::new(-3, "invalid parameter: endDate"));
                }
                end
            }
        };
        let name = params.str("keyboardPwdName").unwrap_or_default().to_owned();
        let lock = self.lock(params)?;
        let lock_id = lock.spec.lock_id;
        if lock
            .deleted_random_windows
            .contains(&(pwd_type, start, end))
        {
            return Err(ApiError::new(
                -1026,
                "This period was issued before and deleted; please choose another whole hour.",
            ));
        }
        // "With the same start and end time there is only one Timed passcode for a lock."
        let same_window = |code: &&SimPasscode| {
            code.in_cloud
                && code.kind == CodeKind::Random(pwd_type)
                && code.start_ms == start
                && code.end_ms == end
        };
        if pwd_type == 3 {
            if let Some(existing) = lock.passcodes.iter().find(same_window) {
                return Ok(json!({ "keyboardPwd": existing.code, "keyboardPwdId": existing.id }));
            }
        }
        let nth = lock
            .passcodes
            .iter()
            .filter(|code| code.kind == CodeKind::Random(pwd_type) && code.start_ms == start)
            .count();
        let code = random_code(lock_id, pwd_type, start, end, nth);
        let id = self.next_passcode_id();
        let passcode = SimPasscode {
            id,
            code: code.clone(),
            name,
            kind: CodeKind::Random(pwd_type),
            start_ms: start,
            end_ms: end,
            created_ms: now_ms,
            in_cloud: true,
            on_lock: true,
            first_used_ms: None,
            uses: 0,
        };
        self.lock_mut(params)?.passcodes.push(passcode);
        Ok(json!({ "keyboardPwd": code, "keyboardPwdId": id }))
    }

    /// `POST /v3/keyboardPwd/add`: a custom code, written by the gateway for `addType=2`.
    pub(crate) fn passcode_add(&mut self, params: &Params<'_>, now_ms: i64) -> ApiResult {
        let code = params.req_str("keyboardPwd")?.to_owned();
        if !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ApiError::new(
                -3,
                "invalid parameter: keyboardPwd must be digits",
            ));
        }
        if !(4..=9).contains(&code.len()) {
            return Err(ApiError::new(-3006, "The passcode should be 4 - 9 digits."));
        }
        if too_simple(&code) {
            return Err(ApiError::new(-2032, "The passcode is too simple."));
        }
        let start = params.req_i64("startDate")?;
        let end = params.req_i64("endDate")?;
        if end <= start {
            return Err(ApiError::new(-3, "invalid parameter: endDate"));
        }
        let add_type = params.opt_i64("addType")?.unwrap_or(1);
        if !(1..=2).contains(&add_type) {
            return Err(ApiError::new(
                -4043,
                "The lock does not support this function.",
            ));
        }
        let name = params.str("keyboardPwdName").unwrap_or_default().to_owned();
        let capacity = self.config.custom_passcode_capacity;
        let lock = self.lock(params)?;
        if lock
            .passcodes
            .iter()
            .any(|other| other.in_cloud && other.code == code)
        {
            return Err(ApiError::new(-3007, "The same passcode already exists."));
        }
        let customs = lock
            .passcodes
            .iter()
            .filter(|p| p.in_cloud && p.kind == CodeKind::Custom)
            .count();
        if customs >= capacity {
            return Err(ApiError::new(-3009, "The passcode storage is full."));
        }
        if add_type == 2 {
            lock.gateway_reachable()?;
        }
        let id = self.next_passcode_id();
        let passcode = SimPasscode {
            id,
            code,
            name,
            kind: CodeKind::Custom,
            start_ms: start,
            end_ms: end,
            created_ms: now_ms,
            in_cloud: true,
            // addType 1 means a phone already wrote it over Bluetooth; the simulator has no
            // phone, so only gateway writes reach the lock.
            on_lock: add_type == 2,
            first_used_ms: None,
            uses: 0,
        };
        self.lock_mut(params)?.passcodes.push(passcode);
        Ok(json!({ "keyboardPwdId": id }))
    }

    /// `POST /v3/keyboardPwd/delete`.
    pub(crate) fn passcode_delete(&mut self, params: &Params<'_>) -> ApiResult {
        let id = params.req_i64("keyboardPwdId")?;
        let delete_type = params.opt_i64("deleteType")?.unwrap_or(1);
        if !(1..=2).contains(&delete_type) {
            return Err(ApiError::new(
                -4043,
                "The lock does not support this function.",
            ));
        }
        let random_revocable = self.config.random_delete_via_gateway_revokes;
        let lock = self.lock_mut(params)?;
        let Some(index) = lock.passcodes.iter().position(|p| p.id == id && p.in_cloud) else {
            return Err(ApiError::new(-2009, "The passcode does not exist."));
        };
        if delete_type == 2 {
            lock.gateway_reachable()?;
        }
        let passcode = &mut lock.passcodes[index];
        passcode.in_cloud = false;
        if delete_type == 2 {
            passcode.on_lock = match passcode.kind {
                CodeKind::Custom => false,
                // Whether a gateway delete blacklists a random code is unconfirmed: a knob.
                CodeKind::Random(_) => passcode.on_lock && !random_revocable,
            };
        }
        if let CodeKind::Random(pwd_type) = passcode.kind {
            let window = (pwd_type, passcode.start_ms, passcode.end_ms);
            lock.deleted_random_windows.insert(window);
        }
        Ok(action_ok())
    }

    /// `GET /v3/lock/listKeyboardPwd`.
    pub(crate) fn passcode_list(&self, params: &Params<'_>) -> ApiResult {
        let (page_no, page_size) = paging(params, 200)?;
        let order_by = params.opt_i64("orderBy")?.unwrap_or(1);
        let search = params.str("searchStr").unwrap_or_default();
        let lock = self.lock(params)?;
        let mut matching: Vec<&SimPasscode> = lock
            .passcodes
            .iter()
            .filter(|p| p.in_cloud && (p.code.contains(search) || p.name.contains(search)))
            .collect();
        match order_by {
            0 => matching.sort_by(|a, b| a.name.cmp(&b.name)),
            2 => matching.sort_by(|a, b| b.name.cmp(&a.name)),
            _ => matching.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(b.id.cmp(&a.id))),
        }
        let items = page_of(&matching, page_no, page_size)
            .iter()
            .map(|p| passcode_item(lock.spec.lock_id, p, &self.config.username))
            .collect::<Vec<_>>();
        Ok(page_body(items, page_no, page_size, matching.len()))
    }
}

/// Would the lock accept `passcode` at `at_ms`? `Err` carries the reason it would not.
pub(super) fn keypad_verdict(passcode: &SimPasscode, at_ms: i64) -> Result<(), &'static str> {
    if at_ms < passcode.start_ms {
        return Err("before the start of its validity");
    }
    if at_ms >= passcode.end_ms {
        return Err("after the end of its validity");
    }
    match passcode.kind {
        CodeKind::Custom => Ok(()),
        CodeKind::Random(1) if passcode.uses > 0 => Err("one-time code already used"),
        CodeKind::Random(_)
            if passcode.first_used_ms.is_none()
                && at_ms >= passcode.start_ms + FIRST_USE_WINDOW_MS =>
        {
            Err("void: not used within 24 h of its start")
        }
        CodeKind::Random(_) => Ok(()),
    }
}

/// The algorithm's code for a window: deterministic, 8 digits, no leading zero.
fn random_code(lock_id: i64, pwd_type: i64, start: i64, end: i64, nth: usize) -> String {
    let mut hasher = Sha256::new();
    for part in [lock_id, pwd_type, start, end, nth as i64] {
        hasher.update(part.to_be_bytes());
    }
    let digest = hasher.finalize();
    let mut head = [0_u8; 8];
    head.copy_from_slice(&digest[..8]);
    (10_000_000 + u64::from_be_bytes(head) % 90_000_000).to_string()
}

fn passcode_item(lock_id: i64, passcode: &SimPasscode, sender: &str) -> Value {
    let pwd_type = match passcode.kind {
        CodeKind::Random(pwd_type) => pwd_type,
        CodeKind::Custom => 3,
    };
    json!({
        "keyboardPwdId": passcode.id,
        "lockId": lock_id,
        "keyboardPwd": passcode.code,
        "keyboardPwdName": passcode.name,
        // The documentation's own example has this as a string.
        "keyboardPwdType": pwd_type.to_string(),
        "keyboardPwdVersion": 4,
        "startDate": passcode.start_ms,
        "endDate": if passcode.end_ms == i64::MAX { 0 } else { passcode.end_ms },
        "sendDate": passcode.created_ms,
        "isCustom": if passcode.kind == CodeKind::Custom { 1 } else { 0 },
        "status": 1,
        "senderUsername": sender,
    })
}

/// TTLock's -2032 rule as the simulator models it: one repeated digit, or one ascending
/// or descending run. Kept apart from the client's own check on purpose, so the client
/// is tested against an independent rule.
fn too_simple(code: &str) -> bool {
    let digits: Vec<i16> = code
        .bytes()
        .map(|b| i16::from(b) - i16::from(b'0'))
        .collect();
    let first_step = match digits.as_slice() {
        [a, b, ..] => b - a,
        _ => return false,
    };
    (-1..=1).contains(&first_step)
        && digits
            .windows(2)
            .all(|pair| pair[1] - pair[0] == first_step)
}
