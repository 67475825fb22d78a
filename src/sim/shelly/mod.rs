//! Shelly simulator: Cloud Control API v2 and each device's local Gen2 RPC over one
//! relay model with device-side timers.
//!
//! Vendor endpoints:
//! - `POST /v2/devices/api/get?auth_key=…` and `POST /v2/devices/api/set/switch?auth_key=…`
//!   (JSON; empty 200 on a successful switch; errors `{"error","data":{"messages"}}` with
//!   the documented statuses; one request per `rate_limit_interval_ms`, over-limit answer
//!   configurable);
//! - `POST /local/{device_id}/rpc`, `POST|GET /local/{device_id}/rpc/{method}`
//!   (`Switch.Set`, `Switch.Toggle`, `Switch.GetStatus`, `Switch.GetConfig`,
//!   `Switch.SetConfig`, `Shelly.GetDeviceInfo`).
//!
//! Control endpoints (JSON), mirrored by [`ShellySim`] methods:
//! - `GET /_sim/state` ([`DeviceView`]s); `POST /_sim/devices` [`SimDeviceSpec`];
//! - `POST /_sim/devices/{id}/online` `{"online": bool}`; `POST /_sim/devices/{id}/reboot`;
//! - `GET /_sim/devices/{id}/relays/{ch}` ([`RelayView`]: state, timer, log);
//! - `POST /_sim/devices/{id}/relays/{ch}/external` `{"on": bool}` — switch behind our back;
//! - `POST /_sim/devices/{id}/relays/{ch}/auto_off` `{"delay_s": n|null}` — device config;
//! - `POST /_sim/faults` [`FaultSettings`]; `POST /_sim/clock/advance` `{"ms": n}`;
//! - `GET /_sim/rate_limit` ([`RateLimitStats`]), `POST /_sim/rate_limit`
//!   [`RateLimitSettings`]; `GET|DELETE /_sim/requests`.

mod cloud;
mod config;
mod control;
mod local;
mod relay;
mod state;

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use url::Url;

pub use config::{OverLimitAnswer, ShellySimConfig, SimDeviceSpec};
pub use control::RateLimitSettings;
pub use relay::{RelayLogEntry, RelaySource, RelayView};
pub use state::{DeviceView, RateLimitStats, RateLimitViolation};

use crate::sim::{
    serve_until_interrupted, spawn_server, FaultSettings, RecordedRequest, ServerHandle, SimClock,
    SimControlError,
};
use state::World;

/// The simulator's shared state; the router's state. Cheap to clone.
#[derive(Clone)]
pub struct ShellySim {
    clock: SimClock,
    world: Arc<Mutex<World>>,
}

impl ShellySim {
    pub fn new(config: ShellySimConfig) -> Self {
        Self {
            clock: SimClock::default(),
            world: Arc::new(Mutex::new(World::new(config))),
        }
    }

    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        // Mutations complete before the guard drops; ignore poisoning.
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn state(&self) -> Vec<DeviceView> {
        let now_ms = self.clock.now_ms();
        self.world().views(now_ms)
    }

    /// One relay: output, running timer and the log of every change with its cause.
    pub fn relay(&self, device_id: &str, channel: u32) -> Result<RelayView, SimControlError> {
        let now_ms = self.clock.now_ms();
        self.world().relay_view(device_id, channel, now_ms)
    }

    pub fn add_device(&self, spec: SimDeviceSpec) {
        self.world().add_device(spec);
    }

    /// Offline: the cloud answers `DEVICE_OFFLINE` / `online: 0`, the LAN API hangs.
    pub fn set_online(&self, device_id: &str, online: bool) -> Result<(), SimControlError> {
        self.world().set_online(device_id, online)
    }

    /// Switches a relay as a button press would, without Latchkey.
    pub fn switch_external(
        &self,
        device_id: &str,
        channel: u32,
        on: bool,
    ) -> Result<RelayView, SimControlError> {
        let now_ms = self.clock.now_ms();
        self.world().switch_external(device_id, channel, on, now_ms)
    }

    /// Sets the device-side `auto_off` config (seconds; `None` disables it).
    pub fn set_auto_off(
        &self,
        device_id: &str,
        channel: u32,
        delay_s: Option<u64>,
    ) -> Result<RelayView, SimControlError> {
        self.world().set_auto_off(device_id, channel, delay_s)
    }

    /// Power cycle: every relay OFF, timers lost.
    pub fn reboot(&self, device_id: &str) -> Result<(), SimControlError> {
        let now_ms = self.clock.now_ms();
        self.world().reboot(device_id, now_ms)
    }

    pub fn set_faults(&self, settings: &FaultSettings) -> FaultSettings {
        let mut world = self.world();
        world.faults.update(settings);
        world.faults.settings()
    }

    /// Moves simulated time; due timers fire (and are logged at their due instant).
    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
        let now_ms = self.clock.now_ms();
        self.world().settle(now_ms);
    }

    pub fn rate_limit_stats(&self) -> RateLimitStats {
        self.world().rate_stats()
    }

    pub fn configure_rate_limit(&self, settings: &RateLimitSettings) {
        let mut world = self.world();
        if settings.reset {
            world.reset_rate_stats();
        }
        if let Some(interval_ms) = settings.interval_ms {
            world.config.rate_limit_interval_ms = interval_ms;
        }
        if let Some(answer) = settings.over_limit_answer {
            world.config.over_limit_answer = answer;
        }
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.world().requests.all()
    }

    pub fn clear_requests(&self) {
        self.world().requests.clear();
    }
}

/// The simulator's routes: cloud API, per-device local RPC and `/_sim/` control.
pub fn router(sim: ShellySim) -> Router {
    Router::new()
        .route("/v2/devices/api/get", post(cloud::get))
        .route("/v2/devices/api/set/switch", post(cloud::set_switch))
        .route("/local/{device_id}/rpc", post(local::frame))
        .route(
            "/local/{device_id}/rpc/{method}",
            get(local::method_get).post(local::method_post),
        )
        .nest("/_sim", control::router())
        .with_state(sim)
}

/// A simulator running in this process.
pub struct ShellySimHandle {
    sim: ShellySim,
    server: ServerHandle,
}

impl ShellySimHandle {
    /// Base URL to use as `SHELLY_SERVER`.
    pub fn base_url(&self) -> &Url {
        self.server.base_url()
    }

    /// The "LAN address" of a device's local RPC (`<base>/local/<device_id>`).
    pub fn local_base_url(&self, device_id: &str) -> Url {
        let mut url = self.server.base_url().clone();
        url.set_path(&format!("/local/{device_id}"));
        url
    }

    /// A cloud configuration with the key this simulator accepts, pointed at it, with the
    /// production pacing (for `latchkey demo` and tests).
    pub fn cloud_config(&self) -> crate::integrations::shelly::ShellyCloudConfig {
        let auth_key = self.sim.world().config.auth_key.clone();
        crate::integrations::shelly::ShellyCloudConfig::new(self.base_url().clone(), auth_key)
    }

    pub fn sim(&self) -> &ShellySim {
        &self.sim
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

impl std::ops::Deref for ShellySimHandle {
    type Target = ShellySim;

    fn deref(&self) -> &ShellySim {
        &self.sim
    }
}

/// Starts the simulator on `listener` in the background (tests, `latchkey demo`).
pub fn spawn(listener: TcpListener, config: ShellySimConfig) -> io::Result<ShellySimHandle> {
    let sim = ShellySim::new(config);
    let server = spawn_server(listener, router(sim.clone()))?;
    Ok(ShellySimHandle { sim, server })
}

/// Serves the simulator on `listener` until Ctrl-C (`latchkey sim shelly`).
pub async fn serve(listener: TcpListener, config: ShellySimConfig) -> io::Result<()> {
    tracing::info!(address = ?listener.local_addr().ok(), "Shelly simulator listening");
    serve_until_interrupted(listener, router(ShellySim::new(config))).await
}
