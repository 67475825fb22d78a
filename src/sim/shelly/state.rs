//! The Shelly simulator's world: devices with relays, the cloud's rate limiter, faults
//! and the request log, behind one mutex. Operations return vendor-shaped results; the
//! HTTP layers in `cloud` and `local` only frame them.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::config::{ShellySimConfig, SimDeviceSpec};
use super::relay::{Cause, RelaySource, RelayView, SimRelay};
use crate::sim::{Faults, RequestLog, SimControlError};

/// Longest `toggle_after` accepted: a generous bound so a bogus value is refused rather
/// than stored (the real limit is not documented).
const TOGGLE_AFTER_MAX_S: f64 = 30.0 * 24.0 * 3600.0;

/// Violations kept in the rate-limit statistics.
const VIOLATIONS_KEPT_MAX: usize = 100;

/// A device as tests see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    pub id: String,
    pub online: bool,
    pub relays: Vec<RelayView>,
}

/// A request that arrived sooner than the rate limit allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitViolation {
    pub at_ms: i64,
    pub path: String,
    /// Time since the previous accepted request.
    pub gap_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitStats {
    pub interval_ms: u64,
    /// Cloud requests within the limit.
    pub accepted: u64,
    /// Cloud requests over the limit (each answered with the over-limit answer).
    pub rejected: u64,
    pub violations: Vec<RateLimitViolation>,
}

/// A vendor-level failure, framed differently by the cloud and the RPC layer.
#[derive(Debug, Clone)]
pub(crate) enum OpError {
    /// Cloud v2: HTTP status and error string.
    Cloud(u16, &'static str, String),
    /// RPC: error code and message.
    Rpc(i64, String),
}

pub(crate) struct SimDevice {
    spec: SimDeviceSpec,
    pub online: bool,
    relays: Vec<SimRelay>,
}

impl SimDevice {
    fn new(spec: SimDeviceSpec) -> Self {
        let relays = (0..spec.channels)
            .map(|_| SimRelay::new(spec.auto_off_delay_s))
            .collect();
        Self {
            spec,
            online: true,
            relays,
        }
    }

    /// The Gen2 device name used as `src` in RPC frames.
    pub(crate) fn rpc_name(&self) -> String {
        format!("shellyplus1pm-{}", self.spec.id)
    }

    fn view(&self) -> DeviceView {
        DeviceView {
            id: self.spec.id.clone(),
            online: self.online,
            relays: self
                .relays
                .iter()
                .zip(0_u32..)
                .map(|(relay, channel)| relay.view(channel))
                .collect(),
        }
    }
}

pub(crate) struct World {
    pub config: ShellySimConfig,
    pub faults: Faults,
    pub requests: RequestLog,
    devices: BTreeMap<String, SimDevice>,
    /// Real time (not the simulator clock): the rate limit is about wall-clock spacing,
    /// and advancing simulated time must not open the gate.
    last_accepted: Option<Instant>,
    rate: RateLimitStats,
}

impl World {
    pub(crate) fn new(config: ShellySimConfig) -> Self {
        let devices = config
            .devices
            .iter()
            .map(|spec| (spec.id.clone(), SimDevice::new(spec.clone())))
            .collect();
        let rate = RateLimitStats {
            interval_ms: config.rate_limit_interval_ms,
            ..RateLimitStats::default()
        };
        Self {
            config,
            faults: Faults::default(),
            requests: RequestLog::default(),
            devices,
            last_accepted: None,
            rate,
        }
    }

    /// Cloud rate limit: admits the request if the previous admitted one is at least one
    /// interval old; records a violation otherwise.
    pub(crate) fn admit(&mut self, path: &str, at_ms: i64) -> bool {
        let now = Instant::now();
        let interval_ms = self.config.rate_limit_interval_ms;
        if let Some(last) = self.last_accepted {
            let gap_ms = u64::try_from(now.duration_since(last).as_millis()).unwrap_or(u64::MAX);
            if gap_ms < interval_ms {
                self.rate.rejected += 1;
                if self.rate.violations.len() < VIOLATIONS_KEPT_MAX {
                    self.rate.violations.push(RateLimitViolation {
                        at_ms,
                        path: path.to_owned(),
                        gap_ms,
                    });
                }
                return false;
            }
        }
        self.last_accepted = Some(now);
        self.rate.accepted += 1;
        true
    }

    pub(crate) fn rate_stats(&self) -> RateLimitStats {
        RateLimitStats {
            interval_ms: self.config.rate_limit_interval_ms,
            ..self.rate.clone()
        }
    }

    pub(crate) fn reset_rate_stats(&mut self) {
        self.rate = RateLimitStats::default();
    }

    pub(crate) fn device(&self, id: &str) -> Option<&SimDevice> {
        self.devices.get(id)
    }

    /// Fires due timers everywhere (before any read or write).
    pub(crate) fn settle(&mut self, now_ms: i64) {
        for device in self.devices.values_mut() {
            for relay in &mut device.relays {
                relay.settle(now_ms);
            }
        }
    }

    // ----- Cloud v2 ----------------------------------------------------------------

    /// `POST /v2/devices/api/set/switch` body → empty success.
    pub(crate) fn cloud_set_switch(&mut self, body: &Value, now_ms: i64) -> Result<(), OpError> {
        let bad = |message: &str| OpError::Cloud(400, "BAD_REQUEST", message.to_owned());
        let id = body
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("id must be a string"))?;
        let channel = match body.get("channel") {
            None => 0,
            Some(value) => value
                .as_u64()
                .and_then(|channel| u32::try_from(channel).ok())
                .ok_or_else(|| bad("channel must be a non-negative integer"))?,
        };
        let on = body
            .get("on")
            .and_then(Value::as_bool)
            .ok_or_else(|| bad("on must be a boolean"))?;
        let toggle_after = toggle_after(body).map_err(|message| bad(&message))?;
        let restart = self.config.repeated_on_restarts_timer;
        let device = self
            .devices
            .get_mut(id)
            .ok_or_else(|| OpError::Cloud(404, "DEVICE_NOT_FOUND", id.to_owned()))?;
        if !device.online {
            return Err(OpError::Cloud(400, "DEVICE_OFFLINE", id.to_owned()));
        }
        let relay = usize::try_from(channel)
            .ok()
            .and_then(|index| device.relays.get_mut(index))
            .ok_or_else(|| {
                OpError::Cloud(400, "DEVICE_INVALID_CHANNEL", format!("channel {channel}"))
            })?;
        let cause = Cause {
            source: RelaySource::Command,
            via: "cloud_v2",
            device_source: "SHC",
        };
        relay.set(on, toggle_after, cause, now_ms, restart);
        Ok(())
    }

    /// `POST /v2/devices/api/get` body → array of device states.
    pub(crate) fn cloud_get(&mut self, body: &Value, now_ms: i64) -> Result<Value, OpError> {
        let bad = |message: &str| OpError::Cloud(400, "BAD_REQUEST", message.to_owned());
        let ids: Vec<&str> = body
            .get("ids")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("ids must be an array"))?
            .iter()
            .map(|id| id.as_str().ok_or_else(|| bad("ids must be strings")))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() || ids.len() > 10 {
            return Err(bad("ids must hold 1 to 10 device ids"));
        }
        let select: Vec<&str> = match body.get("select") {
            None => vec!["status", "settings"],
            Some(select) => select
                .as_array()
                .ok_or_else(|| bad("select must be an array"))?
                .iter()
                .map(|part| match part.as_str() {
                    Some(part @ ("status" | "settings")) => Ok(part),
                    _ => Err(bad("select items are status or settings")),
                })
                .collect::<Result<_, _>>()?,
        };
        self.settle(now_ms);
        let entries = ids
            .iter()
            .filter_map(|id| self.devices.get(*id))
            .map(|device| cloud_entry(device, &select, now_ms))
            .collect();
        Ok(Value::Array(entries))
    }

    // ----- Local Gen2 RPC ----------------------------------------------------------

    /// Runs one RPC method on a device; `Err` is an RPC error (code, message).
    pub(crate) fn rpc(
        &mut self,
        device_id: &str,
        method: &str,
        params: &Value,
        now_ms: i64,
    ) -> Result<Value, OpError> {
        let restart = self.config.repeated_on_restarts_timer;
        let Some(device) = self.devices.get_mut(device_id) else {
            return Err(OpError::Rpc(-105, format!("no device {device_id}")));
        };
        if method == "Shelly.GetDeviceInfo" {
            return Ok(json!({
                "name": null, "id": device.rpc_name(), "mac": device.spec.id.to_uppercase(),
                "model": device.spec.code, "gen": 2, "fw_id": "20250101-000000/1.5.0-sim",
                "ver": "1.5.0", "app": "Plus1PM", "auth_en": false, "auth_domain": null,
            }));
        }
        let channel = rpc_channel(params)?;
        let relay = usize::try_from(channel)
            .ok()
            .and_then(|index| device.relays.get_mut(index))
            .ok_or_else(|| {
                OpError::Rpc(-105, format!("Argument 'id', value {channel} not found!"))
            })?;
        relay.settle(now_ms);
        let cause = Cause {
            source: RelaySource::Command,
            via: "local_rpc",
            device_source: "http",
        };
        match method {
            "Switch.Set" => {
                let on = params
                    .get("on")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| OpError::Rpc(-103, "Missing required argument 'on'!".into()))?;
                let toggle_after =
                    toggle_after(params).map_err(|message| OpError::Rpc(-103, message))?;
                let was_on = relay.set(on, toggle_after, cause, now_ms, restart);
                Ok(json!({ "was_on": was_on }))
            }
            "Switch.Toggle" => {
                let on = !relay.output();
                let was_on = relay.set(on, None, cause, now_ms, restart);
                Ok(json!({ "was_on": was_on }))
            }
            "Switch.GetStatus" => Ok(relay.status_json(channel)),
            "Switch.GetConfig" => Ok(relay.config_json(channel)),
            "Switch.SetConfig" => {
                let config = params.get("config").ok_or_else(|| {
                    OpError::Rpc(-103, "Missing required argument 'config'!".into())
                })?;
                set_auto_off_config(relay, config);
                Ok(json!({ "restart_required": false }))
            }
            _ => Err(OpError::Rpc(404, format!("No handler for {method}"))),
        }
    }

    // ----- Control -------------------------------------------------------------------

    fn relay_mut(
        &mut self,
        device_id: &str,
        channel: u32,
    ) -> Result<&mut SimRelay, SimControlError> {
        let device = self
            .devices
            .get_mut(device_id)
            .ok_or_else(|| SimControlError::UnknownDevice(device_id.to_owned()))?;
        usize::try_from(channel)
            .ok()
            .and_then(|index| device.relays.get_mut(index))
            .ok_or_else(|| SimControlError::UnknownChannel {
                device: device_id.to_owned(),
                channel,
            })
    }

    pub(crate) fn relay_view(
        &mut self,
        device_id: &str,
        channel: u32,
        now_ms: i64,
    ) -> Result<RelayView, SimControlError> {
        let relay = self.relay_mut(device_id, channel)?;
        relay.settle(now_ms);
        Ok(relay.view(channel))
    }

    pub(crate) fn switch_external(
        &mut self,
        device_id: &str,
        channel: u32,
        on: bool,
        now_ms: i64,
    ) -> Result<RelayView, SimControlError> {
        let restart = self.config.repeated_on_restarts_timer;
        let relay = self.relay_mut(device_id, channel)?;
        let cause = Cause {
            source: RelaySource::External,
            via: "control",
            device_source: "button",
        };
        relay.set(on, None, cause, now_ms, restart);
        Ok(relay.view(channel))
    }

    pub(crate) fn set_auto_off(
        &mut self,
        device_id: &str,
        channel: u32,
        delay_s: Option<u64>,
    ) -> Result<RelayView, SimControlError> {
        let relay = self.relay_mut(device_id, channel)?;
        relay.auto_off_delay_s = delay_s;
        Ok(relay.view(channel))
    }

    pub(crate) fn set_online(
        &mut self,
        device_id: &str,
        online: bool,
    ) -> Result<(), SimControlError> {
        let device = self
            .devices
            .get_mut(device_id)
            .ok_or_else(|| SimControlError::UnknownDevice(device_id.to_owned()))?;
        device.online = online;
        Ok(())
    }

    pub(crate) fn reboot(&mut self, device_id: &str, now_ms: i64) -> Result<(), SimControlError> {
        let device = self
            .devices
            .get_mut(device_id)
            .ok_or_else(|| SimControlError::UnknownDevice(device_id.to_owned()))?;
        for relay in &mut device.relays {
            relay.reboot(now_ms);
        }
        Ok(())
    }

    pub(crate) fn add_device(&mut self, spec: SimDeviceSpec) {
        self.devices
            .entry(spec.id.clone())
            .or_insert_with(|| SimDevice::new(spec));
    }

    pub(crate) fn views(&mut self, now_ms: i64) -> Vec<DeviceView> {
        self.settle(now_ms);
        self.devices.values().map(SimDevice::view).collect()
    }
}

fn cloud_entry(device: &SimDevice, select: &[&str], now_ms: i64) -> Value {
    let mut entry = json!({
        "id": device.spec.id,
        "type": "relay",
        "code": device.spec.code,
        "gen": "G2",
        "online": if device.online { 1 } else { 0 },
    });
    let channels = || device.relays.iter().zip(0_u32..);
    if select.contains(&"status") {
        let mut status = serde_json::Map::new();
        for (relay, channel) in channels() {
            status.insert(format!("switch:{channel}"), relay.status_json(channel));
        }
        status.insert("sys".into(), json!({ "unixtime": now_ms / 1000 }));
        entry["status"] = Value::Object(status);
    }
    if select.contains(&"settings") {
        let settings: serde_json::Map<String, Value> = channels()
            .map(|(relay, channel)| (format!("switch:{channel}"), relay.config_json(channel)))
            .collect();
        entry["settings"] = Value::Object(settings);
    }
    entry
}

/// `toggle_after`: optional, a positive number of seconds.
fn toggle_after(body: &Value) -> Result<Option<f64>, String> {
    match body.get("toggle_after") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_f64() {
            Some(seconds) if seconds > 0.0 && seconds <= TOGGLE_AFTER_MAX_S => Ok(Some(seconds)),
            _ => Err(format!(
                "toggle_after must be a number of seconds in (0, {TOGGLE_AFTER_MAX_S}]"
            )),
        },
    }
}

fn rpc_channel(params: &Value) -> Result<u32, OpError> {
    let id = params
        .get("id")
        .ok_or_else(|| OpError::Rpc(-103, "Missing required argument 'id'!".into()))?;
    id.as_u64()
        .and_then(|channel| u32::try_from(channel).ok())
        .ok_or_else(|| OpError::Rpc(-103, format!("Invalid argument 'id': {id}")))
}

fn set_auto_off_config(relay: &mut SimRelay, config: &Value) {
    let enabled = config.get("auto_off").and_then(Value::as_bool);
    let delay = config
        .get("auto_off_delay")
        .and_then(Value::as_f64)
        .map(|seconds| seconds.max(1.0).round() as u64);
    match (enabled, delay) {
        (Some(false), _) => relay.auto_off_delay_s = None,
        (Some(true), Some(delay)) => relay.auto_off_delay_s = Some(delay),
        (Some(true), None) => relay.auto_off_delay_s = relay.auto_off_delay_s.or(Some(60)),
        (None, Some(delay)) if relay.auto_off_delay_s.is_some() => {
            relay.auto_off_delay_s = Some(delay)
        }
        _ => {}
    }
}
