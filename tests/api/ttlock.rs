//! TTLock client against the TTLock simulator.

use std::time::Duration;

use chrono::{DateTime, Duration as Span, DurationRound, Utc};
use latchkey::integrations::health::HealthState;
use latchkey::integrations::ttlock::{
    AccessCodeRequest, DeleteMode, DeleteOutcome, IssuedPasscode, PasscodeKind,
    PeriodPasscodeRequest, TtlockError,
};
use latchkey::sim::ttlock::{SimLockSpec, TtlockSimConfig};
use latchkey::sim::{FaultSettings, RecordedRequest};
use secrecy::SecretString;
use serde_json::Value;

use crate::sim_helpers::{
    int, keys, string, ttlock_env, ttlock_env_with, TtlockEnv, BLUETOOTH_LOCK, GATEWAY_LOCK,
};

fn access_request(lock_id: i64, has_gateway: bool, key: &str) -> AccessCodeRequest {
    let from = Utc::now() + Span::hours(1);
    AccessCodeRequest {
        lock_id,
        has_gateway,
        name: "Guest".into(),
        idempotency_key: key.into(),
        valid_from: from,
        valid_until: from + Span::hours(2),
    }
}

async fn opens(env: &TtlockEnv, lock_id: i64, code: &str, at: DateTime<Utc>) -> bool {
    env.sim.enter_passcode(lock_id, code, at).unwrap().opens
}

fn last_request(env: &TtlockEnv, path: &str) -> RecordedRequest {
    env.sim
        .requests()
        .into_iter()
        .rev()
        .find(|request| request.path == path)
        .unwrap_or_else(|| panic!("no request to {path}"))
}

// ----- Tokens ---------------------------------------------------------------------

#[tokio::test]
async fn token_is_obtained_once_and_reused() {
    let env = ttlock_env().await;
    env.client.list_locks().await.unwrap();
    env.client.list_locks().await.unwrap();
    let stats = env.sim.stats();
    assert_eq!(stats.password_grants, 1);
    assert_eq!(stats.refresh_grants, 0);
    assert_eq!(stats.api_calls, 2);
}

#[tokio::test]
async fn token_is_refreshed_before_it_expires() {
    let sim_config = TtlockSimConfig {
        token_lifetime_s: 1,
        ..TtlockSimConfig::default()
    };
    let env = ttlock_env_with(sim_config, |_| {}).await;
    env.client.list_locks().await.unwrap();
    // Into the last tenth of the token's 1 s life, where the client renews it: a client
    // that waited for expiry (or for a 10004) would still use the old token here.
    tokio::time::sleep(Duration::from_millis(950)).await;
    env.client.list_locks().await.unwrap();
    let stats = env.sim.stats();
    assert_eq!(stats.refresh_grants, 1, "renewed before expiry");
    assert_eq!(stats.password_grants, 1);
    assert_eq!(stats.rejected_tokens, 0);
}

#[tokio::test]
async fn an_invalid_token_is_renewed_without_the_caller_noticing() {
    let env = ttlock_env().await;
    env.client.list_locks().await.unwrap();
    env.sim.expire_tokens(false);
    let locks = env.client.list_locks().await.unwrap();
    assert_eq!(locks.len(), 2);
    let stats = env.sim.stats();
    assert_eq!(stats.rejected_tokens, 1);
    assert_eq!(stats.refresh_grants, 1);
    assert_eq!(stats.password_grants, 1);
}

#[tokio::test]
async fn concurrent_callers_share_one_renewal() {
    let env = ttlock_env().await;
    env.client.list_locks().await.unwrap();
    env.sim.expire_tokens(false);
    let calls = (0..5).map(|_| env.client.list_locks());
    for result in futures::future::join_all(calls).await {
        result.unwrap();
    }
    assert_eq!(env.sim.stats().refresh_grants, 1);
}

#[tokio::test]
async fn a_revoked_refresh_token_falls_back_to_logging_in() {
    let env = ttlock_env().await;
    env.client.list_locks().await.unwrap();
    env.sim.expire_tokens(true);
    env.client.list_locks().await.unwrap();
    let stats = env.sim.stats();
    assert_eq!(stats.password_grants, 2);
    assert_eq!(stats.refresh_grants, 0);
}

// ----- Credentials and health -----------------------------------------------------

#[tokio::test]
async fn a_bad_client_secret_is_permanent_and_names_the_variables() {
    let env = ttlock_env_with(TtlockSimConfig::default(), |config| {
        config.client_secret = SecretString::from("wrong");
    })
    .await;
    let error = env.client.list_locks().await.unwrap_err();
    assert!(
        matches!(error, TtlockError::BadClientCredentials { errcode: 10001 }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    let message = error.to_string();
    assert!(message.contains("TTLOCK_CLIENT_ID") && message.contains("TTLOCK_CLIENT_SECRET"));
    assert!(message.contains("10001"));
    let health = env.health.snapshot();
    assert_eq!(health.state, HealthState::Failing);
    assert!(health.last_error.unwrap().contains("TTLOCK_CLIENT_SECRET"));
    assert!(health.last_error_at.is_some());
}

#[tokio::test]
async fn a_bad_account_password_is_permanent_and_names_the_variables() {
    let env = ttlock_env_with(TtlockSimConfig::default(), |config| {
        config.password = SecretString::from("not the password");
    })
    .await;
    let error = env.client.list_locks().await.unwrap_err();
    assert!(
        matches!(
            error,
            TtlockError::BadAccountCredentials { errcode: 10007, .. }
        ),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert!(error
        .to_string()
        .contains("TTLOCK_USERNAME and TTLOCK_PASSWORD"));
}

#[tokio::test]
async fn config_debug_never_prints_secrets() {
    let env = ttlock_env().await;
    let config = latchkey::integrations::ttlock::TtlockConfig::new(
        env.sim.base_url().clone(),
        "id",
        SecretString::from("the-client-secret"),
        "user",
        SecretString::from("the-password"),
    );
    let printed = format!("{config:?}");
    assert!(!printed.contains("the-client-secret"));
    assert!(!printed.contains("the-password"));
}

#[tokio::test]
async fn a_drifting_clock_is_reported_with_the_fix() {
    let env = ttlock_env().await;
    env.sim.advance_clock(Duration::from_secs(10 * 60));
    let error = env.client.list_locks().await.unwrap_err();
    assert!(matches!(error, TtlockError::ClockSkew), "{error:?}");
    assert!(error.to_string().contains("NTP"));
}

// ----- Locks and passage mode --------------------------------------------------------

#[tokio::test]
async fn locks_are_listed_across_pages_with_their_gateway() {
    let env = ttlock_env().await;
    for lock_id in 0..120 {
        env.sim.add_lock(SimLockSpec {
            lock_id: 5_000_000 + lock_id,
            alias: format!("Locker {lock_id}"),
            has_gateway: lock_id % 2 == 0,
        });
    }
    let locks = env.client.list_locks().await.unwrap();
    assert_eq!(locks.len(), 122, "two pages of 100");
    let room = locks
        .iter()
        .find(|lock| lock.lock_id == GATEWAY_LOCK)
        .unwrap();
    assert!(room.has_gateway);
    assert_eq!(room.alias.as_deref(), Some("Room 12"));
    let gate = locks
        .iter()
        .find(|lock| lock.lock_id == BLUETOOTH_LOCK)
        .unwrap();
    assert!(!gate.has_gateway);
}

#[tokio::test]
async fn passage_mode_is_read() {
    let env = ttlock_env().await;
    assert!(!env.client.passage_mode(GATEWAY_LOCK).await.unwrap().enabled);
    env.sim.set_passage_mode(GATEWAY_LOCK, true, true).unwrap();
    let mode = env.client.passage_mode(GATEWAY_LOCK).await.unwrap();
    assert!(mode.enabled);
    assert_eq!(mode.auto_unlock, Some(true));
    assert_eq!(mode.periods.len(), 1);
    assert!(mode.periods[0].all_day);
}

#[tokio::test]
async fn an_unknown_lock_is_permanent_and_does_not_degrade_health() {
    let env = ttlock_env().await;
    let error = env
        .client
        .issue_access_code(&access_request(999, true, "k"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, TtlockError::LockNotFound { errcode: -1003, .. }),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert_eq!(env.health.snapshot().state, HealthState::Ok);
}

// ----- Passcodes ----------------------------------------------------------------------

#[tokio::test]
async fn a_custom_passcode_opens_only_inside_its_window_and_not_after_deletion() {
    let env = ttlock_env().await;
    let issued = env
        .client
        .issue_access_code(&access_request(GATEWAY_LOCK, true, "payment-1"))
        .await
        .unwrap();
    assert_eq!(issued.kind, PasscodeKind::Custom);
    assert!(issued.remotely_revocable);
    assert_eq!(issued.delete_mode, DeleteMode::ViaGateway);
    let (from, until) = (issued.valid_from, issued.valid_until);
    let minute = Span::minutes(1);

    assert!(!opens(&env, GATEWAY_LOCK, &issued.code, from - minute).await);
    assert!(opens(&env, GATEWAY_LOCK, &issued.code, from + minute).await);
    assert!(opens(&env, GATEWAY_LOCK, &issued.code, until - minute).await);
    assert!(!opens(&env, GATEWAY_LOCK, &issued.code, until + minute).await);

    let outcome = env
        .client
        .delete_passcode(GATEWAY_LOCK, issued.keyboard_pwd_id, issued.delete_mode)
        .await
        .unwrap();
    assert_eq!(outcome, DeleteOutcome::Deleted);
    assert!(!opens(&env, GATEWAY_LOCK, &issued.code, from + minute).await);

    let again = env
        .client
        .delete_passcode(GATEWAY_LOCK, issued.keyboard_pwd_id, issued.delete_mode)
        .await
        .unwrap();
    assert_eq!(again, DeleteOutcome::AlreadyAbsent);
}

#[tokio::test]
async fn a_random_period_passcode_is_whole_hours_and_survives_a_cloud_delete() {
    let env = ttlock_env().await;
    let request = access_request(BLUETOOTH_LOCK, false, "payment-2");
    let issued = env.client.issue_access_code(&request).await.unwrap();
    assert_eq!(issued.kind, PasscodeKind::RandomPeriod);
    assert!(!issued.remotely_revocable);
    assert_eq!(issued.delete_mode, DeleteMode::CloudOnly);
    let hour = Span::hours(1);
    assert_eq!(
        issued.valid_from,
        issued.valid_from.duration_trunc(hour).unwrap()
    );
    assert_eq!(
        issued.valid_until,
        issued.valid_until.duration_trunc(hour).unwrap()
    );
    assert_eq!(
        issued.first_use_deadline,
        Some(issued.valid_from + Span::hours(24))
    );
    let inside = issued.valid_from + Span::minutes(5);
    assert!(
        !opens(
            &env,
            BLUETOOTH_LOCK,
            &issued.code,
            issued.valid_from - Span::minutes(1)
        )
        .await
    );
    assert!(opens(&env, BLUETOOTH_LOCK, &issued.code, inside).await);
    assert!(!opens(&env, BLUETOOTH_LOCK, &issued.code, issued.valid_until).await);

    // Same window, same code and id: TTLock's algorithm is deterministic.
    let period = PeriodPasscodeRequest {
        lock_id: BLUETOOTH_LOCK,
        name: "Guest".into(),
        valid_from: issued.valid_from,
        valid_until: issued.valid_until,
    };
    let repeat = env.client.issue_period_passcode(&period).await.unwrap();
    assert_eq!(
        (repeat.keyboard_pwd_id, &repeat.code),
        (issued.keyboard_pwd_id, &issued.code)
    );

    // Deleting in the cloud does not reach a lock without a gateway: the code still
    // opens. This is why it is reported as not remotely revocable.
    env.client
        .delete_passcode(BLUETOOTH_LOCK, issued.keyboard_pwd_id, issued.delete_mode)
        .await
        .unwrap();
    assert!(opens(&env, BLUETOOTH_LOCK, &issued.code, inside).await);

    // Re-issuing a deleted window is refused by TTLock (-1026); the client moves the end
    // by a whole hour instead of failing.
    let reissued = env
        .client
        .issue_access_code(&AccessCodeRequest {
            idempotency_key: "payment-3".into(),
            ..request
        })
        .await
        .unwrap();
    assert_eq!(reissued.valid_from, issued.valid_from);
    assert_eq!(reissued.valid_until, issued.valid_until + hour);
    assert_ne!(reissued.keyboard_pwd_id, issued.keyboard_pwd_id);
}

#[tokio::test]
async fn a_random_code_not_used_within_24_hours_of_its_start_is_void() {
    let env = ttlock_env().await;
    let start = Utc::now().duration_trunc(Span::hours(1)).unwrap() + Span::hours(1);
    let issued = env
        .client
        .issue_period_passcode(&PeriodPasscodeRequest {
            lock_id: BLUETOOTH_LOCK,
            name: "Long stay".into(),
            valid_from: start,
            valid_until: start + Span::hours(72),
        })
        .await
        .unwrap();
    let entry = env
        .sim
        .enter_passcode(BLUETOOTH_LOCK, &issued.code, start + Span::hours(25))
        .unwrap();
    assert!(!entry.opens);
    assert!(entry.reason.contains("24 h"), "{}", entry.reason);
}

#[tokio::test]
async fn an_offline_gateway_is_retryable_and_revocation_succeeds_once_it_returns() {
    let env = ttlock_env().await;
    let issued = env
        .client
        .issue_access_code(&access_request(GATEWAY_LOCK, true, "payment-4"))
        .await
        .unwrap();
    let inside = issued.valid_from + Span::minutes(1);
    env.sim.set_gateway_online(GATEWAY_LOCK, false).unwrap();

    let error = env
        .client
        .delete_passcode(GATEWAY_LOCK, issued.keyboard_pwd_id, DeleteMode::ViaGateway)
        .await
        .unwrap_err();
    assert!(
        matches!(error, TtlockError::GatewayOffline { errcode: -3002, .. }),
        "{error:?}"
    );
    assert!(error.is_retryable());
    assert!(
        opens(&env, GATEWAY_LOCK, &issued.code, inside).await,
        "revocation is pending"
    );
    assert_eq!(env.health.snapshot().state, HealthState::Failing);

    let add = env
        .client
        .issue_access_code(&access_request(GATEWAY_LOCK, true, "payment-5"))
        .await
        .unwrap_err();
    assert!(add.is_retryable(), "{add:?}");

    env.sim.set_gateway_online(GATEWAY_LOCK, true).unwrap();
    env.client
        .delete_passcode(GATEWAY_LOCK, issued.keyboard_pwd_id, DeleteMode::ViaGateway)
        .await
        .unwrap();
    assert!(!opens(&env, GATEWAY_LOCK, &issued.code, inside).await);
    assert_eq!(env.health.snapshot().state, HealthState::Ok);
}

#[tokio::test]
async fn issuing_is_idempotent_when_the_answer_is_lost() {
    let env = ttlock_env_with(
        TtlockSimConfig {
            drop_hold_ms: 1_000,
            ..TtlockSimConfig::default()
        },
        |config| config.timeout_ms = 300,
    )
    .await;
    env.client.list_locks().await.unwrap(); // log in first, so the drop hits the add
    env.sim.set_faults(&FaultSettings {
        drop_next: Some(1),
        ..FaultSettings::default()
    });
    let request = access_request(GATEWAY_LOCK, true, "payment-6");
    let error = env.client.issue_access_code(&request).await.unwrap_err();
    assert!(matches!(error, TtlockError::Timeout { .. }), "{error:?}");
    assert!(error.is_retryable());

    let issued: IssuedPasscode = env.client.issue_access_code(&request).await.unwrap();
    assert!(issued.reused_existing);
    let lock = env
        .sim
        .state()
        .into_iter()
        .find(|lock| lock.lock_id == GATEWAY_LOCK)
        .unwrap();
    assert_eq!(lock.passcodes.len(), 1, "no second code was added");
    assert_eq!(lock.passcodes[0].keyboard_pwd_id, issued.keyboard_pwd_id);
    assert!(
        opens(
            &env,
            GATEWAY_LOCK,
            &issued.code,
            issued.valid_from + Span::minutes(1)
        )
        .await
    );
}

/// A crash (or a timeout) after TTLock wrote the code: the retry comes minutes later, so
/// it asks for a later window, and must still find the first attempt's code rather than
/// add a second one for the same grant.
#[tokio::test]
async fn a_retry_in_a_later_minute_finds_the_code_a_lost_attempt_wrote() {
    let env = ttlock_env_with(
        TtlockSimConfig {
            drop_hold_ms: 1_000,
            ..TtlockSimConfig::default()
        },
        |config| config.timeout_ms = 300,
    )
    .await;
    env.client.list_locks().await.unwrap();
    env.sim.set_faults(&FaultSettings {
        drop_next: Some(1),
        ..FaultSettings::default()
    });
    let first = access_request(GATEWAY_LOCK, true, "payment-8");
    env.client.issue_access_code(&first).await.unwrap_err();

    let mut later = first.clone();
    later.valid_from += Span::minutes(3);
    later.valid_until += Span::minutes(3);
    let issued = env.client.issue_access_code(&later).await.unwrap();
    assert!(issued.reused_existing);
    let lock = env
        .sim
        .state()
        .into_iter()
        .find(|lock| lock.lock_id == GATEWAY_LOCK)
        .unwrap();
    assert_eq!(lock.passcodes.len(), 1, "one code for one grant");
    assert_eq!(lock.passcodes[0].keyboard_pwd_id, issued.keyboard_pwd_id);
    assert!(
        issued.valid_from < later.valid_from,
        "the window reported is the one the lock holds"
    );
}

#[tokio::test]
async fn a_code_held_by_another_grant_gets_another_candidate() {
    let env = ttlock_env().await;
    let first = env
        .client
        .issue_access_code(&access_request(GATEWAY_LOCK, true, "payment-7"))
        .await
        .unwrap();
    // Same idempotency key (so the same derived code) but another name and window: the
    // code is taken by a different grant, so the client must not "reuse" it.
    let mut other = access_request(GATEWAY_LOCK, true, "payment-7");
    other.name = "Another guest".into();
    other.valid_until += Span::hours(1);
    let second = env.client.issue_access_code(&other).await.unwrap();
    assert!(!second.reused_existing);
    assert_ne!(second.code, first.code);
    assert_ne!(second.keyboard_pwd_id, first.keyboard_pwd_id);
}

#[tokio::test]
async fn injected_failures_and_slow_answers_are_retryable() {
    let env = ttlock_env_with(TtlockSimConfig::default(), |config| config.timeout_ms = 300).await;
    env.client.list_locks().await.unwrap();
    env.sim.set_faults(&FaultSettings {
        fail_next: Some(1),
        ..FaultSettings::default()
    });
    let error = env.client.list_locks().await.unwrap_err();
    assert!(matches!(error, TtlockError::Server { .. }), "{error:?}");
    assert!(error.is_retryable());
    env.client.list_locks().await.unwrap();

    env.sim.set_faults(&FaultSettings {
        latency_ms: Some(600),
        ..FaultSettings::default()
    });
    let slow = env.client.list_locks().await.unwrap_err();
    assert!(
        matches!(slow, TtlockError::Timeout { timeout_ms: 300 }),
        "{slow:?}"
    );
    assert!(slow.is_retryable());
}

#[tokio::test]
async fn control_endpoints_answer_over_http() {
    let env = ttlock_env().await;
    let issued = env
        .client
        .issue_access_code(&access_request(GATEWAY_LOCK, true, "payment-8"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let base = env.sim.base_url();
    let enter = |at: DateTime<Utc>| {
        http.post(
            base.join(&format!("_sim/locks/{GATEWAY_LOCK}/enter"))
                .unwrap(),
        )
        .json(&serde_json::json!({ "code": issued.code, "at": at }))
        .send()
    };
    let inside: Value = enter(issued.valid_from + Span::minutes(1))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(inside["opens"], Value::Bool(true));
    let outside: Value = enter(issued.valid_until + Span::minutes(1))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(outside["opens"], Value::Bool(false));

    let offline = http
        .post(
            base.join(&format!("_sim/locks/{GATEWAY_LOCK}/gateway"))
                .unwrap(),
        )
        .json(&serde_json::json!({ "online": false }))
        .send()
        .await
        .unwrap();
    assert!(offline.status().is_success());
    let error = env
        .client
        .delete_passcode(GATEWAY_LOCK, issued.keyboard_pwd_id, DeleteMode::ViaGateway)
        .await
        .unwrap_err();
    assert!(matches!(error, TtlockError::GatewayOffline { .. }));
    let stats: Value = http
        .get(base.join("_sim/stats").unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["password_grants"], 1);
}

// ----- Wire shapes (reference/ttlock.md) ------------------------------------------------

/// Every v3 call carries `clientId`, `accessToken` and `date` (ms, within 5 minutes).
fn assert_common_params(params: &std::collections::BTreeMap<String, String>) {
    assert!(!params["clientId"].is_empty());
    assert_eq!(params["accessToken"].len(), 32);
    let date: i64 = params["date"].parse().expect("date is an integer");
    assert!(
        (date - Utc::now().timestamp_millis()).abs() < 60_000,
        "date is in milliseconds"
    );
}

fn response(request: &RecordedRequest) -> &Value {
    assert_eq!(
        request.response_status,
        Some(200),
        "TTLock always answers 200"
    );
    request.response.as_ref().expect("a JSON answer")
}

#[tokio::test]
async fn wire_oauth_password_grant() {
    use md5::Digest;
    let env = ttlock_env().await;
    env.client.list_locks().await.unwrap();
    let request = last_request(&env, "/oauth2/token");
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        request.form.keys().collect::<Vec<_>>(),
        ["clientId", "clientSecret", "password", "username"]
    );
    // MD5 of the configured password, lower-case hex.
    let expected = hex::encode(md5::Md5::digest(b"latchkey-demo-password"));
    assert_eq!(request.form["password"], expected);
    let body = response(&request);
    string(body, "access_token");
    string(body, "refresh_token");
    int(body, "uid");
    int(body, "expires_in");
}

#[tokio::test]
async fn wire_oauth_refresh_grant() {
    let env = ttlock_env().await;
    env.client.list_locks().await.unwrap();
    env.sim.expire_tokens(false);
    env.client.list_locks().await.unwrap();
    let request = last_request(&env, "/oauth2/token");
    assert_eq!(
        request.form.keys().collect::<Vec<_>>(),
        ["clientId", "clientSecret", "grant_type", "refresh_token"]
    );
    assert_eq!(request.form["grant_type"], "refresh_token");
    let body = response(&request);
    string(body, "access_token");
    string(body, "refresh_token");
    int(body, "expires_in");
}

#[tokio::test]
async fn wire_lock_list() {
    let env = ttlock_env().await;
    env.client.list_locks().await.unwrap();
    let request = last_request(&env, "/v3/lock/list");
    assert_eq!(request.method, "GET");
    assert!(request.form.is_empty(), "reads use the query string");
    assert_common_params(&request.query);
    assert_eq!(request.query["pageNo"], "1");
    let page_size: i64 = request.query["pageSize"].parse().unwrap();
    assert!((1..=1000).contains(&page_size));
    let body = response(&request);
    for field in ["pageNo", "pageSize", "pages", "total"] {
        int(body, field);
    }
    let item = &body["list"][0];
    int(item, "lockId");
    int(item, "electricQuantity");
    assert!([0, 1].contains(&int(item, "hasGateway")));
    for field in ["lockName", "lockAlias", "lockMac", "featureValue"] {
        string(item, field);
    }
}

#[tokio::test]
async fn wire_random_passcode_get() {
    let env = ttlock_env().await;
    env.client
        .issue_access_code(&access_request(BLUETOOTH_LOCK, false, "wire"))
        .await
        .unwrap();
    let request = last_request(&env, "/v3/keyboardPwd/get");
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_common_params(&request.form);
    assert_eq!(request.form["lockId"], BLUETOOTH_LOCK.to_string());
    assert_eq!(request.form["keyboardPwdType"], "3");
    assert!(request.form.contains_key("keyboardPwdName"));
    for field in ["startDate", "endDate"] {
        let millis: i64 = request.form[field].parse().unwrap();
        assert_eq!(millis % 3_600_000, 0, "{field} is a whole hour in ms");
    }
    let body = response(&request);
    let code = string(body, "keyboardPwd");
    assert!(code.bytes().all(|b| b.is_ascii_digit()) && (6..=9).contains(&code.len()));
    int(body, "keyboardPwdId");
    assert!(body.get("errcode").is_none());
}

#[tokio::test]
async fn wire_custom_passcode_add() {
    let env = ttlock_env().await;
    env.client
        .issue_access_code(&access_request(GATEWAY_LOCK, true, "wire"))
        .await
        .unwrap();
    let request = last_request(&env, "/v3/keyboardPwd/add");
    assert_eq!(request.method, "POST");
    assert_common_params(&request.form);
    assert_eq!(request.form["addType"], "2", "written through the gateway");
    let code = &request.form["keyboardPwd"];
    assert!(code.bytes().all(|b| b.is_ascii_digit()) && (4..=9).contains(&code.len()));
    for field in ["lockId", "startDate", "endDate"] {
        request.form[field].parse::<i64>().unwrap();
    }
    assert!(request.form.contains_key("keyboardPwdName"));
    let body = response(&request);
    assert_eq!(keys(body), ["keyboardPwdId"]);
    int(body, "keyboardPwdId");
}

#[tokio::test]
async fn wire_passcode_delete() {
    let env = ttlock_env().await;
    let issued = env
        .client
        .issue_access_code(&access_request(GATEWAY_LOCK, true, "wire"))
        .await
        .unwrap();
    env.client
        .delete_passcode(GATEWAY_LOCK, issued.keyboard_pwd_id, DeleteMode::ViaGateway)
        .await
        .unwrap();
    let request = last_request(&env, "/v3/keyboardPwd/delete");
    assert_eq!(request.method, "POST");
    assert_common_params(&request.form);
    assert_eq!(
        request.form["keyboardPwdId"],
        issued.keyboard_pwd_id.to_string()
    );
    assert_eq!(request.form["lockId"], GATEWAY_LOCK.to_string());
    assert_eq!(request.form["deleteType"], "2");
    let body = response(&request);
    assert_eq!(int(body, "errcode"), 0);
    string(body, "errmsg");
}

#[tokio::test]
async fn wire_list_passcodes() {
    let env = ttlock_env().await;
    let issued = env
        .client
        .issue_access_code(&access_request(GATEWAY_LOCK, true, "wire"))
        .await
        .unwrap();
    let records = env
        .client
        .list_passcodes(GATEWAY_LOCK, Some(&issued.code))
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert!(records[0].is_custom);
    assert_eq!(records[0].valid_from, Some(issued.valid_from));
    let request = last_request(&env, "/v3/lock/listKeyboardPwd");
    assert_eq!(request.method, "GET");
    assert_common_params(&request.query);
    for field in ["lockId", "pageNo", "pageSize", "orderBy"] {
        request.query[field].parse::<i64>().unwrap();
    }
    assert!(request.query["pageSize"].parse::<i64>().unwrap() <= 200);
    assert_eq!(request.query["searchStr"], issued.code);
    let item = &response(&request)["list"][0];
    for field in [
        "keyboardPwdId",
        "lockId",
        "startDate",
        "endDate",
        "isCustom",
    ] {
        int(item, field);
    }
    string(item, "keyboardPwd");
    // The documentation's own example returns the type as a string; the client copes.
    string(item, "keyboardPwdType");
}

#[tokio::test]
async fn wire_passage_mode() {
    let env = ttlock_env().await;
    env.client.passage_mode(GATEWAY_LOCK).await.unwrap();
    let request = last_request(&env, "/v3/lock/getPassageModeConfiguration");
    assert_eq!(request.method, "GET");
    assert_common_params(&request.query);
    assert_eq!(request.query["lockId"], GATEWAY_LOCK.to_string());
    let body = response(&request);
    assert!([1, 2].contains(&int(body, "passageMode")));
    assert!([1, 2].contains(&int(body, "autoUnlock")));
    assert!(body["cyclicConfig"].is_array());
}

#[tokio::test]
async fn the_handle_hands_out_a_working_client_config() {
    let env = ttlock_env().await;
    let client = latchkey::integrations::ttlock::TtlockClient::new(
        env.sim.client_config(),
        latchkey::integrations::health::ModuleHealth::new("ttlock"),
    )
    .unwrap();
    assert_eq!(client.list_locks().await.unwrap().len(), 2);
}

#[tokio::test]
async fn the_simulator_accepts_legacy_spellings_and_split_parameters() {
    use md5::Digest;
    let env = ttlock_env().await;
    let config = TtlockSimConfig::default();
    let http = reqwest::Client::new();
    let base = env.sim.base_url();
    // Older clients: snake_case ids, grant_type and redirect_uri (ignored).
    let token: Value = http
        .post(base.join("oauth2/token").unwrap())
        .form(&[
            ("client_id", config.client_id.as_str()),
            ("client_secret", "latchkey-demo-secret"),
            ("grant_type", "password"),
            ("redirect_uri", "http://localhost"),
            ("username", config.username.as_str()),
            (
                "password",
                &hex::encode(md5::Md5::digest(b"latchkey-demo-password")),
            ),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access_token = string(&token, "access_token").to_owned();
    // hass-ttlock: common parameters in the query, the rest in the form body.
    let now = Utc::now().timestamp_millis().to_string();
    let mut url = base.join("v3/lock/getPassageModeConfiguration").unwrap();
    url.query_pairs_mut()
        .append_pair("clientId", &config.client_id)
        .append_pair("accessToken", &access_token)
        .append_pair("date", &now);
    let answer: Value = http
        .post(url)
        .form(&[("lockId", GATEWAY_LOCK.to_string())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(int(&answer, "passageMode"), 2, "{answer}");
}
