//! Device sessions end to end: Stripe (manual capture) → the device is reserved → the
//! reconciler switches the Shelly relay ON → the payment is captured → at the end the relay
//! goes OFF and the session completes; a relay that never comes ON means no charge; a
//! crash in the middle of an ON, or the death of the instance running the reconciler,
//! still ends with the relay ON for the paid time and OFF at its end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use latchkey::integrations::shelly::ShellyCloudConfig;
use latchkey::reconciler::Clock;
use latchkey::sim::shelly::{RelayLogEntry, RelaySource, ShellySimConfig, ShellySimHandle};
use latchkey::sim::stripe::{DeliveryMode, StripeSimConfig, StripeSimHandle};
use latchkey::sim::FaultSettings;
use latchkey::startup::BuildOptions;
use latchkey::store::journal::{Journal, JournalEvent};
use latchkey_aggregates::device::MANUAL_ON_AUTO_OFF_SECONDS;
use latchkey_aggregates::payment::PaymentStatus;
use latchkey_aggregates::session::{DeviceSession, SessionState, RELAY_AUTO_OFF_MARGIN_SECONDS};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use uuid::Uuid;

use crate::helpers::{
    eventually, spawn_app_with_settings, Backend, TestApp, TestDatabase, ADMIN_TOKEN,
};
use crate::on_both_backends;
use crate::sim_helpers::{DUAL, PLUG};
use crate::stripe_support::{API_KEY, SECRET};

/// The wall clock plus an offset the test moves forward; every move wakes the reconciler
/// (as a jump of the wall clock would not, but a sleeping reconciler must recompute).
pub(crate) struct TestClock {
    offset: Mutex<chrono::Duration>,
    jumps: watch::Sender<u64>,
}

impl Default for TestClock {
    fn default() -> Self {
        TestClock {
            offset: Mutex::new(chrono::Duration::zero()),
            jumps: watch::channel(0).0,
        }
    }
}

impl TestClock {
    fn advance(&self, by: chrono::Duration) {
        *self.offset.lock().unwrap() += by;
        self.jumps.send_modify(|jumps| *jumps += 1);
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().unwrap()
    }

    fn jumps(&self) -> Option<watch::Receiver<u64>> {
        Some(self.jumps.subscribe())
    }
}

/// The simulators and the clock, shared by every app instance of a test.
pub(crate) struct Sims {
    pub(crate) stripe: StripeSimHandle,
    pub(crate) shelly: ShellySimHandle,
    pub(crate) clock: Arc<TestClock>,
}

impl Sims {
    async fn spawn() -> Sims {
        let stripe = latchkey::sim::stripe::spawn(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            StripeSimConfig::new(API_KEY, vec![SECRET.to_string()]),
        )
        .unwrap();
        let shelly = latchkey::sim::shelly::spawn(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            ShellySimConfig::default(),
        )
        .unwrap();
        Sims {
            stripe,
            shelly,
            clock: Arc::new(TestClock::default()),
        }
    }

    /// Moves the app's clock and the Shelly simulator's together, so relay log times and
    /// session times are on one time line.
    pub(crate) fn advance(&self, by: chrono::Duration) {
        self.shelly.advance_clock(by.to_std().unwrap());
        self.clock.advance(by);
    }

    /// Moves both clocks so that it is `at` now.
    pub(crate) fn advance_to(&self, at: DateTime<Utc>) {
        self.advance(at - self.clock.now());
    }

    /// The relay's log: every switch with its instant on the shared time line.
    pub(crate) fn relay_log(&self) -> Vec<RelayLogEntry> {
        self.shelly.relay(PLUG, 0).unwrap().log
    }

    pub(crate) fn relay_is_on(&self) -> bool {
        self.shelly.relay(PLUG, 0).unwrap().output
    }

    /// Build options for an app on these simulators: the reconciler's safety-net poll is
    /// an hour, so everything prompt in these tests comes from wake-ups (appends, clock
    /// moves) and from sleeping until the next end time.
    fn options(&self) -> BuildOptions {
        let mut options = BuildOptions::default();
        options.workflows.clock = Some(self.clock.clone());
        options.workflows.session_grace_seconds = 60;
        options.workflows.reconciler.interval = Duration::from_secs(3600);
        options.workflows.reconciler.retry_base = Duration::from_millis(50);
        options.workflows.reconciler.sweep_interval = Duration::from_secs(3600);
        options.workflows.reconciler.takeover_interval = Duration::from_millis(200);
        options
    }

    /// An app on `database` pointed at the simulators, receiving Stripe's webhooks.
    async fn app(&self, database: TestDatabase, options: BuildOptions) -> TestApp {
        let app = app_on_sims(database, options, self.endpoints()).await;
        self.deliver_webhooks_to(&app.address);
        app
    }

    fn endpoints(&self) -> SimEndpoints {
        SimEndpoints {
            stripe_base: self.stripe.url(),
            shelly: self.shelly.cloud_config(),
        }
    }

    fn deliver_webhooks_to(&self, address: &str) {
        self.stripe
            .set_webhook_url(format!("{address}/api/stripe/webhook"));
    }
}

/// Where an app finds the simulators (owned, so an app can be built on another runtime).
struct SimEndpoints {
    stripe_base: String,
    shelly: ShellyCloudConfig,
}

async fn app_on_sims(
    database: TestDatabase,
    options: BuildOptions,
    endpoints: SimEndpoints,
) -> TestApp {
    spawn_app_with_settings(database, options, |settings| {
        settings.stripe.secret_key = Some(SecretString::from(API_KEY.to_string()));
        settings.stripe.api_base = Some(endpoints.stripe_base.parse().unwrap());
        settings.stripe.webhook_secrets = vec![SecretString::from(SECRET.to_string())];
        settings.shelly.server = Some(endpoints.shelly.server.clone());
        settings.shelly.auth_key = Some(endpoints.shelly.auth_key.clone());
    })
    .await
}

/// Shared with the dashboard's force-end tests.
pub(crate) struct World {
    pub(crate) app: TestApp,
    pub(crate) sims: Sims,
}

pub(crate) async fn world(backend: Backend) -> World {
    world_with(backend, |_| {}).await
}

pub(crate) async fn world_with(backend: Backend, adjust: impl FnOnce(&mut BuildOptions)) -> World {
    let sims = Sims::spawn().await;
    let mut options = sims.options();
    adjust(&mut options);
    let app = sims.app(TestDatabase::create(backend).await, options).await;
    register_washer(&app).await;
    World { app, sims }
}

async fn register_washer(app: &TestApp) {
    register_device_on(app, "washer", PLUG).await;
}

/// A device with one 30-minute plan on channel 0 of Shelly `shelly_device_id`.
async fn register_device_on(app: &TestApp, uid: &str, shelly_device_id: &str) {
    let device = json!({"uid": uid, "name": "Washer", "location": "Lyon", "time_zone": "Europe/Paris",
                        "shelly_device_id": shelly_device_id, "shelly_channel": 0,
                        "plans": [{"plan_id": "p30", "name": "30 minutes", "minutes": 30, "price": 300, "currency": "eur"}]});
    assert_eq!(
        app.post_json("/api/devices", Some(ADMIN_TOKEN), &device)
            .await
            .status(),
        201
    );
}

/// Starts a device checkout; returns the payment and its Checkout Session.
pub(crate) async fn checkout(app: &TestApp) -> (Uuid, String) {
    let response = app
        .post_json(
            "/api/checkout/device/washer",
            None,
            &json!({"plan_id": "p30", "email": "guest@example.com"}),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    let payment_id: Uuid = body["payment_id"].as_str().unwrap().parse().unwrap();
    let (payment, _) = app
        .state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap();
    (
        payment_id,
        payment.checkout_session_id().unwrap().to_string(),
    )
}

/// A guest pays (the card is authorized); returns the payment id.
async fn pay_on(app: &TestApp, sims: &Sims) -> Uuid {
    let (payment_id, checkout_session) = checkout(app).await;
    sims.stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    payment_id
}

pub(crate) async fn pay(world: &World) -> Uuid {
    pay_on(&world.app, &world.sims).await
}

pub(crate) async fn wait_for<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    // 20 s: generous because CI runs these beside headless browsers on two cores; in
    // isolation the waits end within a second or two.
    for _ in 0..800 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

pub(crate) async fn session(app: &TestApp, session_id: Uuid) -> DeviceSession {
    app.state
        .buses
        .sessions
        .load(&session_id.to_string())
        .await
        .unwrap()
        .0
}

pub(crate) async fn session_state(world: &World, session_id: Uuid) -> Option<SessionState> {
    state_on(&world.app, session_id).await
}

pub(crate) async fn state_on(app: &TestApp, session_id: Uuid) -> Option<SessionState> {
    session(app, session_id).await.state()
}

pub(crate) async fn payment_status(world: &World, payment_id: Uuid) -> PaymentStatus {
    status_on(&world.app, payment_id).await
}

pub(crate) async fn status_on(app: &TestApp, payment_id: Uuid) -> PaymentStatus {
    app.state
        .buses
        .payments
        .load(&payment_id.to_string())
        .await
        .unwrap()
        .0
        .status()
}

pub(crate) async fn device_is_free(world: &World) -> bool {
    free_on(&world.app).await
}

async fn free_on(app: &TestApp) -> bool {
    app.state
        .buses
        .devices
        .load("washer")
        .await
        .unwrap()
        .0
        .holder_session()
        .is_none()
}

/// The events of one aggregate, by type.
async fn events_of(app: &TestApp, aggregate_type: &str, id: Uuid) -> Vec<JournalEvent> {
    Journal::new(app.database.clone())
        .aggregate_events(aggregate_type, &id.to_string(), None)
        .await
        .unwrap()
}

pub(crate) async fn count_events(
    app: &TestApp,
    aggregate_type: &str,
    id: Uuid,
    event_type: &str,
) -> usize {
    events_of(app, aggregate_type, id)
        .await
        .iter()
        .filter(|event| event.event_type == event_type)
        .count()
}

/// How far `later` is after `earlier`, in milliseconds (negative if before).
fn millis_after(later: DateTime<Utc>, earlier: DateTime<Utc>) -> i64 {
    (later - earlier).num_milliseconds()
}

/// The relay switched OFF at the session's end, within a second (clocks tick in whole
/// milliseconds on the simulator, hence the small tolerance before), and stayed OFF.
/// What "promptly" means in these tests: far below the hour-long poll they configure, far
/// above a loaded CI machine's scheduling delays. Latency itself is benchmarked, not tested.
const PROMPT_MS: i64 = 10_000;

fn assert_off_at_the_end(log: &[RelayLogEntry], ends_at: DateTime<Utc>) -> i64 {
    let off = log
        .iter()
        .find(|entry| !entry.on && entry.at >= ends_at - chrono::Duration::milliseconds(5))
        .unwrap_or_else(|| panic!("an OFF at the end in {log:?}"));
    assert_eq!(off.source, RelaySource::Command, "{log:?}");
    let late = millis_after(off.at, ends_at);
    assert!(
        (-5..PROMPT_MS).contains(&late),
        "OFF {late} ms after the end: {log:?}"
    );
    assert!(
        log.iter().all(|entry| entry.at <= off.at || !entry.on),
        "nothing switched the relay ON again after its end: {log:?}"
    );
    late
}

/// The relay stayed ON from the session's start to its end: no OFF in between.
fn assert_on_throughout(log: &[RelayLogEntry], started_at: DateTime<Utc>, ends_at: DateTime<Utc>) {
    let on_before_start = log
        .iter()
        .rev()
        .find(|entry| entry.at <= started_at + chrono::Duration::seconds(1))
        .is_some_and(|entry| entry.on);
    assert!(on_before_start, "ON when the session started: {log:?}");
    assert!(
        log.iter()
            .filter(|entry| entry.at > started_at
                && entry.at < ends_at - chrono::Duration::milliseconds(5))
            .all(|entry| entry.on),
        "no OFF during the paid time: {log:?}"
    );
}

async fn a_paid_session_switches_on_is_captured_and_switches_off_at_its_end(backend: Backend) {
    let world = world(backend).await;
    let payment_id = pay(&world).await;
    // The session id is the payment id: one session per payment.
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Active)
        })
        .await,
        "the session starts"
    );
    assert!(world.sims.relay_is_on(), "the relay is ON");
    assert!(
        wait_for(|| async { payment_status(&world, payment_id).await == PaymentStatus::Succeeded })
            .await,
        "captured once ON"
    );
    let active = session(&world.app, payment_id).await;
    let (started_at, ends_at) = (active.started_at().unwrap(), active.ends_at().unwrap());
    assert_eq!(ends_at - started_at, chrono::Duration::minutes(30));

    // Most of the paid time goes by; the reconciler, asleep until the end, switches OFF.
    world
        .sims
        .advance_to(ends_at - chrono::Duration::milliseconds(1500));
    assert!(world.sims.relay_is_on(), "still ON shortly before the end");
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Completed)
        })
        .await,
        "the session completes"
    );
    assert!(!world.sims.relay_is_on(), "the relay is OFF at the end");
    let log = world.sims.relay_log();
    let switches: Vec<bool> = log.iter().map(|entry| entry.on).collect();
    assert_eq!(switches, vec![true, false], "{log:?}");
    let on_delay = millis_after(log[0].at, started_at);
    assert!(
        (-5..1_000).contains(&on_delay),
        "ON at the start: {on_delay} ms"
    );
    assert_on_throughout(&log, started_at, ends_at);
    assert_off_at_the_end(&log, ends_at);
    assert!(
        wait_for(|| async { device_is_free(&world).await }).await,
        "the device is free again"
    );
    world.app.stop().await;
}

/// ON promptly after the payment fact and OFF promptly at the end (never before it), with
/// the reconciler's periodic pass an hour apart: only the wake-up on append and the sleep
/// until the next end time can explain it. The latencies are printed; the one-second
/// goals belong to the benchmarks (issue 16's `paid_to_relay_on` / `end_to_relay_off`).
async fn the_relay_follows_the_payment_and_the_end_promptly(backend: Backend) {
    let world = world(backend).await;
    let payment_id = pay(&world).await;
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Active)
        })
        .await
    );
    let authorized = events_of(&world.app, "Payment", payment_id)
        .await
        .into_iter()
        .find(|event| event.event_type == "PaymentAuthorized")
        .expect("the payment fact");
    let log = world.sims.relay_log();
    let on_latency = millis_after(log[0].at, authorized.recorded_at);
    assert!(log[0].on);
    // Never before the fact; promptly after it (the reconciler's poll is an hour here, so
    // only the append's wake-up can switch it ON). How promptly is for a benchmark to
    // measure (`paid_to_relay_on`): a one-second bound here failed under load (1,459 ms).
    assert!(
        (0..PROMPT_MS).contains(&on_latency),
        "ON {on_latency} ms after the payment fact"
    );

    let ends_at = session(&world.app, payment_id).await.ends_at().unwrap();
    world
        .sims
        .advance_to(ends_at - chrono::Duration::seconds(2));
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Completed)
        })
        .await
    );
    let off_latency = assert_off_at_the_end(&world.sims.relay_log(), ends_at);
    println!(
        "relay latency ({backend:?}): ON {on_latency} ms after the payment fact, OFF {off_latency} ms after the end"
    );
    world.app.stop().await;
}

async fn a_relay_that_never_comes_on_costs_the_guest_nothing(backend: Backend) {
    let world = world(backend).await;
    world.sims.shelly.set_online(PLUG, false).unwrap();
    let payment_id = pay(&world).await;
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Opened)
        })
        .await
    );
    assert_eq!(
        payment_status(&world, payment_id).await,
        PaymentStatus::Authorized
    );
    world.sims.advance(chrono::Duration::minutes(2));
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::Cancelled)
        })
        .await,
        "cancelled after the grace period"
    );
    assert!(
        wait_for(|| async { payment_status(&world, payment_id).await == PaymentStatus::Cancelled })
            .await,
        "the authorization is released, never captured"
    );
    assert_eq!(
        count_events(&world.app, "Payment", payment_id, "PaymentCaptureRequested").await,
        0,
        "never captured"
    );
    assert!(
        wait_for(|| async { device_is_free(&world).await }).await,
        "the device is free again"
    );
    assert!(!world.sims.relay_is_on());
    world.app.stop().await;
}

/// An operator force-ends a running session while the plug does not answer: the session
/// ends at once, and once the plug is back the reconciler sends OFF again by itself
/// (simulation seed 1541: the relay used to stay ON until the sweep, minutes later; here
/// the sweep runs hourly, so only the retry can switch it OFF).
async fn a_force_end_whose_off_failed_is_retried_until_the_relay_is_off(backend: Backend) {
    let world = world(backend).await;
    let payment_id = pay(&world).await;
    force_end_while_the_plug_is_offline(&world.app, &world.sims, payment_id).await;

    world.sims.shelly.set_online(PLUG, true).unwrap();
    assert!(
        wait_for(|| async { !world.sims.relay_is_on() }).await,
        "the reconciler sends OFF again once the plug answers"
    );
    assert!(
        wait_for(|| async { !session(&world.app, payment_id).await.off_unconfirmed() }).await,
        "the OFF is confirmed in the journal"
    );
    world.app.stop().await;
}

/// Waits for the session to start, takes the plug offline and force-ends the session: the
/// OFF cannot reach the plug, which stays ON.
async fn force_end_while_the_plug_is_offline(app: &TestApp, sims: &Sims, payment_id: Uuid) {
    assert!(
        wait_for(|| async { state_on(app, payment_id).await == Some(SessionState::Active) }).await,
        "the session starts"
    );
    sims.shelly.set_online(PLUG, false).unwrap();
    let response = app
        .post_json(
            &format!("/api/sessions/{payment_id}/force-end"),
            Some(ADMIN_TOKEN),
            &json!({"reason": "the guest reported smoke"}),
        )
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert_eq!(
        state_on(app, payment_id).await,
        Some(SessionState::ForceEnded)
    );
    assert!(
        session(app, payment_id).await.off_unconfirmed(),
        "the OFF did not reach the plug"
    );
    assert!(sims.relay_is_on(), "the offline plug is still ON");
}

/// The same, with a restart in between: the OFF that failed before the restart is sent by
/// the restarted server (its reconciler picks up ended sessions whose OFF is unconfirmed),
/// not left to the hourly sweep.
async fn a_restart_after_a_failed_force_end_off_still_switches_off(backend: Backend) {
    let sims = Sims::spawn().await;
    let database = TestDatabase::create(backend).await;
    let first = sims.app(database.another_handle(), sims.options()).await;
    register_washer(&first).await;
    let payment_id = pay_on(&first, &sims).await;
    force_end_while_the_plug_is_offline(&first, &sims, payment_id).await;
    first.stop().await;
    sims.shelly.set_online(PLUG, true).unwrap();
    assert!(sims.relay_is_on(), "nobody has switched the plug off yet");

    let restarted = sims.app(database, sims.options()).await;
    assert!(
        wait_for(|| async { !sims.relay_is_on() }).await,
        "the restarted server sends the OFF again"
    );
    assert!(
        wait_for(|| async { !session(&restarted, payment_id).await.off_unconfirmed() }).await,
        "the OFF is confirmed in the journal"
    );
    restarted.stop().await;
}

on_both_backends!(
    a_paid_session_switches_on_is_captured_and_switches_off_at_its_end,
    a_force_end_whose_off_failed_is_retried_until_the_relay_is_off,
    a_restart_after_a_failed_force_end_off_still_switches_off,
    the_relay_follows_the_payment_and_the_end_promptly,
    a_relay_that_never_comes_on_costs_the_guest_nothing,
);

async fn a_second_guest_waits_for_the_first_session_to_end(backend: Backend) {
    let world = world(backend).await;
    let first = pay(&world).await;
    assert!(
        wait_for(|| async { session_state(&world, first).await == Some(SessionState::Active) })
            .await
    );
    let second = pay(&world).await;
    assert!(
        wait_for(|| async { session_state(&world, second).await == Some(SessionState::Queued) })
            .await,
        "queued behind the first"
    );
    let first_ends_at = session(&world.app, first).await.ends_at().unwrap();
    world
        .sims
        .advance_to(first_ends_at - chrono::Duration::seconds(1));
    assert!(
        wait_for(|| async { session_state(&world, first).await == Some(SessionState::Completed) })
            .await
    );
    assert!(
        wait_for(|| async { session_state(&world, second).await == Some(SessionState::Active) })
            .await,
        "the queued session starts"
    );
    assert!(world.sims.relay_is_on());
    let (device, _) = world.app.state.buses.devices.load("washer").await.unwrap();
    assert_eq!(
        device.holder_session(),
        Some(second),
        "never two at once: the second now holds the relay"
    );
    let second_started = session(&world.app, second).await.started_at().unwrap();
    assert!(
        second_started >= first_ends_at,
        "the second starts after the first ends"
    );
    let switches: Vec<bool> = world
        .sims
        .relay_log()
        .iter()
        .map(|entry| entry.on)
        .collect();
    assert_eq!(switches, vec![true, false, true]);
    world.app.stop().await;
}

on_both_backends!(a_second_guest_waits_for_the_first_session_to_end);

/// Found by the simulation (`scripts/simulate --seed 42`): the capture's
/// `payment_intent.succeeded` arriving after the session had ended reserved the device again
/// for that finished session, so every later guest queued behind it for good.
async fn a_capture_confirmed_after_the_session_ended_does_not_hold_the_device(backend: Backend) {
    let world = world(backend).await;
    let stripe = &world.sims.stripe;
    stripe.set_delivery(DeliveryMode::Off);
    let first = pay(&world).await;
    for event in stripe.events() {
        stripe.redeliver(event["id"].as_str().unwrap()).await;
    }
    assert!(
        wait_for(|| async { session_state(&world, first).await == Some(SessionState::Active) })
            .await,
        "the first session starts"
    );
    assert!(
        wait_for(|| async {
            count_events(&world.app, "Payment", first, "PaymentCaptureRequested").await == 1
        })
        .await,
        "the capture is requested; its confirmation is held back"
    );
    let ends_at = session(&world.app, first).await.ends_at().unwrap();
    world.sims.advance_to(ends_at);
    assert!(
        wait_for(|| async {
            session_state(&world, first).await == Some(SessionState::Completed)
                && device_is_free(&world).await
        })
        .await,
        "the first session completes and frees the device"
    );
    let late: Vec<String> = stripe
        .events()
        .iter()
        .filter(|event| event["type"] == "payment_intent.succeeded")
        .map(|event| event["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(late.len(), 1, "the capture's confirmation exists at Stripe");
    stripe.redeliver(&late[0]).await;
    assert!(
        wait_for(|| async { payment_status(&world, first).await == PaymentStatus::Succeeded })
            .await,
        "the late confirmation is recorded"
    );
    stripe.set_delivery(DeliveryMode::Normal);
    let second = pay(&world).await;
    assert!(
        wait_for(|| async { session_state(&world, second).await == Some(SessionState::Active) })
            .await,
        "the next guest is served at once, not queued behind a finished session: {:?}",
        session_state(&world, second).await
    );
    let (device, _) = world.app.state.buses.devices.load("washer").await.unwrap();
    assert_eq!(device.holder_session(), Some(second));
    world.app.stop().await;
}

on_both_backends!(a_capture_confirmed_after_the_session_ended_does_not_hold_the_device);

async fn the_sweep_turns_off_a_relay_switched_on_behind_our_back(backend: Backend) {
    let world = world_with(backend, |options| {
        options.workflows.reconciler.sweep_interval = Duration::from_millis(200);
    })
    .await;
    world.sims.shelly.switch_external(PLUG, 0, true).unwrap();
    assert!(world.sims.relay_is_on());
    assert!(
        wait_for(|| async { !world.sims.relay_is_on() }).await,
        "switched OFF by the sweep"
    );
    let found = wait_for(|| async {
        let response = world
            .app
            .client
            .get(format!(
                "{}/api/audit?action=reconciliation",
                world.app.address
            ))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
    })
    .await;
    assert!(
        found,
        "the correction is in the audit log as reconciliation"
    );
    world.app.stop().await;
}

on_both_backends!(the_sweep_turns_off_a_relay_switched_on_behind_our_back);

/// A manual ON stands while its own 4-hour timer runs; after that the relay is the sweep's
/// again (before, one manual ON exempted the relay from the sweep for good).
async fn a_manual_on_is_left_alone_until_its_timer_ran_out_then_corrected(backend: Backend) {
    let world = world_with(backend, |options| {
        options.workflows.reconciler.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let response = world
        .app
        .post_json(
            "/api/devices/washer/relay",
            Some(ADMIN_TOKEN),
            &json!({"on": true, "reason": "cleaning the drum"}),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(world.sims.relay_is_on());
    let timer_armed = world.sims.shelly.relay(PLUG, 0).unwrap();
    assert_eq!(
        timer_armed.timer_duration_ms,
        Some(MANUAL_ON_AUTO_OFF_SECONDS as i64 * 1000),
        "the manual ON carries its own device timer: {timer_armed:?}"
    );
    // Whole sweeps pass (a second device switched ON behind our back is corrected twice,
    // so the sweep between the two corrections looked at every device): the operator's
    // ON stands.
    register_device_on(&world.app, "dryer", DUAL).await;
    for correction in 1..=2 {
        world.sims.shelly.switch_external(DUAL, 0, true).unwrap();
        assert!(
            wait_for(|| async { !world.sims.shelly.relay(DUAL, 0).unwrap().output }).await,
            "correction {correction} of the dryer"
        );
    }
    assert!(
        world.sims.relay_is_on(),
        "a standing manual ON is not corrected"
    );

    // The timer has run out; someone switches the relay ON again by hand at the device.
    world.sims.advance(chrono::Duration::seconds(
        MANUAL_ON_AUTO_OFF_SECONDS as i64 + 60,
    ));
    world.sims.shelly.switch_external(PLUG, 0, true).unwrap();
    assert!(
        wait_for(|| async { !world.sims.relay_is_on() }).await,
        "after the manual ON's timer the sweep switches a relay found ON back OFF"
    );
    world.app.stop().await;
}

on_both_backends!(a_manual_on_is_left_alone_until_its_timer_ran_out_then_corrected);

/// A LAN device gets its own auto-off set to its longest plan plus the relay margin, so
/// an ON from any source (a button, a lost OFF) ends by itself.
async fn a_lan_device_gets_its_auto_off_set_to_its_longest_plan(backend: Backend) {
    let world = world_with(backend, |options| {
        options.workflows.reconciler.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let base_url = world.sims.shelly.local_base_url(DUAL);
    let device = json!({"uid": "dryer", "name": "Dryer", "location": "Lyon", "time_zone": "Europe/Paris",
                        "shelly_device_id": base_url.as_str().trim_end_matches('/'), "shelly_channel": 1,
                        "plans": [{"plan_id": "p30", "name": "30 minutes", "minutes": 30, "price": 300, "currency": "eur"},
                                  {"plan_id": "p90", "name": "90 minutes", "minutes": 90, "price": 700, "currency": "eur"}]});
    let response = world
        .app
        .post_json("/api/devices", Some(ADMIN_TOKEN), &device)
        .await;
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    let expected = 90 * 60 + RELAY_AUTO_OFF_MARGIN_SECONDS;
    assert!(
        wait_for(|| async {
            world.sims.shelly.relay(DUAL, 1).unwrap().auto_off_delay_s == Some(expected)
        })
        .await,
        "the dryer's auto-off is its longest plan plus the margin: {:?}",
        world.sims.shelly.relay(DUAL, 1).unwrap()
    );
    assert_eq!(
        world.sims.shelly.relay(DUAL, 0).unwrap().auto_off_delay_s,
        None,
        "only the device's own channel is configured"
    );
    world.app.stop().await;
}

on_both_backends!(a_lan_device_gets_its_auto_off_set_to_its_longest_plan);

async fn a_partial_refund_keeps_the_device_running_and_a_full_one_stops_it(backend: Backend) {
    let world = world(backend).await;
    let payment_id = pay(&world).await;
    assert!(
        wait_for(|| async { payment_status(&world, payment_id).await == PaymentStatus::Succeeded })
            .await,
        "running and captured"
    );
    let path = format!("/api/payments/{payment_id}/refund");
    let partial = world
        .app
        .post_json(
            &path,
            Some(ADMIN_TOKEN),
            &json!({"amount": 100, "reason": "slow spin"}),
        )
        .await;
    assert_eq!(partial.status(), 202);
    assert!(
        wait_for(|| async {
            payment_status(&world, payment_id).await == PaymentStatus::PartiallyRefunded
        })
        .await,
        "the partial refund is recorded"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        session_state(&world, payment_id).await,
        Some(SessionState::Active),
        "a partial refund keeps access"
    );
    assert!(world.sims.relay_is_on());

    let full = world
        .app
        .post_json(
            &path,
            Some(ADMIN_TOKEN),
            &json!({"reason": "broken machine"}),
        )
        .await;
    assert_eq!(full.status(), 202);
    // The refund becomes a fact when Stripe's webhook is processed; under CI's load a
    // delivery can fail once and wait for the inbox's retry (2 s, then 4 s, …), so the
    // fact gets its own, longer wait before the session's reaction is timed.
    let mut refunded = false;
    for _ in 0..3 {
        refunded = wait_for(|| async {
            payment_status(&world, payment_id).await == PaymentStatus::Refunded
        })
        .await;
        if refunded {
            break;
        }
    }
    assert!(
        refunded,
        "the full refund is recorded; the payment is {:?}",
        payment_status(&world, payment_id).await
    );
    assert!(
        wait_for(|| async {
            session_state(&world, payment_id).await == Some(SessionState::ForceEnded)
        })
        .await,
        "a full refund ends the session; it is {:?}",
        session_state(&world, payment_id).await
    );
    assert!(!world.sims.relay_is_on(), "and switches the relay OFF");
    let ended = session(&world.app, payment_id).await;
    assert_eq!(ended.end_reason(), Some("the payment was refunded in full"));
    assert!(
        wait_for(|| async { device_is_free(&world).await }).await,
        "the device is free again"
    );
    world.app.stop().await;
}

mod a_partial_refund_keeps_the_device_running_and_a_full_one_stops_it {
    use crate::helpers::Backend;

    // Once intermittent (about one run in ten): Stripe was called inside the command, the
    // re-run after a conflict with the webhook counted the partial refund twice, and "the
    // rest" asked for too little. Refunds are now counted by Stripe refund id (issue 13).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_partial_refund_keeps_the_device_running_and_a_full_one_stops_it(Backend::Sqlite)
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_partial_refund_keeps_the_device_running_and_a_full_one_stops_it(Backend::Postgres)
            .await
    }
}

/// Kills the server (drops its whole runtime) while the relay has applied ON but its
/// answer has not come back, then starts a new server on the same database: it reads the
/// relay back, converges, and the guest gets one session, ON for the paid time and OFF at
/// its end.
async fn a_crash_between_on_requested_and_its_answer_converges_after_a_restart(backend: Backend) {
    let sims = Sims::spawn().await;
    let database = TestDatabase::create(backend).await;
    // The next Shelly command is applied but never answered: the ON lands in the window.
    sims.shelly.set_faults(&FaultSettings {
        drop_next: Some(1),
        ..FaultSettings::default()
    });
    let doomed = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (started, checkout_ready) = tokio::sync::oneshot::channel();
    let (first_database, options, endpoints) =
        (database.another_handle(), sims.options(), sims.endpoints());
    doomed.spawn(async move {
        let app = app_on_sims(first_database, options, endpoints).await;
        register_washer(&app).await;
        let paid = checkout(&app).await;
        let _ = started.send((app.address.clone(), paid));
        // Holds the app until its runtime is dropped.
        std::future::pending::<()>().await;
        drop(app);
    });
    let (address, (payment_id, checkout_session)) = checkout_ready.await.unwrap();
    sims.deliver_webhooks_to(&address);
    sims.stripe
        .pay(&checkout_session, "4242424242424242")
        .unwrap();
    // The drop is for the ON. A status read the reconciler makes when it takes its lease
    // (relays are read back first) can come before it under load and take the drop; the
    // drop is then armed again, as long as no ON has gone out.
    let is_on_command = |request: &latchkey::sim::RecordedRequest| {
        request.path.ends_with("set/switch")
            && request.json.as_ref().is_some_and(|body| body["on"] == true)
    };
    assert!(
        eventually(400, Duration::from_millis(25), || async {
            let requests = sims.shelly.requests();
            if requests.iter().any(|r| r.dropped && is_on_command(r)) {
                return true;
            }
            if requests.iter().any(|r| r.dropped) && !requests.iter().any(is_on_command) {
                sims.shelly.set_faults(&FaultSettings {
                    drop_next: Some(1),
                    ..FaultSettings::default()
                });
            }
            false
        })
        .await,
        "the reconciler sent ON and its answer was dropped: {:?}",
        sims.shelly
            .requests()
            .iter()
            .map(|r| (r.path.clone(), r.dropped))
            .collect::<Vec<_>>()
    );
    assert!(sims.relay_is_on(), "the relay applied the ON");
    // Kill: every task of the first server is dropped wherever it stands.
    tokio::task::spawn_blocking(move || doomed.shutdown_timeout(Duration::from_secs(10)))
        .await
        .unwrap();

    let journal = Journal::new(database.connect().await);
    let before: Vec<String> = journal
        .aggregate_events("DeviceSession", &payment_id.to_string(), None)
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.event_type)
        .collect();
    assert_eq!(
        before,
        vec!["SessionOpened"],
        "the crash came before the ON's answer was recorded"
    );

    let app = sims.app(database, sims.options()).await;
    assert!(
        wait_for(|| async { state_on(&app, payment_id).await == Some(SessionState::Active) }).await,
        "the restarted server starts the session"
    );
    assert!(
        count_events(&app, "DeviceSession", payment_id, "RelayStateObserved").await >= 1,
        "the relay was read back after the restart"
    );
    assert_eq!(
        count_events(&app, "DeviceSession", payment_id, "SessionOpened").await,
        1
    );
    let sessions: Value = app
        .client
        .get(format!("{}/api/sessions?payment={payment_id}", app.address))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        sessions["items"].as_array().map(Vec::len),
        Some(1),
        "one session for the payment: {sessions}"
    );
    assert!(
        wait_for(|| async { status_on(&app, payment_id).await == PaymentStatus::Succeeded }).await,
        "captured once ON"
    );
    // Stripe's `payment_intent.succeeded` can make the payment succeeded before the capture
    // job records Stripe's answer: wait for that record, then check there is only one.
    assert!(
        wait_for(|| async {
            count_events(&app, "Payment", payment_id, "PaymentCaptureRequested").await >= 1
        })
        .await,
        "the capture's answer is recorded"
    );
    assert_eq!(
        count_events(&app, "Payment", payment_id, "PaymentCaptureRequested").await,
        1
    );

    let active = session(&app, payment_id).await;
    let (started_at, ends_at) = (active.started_at().unwrap(), active.ends_at().unwrap());
    sims.advance_to(ends_at - chrono::Duration::milliseconds(1500));
    assert!(
        wait_for(|| async { state_on(&app, payment_id).await == Some(SessionState::Completed) })
            .await,
        "the session completes"
    );
    assert!(!sims.relay_is_on(), "no relay left ON past the end");
    let log = sims.relay_log();
    assert_on_throughout(&log, started_at, ends_at);
    assert_off_at_the_end(&log, ends_at);
    assert!(wait_for(|| async { free_on(&app).await }).await);
    app.stop().await;
}

on_both_backends!(a_crash_between_on_requested_and_its_answer_converges_after_a_restart);

/// The application name of the connection holding the reconciler's advisory lock in this
/// test's database, if any instance holds it.
async fn reconciler_holders(database: &latchkey::store::Database) -> Vec<String> {
    let latchkey::store::Database::Postgres(pool) = database else {
        panic!("PostgreSQL only");
    };
    let key = latchkey::store::subscription::singleton_key("reconciler") as u64;
    let sql = "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
               WHERE l.locktype = 'advisory' AND l.granted \
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                 AND l.classid::bigint = $1 AND l.objid::bigint = $2";
    sqlx::query_scalar(sql)
        .bind((key >> 32) as i64)
        .bind((key & 0xffff_ffff) as i64)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Two instances on one PostgreSQL database: exactly one runs the reconciler; when it
/// stops in the middle of a session, the other takes over within seconds and switches the
/// relay OFF at the session's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_instance_reconciles_and_another_takes_over_on_time() {
    let sims = Sims::spawn().await;
    let database = TestDatabase::create(Backend::Postgres).await;
    let observer = database.connect().await;
    let first = sims
        .app(
            database.with_application_name("instance_one"),
            sims.options(),
        )
        .await;
    register_washer(&first).await;
    assert!(
        eventually(100, Duration::from_millis(50), || async {
            reconciler_holders(&observer).await == ["instance_one"]
        })
        .await,
        "the first instance runs the reconciler"
    );
    let second = sims
        .app(
            database.with_application_name("instance_two"),
            sims.options(),
        )
        .await;
    let payment_id = pay_on(&second, &sims).await;
    assert!(
        wait_for(|| async { state_on(&second, payment_id).await == Some(SessionState::Active) })
            .await
    );
    assert_eq!(
        reconciler_holders(&observer).await,
        ["instance_one"],
        "exactly one instance runs it"
    );

    let ends_at = session(&second, payment_id).await.ends_at().unwrap();
    sims.advance_to(ends_at - chrono::Duration::seconds(3));
    first.stop().await;
    let stopped_at = Utc::now();
    assert!(
        eventually(100, Duration::from_millis(50), || async {
            reconciler_holders(&observer).await == ["instance_two"]
        })
        .await,
        "the second instance takes over"
    );
    let takeover_ms = millis_after(Utc::now(), stopped_at);
    assert!(sims.relay_is_on(), "the session keeps running meanwhile");
    assert!(
        wait_for(|| async { state_on(&second, payment_id).await == Some(SessionState::Completed) })
            .await,
        "the second instance finishes the session"
    );
    let off_latency = assert_off_at_the_end(&sims.relay_log(), ends_at);
    println!("reconciler takeover within {takeover_ms} ms; OFF {off_latency} ms after the end");
    assert!(wait_for(|| async { free_on(&second).await }).await);
    second.stop().await;
}

/// The reconciler's row in `singleton_leases`: its epoch and the backend holding its lock.
async fn reconciler_lease(database: &latchkey::store::Database) -> (i64, Option<i32>) {
    let latchkey::store::Database::Postgres(pool) = database else {
        panic!("PostgreSQL only");
    };
    sqlx::query_as("SELECT epoch, holder_pid FROM singleton_leases WHERE name = 'reconciler'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The epoch of a singleton's lease, on either backend.
async fn lease_epoch(database: &latchkey::store::Database, name: &str) -> Option<i64> {
    let sql = "SELECT epoch FROM singleton_leases WHERE name = $1";
    latchkey::on_pool!(database, pool => sqlx::query_scalar(sql).bind(name).fetch_optional(pool).await)
        .unwrap()
}

/// The epoch a journal event's command was stamped with by a singleton, if any.
fn stamped_epoch(event: &JournalEvent) -> Option<(String, i64)> {
    let singleton = event.metadata.get("singleton")?.as_str()?.to_string();
    let epoch = event
        .metadata
        .get("singleton_epoch")?
        .as_str()?
        .parse()
        .ok()?;
    Some((singleton, epoch))
}

/// Fencing (issue 20): the connection holding the reconciler's lock is cut under the
/// leader (`pg_terminate_backend`, as a failover or an idle timeout would). The old leader
/// notices and stops within 2 s, the other instance takes over with the next epoch and
/// finishes the session, and a command stamped with the old epoch — a relay OFF that would
/// cut the guest short — is refused before it reaches Shelly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_leader_whose_lock_is_cut_stops_and_its_old_epoch_is_refused() {
    use latchkey::store::lease::{Fence, FenceError};
    use latchkey_aggregates::session::SessionCommand;
    use latchkey_aggregates::Actor;

    let sims = Sims::spawn().await;
    let database = TestDatabase::create(Backend::Postgres).await;
    let observer = database.connect().await;
    let first = sims
        .app(
            database.with_application_name("instance_one"),
            sims.options(),
        )
        .await;
    register_washer(&first).await;
    assert!(
        eventually(100, Duration::from_millis(50), || async {
            reconciler_holders(&observer).await == ["instance_one"]
        })
        .await,
        "the first instance runs the reconciler"
    );
    let second = sims
        .app(
            database.with_application_name("instance_two"),
            sims.options(),
        )
        .await;
    let payment_id = pay_on(&second, &sims).await;
    assert!(
        wait_for(|| async { state_on(&second, payment_id).await == Some(SessionState::Active) })
            .await
    );
    let (old_epoch, holder_pid) = reconciler_lease(&observer).await;
    let on_events = events_of(&second, "DeviceSession", payment_id).await;
    let switched_on = on_events
        .iter()
        .find(|event| event.event_type == "RelayOnSucceeded")
        .expect("the relay came ON");
    assert_eq!(
        stamped_epoch(switched_on),
        Some(("reconciler".to_string(), old_epoch)),
        "the leader's commands carry its epoch"
    );

    let latchkey::store::Database::Postgres(pool) = &observer else {
        unreachable!()
    };
    let cut: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(holder_pid.expect("the lock connection's backend"))
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(cut);
    let cut_at = std::time::Instant::now();
    let labels = [("singleton", "reconciler")];
    assert!(
        eventually(40, Duration::from_millis(50), || async {
            first
                .state
                .metrics
                .value("latchkey_singleton_held", &labels)
                == Some(0.0)
                && first
                    .state
                    .metrics
                    .value("latchkey_singleton_lost_total", &labels)
                    == Some(1.0)
        })
        .await,
        "the old leader notices the lost lock and stops within 2 s"
    );
    let stopped_ms = cut_at.elapsed().as_millis();
    assert!(
        eventually(100, Duration::from_millis(50), || async {
            reconciler_holders(&observer).await == ["instance_two"]
                && reconciler_lease(&observer).await.0 == old_epoch + 1
        })
        .await,
        "the second instance takes over with the next epoch"
    );
    let takeover_ms = cut_at.elapsed().as_millis();
    assert_eq!(
        first
            .state
            .metrics
            .value("latchkey_singleton_held", &labels),
        Some(0.0),
        "the old leader does not run beside the new one"
    );

    // The relay's log records switches only (the new leader's read-back is not one).
    let switches_before = sims.relay_log().len();
    let stale = Fence::new(&second.database, "reconciler", old_epoch);
    let refused = stale
        .scope(second.state.buses.sessions.execute(
            &payment_id.to_string(),
            SessionCommand::SwitchRelayOff {
                actor: Actor::System,
                at: sims.clock.now(),
            },
            latchkey::cqrs::CommandMetadata::new("system", "reconciler"),
        ))
        .await
        .expect_err("a command stamped with the old epoch is refused");
    let cqrs_es::AggregateError::UnexpectedError(error) = refused else {
        panic!("a fence error, not {refused:?}");
    };
    assert!(
        matches!(
            error.downcast_ref::<FenceError>(),
            Some(FenceError::Stale { epoch, current, .. })
                if *epoch == old_epoch && *current == old_epoch + 1
        ),
        "{error}"
    );
    assert_eq!(
        sims.relay_log().len(),
        switches_before,
        "nothing switched the relay"
    );
    assert!(sims.relay_is_on(), "the guest's relay stays ON");
    assert_eq!(
        state_on(&second, payment_id).await,
        Some(SessionState::Active)
    );

    let ends_at = session(&second, payment_id).await.ends_at().unwrap();
    // Three seconds ahead, as in the takeover test: the new leader's read-back and the
    // OFF share Shelly Cloud's rate limit of one call per second.
    sims.advance_to(ends_at - chrono::Duration::seconds(3));
    assert!(
        wait_for(|| async { state_on(&second, payment_id).await == Some(SessionState::Completed) })
            .await,
        "the new leader finishes the session"
    );
    assert_off_at_the_end(&sims.relay_log(), ends_at);
    let switched_off = events_of(&second, "DeviceSession", payment_id)
        .await
        .into_iter()
        .find(|event| event.event_type == "RelayOffSucceeded")
        .expect("the relay went OFF");
    assert_eq!(
        stamped_epoch(&switched_off),
        Some(("reconciler".to_string(), old_epoch + 1))
    );
    println!(
        "old leader stopped {stopped_ms} ms after its lock was cut; taken over at {takeover_ms} ms"
    );
    second.stop().await;
    first.stop().await;
}

/// Every start of a singleton takes the next epoch, its commands carry it, and a command
/// stamped with an earlier one is refused (on SQLite the lease is trivially held, but the
/// epoch is kept and checked alike).
async fn a_singleton_stamps_its_epoch_and_an_older_one_is_refused(backend: Backend) {
    use latchkey::store::lease::{Fence, FenceError};
    use latchkey_aggregates::session::SessionCommand;
    use latchkey_aggregates::Actor;

    let sims = Sims::spawn().await;
    let database = TestDatabase::create(backend).await;
    let first = sims.app(database.another_handle(), sims.options()).await;
    register_washer(&first).await;
    let payment_id = pay_on(&first, &sims).await;
    assert!(
        wait_for(|| async { state_on(&first, payment_id).await == Some(SessionState::Active) })
            .await
    );
    let first_epoch = events_of(&first, "DeviceSession", payment_id)
        .await
        .iter()
        .find(|event| event.event_type == "RelayOnSucceeded")
        .and_then(stamped_epoch)
        .expect("the reconciler's ON carries its epoch");
    assert_eq!(first_epoch.0, "reconciler");
    first.stop().await;

    let second = sims.app(database, sims.options()).await;
    let expected = first_epoch.1 + 1;
    let stale = Fence::new(&second.database, "reconciler", first_epoch.1);
    assert!(
        eventually(100, Duration::from_millis(50), || async {
            lease_epoch(&second.database, "reconciler").await == Some(expected)
        })
        .await,
        "the restarted reconciler holds the next epoch"
    );
    let refused = stale
        .scope(second.state.buses.sessions.execute(
            &payment_id.to_string(),
            SessionCommand::SwitchRelayOff {
                actor: Actor::System,
                at: sims.clock.now(),
            },
            latchkey::cqrs::CommandMetadata::new("system", "reconciler"),
        ))
        .await
        .expect_err("a command stamped with the old epoch is refused");
    let cqrs_es::AggregateError::UnexpectedError(error) = refused else {
        panic!("a fence error, not {refused:?}");
    };
    assert!(
        matches!(
            error.downcast_ref::<FenceError>(),
            Some(FenceError::Stale { current, .. }) if *current == expected
        ),
        "{error}"
    );
    assert!(
        sims.relay_is_on(),
        "the refused OFF never reached the relay"
    );
    assert_eq!(
        state_on(&second, payment_id).await,
        Some(SessionState::Active)
    );
    second.stop().await;
}

on_both_backends!(a_singleton_stamps_its_epoch_and_an_older_one_is_refused);
