//! TTLock Open API simulator.
//!
//! Vendor endpoints (parameters from the query string or a form body, as the real server
//! merges them; always HTTP 200, errors as `errcode`): `POST /oauth2/token`,
//! `GET|POST /v3/lock/list`, `/v3/lock/detail`, `/v3/lock/listKeyboardPwd`,
//! `/v3/lock/getPassageModeConfiguration`, `POST /v3/keyboardPwd/get`,
//! `/v3/keyboardPwd/add`, `/v3/keyboardPwd/delete`.
//!
//! Control endpoints (JSON), mirrored by [`TtlockSimHandle`] methods:
//! - `GET /_sim/state` — locks and their passcodes ([`LockView`]);
//! - `POST /_sim/locks` [`SimLockSpec`] — add a lock;
//! - `POST /_sim/locks/{lock_id}/gateway` `{"online": bool}` — gateway on/offline;
//! - `POST /_sim/locks/{lock_id}/passage_mode` `{"enabled": bool, "auto_unlock": bool}`;
//! - `POST /_sim/locks/{lock_id}/enter` `{"code": "…", "at": RFC 3339?}` — type a code on
//!   the keypad at `at` (default: now) → [`EntryResult`];
//! - `POST /_sim/faults` [`FaultSettings`] — latency, fail next N, drop next N answers;
//! - `POST /_sim/tokens/expire` `{"refresh_too": bool}` — expire every access token;
//! - `POST /_sim/clock/advance` `{"ms": n}`; `GET /_sim/stats` ([`TtlockSimStats`]);
//! - `GET /_sim/requests` ([`RecordedRequest`]s), `DELETE /_sim/requests`.

mod api;
mod config;
mod control;
mod state;

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use url::Url;

pub use config::{SimLockSpec, TtlockSimConfig};
pub use state::{EntryResult, LockView, PasscodeView, TtlockSimStats};

use crate::sim::{
    serve_until_interrupted, spawn_server, FaultSettings, RecordedRequest, ServerHandle, SimClock,
    SimControlError,
};
use state::World;

/// The simulator's shared state; the router's state. Cheap to clone.
#[derive(Clone)]
pub struct TtlockSim {
    clock: SimClock,
    world: Arc<Mutex<World>>,
}

impl TtlockSim {
    pub fn new(config: TtlockSimConfig) -> Self {
        Self {
            clock: SimClock::default(),
            world: Arc::new(Mutex::new(World::new(config))),
        }
    }

    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        // Every mutation completes before the guard drops; a panic mid-way would be a
        // simulator bug that tests surface anyway.
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn state(&self) -> Vec<LockView> {
        self.world().views()
    }

    pub fn add_lock(&self, spec: SimLockSpec) {
        self.world().add_lock(spec);
    }

    pub fn set_gateway_online(&self, lock_id: i64, online: bool) -> Result<(), SimControlError> {
        self.world()
            .set_gateway_online(lock_id, online)
            .then_some(())
            .ok_or(SimControlError::UnknownLock(lock_id))
    }

    pub fn set_passage_mode(
        &self,
        lock_id: i64,
        enabled: bool,
        auto_unlock: bool,
    ) -> Result<(), SimControlError> {
        self.world()
            .set_passage_mode(lock_id, enabled, auto_unlock)
            .then_some(())
            .ok_or(SimControlError::UnknownLock(lock_id))
    }

    /// Types `code` on the lock's keypad at `at`: would the door open?
    pub fn enter_passcode(
        &self,
        lock_id: i64,
        code: &str,
        at: DateTime<Utc>,
    ) -> Result<EntryResult, SimControlError> {
        self.world()
            .enter(lock_id, code, at.timestamp_millis())
            .ok_or(SimControlError::UnknownLock(lock_id))
    }

    pub fn set_faults(&self, settings: &FaultSettings) -> FaultSettings {
        let mut world = self.world();
        world.faults.update(settings);
        world.faults.settings()
    }

    /// Every access token expires now (answers 10004 from then on); with `refresh_too`
    /// the refresh tokens are revoked as well (10011), forcing a password login.
    pub fn expire_tokens(&self, refresh_too: bool) {
        let now_ms = self.clock.now_ms();
        self.world().expire_tokens(now_ms, refresh_too);
    }

    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub fn stats(&self) -> TtlockSimStats {
        self.world().stats.clone()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.world().requests.all()
    }

    pub fn clear_requests(&self) {
        self.world().requests.clear();
    }
}

/// The simulator's routes: vendor API plus `/_sim/` control.
pub fn router(sim: TtlockSim) -> Router {
    let read = || get(api::handle).post(api::handle);
    Router::new()
        .route("/oauth2/token", post(api::handle))
        .route("/v3/lock/list", read())
        .route("/v3/lock/detail", read())
        .route("/v3/lock/listKeyboardPwd", read())
        .route("/v3/lock/getPassageModeConfiguration", read())
        .route("/v3/keyboardPwd/get", post(api::handle))
        .route("/v3/keyboardPwd/add", post(api::handle))
        .route("/v3/keyboardPwd/delete", post(api::handle))
        .nest("/_sim", control::router())
        .with_state(sim)
}

/// A simulator running in this process.
pub struct TtlockSimHandle {
    sim: TtlockSim,
    server: ServerHandle,
}

impl TtlockSimHandle {
    /// Base URL to use as `TTLOCK_API_BASE`.
    pub fn base_url(&self) -> &Url {
        self.server.base_url()
    }

    /// A client configuration with the credentials this simulator accepts, pointed at it
    /// (for `latchkey demo` and tests).
    pub fn client_config(&self) -> crate::integrations::ttlock::TtlockConfig {
        let world = self.sim.world();
        crate::integrations::ttlock::TtlockConfig::new(
            self.base_url().clone(),
            world.config.client_id.clone(),
            world.config.client_secret.clone(),
            world.config.username.clone(),
            world.config.password.clone(),
        )
    }

    /// The simulator's state and control methods.
    pub fn sim(&self) -> &TtlockSim {
        &self.sim
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

impl std::ops::Deref for TtlockSimHandle {
    type Target = TtlockSim;

    fn deref(&self) -> &TtlockSim {
        &self.sim
    }
}

/// Starts the simulator on `listener` in the background (tests, `latchkey demo`).
pub fn spawn(listener: TcpListener, config: TtlockSimConfig) -> io::Result<TtlockSimHandle> {
    let sim = TtlockSim::new(config);
    let server = spawn_server(listener, router(sim.clone()))?;
    Ok(TtlockSimHandle { sim, server })
}

/// Serves the simulator on `listener` until Ctrl-C (`latchkey sim ttlock`).
pub async fn serve(listener: TcpListener, config: TtlockSimConfig) -> io::Result<()> {
    tracing::info!(address = ?listener.local_addr().ok(), "TTLock simulator listening");
    serve_until_interrupted(listener, router(TtlockSim::new(config))).await
}
