//! The read models against an independent recomputation: a generated history of more
//! than 5,000 events through the real command buses; every projection is compared with
//! a fold of the same events in plain Rust (the aggregates' own `apply` for payments,
//! sessions and the catalogue; hand-written folds for the audit log and revenue); then
//! `latchkey rebuild --check` must find no difference, must find a tampered row, and a
//! `latchkey rebuild` must repair it.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use latchkey::projections_runtime::{self, PooledConn};
use latchkey::store::journal::{EventFilter, Journal, JournalEvent};
use latchkey::store::Database;
use latchkey_aggregates::device::{Device, DeviceEvent};
use latchkey_aggregates::door::{Door, DoorEvent};
use latchkey_aggregates::payment::{Payment, PaymentEvent, PaymentTarget};
use latchkey_aggregates::session::DeviceSession;
use latchkey_aggregates::Actor;
use latchkey_projections::chrono_tz::Tz;
use latchkey_projections::{audit, catalogue, payments, revenue, sessions};

use crate::helpers::{spawn_app_with, Backend, TestApp, TestDatabase};
use crate::history::History;
use crate::on_both_backends;
use latchkey::startup::{BuildOptions, WorkflowOptions};

/// The application without its workflows: these tests drive the aggregates by hand, and a
/// workflow reacting to the same facts would add events of its own.
pub fn read_side_options() -> BuildOptions {
    BuildOptions {
        workflows: WorkflowOptions {
            enabled: false,
            ..WorkflowOptions::default()
        },
        ..BuildOptions::default()
    }
}

/// [`spawn_app`](crate::helpers::spawn_app) with [`read_side_options`].
pub async fn spawn_read_app(backend: Backend) -> TestApp {
    spawn_app_with(TestDatabase::create(backend).await, read_side_options()).await
}

/// Waits until every projection has handled every committed event.
pub async fn wait_for_projections(database: &Database) {
    for _ in 0..1_200 {
        let statuses = projections_runtime::status(database).await.unwrap();
        if statuses.iter().all(|status| status.lag_events == 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "projections did not catch up: {:?}",
        projections_runtime::status(database).await
    );
}

pub async fn all_events(database: &Database) -> Vec<JournalEvent> {
    let journal = Journal::new(database.clone());
    let mut filter = EventFilter::default();
    let mut events = Vec::new();
    loop {
        let page = journal.page(&filter, 1_000).await.unwrap();
        let Some(last) = page.last() else {
            return events;
        };
        filter.after = last.position;
        events.extend(page);
    }
}

fn by_aggregate<'a>(
    events: &'a [JournalEvent],
    kind: &str,
) -> BTreeMap<String, Vec<&'a JournalEvent>> {
    let mut map: BTreeMap<String, Vec<&JournalEvent>> = BTreeMap::new();
    for event in events.iter().filter(|e| e.aggregate_type == kind) {
        map.entry(event.aggregate_id.clone())
            .or_default()
            .push(event);
    }
    map
}

fn replay<A: Aggregate>(events: &[&JournalEvent]) -> A {
    let mut aggregate = A::default();
    for event in events {
        aggregate.apply(serde_json::from_value(event.payload.clone()).unwrap());
    }
    aggregate
}

pub fn cli(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "error")
        .env_remove("LATCHKEY_API_TOKEN")
        .output()
        .expect("the latchkey binary runs")
}

async fn every_projection_equals_an_independent_fold_and_survives_a_rebuild(backend: Backend) {
    let test_database = TestDatabase::create(backend).await;
    if let Some(name) = test_database.postgres_name() {
        // Durability is not under test here; not waiting for each commit's WAL flush
        // keeps the generation within the time budget.
        let database = test_database.connect().await;
        let sql = format!("ALTER DATABASE {name} SET synchronous_commit = off");
        latchkey::on_pool!(&database, pool => sqlx::query(&sql).execute(pool).await.map(|_| ()))
            .unwrap();
        database.close().await;
    }
    let app = spawn_app_with(test_database, read_side_options()).await;
    let started = std::time::Instant::now();
    // PostgreSQL takes concurrent writers; SQLite has one writer at a time anyway.
    let workers: u64 = if backend == Backend::Postgres { 3 } else { 1 };
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let mut history = History::new(
            &app.database,
            &app.appended,
            8 + worker,
            &format!("w{worker}-"),
        );
        tasks.push(tokio::spawn(async move {
            history.register_catalogue().await;
            history.generate(600 / workers as usize).await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    eprintln!("generated in {:?}", started.elapsed());
    wait_for_projections(&app.database).await;
    eprintln!("projected in {:?}", started.elapsed());
    let events = all_events(&app.database).await;
    assert!(
        events.len() >= 5_000,
        "only {} events generated",
        events.len()
    );

    let mut pooled = PooledConn::acquire(&app.database).await.unwrap();
    check_payments(&events, payments::all(&mut pooled.conn()).await.unwrap());
    check_sessions(&events, sessions::all(&mut pooled.conn()).await.unwrap());
    check_audit(&events, audit::all(&mut pooled.conn()).await.unwrap());
    check_revenue(&events, revenue::all(&mut pooled.conn()).await.unwrap());
    check_catalogue(
        &events,
        catalogue::doors(&mut pooled.conn()).await.unwrap(),
        catalogue::devices(&mut pooled.conn()).await.unwrap(),
    );
    drop(pooled);

    eprintln!("compared in {:?}", started.elapsed());
    rebuild_check_passes_then_catches_tampering(&app).await;
    eprintln!("cli in {:?}", started.elapsed());
    app.stop().await;
}

async fn rebuild_check_passes_then_catches_tampering(app: &TestApp) {
    let url = app.test_database.url.as_str().to_owned();
    let output = cli(&url, &["rebuild", "--check"]);
    assert!(
        output.status.success(),
        "rebuild --check failed after a live run: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains("ok: payments, sessions, audit_log, revenue, catalogue"));

    let tamper = "UPDATE payments SET amount = amount + 1 \
                  WHERE payment_id = (SELECT MIN(payment_id) FROM payments)";
    latchkey::on_pool!(&app.database, pool => sqlx::query(tamper).execute(pool).await.map(|_| ()))
        .unwrap();
    let output = cli(&url, &["rebuild", "--check"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("payments: table payments has 1 row(s) only in the live copy"),
        "{stderr}"
    );
    assert!(!stderr.contains("revenue:"), "{stderr}");

    let output = cli(&url, &["rebuild", "payments"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("rebuilt payments"));
    let output = cli(&url, &["rebuild", "--check"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = cli(&url, &["rebuild", "nonsense"]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no projection is called \"nonsense\"")
    );
}

fn check_payments(events: &[JournalEvent], rows: Vec<payments::PaymentRow>) {
    let streams = by_aggregate(events, "Payment");
    assert_eq!(rows.len(), streams.len());
    let rows: HashMap<String, payments::PaymentRow> = rows
        .into_iter()
        .map(|row| (row.payment_id.clone(), row))
        .collect();
    let mut statuses = BTreeMap::new();
    for (id, stream) in &streams {
        let payment: Payment = replay(stream);
        let row = &rows[id];
        let price = payment.price().unwrap();
        let (kind, door, device, plan) = match payment.target().unwrap() {
            PaymentTarget::Door { door_uid } => ("door", Some(door_uid.clone()), None, None),
            PaymentTarget::Device {
                device_uid,
                plan_id,
            } => (
                "device",
                None,
                Some(device_uid.clone()),
                Some(plan_id.clone()),
            ),
        };
        let refunded_at = stream
            .iter()
            .filter_map(
                |event| match serde_json::from_value(event.payload.clone()).unwrap() {
                    PaymentEvent::RefundRecorded { stripe_event, .. } => Some(stripe_event.created),
                    _ => None,
                },
            )
            .next_back();
        let expected = payments::PaymentRow {
            payment_id: id.clone(),
            kind: kind.to_owned(),
            status: payment.status().as_str().to_owned(),
            amount: price.amount_minor,
            amount_received: payment.amount_received().map_or(0, |m| m.amount_minor),
            amount_refunded: payment.amount_refunded().unwrap().amount_minor,
            amount_capturable: payment.amount_capturable().unwrap().amount_minor,
            currency: price.currency.to_string(),
            email: payment.guest_email().unwrap().to_owned(),
            door_uid: door,
            device_uid: device,
            plan_id: plan,
            stripe_checkout_session: payment.checkout_session_id().map(str::to_owned),
            stripe_payment_intent: payment.payment_intent_id().map(str::to_owned),
            stripe_charge: payment.charge_id().map(str::to_owned),
            failed_attempts: i64::from(payment.failed_attempts()),
            last_failure_reason: payment.last_failure_reason().map(str::to_owned),
            disputed: payment.is_disputed(),
            amount_mismatch: payment
                .amount_mismatch()
                .map(|m| m.direction.as_str().to_owned()),
            access_held: payment.is_access_held(),
            created_at: payment.started_at().unwrap(),
            succeeded_at: payment.succeeded_at(),
            refunded_at,
            updated_at: row.updated_at,
        };
        assert_eq!(row, &expected, "payment {id}");
        *statuses.entry(expected.status).or_insert(0) += 1;
    }
    // The history covers every status a guest payment can reach here.
    for status in [
        "pending",
        "succeeded",
        "partially_refunded",
        "refunded",
        "failed",
        "cancelled",
        "expired",
    ] {
        assert!(
            statuses.contains_key(status),
            "no {status} payment in {statuses:?}"
        );
    }
}

fn check_sessions(events: &[JournalEvent], rows: Vec<sessions::SessionRow>) {
    let streams = by_aggregate(events, "DeviceSession");
    assert_eq!(rows.len(), streams.len());
    let mut states = BTreeMap::new();
    for row in rows {
        let session: DeviceSession = replay(&streams[&row.session_id]);
        let terms = session.terms().unwrap();
        assert_eq!(row.payment_id, terms.payment_id.to_string());
        assert_eq!(row.device_uid, terms.device_uid);
        assert_eq!(row.plan_id, terms.plan_id);
        assert_eq!(row.plan_minutes, i64::from(terms.plan_minutes));
        assert_eq!(row.state, session.state().unwrap().as_str());
        assert_eq!(row.opened_at, session.opened_at());
        assert_eq!(row.grace_ends_at, session.grace_ends_at());
        assert_eq!(row.started_at, session.started_at());
        assert_eq!(row.ends_at, session.ends_at());
        assert_eq!(row.ended_at, session.ended_at());
        assert_eq!(row.relay_commanded, session.relay_commanded());
        assert_eq!(row.relay_observed, session.relay_observed());
        assert_eq!(row.last_relay_error.as_deref(), session.last_relay_error());
        assert_eq!(row.end_reason.as_deref(), session.end_reason());
        assert_eq!(row.ended_by, session.ended_by().map(Actor::to_string));
        let now = Utc::now();
        assert_eq!(row.remaining_seconds(now), session.remaining_seconds(now));
        *states.entry(row.state).or_insert(0) += 1;
    }
    for state in ["completed", "force_ended", "failed"] {
        assert!(
            states.contains_key(state),
            "no {state} session in {states:?}"
        );
    }
}

/// The audit action of each event, written out independently of the projection's table.
fn expected_action(event: &JournalEvent, actor: Option<&str>) -> &'static str {
    match (event.aggregate_type.as_str(), event.event_type.as_str()) {
        ("Payment", "CheckoutStarted") => "payment_started",
        ("Payment", "CheckoutSessionCreated") => "checkout_session_created",
        ("Payment", "PaymentAuthorized") => "payment_authorized",
        ("Payment", "PaymentFailed") => "payment_failed",
        ("Payment", "PaymentSucceeded") => "payment_confirmed",
        ("Payment", "DuplicateConfirmationIgnored") => "duplicate_payment_ignored",
        ("Payment", "RefundRecorded") => "payment_refunded",
        ("Payment", "StripeReportIgnored") => "stripe_report_ignored",
        ("Payment", "PaymentCaptureRequested") => "payment_capture_requested",
        ("Payment", "PaymentCancellationRequested") => "payment_cancellation_requested",
        ("Payment", "PaymentCancelled") => "payment_cancelled",
        ("Payment", "CheckoutExpired") => "checkout_expired",
        ("Payment", "RefundRequested") => "refund_requested",
        ("Payment", "RefundOrdered") => "refund_requested",
        ("Payment", "RefundSubmitted") => "refund_submitted",
        ("Payment", "RefundSubmissionFailed") => "refund_submission_failed",
        ("Payment", "StripeRefundReported") => "stripe_refund_reported",
        ("Payment", "PaymentDisputed") => "payment_disputed",
        ("Payment", "PaymentCaptureOrdered") => "payment_capture_ordered",
        ("Payment", "PaymentCaptureFailed") => "capture_failed",
        ("Payment", "PaymentCancellationOrdered") => "authorization_release_ordered",
        ("Payment", "PaymentCancellationFailed") => "authorization_release_failed",
        ("Door", "DoorRegistered") => "door_registered",
        ("Door", "DoorDetailsChanged") => "door_updated",
        ("Door", "DoorPriceChanged") => "door_price_changed",
        ("Door", "DoorMaintenanceStarted") => "door_maintenance_on",
        ("Door", "DoorMaintenanceEnded") => "door_maintenance_off",
        ("Door", "PassageModeObserved") => "passage_mode_observed",
        ("Door", "AccessCodeRequested") => "access_code_requested",
        ("Door", "AccessCodeIssued") => "access_code_issued",
        ("Door", "AccessCodeIssueFailed") => "access_code_failed",
        ("Door", "AccessCodeRevoked") => "access_code_revoked",
        ("Door", "AccessCodeExpired") => "access_code_expired",
        ("Device", "DeviceRegistered") => "device_registered",
        ("Device", "DeviceDetailsChanged") => "device_updated",
        ("Device", "DevicePlansChanged") => "device_plans_changed",
        ("Device", "DeviceMaintenanceStarted") => "device_maintenance_on",
        ("Device", "DeviceMaintenanceEnded") => "device_maintenance_off",
        ("Device", "DeviceReserved") => "device_reserved",
        ("Device", "DeviceReservationQueued") => "device_queued",
        ("Device", "DeviceReleased") => "device_released",
        ("Device", "RelaySwitched") if actor == Some("system") => "reconciliation",
        ("Device", "RelaySwitched") => "relay_switched",
        ("DeviceSession", "SessionQueued") => "session_queued",
        ("DeviceSession", "SessionOpened") => "session_opened",
        ("DeviceSession", "RelayOnRequested") => "shelly_on_requested",
        ("DeviceSession", "RelayOnSucceeded") => "shelly_on_success",
        ("DeviceSession", "RelayOnFailed") => "shelly_on_failed",
        ("DeviceSession", "SessionActivated") => "session_activated",
        ("DeviceSession", "SessionFinishing") => "session_finishing",
        ("DeviceSession", "RelayOffRequested") => "shelly_off_requested",
        ("DeviceSession", "RelayOffSucceeded") => "shelly_off_success",
        ("DeviceSession", "RelayOffFailed") => "shelly_off_failed",
        ("DeviceSession", "SessionCompleted") => "session_completed",
        ("DeviceSession", "SessionFailed") => "session_failed",
        ("DeviceSession", "SessionForceEnded") => "session_force_ended",
        (aggregate, event) => panic!("the history was not expected to contain {aggregate} {event}"),
    }
}

fn check_audit(events: &[JournalEvent], entries: Vec<audit::AuditEntry>) {
    assert_eq!(entries.len(), events.len());
    let mut seen = BTreeMap::new();
    for (event, entry) in events.iter().zip(&entries) {
        let actor = match event.payload.get("actor") {
            Some(actor) => Some(
                serde_json::from_value::<Actor>(actor.clone())
                    .unwrap()
                    .to_string(),
            ),
            None => event.metadata["actor"].as_str().map(str::to_owned),
        };
        let action = expected_action(event, actor.as_deref());
        assert_eq!(entry.position, event.position);
        assert_eq!(entry.action, action, "event at {}", event.position);
        assert_eq!(entry.aggregate_type, event.aggregate_type);
        assert_eq!(entry.aggregate_id, event.aggregate_id);
        assert_eq!(entry.sequence, event.sequence);
        assert_eq!(entry.actor, actor);
        assert_eq!(entry.recorded_at, event.recorded_at);
        assert!(entry.details.get("type").is_none());
        if event.event_type == "AccessCodeIssued" {
            assert_eq!(entry.details["code"], "***");
        }
        *seen.entry(action).or_insert(0) += 1;
    }
    for action in [
        "duplicate_payment_ignored",
        "payment_refunded",
        "stripe_report_ignored",
        "access_code_issued",
        "access_code_failed",
        "access_code_revoked",
        "access_code_expired",
        "session_activated",
        "shelly_on_success",
        "shelly_on_failed",
        "shelly_off_success",
        "shelly_off_failed",
        "session_force_ended",
        "reconciliation",
        "relay_switched",
        "device_queued",
        "door_maintenance_on",
    ] {
        assert!(seen.contains_key(action), "no {action} entry in {seen:?}");
    }
}

/// (slot start, local day, target kind, target uid, location, zone, currency).
type RevenueKey = (
    DateTime<Utc>,
    String,
    String,
    String,
    String,
    String,
    String,
);

/// Revenue folded by hand: gross on Stripe's success time, refunds by their increase on
/// theirs, in the target's zone as it was at that point of the journal.
fn check_revenue(events: &[JournalEvent], rows: Vec<revenue::RevenueRow>) {
    let mut zones: HashMap<(String, String), (String, String)> = HashMap::new();
    let mut targets: HashMap<String, (String, String)> = HashMap::new();
    let mut expected: BTreeMap<RevenueKey, (i64, i64, i64)> = BTreeMap::new();
    for event in events {
        let id = event.aggregate_id.clone();
        match event.aggregate_type.as_str() {
            "Door" => match serde_json::from_value(event.payload.clone()).unwrap() {
                DoorEvent::DoorRegistered {
                    location,
                    time_zone,
                    ..
                }
                | DoorEvent::DoorDetailsChanged {
                    location,
                    time_zone,
                    ..
                } => {
                    zones.insert(("door".into(), id), (location, time_zone));
                }
                _ => {}
            },
            "Device" => match serde_json::from_value(event.payload.clone()).unwrap() {
                DeviceEvent::DeviceRegistered {
                    location,
                    time_zone,
                    ..
                }
                | DeviceEvent::DeviceDetailsChanged {
                    location,
                    time_zone,
                    ..
                } => {
                    zones.insert(("device".into(), id), (location, time_zone));
                }
                _ => {}
            },
            "Payment" => {
                let (at, currency, gross, refunds, count) =
                    match serde_json::from_value(event.payload.clone()).unwrap() {
                        PaymentEvent::CheckoutStarted { target, .. } => {
                            let target = match target {
                                PaymentTarget::Door { door_uid } => ("door".to_owned(), door_uid),
                                PaymentTarget::Device { device_uid, .. } => {
                                    ("device".to_owned(), device_uid)
                                }
                            };
                            targets.insert(id, target);
                            continue;
                        }
                        PaymentEvent::PaymentSucceeded {
                            amount_received,
                            stripe_event,
                            ..
                        } => (
                            stripe_event.created,
                            amount_received.currency.to_string(),
                            amount_received.amount_minor,
                            0,
                            1,
                        ),
                        PaymentEvent::RefundRecorded {
                            refunded_increase,
                            stripe_event,
                            ..
                        } => (
                            stripe_event.created,
                            refunded_increase.currency.to_string(),
                            0,
                            refunded_increase.amount_minor,
                            0,
                        ),
                        _ => continue,
                    };
                let target = targets[&id].clone();
                let (location, zone) = zones[&target].clone();
                let slot =
                    DateTime::from_timestamp(at.timestamp() - at.timestamp().rem_euclid(900), 0)
                        .unwrap();
                let day = at
                    .with_timezone(&zone.parse::<Tz>().unwrap())
                    .date_naive()
                    .to_string();
                let sums = expected
                    .entry((slot, day, target.0, target.1, location, zone, currency))
                    .or_default();
                sums.0 += gross;
                sums.1 += refunds;
                sums.2 += count;
            }
            _ => {}
        }
    }
    let expected: Vec<revenue::RevenueRow> = expected
        .into_iter()
        .map(
            |(
                (slot_start, local_day, target_kind, target_uid, location, time_zone, currency),
                (gross, refunds, count),
            )| {
                revenue::RevenueRow {
                    slot_start,
                    local_day,
                    target_kind,
                    target_uid,
                    location,
                    time_zone,
                    currency,
                    gross,
                    refunds,
                    // The generated history opens no disputes.
                    disputes: 0,
                    count,
                }
            },
        )
        .collect();
    assert!(expected.iter().any(|row| row.refunds > 0));
    assert_eq!(rows, expected);
}

fn check_catalogue(
    events: &[JournalEvent],
    doors: Vec<catalogue::DoorRow>,
    devices: Vec<catalogue::DeviceRow>,
) {
    let door_streams = by_aggregate(events, "Door");
    assert_eq!(doors.len(), door_streams.len());
    for row in doors {
        let stream = &door_streams[&row.door_uid];
        let door: Door = replay(stream);
        assert_eq!(row.lock_id, door.lock_id().unwrap());
        assert_eq!(row.name, door.name().unwrap());
        assert_eq!(row.location, door.location().unwrap());
        assert_eq!(row.time_zone, door.time_zone().unwrap());
        assert_eq!(row.price, door.price().unwrap().amount_minor);
        assert_eq!(row.currency, door.price().unwrap().currency.as_str());
        assert_eq!(
            row.access_minutes,
            i64::from(door.access_minutes().unwrap())
        );
        assert_eq!(row.status, door.status().to_string());
        assert_eq!(row.passage_mode, door.passage_mode_enabled());
        assert_eq!(row.offline_fallback, door.offline_fallback());
        let issued = stream
            .iter()
            .filter(|e| e.event_type == "AccessCodeIssued")
            .count();
        assert_eq!(row.codes_issued, issued as i64);
    }
    let device_streams = by_aggregate(events, "Device");
    assert_eq!(devices.len(), device_streams.len());
    for row in devices {
        let device: Device = replay(&device_streams[&row.device_uid]);
        assert_eq!(row.name, device.name().unwrap());
        assert_eq!(row.location, device.location().unwrap());
        assert_eq!(row.time_zone, device.time_zone().unwrap());
        let relay = device.relay_target().unwrap();
        assert_eq!(row.shelly_device_id, relay.shelly_device_id);
        assert_eq!(row.shelly_channel, i64::from(relay.channel));
        assert_eq!(row.plans, catalogue::plans_json(device.plans()));
        assert_eq!(row.status, device.status().to_string());
        assert_eq!(
            row.holder_session_id,
            device.holder_session().map(|id| id.to_string())
        );
        assert_eq!(row.queue_length, device.queued_sessions().len() as i64);
        assert_eq!(row.relay_on, device.relay_is_on());
    }
}

on_both_backends!(every_projection_equals_an_independent_fold_and_survives_a_rebuild);
