//! TTLock and Shelly, modelled in memory after `/work/shared/reference/{ttlock,shelly}.md`,
//! with the faults the ports inject: offline windows, lost answers (the device acted, the
//! answer never came), rate limits, refusals, relays switched behind our back, reboots.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use latchkey_aggregates::door::services::{
    IssuedPasscode, LockError, LockGateway, PasscodeRequest,
};
use latchkey_aggregates::session::services::{
    RelayCommand, RelayError, RelayGateway, RelayOutcome, RelayTarget,
};
use uuid::Uuid;

use crate::rng::Rng;

/// Percentages of each fault, chosen per seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeviceFaults {
    pub answer_lost: u32,
    pub refused: u32,
    pub rate_limited: u32,
}

#[derive(Clone, Debug)]
pub struct Passcode {
    pub payment_id: Uuid,
    pub valid_to: DateTime<Utc>,
    pub deleted: bool,
}

#[derive(Clone, Debug)]
pub struct Lock {
    /// A lock behind a gateway can have codes deleted remotely; one without cannot.
    pub has_gateway: bool,
    pub passcodes: BTreeMap<i64, Passcode>,
}

pub struct TtlockModel {
    pub now: DateTime<Utc>,
    pub faults: DeviceFaults,
    rng: Rng,
    pub locks: BTreeMap<i64, Lock>,
    pub offline_until: DateTime<Utc>,
    next_passcode: i64,
}

impl TtlockModel {
    pub fn new(rng: Rng, faults: DeviceFaults) -> Self {
        TtlockModel {
            now: DateTime::<Utc>::MIN_UTC,
            faults,
            rng,
            locks: BTreeMap::new(),
            offline_until: DateTime::<Utc>::MIN_UTC,
            next_passcode: 7000,
        }
    }

    fn online(&self) -> bool {
        self.now >= self.offline_until
    }

    fn issue(&mut self, request: &PasscodeRequest) -> Result<IssuedPasscode, LockError> {
        if !self.online() {
            return Err(LockError::retryable(
                "simulated: TTLock gateway offline (-2012)",
            ));
        }
        if self.rng.chance(self.faults.refused) {
            return Err(LockError::retryable(
                "simulated: TTLock refused: the passcode already exists (-3007)",
            ));
        }
        let Some(lock) = self.locks.get_mut(&request.lock_id) else {
            return Err(LockError::permanent("simulated: no such lock (-4043)"));
        };
        let remotely_revocable = lock.has_gateway;
        // The adapter derives the code from `latchkey-access-<payment>` and, when TTLock
        // answers "duplicate", reuses the grant it finds (`find_same_grant`): a retry after
        // a lost answer gets the passcode the first attempt created.
        let existing = lock
            .passcodes
            .iter()
            .find(|(_, code)| code.payment_id == request.payment_id && !code.deleted)
            .map(|(id, code)| (*id, code.valid_to));
        if let Some((passcode_id, valid_to)) = existing {
            return Ok(IssuedPasscode {
                passcode_id,
                code: format!("{:08}", passcode_id * 7919 % 100_000_000),
                valid_from: request.valid_from,
                valid_to,
                remotely_revocable,
                fallback: None,
            });
        }
        self.next_passcode += 1;
        let passcode_id = self.next_passcode;
        lock.passcodes.insert(
            passcode_id,
            Passcode {
                payment_id: request.payment_id,
                valid_to: request.valid_to,
                deleted: false,
            },
        );
        if self.rng.chance(self.faults.answer_lost) {
            return Err(LockError::retryable("simulated: TTLock's answer was lost"));
        }
        Ok(IssuedPasscode {
            passcode_id,
            code: format!("{:08}", passcode_id * 7919 % 100_000_000),
            valid_from: request.valid_from,
            valid_to: request.valid_to,
            remotely_revocable,
            fallback: None,
        })
    }

    fn delete(&mut self, lock_id: i64, passcode_id: i64) -> Result<(), LockError> {
        if !self.online() {
            return Err(LockError::retryable(
                "simulated: TTLock gateway offline (-2012)",
            ));
        }
        let Some(lock) = self.locks.get_mut(&lock_id) else {
            return Err(LockError::permanent("simulated: no such lock (-4043)"));
        };
        if !lock.has_gateway {
            return Err(LockError::permanent(
                "simulated: the lock has no gateway; delete the code by Bluetooth",
            ));
        }
        if let Some(passcode) = lock.passcodes.get_mut(&passcode_id) {
            passcode.deleted = true;
        }
        if self.rng.chance(self.faults.answer_lost) {
            return Err(LockError::retryable("simulated: TTLock's answer was lost"));
        }
        Ok(())
    }

    /// The adapter lists the lock's passcodes by name and deletes each (through the
    /// gateway where there is one; a lock without one keeps its codes until their end,
    /// as TTLock's cloud-only delete does).
    fn delete_named(&mut self, lock_id: i64, name: &str) -> Result<u32, LockError> {
        if !self.online() {
            return Err(LockError::retryable(
                "simulated: TTLock gateway offline (-2012)",
            ));
        }
        let Some(lock) = self.locks.get_mut(&lock_id) else {
            return Err(LockError::permanent("simulated: no such lock (-4043)"));
        };
        let has_gateway = lock.has_gateway;
        let mut deleted = 0;
        for passcode in lock.passcodes.values_mut() {
            if !passcode.deleted && name == format!("Latchkey {}", passcode.payment_id) {
                passcode.deleted = has_gateway;
                deleted += 1;
            }
        }
        if self.rng.chance(self.faults.answer_lost) {
            return Err(LockError::retryable("simulated: TTLock's answer was lost"));
        }
        Ok(deleted)
    }
}

pub struct TtlockPort(pub Arc<Mutex<TtlockModel>>);

#[async_trait]
impl LockGateway for TtlockPort {
    async fn issue_passcode(&self, request: PasscodeRequest) -> Result<IssuedPasscode, LockError> {
        lock(&self.0).issue(&request)
    }

    async fn delete_passcode(&self, lock_id: i64, passcode_id: i64) -> Result<(), LockError> {
        lock(&self.0).delete(lock_id, passcode_id)
    }

    async fn delete_passcodes_named(&self, lock_id: i64, name: &str) -> Result<u32, LockError> {
        lock(&self.0).delete_named(lock_id, name)
    }
}

#[derive(Clone, Debug, Default)]
pub struct Relay {
    pub on: bool,
    pub auto_off_at: Option<DateTime<Utc>>,
    pub offline_until: Option<DateTime<Utc>>,
    /// The last time a fault touched this relay (offline, lost answer, rate limit): the
    /// OFF-after-end bound is only owed when the relay was reachable throughout.
    pub last_fault_at: Option<DateTime<Utc>>,
    /// Whether the relay is ON because Latchkey switched it ON (not a hand on the switch).
    pub on_by_command: bool,
}

pub struct ShellyModel {
    pub now: DateTime<Utc>,
    pub faults: DeviceFaults,
    rng: Rng,
    pub relays: BTreeMap<(String, u32), Relay>,
}

impl ShellyModel {
    pub fn new(rng: Rng, faults: DeviceFaults) -> Self {
        ShellyModel {
            now: DateTime::<Utc>::MIN_UTC,
            faults,
            rng,
            relays: BTreeMap::new(),
        }
    }

    /// The device's own timer: a relay switched ON with `auto_off` turns itself off.
    pub fn tick(&mut self) {
        let now = self.now;
        for relay in self.relays.values_mut() {
            if relay.auto_off_at.is_some_and(|at| now >= at) {
                relay.on = false;
                relay.auto_off_at = None;
            }
        }
    }

    pub fn next_timer(&self) -> Option<DateTime<Utc>> {
        self.relays
            .values()
            .filter_map(|relay| relay.auto_off_at)
            .min()
    }

    fn reachable(&mut self, key: &(String, u32)) -> Result<(), RelayError> {
        let now = self.now;
        let Some(relay) = self.relays.get_mut(key) else {
            return Err(RelayError::permanent("simulated: DEVICE_NOT_FOUND"));
        };
        if relay.offline_until.is_some_and(|until| now < until) {
            relay.last_fault_at = Some(now);
            return Err(RelayError::retryable("simulated: DEVICE_OFFLINE"));
        }
        if self.rng.chance(self.faults.rate_limited) {
            relay.last_fault_at = Some(now);
            return Err(RelayError::retryable(
                "simulated: 429 rate limited (1 request/s)",
            ));
        }
        Ok(())
    }

    fn switch(&mut self, command: &RelayCommand) -> Result<RelayOutcome, RelayError> {
        let key = (command.shelly_device_id.clone(), command.channel);
        self.reachable(&key)?;
        let now = self.now;
        let refused = command.on && self.rng.chance(self.faults.refused);
        let lost = self.rng.chance(self.faults.answer_lost);
        let Some(relay) = self.relays.get_mut(&key) else {
            return Err(RelayError::permanent("simulated: DEVICE_NOT_FOUND"));
        };
        if refused {
            return Err(RelayError::permanent(
                "simulated: the relay is locked by its owner",
            ));
        }
        relay.on = command.on;
        relay.on_by_command = command.on;
        // The adapter (`integrations::shelly::gateway`) gives an ON without a timer one.
        let manual = latchkey::integrations::shelly::gateway::UNTIMED_ON_AUTO_OFF.as_secs();
        relay.auto_off_at = command
            .on
            .then(|| command.auto_off_seconds.unwrap_or(manual))
            .map(|seconds| now + Duration::seconds(seconds as i64));
        if lost {
            relay.last_fault_at = Some(now);
            return Err(RelayError::retryable("simulated: Shelly's answer was lost"));
        }
        Ok(RelayOutcome { is_on: relay.on })
    }

    fn status(&mut self, target: &RelayTarget) -> Result<RelayOutcome, RelayError> {
        let key = (target.shelly_device_id.clone(), target.channel);
        self.reachable(&key)?;
        let on = self.relays.get(&key).is_some_and(|relay| relay.on);
        Ok(RelayOutcome { is_on: on })
    }
}

pub struct ShellyPort(pub Arc<Mutex<ShellyModel>>);

#[async_trait]
impl RelayGateway for ShellyPort {
    async fn switch(&self, command: RelayCommand) -> Result<RelayOutcome, RelayError> {
        lock(&self.0).switch(&command)
    }

    async fn status(&self, target: RelayTarget) -> Result<RelayOutcome, RelayError> {
        lock(&self.0).status(&target)
    }

    /// The simulation's reconciler mirror does not configure devices (each ON carries its
    /// own timer in the model), so nothing here may pretend it did.
    async fn configure_auto_off(&self, _: RelayTarget, _: u64) -> Result<(), RelayError> {
        Err(RelayError::permanent(
            "the simulated devices take no auto-off configuration",
        ))
    }
}

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
