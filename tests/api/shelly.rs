//! Shelly client against the Shelly simulator (cloud v2 and local Gen2 RPC).

use std::time::Duration;

use latchkey::integrations::health::HealthState;
use latchkey::integrations::shelly::{
    Confirmation, RelayCommand, ShellyConfig, ShellyError, ShellyTarget,
};
use latchkey::sim::shelly::{OverLimitAnswer, RateLimitSettings, RelaySource, ShellySimConfig};
use latchkey::sim::{FaultSettings, RecordedRequest};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::sim_helpers::{
    boolean, int, keys, number, shelly_env, shelly_env_with, string, test_shelly_sim_config,
    ShellyEnv, DUAL, PLUG,
};

const TEN_MINUTES: Duration = Duration::from_secs(600);

fn on_for(remaining: Duration) -> RelayCommand {
    RelayCommand::On { remaining }
}

fn requests_to(env: &ShellyEnv, path: &str) -> Vec<RecordedRequest> {
    env.sim
        .requests()
        .into_iter()
        .filter(|request| request.path == path)
        .collect()
}

// ----- Auto-off ------------------------------------------------------------------------

async fn assert_turns_itself_off(env: &ShellyEnv, target: ShellyTarget) {
    let outcome = env
        .client
        .switch(&target, 0, on_for(TEN_MINUTES))
        .await
        .unwrap();
    assert_eq!(outcome.confirmation, Confirmation::Answer);
    // Remaining time plus the configured 30 s margin.
    assert_eq!(outcome.toggle_after_s, Some(630));
    let relay = env.sim.relay(PLUG, 0).unwrap();
    assert!(relay.output);
    assert_eq!(relay.timer_duration_ms, Some(630_000));
    let switched_on_ms = relay.log.last().unwrap().at_ms;

    env.sim.advance_clock(Duration::from_secs(629));
    assert!(
        env.sim.relay(PLUG, 0).unwrap().output,
        "still inside the session + margin"
    );
    env.sim.advance_clock(Duration::from_secs(2));
    let relay = env.sim.relay(PLUG, 0).unwrap();
    assert!(!relay.output, "the device turned itself off");
    let last = relay.log.last().unwrap();
    assert_eq!(last.source, RelaySource::AutoOff);
    assert_eq!(last.at_ms, switched_on_ms + 630_000);
    // Nothing but the one ON command was ever sent.
    let commands: Vec<_> = relay
        .log
        .iter()
        .filter(|entry| entry.source == RelaySource::Command)
        .collect();
    assert_eq!(commands.len(), 1);
    assert!(commands[0].on);
}

#[tokio::test]
async fn cloud_on_arms_the_device_auto_off_which_fires_without_an_off_command() {
    let env = shelly_env().await;
    assert_turns_itself_off(&env, env.cloud(PLUG)).await;
    let sent = requests_to(&env, "/v2/devices/api/set/switch");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].json.as_ref().unwrap()["on"], json!(true));
}

#[tokio::test]
async fn local_on_arms_the_device_auto_off_which_fires_without_an_off_command() {
    let env = shelly_env().await;
    assert_turns_itself_off(&env, env.local(PLUG)).await;
}

#[tokio::test]
async fn zero_remaining_time_is_refused_before_sending() {
    let env = shelly_env().await;
    let error = env
        .client
        .switch(&env.cloud(PLUG), 0, on_for(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(error, ShellyError::InvalidCommand(_)), "{error:?}");
    assert!(env.sim.requests().is_empty());
}

// ----- Rate limit ----------------------------------------------------------------------

#[tokio::test]
async fn twenty_concurrent_cloud_commands_stay_under_the_rate_limit_and_all_complete() {
    let env = shelly_env().await;
    let targets = [(PLUG, 0), (DUAL, 0), (DUAL, 1)];
    let commands = (0..20).map(|n| {
        let (device, channel) = targets[n % targets.len()];
        let command = if n % 2 == 0 {
            on_for(TEN_MINUTES)
        } else {
            RelayCommand::Off
        };
        let target = env.cloud(device);
        let client = env.client.clone();
        async move { client.switch(&target, channel, command).await }
    });
    let results = futures::future::join_all(commands).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let stats = env.sim.rate_limit_stats();
    assert_eq!(stats.violations, vec![], "no request came too soon");
    assert_eq!(stats.rejected, 0);
    assert_eq!(stats.accepted, 20);
}

#[tokio::test]
async fn the_simulator_refuses_an_unpaced_burst() {
    // The check above means something only if the simulator catches bursts.
    let env = shelly_env().await;
    let http = reqwest::Client::new();
    let mut url = env.sim.base_url().join("v2/devices/api/get").unwrap();
    url.query_pairs_mut().append_pair(
        "auth_key",
        test_shelly_sim_config().auth_key.expose_secret(),
    );
    let burst = (0..5).map(|_| {
        http.post(url.clone())
            .json(&json!({ "ids": [PLUG] }))
            .send()
    });
    let statuses: Vec<u16> = futures::future::join_all(burst)
        .await
        .into_iter()
        .map(|response| response.unwrap().status().as_u16())
        .collect();
    assert!(statuses.contains(&401), "{statuses:?}");
    assert!(env.sim.rate_limit_stats().rejected > 0);
}

#[tokio::test]
async fn every_over_limit_answer_is_slowed_down_and_retried() {
    for answer in [
        OverLimitAnswer::Http401,
        OverLimitAnswer::Http429,
        OverLimitAnswer::MaxReq,
    ] {
        // The simulator's limit (150 ms) is stricter than this client's pacing (20 ms),
        // as when another process shares the key: the client must back off and retry.
        let sim_config = ShellySimConfig {
            rate_limit_interval_ms: 150,
            over_limit_answer: answer,
            ..test_shelly_sim_config()
        };
        let env = shelly_env_with(sim_config, |config| {
            let cloud = config.cloud.as_mut().unwrap();
            cloud.min_interval_ms = 20;
            cloud.over_limit_backoff_ms = 200;
        })
        .await;
        // A first accepted call proves the key good, so a 401 reads as the rate limit.
        env.client.status(&env.cloud(PLUG), 0).await.unwrap();
        let commands = [(PLUG, 0), (DUAL, 0), (DUAL, 1)].map(|(device, channel)| {
            let target = env.cloud(device);
            let client = env.client.clone();
            async move { client.switch(&target, channel, on_for(TEN_MINUTES)).await }
        });
        let results = futures::future::join_all(commands).await;
        assert!(results.iter().all(Result::is_ok), "{answer:?}: {results:?}");
        assert!(
            env.sim.rate_limit_stats().rejected > 0,
            "{answer:?}: the limit was hit"
        );
        assert!(env.sim.relay(DUAL, 1).unwrap().output);
    }
}

#[tokio::test]
async fn a_bad_auth_key_is_permanent_but_only_after_a_second_paced_401() {
    let env = shelly_env_with(test_shelly_sim_config(), |config| {
        config.cloud.as_mut().unwrap().auth_key = SecretString::from("wrong-key");
    })
    .await;
    let error = env.client.status(&env.cloud(PLUG), 0).await.unwrap_err();
    assert!(matches!(error, ShellyError::BadCredentials), "{error:?}");
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("SHELLY_AUTH_KEY"));
    assert_eq!(
        env.sim.requests().len(),
        2,
        "a single 401 is not taken as bad credentials"
    );
    let health = env.health.snapshot();
    assert_eq!(health.state, HealthState::Failing);
    assert!(health.last_error.unwrap().contains("SHELLY_AUTH_KEY"));
}

// ----- Lost answers, failures, offline devices ----------------------------------------

#[tokio::test]
async fn a_command_whose_answer_is_dropped_is_confirmed_by_reading_the_relay() {
    for local in [false, true] {
        let env = shelly_env().await;
        let target = if local {
            env.local(PLUG)
        } else {
            env.cloud(PLUG)
        };
        env.sim.set_faults(&FaultSettings {
            drop_next: Some(1),
            ..FaultSettings::default()
        });
        let outcome = env
            .client
            .switch(&target, 0, on_for(TEN_MINUTES))
            .await
            .unwrap();
        assert_eq!(
            outcome.confirmation,
            Confirmation::ReadBack,
            "local: {local}"
        );
        let status = outcome.status.unwrap();
        assert!(status.output);
        assert_eq!(status.timer_duration_s, Some(630.0));
        assert!(env.sim.relay(PLUG, 0).unwrap().output);
        assert!(env.sim.requests().iter().any(|request| request.dropped));
    }
}

#[tokio::test]
async fn a_failed_command_that_did_not_apply_is_reported_failed_after_reading_back() {
    let env = shelly_env().await;
    env.sim.set_faults(&FaultSettings {
        fail_next: Some(1),
        ..FaultSettings::default()
    });
    let error = env
        .client
        .switch(&env.cloud(PLUG), 0, on_for(TEN_MINUTES))
        .await
        .unwrap_err();
    assert!(matches!(error, ShellyError::Server { .. }), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(
        requests_to(&env, "/v2/devices/api/get").len(),
        1,
        "it read back"
    );
    assert!(!env.sim.relay(PLUG, 0).unwrap().output);
}

#[tokio::test]
async fn an_on_relay_without_our_timer_does_not_confirm_a_lost_command() {
    let env = shelly_env().await;
    // Someone switched it on by hand: ON, but no auto-off armed by us.
    env.sim.switch_external(PLUG, 0, true).unwrap();
    env.sim.set_faults(&FaultSettings {
        fail_next: Some(1),
        ..FaultSettings::default()
    });
    let error = env
        .client
        .switch(&env.cloud(PLUG), 0, on_for(TEN_MINUTES))
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
}

#[tokio::test]
async fn an_offline_cloud_device_is_a_retryable_error_until_it_returns() {
    let env = shelly_env().await;
    env.sim.set_online(PLUG, false).unwrap();
    let error = env
        .client
        .switch(&env.cloud(PLUG), 0, on_for(TEN_MINUTES))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ShellyError::DeviceOffline { .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    let status = env.client.status(&env.cloud(PLUG), 0).await.unwrap_err();
    assert!(
        matches!(status, ShellyError::DeviceOffline { .. }),
        "{status:?}"
    );
    assert_eq!(env.health.snapshot().state, HealthState::Failing);

    env.sim.set_online(PLUG, true).unwrap();
    env.client
        .switch(&env.cloud(PLUG), 0, on_for(TEN_MINUTES))
        .await
        .unwrap();
    assert!(env.sim.relay(PLUG, 0).unwrap().output);
    assert_eq!(env.health.snapshot().state, HealthState::Ok);
}

#[tokio::test]
async fn an_offline_local_device_is_a_retryable_error_until_it_returns() {
    let env = shelly_env().await;
    env.sim.set_online(PLUG, false).unwrap();
    let error = env
        .client
        .switch(&env.local(PLUG), 0, on_for(TEN_MINUTES))
        .await
        .unwrap_err();
    // No answer to the command, and none to the read-back: state unknown, retry.
    assert!(
        matches!(error, ShellyError::Unconfirmed { .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());

    env.sim.set_online(PLUG, true).unwrap();
    let outcome = env
        .client
        .switch(&env.local(PLUG), 0, on_for(TEN_MINUTES))
        .await
        .unwrap();
    assert_eq!(outcome.was_on, Some(false));
    assert!(env.sim.relay(PLUG, 0).unwrap().output);
}

#[tokio::test]
async fn wrong_channels_and_unknown_devices_are_permanent() {
    let env = shelly_env().await;
    for target in [env.cloud(PLUG), env.local(PLUG)] {
        let error = env
            .client
            .switch(&target, 5, RelayCommand::Off)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ShellyError::InvalidChannel { channel: 5, .. }),
            "{error:?}"
        );
        assert!(!error.is_retryable());
    }
    let unknown = env
        .client
        .switch(&env.cloud("0000deadbeef"), 0, RelayCommand::Off)
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, ShellyError::DeviceNotFound { .. }),
        "{unknown:?}"
    );
    assert!(!unknown.is_retryable());
}

#[tokio::test]
async fn cloud_targets_need_cloud_configuration() {
    let env = shelly_env_with(test_shelly_sim_config(), |config: &mut ShellyConfig| {
        config.cloud = None;
    })
    .await;
    let error = env.client.status(&env.cloud(PLUG), 0).await.unwrap_err();
    assert!(matches!(error, ShellyError::CloudNotConfigured));
    assert!(error.to_string().contains("SHELLY_SERVER"));
    // Local devices work without it.
    env.client.status(&env.local(PLUG), 0).await.unwrap();
}

#[tokio::test]
async fn a_relay_switched_behind_our_back_shows_in_status_and_the_log() {
    let env = shelly_env().await;
    env.sim.switch_external(DUAL, 1, true).unwrap();
    for target in [env.cloud(DUAL), env.local(DUAL)] {
        let status = env.client.status(&target, 1).await.unwrap();
        assert!(status.output);
        assert_eq!(status.source.as_deref(), Some("button"));
        assert_eq!(status.timer_duration_s, None);
    }
    let log = env.sim.relay(DUAL, 1).unwrap().log;
    assert_eq!(log.last().unwrap().source, RelaySource::External);
}

#[tokio::test]
async fn rate_limit_and_faults_are_controllable_over_http() {
    let env = shelly_env().await;
    let http = reqwest::Client::new();
    let base = env.sim.base_url();
    let offline = http
        .post(base.join(&format!("_sim/devices/{PLUG}/online")).unwrap())
        .json(&json!({ "online": false }))
        .send()
        .await
        .unwrap();
    assert!(offline.status().is_success());
    let error = env
        .client
        .switch(&env.cloud(PLUG), 0, RelayCommand::Off)
        .await
        .unwrap_err();
    assert!(matches!(error, ShellyError::DeviceOffline { .. }));
    let stats: Value = http
        .get(base.join("_sim/rate_limit").unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["accepted"], 1);
    env.sim.configure_rate_limit(&RateLimitSettings {
        reset: true,
        ..RateLimitSettings::default()
    });
    assert_eq!(env.sim.rate_limit_stats().accepted, 0);
    let relay: Value = http
        .get(base.join(&format!("_sim/devices/{PLUG}/relays/0")).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(relay["output"], Value::Bool(false));
}

// ----- Wire shapes (reference/shelly.md) ------------------------------------------------

#[tokio::test]
async fn wire_cloud_set_switch() {
    let env = shelly_env().await;
    env.client
        .switch(&env.cloud(DUAL), 1, on_for(TEN_MINUTES))
        .await
        .unwrap();
    env.client
        .switch(&env.cloud(DUAL), 1, RelayCommand::Off)
        .await
        .unwrap();
    let sent = requests_to(&env, "/v2/devices/api/set/switch");
    assert_eq!(sent.len(), 2);
    for request in &sent {
        assert_eq!(request.method, "POST");
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        assert_eq!(request.query.keys().collect::<Vec<_>>(), ["auth_key"]);
        assert_eq!(request.response_status, Some(200));
        assert_eq!(request.response, None, "success is an empty body");
    }
    let on = sent[0].json.as_ref().unwrap();
    assert_eq!(keys(on), ["channel", "id", "on", "toggle_after"]);
    assert_eq!(string(on, "id"), DUAL);
    assert_eq!(int(on, "channel"), 1);
    assert!(boolean(on, "on"), "a real boolean, not \"on\"");
    assert_eq!(number(on, "toggle_after"), 630.0);
    let off = sent[1].json.as_ref().unwrap();
    assert_eq!(keys(off), ["channel", "id", "on"], "no timer on OFF");
    assert!(!boolean(off, "on"));
}

#[tokio::test]
async fn wire_cloud_get() {
    let env = shelly_env().await;
    env.client
        .switch(&env.cloud(PLUG), 0, on_for(TEN_MINUTES))
        .await
        .unwrap();
    let status = env.client.status(&env.cloud(PLUG), 0).await.unwrap();
    assert_eq!(status.timer_duration_s, Some(630.0));
    let request = requests_to(&env, "/v2/devices/api/get").pop().unwrap();
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(request.query.keys().collect::<Vec<_>>(), ["auth_key"]);
    assert_eq!(
        request.json,
        Some(json!({ "ids": [PLUG], "select": ["status"] }))
    );
    let answer = request.response.unwrap();
    let device = &answer.as_array().expect("an array, one entry per device")[0];
    assert_eq!(string(device, "id"), PLUG);
    assert_eq!(int(device, "online"), 1, "online is 0/1, not a boolean");
    assert!(device.get("settings").is_none(), "not selected");
    let switch = &device["status"]["switch:0"];
    assert_eq!(int(switch, "id"), 0);
    assert!(boolean(switch, "output"));
    string(switch, "source");
    number(switch, "timer_started_at");
    assert_eq!(number(switch, "timer_duration"), 630.0);
}

#[tokio::test]
async fn wire_local_switch_set_and_get_status() {
    let env = shelly_env().await;
    env.client
        .switch(&env.local(PLUG), 0, on_for(TEN_MINUTES))
        .await
        .unwrap();
    env.client.status(&env.local(PLUG), 0).await.unwrap();
    let path = format!("/local/{PLUG}/rpc");
    let frames = requests_to(&env, &path);
    assert_eq!(frames.len(), 2);

    let set = frames[0].json.as_ref().unwrap();
    assert_eq!(keys(set), ["id", "method", "params", "src"]);
    int(set, "id");
    assert_eq!(string(set, "method"), "Switch.Set");
    let params = &set["params"];
    assert_eq!(keys(params), ["id", "on", "toggle_after"]);
    assert_eq!(int(params, "id"), 0);
    assert!(boolean(params, "on"));
    assert_eq!(number(params, "toggle_after"), 630.0);
    let answer = frames[0].response.as_ref().unwrap();
    assert_eq!(answer["id"], set["id"], "the frame id is echoed");
    string(answer, "src");
    assert_eq!(string(answer, "dst"), string(set, "src"));
    assert!(!boolean(&answer["result"], "was_on"));

    let get = frames[1].json.as_ref().unwrap();
    assert_eq!(string(get, "method"), "Switch.GetStatus");
    assert_eq!(get["params"], json!({ "id": 0 }));
    let result = &frames[1].response.as_ref().unwrap()["result"];
    assert_eq!(int(result, "id"), 0);
    assert!(boolean(result, "output"));
    string(result, "source");
    number(result, "timer_started_at");
    number(result, "timer_duration");
}

#[tokio::test]
async fn local_rpc_serves_all_three_http_flavours() {
    let env = shelly_env().await;
    let http = reqwest::Client::new();
    let base = env.sim.local_base_url(DUAL);
    let bare_set: Value = http
        .get(format!("{base}/rpc/Switch.Set?id=1&on=true&toggle_after=5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bare_set, json!({ "was_on": false }));
    let bare_status: Value = http
        .post(format!("{base}/rpc/Switch.GetStatus"))
        .json(&json!({ "id": 1 }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bare_status["output"], Value::Bool(true));
    let bad_id: Value = http
        .post(format!("{base}/rpc"))
        .json(&json!({ "id": 7, "method": "Switch.GetStatus", "params": { "id": 9 } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bad_id["id"], 7);
    assert_eq!(bad_id["error"]["code"], -105);
    env.sim.advance_clock(Duration::from_secs(6));
    assert!(
        !env.sim.relay(DUAL, 1).unwrap().output,
        "toggle_after fired"
    );
}

#[tokio::test]
async fn the_device_auto_off_config_also_covers_ons_we_did_not_send() {
    let env = shelly_env().await;
    env.client
        .configure_auto_off(&env.local(PLUG), 0, Duration::from_secs(90))
        .await
        .unwrap();
    // A button press: no toggle_after, only the device's config can turn it off.
    env.sim.switch_external(PLUG, 0, true).unwrap();
    env.sim.advance_clock(Duration::from_secs(119));
    assert!(env.sim.relay(PLUG, 0).unwrap().output);
    env.sim.advance_clock(Duration::from_secs(2));
    let relay = env.sim.relay(PLUG, 0).unwrap();
    assert!(!relay.output, "90 s + 30 s margin elapsed");
    assert_eq!(relay.log.last().unwrap().source, RelaySource::AutoOff);

    let cloud = env
        .client
        .configure_auto_off(&env.cloud(PLUG), 0, Duration::from_secs(90))
        .await
        .unwrap_err();
    assert!(matches!(cloud, ShellyError::InvalidCommand(_)));
}

#[tokio::test]
async fn demo_configs_from_the_handle_work_and_never_print_the_key() {
    let env = shelly_env().await;
    let config = env.sim.cloud_config();
    let printed = format!("{config:?}");
    assert!(!printed.contains(test_shelly_sim_config().auth_key.expose_secret()));
    let client = latchkey::integrations::shelly::ShellyClient::new(
        ShellyConfig::new(Some(config)),
        latchkey::integrations::health::ModuleHealth::new("shelly"),
    )
    .unwrap();
    client.status(&env.cloud(PLUG), 0).await.unwrap();
}
