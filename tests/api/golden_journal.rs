//! The golden journal: a journal written by an earlier version, replayed through today's
//! code, must give the same aggregate states and the same read models (issue 19, point 4).
//!
//! `tests/fixtures/journal/journal.ndjson` is one seed of the whole-system simulation
//! (`scripts/simulate --seed 86 --export-journal FILE`: the real aggregates' events, in
//! the shape `latchkey export` prints), frozen when it was written. The test appends it
//! through the real repository (chains, ledger) into a fresh database on each backend,
//! lets the projections catch up with the workflows off (nothing may react to history),
//! and compares
//! - every aggregate's state, loaded through the repository and the upcasters, with
//!   `golden-states.json`;
//! - the read models operators and auditors see (payments, sessions, audit, doors,
//!   devices, the revenue report) with `golden-read-models.json`.
//!
//! A renamed or removed event field, a changed `apply`, or a projection that now reads an
//! event differently changes one of the two and fails here. When the change is meant (a
//! new field with a default, a new read-model column), regenerate the outputs — never the
//! journal — with `BLESS_JOURNAL=1 cargo test --test api golden_journal` and review the
//! diff: that diff is what the change does to history.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use latchkey::startup::BuildOptions;
use latchkey::store::repository::JournalRepository;
use latchkey_aggregates::device::Device;
use latchkey_aggregates::door::Door;
use latchkey_aggregates::payment::Payment;
use latchkey_aggregates::session::DeviceSession;
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app_with, Backend, TestApp, TestDatabase, ADMIN_TOKEN};
use crate::on_both_backends;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/journal")
}

fn golden_journal() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("journal.ndjson")).unwrap();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Appends the golden journal through the repository, one event per append, in order.
async fn import(app: &TestApp, journal: &[Value]) {
    let repository = JournalRepository::new(app.database.clone(), app.appended.clone());
    for line in journal {
        let text = |field: &str| line[field].as_str().unwrap().to_string();
        let event = SerializedEvent::new(
            text("aggregate_id"),
            line["sequence"].as_u64().unwrap() as usize,
            text("aggregate_type"),
            text("event_type"),
            text("event_version"),
            line["payload"].clone(),
            line["metadata"].clone(),
        );
        let events = [event];
        let result = match line["aggregate_type"].as_str().unwrap() {
            "Payment" => repository.persist::<Payment>(&events, None).await,
            "Door" => repository.persist::<Door>(&events, None).await,
            "Device" => repository.persist::<Device>(&events, None).await,
            "DeviceSession" => repository.persist::<DeviceSession>(&events, None).await,
            other => panic!("unknown aggregate type {other}"),
        };
        result.unwrap_or_else(|error| panic!("appending {line}: {error}"));
    }
}

/// Every aggregate's state after replaying its events, keyed `Type/id`.
async fn states(app: &TestApp, journal: &[Value]) -> Value {
    let buses = &app.state.buses;
    let mut states = BTreeMap::new();
    for line in journal {
        let kind = line["aggregate_type"].as_str().unwrap();
        let id = line["aggregate_id"].as_str().unwrap();
        let key = format!("{kind}/{id}");
        if states.contains_key(&key) {
            continue;
        }
        let state = match kind {
            "Payment" => serde_json::to_value(buses.payments.load(id).await.unwrap().0),
            "Door" => serde_json::to_value(buses.doors.load(id).await.unwrap().0),
            "Device" => serde_json::to_value(buses.devices.load(id).await.unwrap().0),
            _ => serde_json::to_value(buses.sessions.load(id).await.unwrap().0),
        };
        states.insert(key, state.unwrap());
    }
    json!(states)
}

async fn read(app: &TestApp, path: &str) -> Value {
    let response = app.get_with_token(path, ADMIN_TOKEN).await;
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

/// The read models as the API serves them.
async fn read_models(app: &TestApp) -> Value {
    json!({
        "payments": read(app, "/api/payments?limit=200").await,
        "sessions": read(app, "/api/sessions?limit=200").await,
        "audit": read(app, "/api/audit?limit=200").await,
        "doors": read(app, "/api/doors").await,
        "devices": read(app, "/api/devices").await,
        "revenue": read(app, "/api/reports/revenue?from=2026-03-01&to=2026-03-03").await,
    })
}

/// Drops what depends on when the journal was imported rather than on its events (the
/// append time), so the outputs compare across runs.
fn without_import_times(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("recorded_at");
            map.values_mut().for_each(without_import_times);
        }
        Value::Array(items) => items.iter_mut().for_each(without_import_times),
        _ => {}
    }
}

/// Compares `actual` with the golden file `name`, writing it first under `BLESS_JOURNAL=1`
/// when it does not exist.
fn assert_golden(name: &str, mut actual: Value) {
    without_import_times(&mut actual);
    let path = fixtures().join(name);
    if !path.exists() && std::env::var_os("BLESS_JOURNAL").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&actual).unwrap() + "\n").unwrap();
    }
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{name} is missing: BLESS_JOURNAL=1 writes it")),
    )
    .unwrap();
    if expected != actual {
        let actual_path = std::env::temp_dir().join(format!("actual-{name}"));
        std::fs::write(
            &actual_path,
            serde_json::to_string_pretty(&actual).unwrap() + "\n",
        )
        .unwrap();
        panic!(
            "replaying the golden journal no longer gives {name}; today's output is in {} \
             (diff it; if the change is meant, delete {name} and bless again)",
            actual_path.display()
        );
    }
}

async fn the_golden_journal_replays_to_the_golden_states_and_read_models(backend: Backend) {
    let mut options = BuildOptions::default();
    options.workflows.enabled = false;
    let app = spawn_app_with(TestDatabase::create(backend).await, options).await;
    let journal = golden_journal();
    import(&app, &journal).await;

    let head = journal.len() as i64;
    let database = app.database.clone();
    let caught_up = eventually(200, Duration::from_millis(50), || {
        let database = database.clone();
        async move {
            latchkey::projections_runtime::status(&database)
                .await
                .is_ok_and(|projections| {
                    projections
                        .iter()
                        .all(|projection| projection.position == head)
                })
        }
    })
    .await;
    assert!(caught_up, "every projection reaches the journal's head");

    assert_golden("golden-states.json", states(&app, &journal).await);
    assert_golden("golden-read-models.json", read_models(&app).await);
    app.stop().await;
}

on_both_backends!(the_golden_journal_replays_to_the_golden_states_and_read_models);
