//! [`ShellyClient`]: switch a relay and read it, through Shelly Cloud or the LAN.
//!
//! Two rules make the ledger's relay facts true to what happened:
//! - every ON carries the device's own flip-back timer (`toggle_after` = remaining time +
//!   margin), so the relay turns itself OFF even if Latchkey, or the cloud, goes away;
//! - a command whose answer is lost (timeout, dropped connection, 5xx) is settled by
//!   reading the relay back: if it shows the commanded state (and, for ON, our timer), the
//!   command succeeded; if it does not, the original error stands; if the read fails too,
//!   the state is reported unknown ([`ShellyError::Unconfirmed`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tracing::{info, instrument, warn};

use super::cloud::{relay_from_status, CloudApi};
use super::config::{ShellyConfig, ShellyTarget};
use super::error::ShellyError;
use super::local::LocalRpc;
use super::types::{Confirmation, RelayCommand, RelayStatus, SwitchOutcome};
use crate::integrations::health::ModuleHealth;

/// Longest auto-off we arm (a week): a session longer than that is a bug upstream, and
/// a timer that long would no longer be a safety net.
const AUTO_OFF_MAX_S: u64 = 7 * 24 * 3600;
/// Slack when comparing a read-back timer with the one we sent (rounding by the device).
const TIMER_TOLERANCE_S: f64 = 2.0;

/// One device as a batch cloud read reports it.
#[derive(Debug, Clone)]
pub struct CloudDeviceReport {
    pub device_id: String,
    pub online: bool,
    /// The device's own status document (`switch:<n>` objects, …), when the cloud has it.
    pub status: Option<Value>,
}

impl CloudDeviceReport {
    /// One channel of the report.
    pub fn relay(&self, channel: u32) -> Option<RelayStatus> {
        relay_from_status(self.status.as_ref()?, channel)
    }
}

/// Shelly client. Cheap to clone; clones share the cloud pacer, so build one per process
/// and hand clones to every caller: that is what keeps the whole process under the
/// cloud's rate limit.
#[derive(Clone)]
pub struct ShellyClient {
    inner: Arc<Inner>,
}

struct Inner {
    cloud: Option<CloudApi>,
    local: LocalRpc,
    health: ModuleHealth,
    auto_off_margin_s: u64,
    readback_delay: Duration,
}

impl std::fmt::Debug for ShellyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellyClient")
            .field("cloud", &self.inner.cloud.is_some())
            .finish_non_exhaustive()
    }
}

impl ShellyClient {
    pub fn new(config: ShellyConfig, health: ModuleHealth) -> Result<Self, ShellyError> {
        let cloud = config.cloud.as_ref().map(CloudApi::new).transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                cloud,
                local: LocalRpc::new(config.local_timeout_ms, config.device_networks.clone())?,
                health,
                auto_off_margin_s: config.auto_off_margin_s,
                readback_delay: Duration::from_millis(config.readback_delay_ms),
            }),
        })
    }

    pub fn health(&self) -> &ModuleHealth {
        &self.inner.health
    }

    /// Cloud calls waiting for the rate limiter (for metrics).
    pub fn cloud_queue_len(&self) -> usize {
        self.inner.cloud.as_ref().map_or(0, CloudApi::queued)
    }

    /// Switches one relay channel. ON arms the device's auto-off; see the module header
    /// for how lost answers are settled.
    #[instrument(skip_all, fields(device = %target.label(), channel = channel, command = ?command))]
    pub async fn switch(
        &self,
        target: &ShellyTarget,
        channel: u32,
        command: RelayCommand,
    ) -> Result<SwitchOutcome, ShellyError> {
        let outcome = self.switch_unrecorded(target, channel, command).await;
        self.record(&outcome);
        outcome
    }

    /// Reads one relay channel.
    #[instrument(skip_all, fields(device = %target.label(), channel = channel))]
    pub async fn status(
        &self,
        target: &ShellyTarget,
        channel: u32,
    ) -> Result<RelayStatus, ShellyError> {
        let status = self.read(target, channel).await;
        self.record(&status);
        status
    }

    /// Sets the device's own `auto_off` (Gen2 `Switch.SetConfig`): the second safety net
    /// of reference §7, covering ONs that carried no timer (a button, the app, a command
    /// whose timer was lost). Use the longest sellable session plus the margin.
    /// Only for LAN devices: the Cloud v2 API documents no configuration call.
    #[instrument(skip_all, fields(device = %target.label(), channel = channel))]
    pub async fn configure_auto_off(
        &self,
        target: &ShellyTarget,
        channel: u32,
        longest_session: Duration,
    ) -> Result<(), ShellyError> {
        let result = match target {
            ShellyTarget::Local { base_url } => {
                let delay_s = longest_session
                    .as_secs()
                    .saturating_add(self.inner.auto_off_margin_s);
                self.inner
                    .local
                    .set_auto_off(base_url, channel, delay_s)
                    .await
            }
            ShellyTarget::Cloud { device_id } => Err(ShellyError::InvalidCommand(format!(
                "device {device_id}: the auto-off config cannot be set through Shelly Cloud; set it in the Shelly app (Timers → Auto off)"
            ))),
        };
        self.record(&result);
        result
    }

    /// Reads up to 10 cloud devices in one (rate-limited) request. Unknown ids are
    /// absent from the result.
    #[instrument(skip_all, fields(devices = device_ids.len()))]
    pub async fn cloud_status_many(
        &self,
        device_ids: &[&str],
    ) -> Result<Vec<CloudDeviceReport>, ShellyError> {
        let result = match &self.inner.cloud {
            None => Err(ShellyError::CloudNotConfigured),
            Some(cloud) => cloud.get(device_ids).await.map(|devices| {
                devices
                    .into_iter()
                    .map(|device| CloudDeviceReport {
                        device_id: device.id,
                        online: device.online,
                        status: device.status,
                    })
                    .collect()
            }),
        };
        self.record(&result);
        result
    }

    async fn switch_unrecorded(
        &self,
        target: &ShellyTarget,
        channel: u32,
        command: RelayCommand,
    ) -> Result<SwitchOutcome, ShellyError> {
        let (on, toggle_after_s) = self.plan(command)?;
        match self.send(target, channel, on, toggle_after_s).await {
            Ok(was_on) => {
                info!(on, toggle_after_s, "relay switched");
                Ok(SwitchOutcome {
                    confirmation: Confirmation::Answer,
                    toggle_after_s,
                    was_on,
                    status: None,
                })
            }
            Err(error) if error.may_have_applied() => {
                warn!(%error, "answer lost; reading the relay back before deciding");
                self.settle_by_reading(target, channel, on, toggle_after_s, error)
                    .await
            }
            Err(error) => Err(error),
        }
    }

    /// The wire command for a [`RelayCommand`]: ON always carries the auto-off.
    fn plan(&self, command: RelayCommand) -> Result<(bool, Option<u64>), ShellyError> {
        match command {
            RelayCommand::Off => Ok((false, None)),
            RelayCommand::On { remaining } => {
                if remaining.is_zero() {
                    return Err(ShellyError::InvalidCommand(
                        "switching ON needs the session's remaining time, got zero".into(),
                    ));
                }
                // Round up: a partial second still belongs to the guest.
                let remaining_s = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
                let toggle_after_s = remaining_s.saturating_add(self.inner.auto_off_margin_s);
                if toggle_after_s > AUTO_OFF_MAX_S {
                    return Err(ShellyError::InvalidCommand(format!(
                        "auto-off of {toggle_after_s} s exceeds the {AUTO_OFF_MAX_S} s limit"
                    )));
                }
                Ok((true, Some(toggle_after_s)))
            }
        }
    }

    async fn send(
        &self,
        target: &ShellyTarget,
        channel: u32,
        on: bool,
        toggle_after_s: Option<u64>,
    ) -> Result<Option<bool>, ShellyError> {
        match target {
            ShellyTarget::Cloud { device_id } => {
                let cloud = self.cloud()?;
                cloud
                    .set_switch(device_id, channel, on, toggle_after_s)
                    .await?;
                Ok(None)
            }
            ShellyTarget::Local { base_url } => {
                self.inner
                    .local
                    .switch_set(base_url, channel, on, toggle_after_s)
                    .await
            }
        }
    }

    async fn settle_by_reading(
        &self,
        target: &ShellyTarget,
        channel: u32,
        on: bool,
        toggle_after_s: Option<u64>,
        command_error: ShellyError,
    ) -> Result<SwitchOutcome, ShellyError> {
        tokio::time::sleep(self.inner.readback_delay).await;
        match self.read(target, channel).await {
            Ok(status) if shows_command(&status, on, toggle_after_s) => {
                info!(on, "read-back confirms the command despite the lost answer");
                Ok(SwitchOutcome {
                    confirmation: Confirmation::ReadBack,
                    toggle_after_s,
                    was_on: None,
                    status: Some(status),
                })
            }
            Ok(_) => Err(command_error),
            Err(read_error) => Err(ShellyError::Unconfirmed {
                device: target.label(),
                command_error: command_error.to_string(),
                read_error: read_error.to_string(),
            }),
        }
    }

    async fn read(&self, target: &ShellyTarget, channel: u32) -> Result<RelayStatus, ShellyError> {
        match target {
            ShellyTarget::Local { base_url } => {
                self.inner.local.switch_status(base_url, channel).await
            }
            ShellyTarget::Cloud { device_id } => {
                let devices = self.cloud()?.get(&[device_id.as_str()]).await?;
                let device = devices
                    .into_iter()
                    .find(|device| &device.id == device_id)
                    .ok_or_else(|| ShellyError::DeviceNotFound {
                        device: device_id.clone(),
                    })?;
                if !device.online {
                    // The cloud may still hold a stale copy; an offline device's state is
                    // not something to build facts on.
                    return Err(ShellyError::DeviceOffline {
                        device: device_id.clone(),
                    });
                }
                device
                    .status
                    .as_ref()
                    .and_then(|status| relay_from_status(status, channel))
                    .ok_or_else(|| ShellyError::InvalidChannel {
                        device: device_id.clone(),
                        channel,
                    })
            }
        }
    }

    fn cloud(&self) -> Result<&CloudApi, ShellyError> {
        self.inner
            .cloud
            .as_ref()
            .ok_or(ShellyError::CloudNotConfigured)
    }

    fn record<T>(&self, outcome: &Result<T, ShellyError>) {
        match outcome {
            Err(error) if error.degrades_module() => self.inner.health.record_error(error),
            _ => self.inner.health.record_ok(),
        }
    }
}

/// Whether a read-back relay shows our command: the output, and for ON a running timer
/// of the length we asked for (an ON relay without it may be left over from before).
fn shows_command(status: &RelayStatus, on: bool, toggle_after_s: Option<u64>) -> bool {
    if status.output != on {
        return false;
    }
    match (on, toggle_after_s) {
        (true, Some(expected)) => status
            .timer_duration_s
            .is_some_and(|duration| (duration - expected as f64).abs() <= TIMER_TOLERANCE_S),
        _ => true,
    }
}
