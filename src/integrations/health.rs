//! Per-integration health: is the module configured, did its last call work, and if not,
//! what went wrong and when.
//!
//! Every client call records its outcome here, so `GET /api/health/modules` and the
//! metrics read the truth of the last real exchange instead of probing the vendor again
//! (Shelly Cloud allows about one request per second; a health probe would eat it).

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The state an operator sees for one integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Configured, and the last call reached the vendor and was accepted (or no call has
    /// been made yet: nothing has failed).
    Ok,
    /// Configured, and the last call that depended on the vendor failed.
    Failing,
    /// The environment does not configure this integration; flows that need it answer 503.
    NotConfigured,
}

/// A serialisable copy of a [`ModuleHealth`] at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ModuleHealthSnapshot {
    pub name: String,
    pub configured: bool,
    pub state: HealthState,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub last_ok_at: Option<DateTime<Utc>>,
    /// Failures since the last success; lets an alert fire on "failing for a while"
    /// rather than on one blip.
    pub consecutive_failures: u64,
    /// Totals since start-up, for the metrics counters.
    pub calls_ok_total: u64,
    pub calls_failed_total: u64,
}

/// Shared, cheaply cloneable health record of one integration (`ttlock`, `shelly`, …).
///
/// Clones share the same record: the client holds one clone, the health endpoint another.
#[derive(Clone)]
pub struct ModuleHealth {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    configured: bool,
    record: Mutex<Record>,
}

#[derive(Default)]
struct Record {
    last_error: Option<String>,
    last_error_at: Option<DateTime<Utc>>,
    last_ok_at: Option<DateTime<Utc>>,
    consecutive_failures: u64,
    calls_ok_total: u64,
    calls_failed_total: u64,
}

impl ModuleHealth {
    /// A configured module that has not been called yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self::build(name.into(), true)
    }

    /// A module the environment leaves unconfigured; it stays `not_configured`.
    pub fn not_configured(name: impl Into<String>) -> Self {
        Self::build(name.into(), false)
    }

    fn build(name: String, configured: bool) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                configured,
                record: Mutex::new(Record::default()),
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn is_configured(&self) -> bool {
        self.inner.configured
    }

    /// Records a call that reached the vendor and was accepted.
    pub fn record_ok(&self) {
        let mut record = self.lock();
        record.last_ok_at = Some(Utc::now());
        record.consecutive_failures = 0;
        record.calls_ok_total += 1;
    }

    /// Records a failed call; `error` should be the operator-facing message.
    pub fn record_error(&self, error: &dyn std::fmt::Display) {
        let mut record = self.lock();
        record.last_error = Some(error.to_string());
        record.last_error_at = Some(Utc::now());
        record.consecutive_failures += 1;
        record.calls_failed_total += 1;
    }

    pub fn snapshot(&self) -> ModuleHealthSnapshot {
        let record = self.lock();
        let state = if !self.inner.configured {
            HealthState::NotConfigured
        } else if record.consecutive_failures > 0 {
            HealthState::Failing
        } else {
            HealthState::Ok
        };
        ModuleHealthSnapshot {
            name: self.inner.name.clone(),
            configured: self.inner.configured,
            state,
            last_error: record.last_error.clone(),
            last_error_at: record.last_error_at,
            last_ok_at: record.last_ok_at,
            consecutive_failures: record.consecutive_failures,
            calls_ok_total: record.calls_ok_total,
            calls_failed_total: record.calls_failed_total,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        // A panic while holding this lock cannot leave the record half-written in a way
        // that matters (every field is independently meaningful), so poisoning is ignored.
        self.inner
            .record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for ModuleHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ModuleHealth")
            .field(&self.snapshot())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_until_the_next_success() {
        let health = ModuleHealth::new("ttlock");
        assert_eq!(health.snapshot().state, HealthState::Ok);
        health.record_error(&"gateway offline");
        let failing = health.snapshot();
        assert_eq!(failing.state, HealthState::Failing);
        assert_eq!(failing.last_error.as_deref(), Some("gateway offline"));
        assert!(failing.last_error_at.is_some());
        health.clone().record_ok();
        let ok = health.snapshot();
        assert_eq!(ok.state, HealthState::Ok);
        assert_eq!(ok.calls_failed_total, 1);
        assert_eq!(ok.calls_ok_total, 1);
        // The last error stays visible after recovery, for the operator's post-mortem.
        assert_eq!(ok.last_error.as_deref(), Some("gateway offline"));
    }

    #[test]
    fn unconfigured_modules_say_so() {
        let health = ModuleHealth::not_configured("shelly");
        assert_eq!(health.snapshot().state, HealthState::NotConfigured);
        assert!(!health.snapshot().configured);
    }
}
