//! The DeviceSession and Device aggregates' `RelayGateway` port on the Shelly client.
//!
//! A device's `shelly_device_id` is either the Cloud device id (12 hex digits) or, for a
//! device reached over the LAN, its base URL (`http://192.168.1.50`).

use std::time::Duration;

use async_trait::async_trait;
use latchkey_aggregates::session::services::{
    RelayCommand as PortCommand, RelayError, RelayGateway, RelayOutcome, RelayTarget,
};

use latchkey_aggregates::device::MANUAL_ON_AUTO_OFF_SECONDS;

use super::{RelayCommand, ShellyClient, ShellyError, ShellyTarget};

/// The timer of an ON that names none. Every ON we send names one (a session's remaining
/// time, or a manual ON's [`MANUAL_ON_AUTO_OFF_SECONDS`]); this is the floor if one ever
/// does not.
pub const UNTIMED_ON_AUTO_OFF: Duration = Duration::from_secs(MANUAL_ON_AUTO_OFF_SECONDS);

pub struct ShellyRelayGateway {
    client: ShellyClient,
}

impl ShellyRelayGateway {
    /// `client` should be built with an auto-off margin of 0: the domain already adds its
    /// own margin to the session's remaining time.
    pub fn new(client: ShellyClient) -> Self {
        ShellyRelayGateway { client }
    }
}

/// Where a device id points.
pub fn target_of(shelly_device_id: &str) -> Result<ShellyTarget, RelayError> {
    if shelly_device_id.starts_with("http://") || shelly_device_id.starts_with("https://") {
        let base_url = shelly_device_id.parse().map_err(|_| {
            RelayError::permanent(format!("{shelly_device_id:?} is not a valid device URL"))
        })?;
        Ok(ShellyTarget::Local { base_url })
    } else {
        Ok(ShellyTarget::Cloud {
            device_id: shelly_device_id.to_string(),
        })
    }
}

fn relay_error(error: ShellyError) -> RelayError {
    if error.is_retryable() {
        RelayError::retryable(error.to_string())
    } else {
        RelayError::permanent(error.to_string())
    }
}

#[async_trait]
impl RelayGateway for ShellyRelayGateway {
    async fn switch(&self, command: PortCommand) -> Result<RelayOutcome, RelayError> {
        let target = target_of(&command.shelly_device_id)?;
        let relay_command = if command.on {
            let remaining = command
                .auto_off_seconds
                .map(Duration::from_secs)
                .unwrap_or(UNTIMED_ON_AUTO_OFF);
            RelayCommand::On { remaining }
        } else {
            RelayCommand::Off
        };
        let outcome = self
            .client
            .switch(&target, command.channel, relay_command)
            .await
            .map_err(relay_error)?;
        // Shelly confirmed the command (or we read it back): the relay is as commanded,
        // unless the read-back says otherwise.
        Ok(RelayOutcome {
            is_on: outcome.status.map_or(command.on, |status| status.output),
        })
    }

    async fn status(&self, target: RelayTarget) -> Result<RelayOutcome, RelayError> {
        let shelly_target = target_of(&target.shelly_device_id)?;
        let status = self
            .client
            .status(&shelly_target, target.channel)
            .await
            .map_err(relay_error)?;
        Ok(RelayOutcome {
            is_on: status.output,
        })
    }

    /// LAN devices only: the Cloud API documents no configuration call (a permanent
    /// error, so the reconciler does not ask again).
    async fn configure_auto_off(
        &self,
        target: RelayTarget,
        seconds: u64,
    ) -> Result<(), RelayError> {
        let shelly_target = target_of(&target.shelly_device_id)?;
        self.client
            .configure_auto_off(&shelly_target, target.channel, Duration::from_secs(seconds))
            .await
            .map_err(relay_error)
    }
}
