//! Spawning simulators and clients pointed at them, and small JSON shape assertions.

use std::sync::LazyLock;

use latchkey::integrations::health::ModuleHealth;
use latchkey::integrations::shelly::{ShellyClient, ShellyCloudConfig, ShellyConfig, ShellyTarget};
use latchkey::integrations::ttlock::{TtlockClient, TtlockConfig};
use latchkey::sim::shelly::{ShellySimConfig, ShellySimHandle};
use latchkey::sim::ttlock::{TtlockSimConfig, TtlockSimHandle};
use serde_json::Value;
use tokio::net::TcpListener;

/// The simulator's default lock with a gateway, and the one without.
pub const GATEWAY_LOCK: i64 = 4_410_021;
pub const BLUETOOTH_LOCK: i64 = 4_410_022;
/// The simulator's default one-channel plug and two-channel relay.
pub const PLUG: &str = "3c61052d7e90";
pub const DUAL: &str = "a8032ab1c2d3";

static TRACING: LazyLock<()> = LazyLock::new(|| {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("latchkey=debug")
            .with_test_writer()
            .try_init();
    }
});

async fn localhost() -> TcpListener {
    LazyLock::force(&TRACING);
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

pub struct TtlockEnv {
    pub sim: TtlockSimHandle,
    pub client: TtlockClient,
    pub health: ModuleHealth,
}

pub async fn ttlock_env() -> TtlockEnv {
    ttlock_env_with(TtlockSimConfig::default(), |_| {}).await
}

/// A simulator with `sim_config`, and a client holding its credentials, as changed by
/// `adjust`.
pub async fn ttlock_env_with(
    sim_config: TtlockSimConfig,
    adjust: impl FnOnce(&mut TtlockConfig),
) -> TtlockEnv {
    let mut config = TtlockConfig::new(
        url::Url::parse("http://unused.invalid").unwrap(),
        sim_config.client_id.clone(),
        sim_config.client_secret.clone(),
        sim_config.username.clone(),
        sim_config.password.clone(),
    );
    let sim = latchkey::sim::ttlock::spawn(localhost().await, sim_config).unwrap();
    config.api_base = sim.base_url().clone();
    config.timeout_ms = 2_000;
    adjust(&mut config);
    let health = ModuleHealth::new("ttlock");
    let client = TtlockClient::new(config, health.clone()).unwrap();
    TtlockEnv {
        sim,
        client,
        health,
    }
}

pub struct ShellyEnv {
    pub sim: ShellySimHandle,
    pub client: ShellyClient,
    pub health: ModuleHealth,
}

impl ShellyEnv {
    pub fn cloud(&self, device_id: &str) -> ShellyTarget {
        ShellyTarget::Cloud {
            device_id: device_id.to_owned(),
        }
    }

    pub fn local(&self, device_id: &str) -> ShellyTarget {
        ShellyTarget::Local {
            base_url: self.sim.local_base_url(device_id),
        }
    }
}

/// Simulator settings for tests: a 50 ms rate-limit interval instead of 1 s, and
/// dropped answers held for 1 s only.
pub fn test_shelly_sim_config() -> ShellySimConfig {
    ShellySimConfig {
        rate_limit_interval_ms: 50,
        drop_hold_ms: 1_000,
        ..ShellySimConfig::default()
    }
}

pub async fn shelly_env() -> ShellyEnv {
    shelly_env_with(test_shelly_sim_config(), |_| {}).await
}

/// A simulator with `sim_config` and a client whose cloud pacing (100 ms) is slower
/// than the simulator's limit (50 ms), with short timeouts; changed by `adjust`.
pub async fn shelly_env_with(
    sim_config: ShellySimConfig,
    adjust: impl FnOnce(&mut ShellyConfig),
) -> ShellyEnv {
    let auth_key = sim_config.auth_key.clone();
    let sim = latchkey::sim::shelly::spawn(localhost().await, sim_config).unwrap();
    let cloud = ShellyCloudConfig {
        timeout_ms: 500,
        min_interval_ms: 100,
        over_limit_backoff_ms: 200,
        over_limit_retries_max: 3,
        queue_max: 100,
        ..ShellyCloudConfig::new(sim.base_url().clone(), auth_key)
    };
    let mut config = ShellyConfig {
        cloud: Some(cloud),
        local_timeout_ms: 300,
        auto_off_margin_s: 30,
        readback_delay_ms: 0,
        // The simulator listens on loopback, which only an explicit range opens.
        device_networks: latchkey::net_policy::DeviceNetworks::new(
            latchkey::net_policy::parse_cidrs("127.0.0.0/8").unwrap(),
        ),
    };
    adjust(&mut config);
    let health = ModuleHealth::new("shelly");
    let client = ShellyClient::new(config, health.clone()).unwrap();
    ShellyEnv {
        sim,
        client,
        health,
    }
}

/// Asserts `object[field]` is a JSON integer and returns it.
pub fn int(object: &Value, field: &str) -> i64 {
    object
        .get(field)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{field} should be an integer in {object}"))
}

/// Asserts `object[field]` is a JSON string and returns it.
pub fn string<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{field} should be a string in {object}"))
}

/// Asserts `object[field]` is a JSON boolean and returns it.
pub fn boolean(object: &Value, field: &str) -> bool {
    object
        .get(field)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("{field} should be a boolean in {object}"))
}

/// Asserts `object[field]` is a JSON number (integer or not) and returns it.
pub fn number(object: &Value, field: &str) -> f64 {
    object
        .get(field)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{field} should be a number in {object}"))
}

/// The keys of a JSON object, sorted.
pub fn keys(object: &Value) -> Vec<String> {
    let mut keys: Vec<String> = object
        .as_object()
        .unwrap_or_else(|| panic!("expected an object, got {object}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Points the app's TTLock settings at a simulator with its default credentials.
pub fn use_ttlock_sim(settings: &mut latchkey::config::Settings, sim: &TtlockSimHandle) {
    let config = TtlockSimConfig::default();
    settings.ttlock.api_base = Some(sim.base_url().clone());
    settings.ttlock.client_id = Some(config.client_id.clone());
    settings.ttlock.client_secret = Some(config.client_secret.clone());
    settings.ttlock.username = Some(config.username.clone());
    settings.ttlock.password = Some(config.password.clone());
}
