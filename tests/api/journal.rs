//! The journal: append/load through cqrs-es, global positions, conflicts, hash chains.

use std::process::Command;

use chrono::Utc;
use latchkey::config::DatabaseUrl;
use latchkey::store::journal::Journal;

use crate::helpers::{Backend, TestDatabase};
use crate::on_both_backends;
use crate::support::{counter_bus, test_metadata, CounterCommand};

async fn events_round_trip_with_increasing_positions(backend: Backend) {
    let test_database = TestDatabase::create(backend).await;
    let database = test_database.connect().await;
    let appended = Default::default();
    let bus = counter_bus(&database, &appended);
    let started = Utc::now() - chrono::Duration::seconds(1);
    for (id, amount) in [("a", 1), ("b", 10), ("a", 2), ("a", 3), ("b", 20)] {
        bus.execute(id, CounterCommand::Add { amount }, test_metadata())
            .await
            .unwrap();
    }
    let journal = Journal::new(database.clone());
    let a = journal
        .aggregate_events("Counter", "a", None)
        .await
        .unwrap();
    assert_eq!(
        a.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // State carried through cqrs-es' load: each total builds on the one before.
    let totals: Vec<i64> = a
        .iter()
        .map(|e| e.payload["Added"]["total"].as_i64().unwrap())
        .collect();
    assert_eq!(totals, vec![1, 3, 6]);
    assert_eq!(a[0].metadata["actor"], "system");
    assert!(a
        .iter()
        .all(|e| e.recorded_at >= started && e.recorded_at <= Utc::now()));

    // On PostgreSQL, events are handed out once no older transaction anywhere in the
    // cluster is still running (other tests' included), so this may take a moment.
    let mut all = Vec::new();
    for _ in 0..500 {
        all = journal.read_after(Default::default(), 100).await.unwrap();
        if all.len() == 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(all.len(), 5);
    let positions: Vec<i64> = all.iter().map(|e| e.position).collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{positions:?}"
    );
    assert_eq!(journal.count().await.unwrap(), 5);
}

async fn a_refused_command_appends_nothing(backend: Backend) {
    let test_database = TestDatabase::create(backend).await;
    let database = test_database.connect().await;
    let bus = counter_bus(&database, &Default::default());
    let error = bus
        .execute("a", CounterCommand::Add { amount: 0 }, test_metadata())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("positive"));
    assert_eq!(Journal::new(database).count().await.unwrap(), 0);
}

async fn concurrent_commands_on_one_aggregate_lose_nothing(backend: Backend) {
    let test_database = TestDatabase::create(backend).await;
    // Two pools: two app instances writing to one aggregate.
    let first = test_database.connect().await;
    let second = test_database.connect().await;
    let mut tasks = Vec::new();
    for (index, database) in [first.clone(), second.clone(), first.clone(), second]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let bus = counter_bus(&database, &Default::default());
            let (mut landed, mut refused) = (0_i64, 0_usize);
            for _ in 0..10 {
                let amount = index as i64 + 1;
                match bus
                    .execute("shared", CounterCommand::Add { amount }, test_metadata())
                    .await
                {
                    Ok(()) => landed += amount,
                    // The only acceptable failure: a clear conflict after the bounded retries.
                    Err(cqrs_es::AggregateError::AggregateConflict) => refused += 1,
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
            (landed, refused)
        }));
    }
    let (mut expected_total, mut refused) = (0, 0);
    for task in tasks {
        let (landed, conflicts) = task.await.unwrap();
        expected_total += landed;
        refused += conflicts;
    }
    let events = Journal::new(first)
        .aggregate_events("Counter", "shared", None)
        .await
        .unwrap();
    let last_total = events.last().unwrap().payload["Added"]["total"]
        .as_i64()
        .unwrap();
    // Every success is in the journal, nothing else is, and each event builds on the last.
    assert_eq!(last_total, expected_total);
    assert_eq!(events.len() + refused, 40);
    assert_eq!(
        events.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=events.len() as i64).collect::<Vec<_>>()
    );
    let sum: i64 = events
        .iter()
        .map(|e| e.payload["Added"]["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, expected_total);
    assert!(
        refused <= 4,
        "retries should absorb almost every race; {refused} of 40 gave up"
    );
}

fn run_verify(url: &DatabaseUrl) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("verify")
        .env("DATABASE_URL", url.as_str())
        .output()
        .unwrap()
}

async fn verify_passes_then_names_a_tampered_event(backend: Backend) {
    let test_database = TestDatabase::create(backend).await;
    let database = test_database.connect().await;
    let bus = counter_bus(&database, &Default::default());
    for (id, amount) in [("x-1", 5), ("x-2", 7), ("x-2", 8), ("x-2", 9), ("x-3", 1)] {
        bus.execute(id, CounterCommand::Add { amount }, test_metadata())
            .await
            .unwrap();
    }
    let output = run_verify(&test_database.url);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("5 events in 3 aggregates"), "{stdout}");

    let tamper = "UPDATE events SET payload = '{\"Added\":{\"amount\":800,\"total\":805}}' \
                  WHERE aggregate_id = 'x-2' AND sequence = 2";
    latchkey::on_pool!(&database, pool => sqlx::query(tamper).execute(pool).await.map(|_| ()))
        .unwrap();
    let output = run_verify(&test_database.url);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("Counter x-2 sequence 2"), "{stderr}");
}

async fn verify_names_a_deleted_event(backend: Backend) {
    let test_database = TestDatabase::create(backend).await;
    let database = test_database.connect().await;
    let bus = counter_bus(&database, &Default::default());
    for amount in [1, 2, 3] {
        bus.execute("y", CounterCommand::Add { amount }, test_metadata())
            .await
            .unwrap();
    }
    let delete = "DELETE FROM events WHERE aggregate_id = 'y' AND sequence = 2";
    latchkey::on_pool!(&database, pool => sqlx::query(delete).execute(pool).await.map(|_| ()))
        .unwrap();
    let output = run_verify(&test_database.url);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("Counter y sequence 3"), "{stderr}");
}

on_both_backends!(
    events_round_trip_with_increasing_positions,
    a_refused_command_appends_nothing,
    concurrent_commands_on_one_aggregate_lose_nothing,
    verify_passes_then_names_a_tampered_event,
    verify_names_a_deleted_event,
);

fn run_export(url: &DatabaseUrl, args: &[&str]) -> Vec<serde_json::Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .arg("export")
        .args(args)
        .env("DATABASE_URL", url.as_str())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn export_writes_the_whole_journal_or_an_exact_range(backend: Backend) {
    let test_database = TestDatabase::create(backend).await;
    let database = test_database.connect().await;
    let bus = counter_bus(&database, &Default::default());
    for index in 0..25 {
        let id = format!("e-{}", index % 4);
        bus.execute(&id, CounterCommand::Add { amount: 1 }, test_metadata())
            .await
            .unwrap();
    }
    let all = run_export(&test_database.url, &[]);
    assert_eq!(
        all.len() as i64,
        Journal::new(database).count().await.unwrap()
    );
    let positions: Vec<i64> = all
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    let range = run_export(
        &test_database.url,
        &[
            "--after",
            &positions[4].to_string(),
            "--until",
            &positions[14].to_string(),
        ],
    );
    assert_eq!(range.len(), 10);
    assert_eq!(range[0]["position"], positions[5]);
    assert_eq!(range[9]["position"], positions[14]);
    let one = run_export(
        &test_database.url,
        &["--aggregate-type", "Counter", "--aggregate-id", "e-1"],
    );
    assert_eq!(one.len(), 6);
    assert!(one
        .iter()
        .all(|e| e["aggregate_id"] == "e-1" && e["event_type"] == "Added"));
    for key in [
        "position",
        "aggregate_type",
        "aggregate_id",
        "sequence",
        "event_type",
        "event_version",
        "payload",
        "metadata",
        "recorded_at",
    ] {
        assert!(one[0].get(key).is_some(), "journal event shape lacks {key}");
    }
}

on_both_backends!(export_writes_the_whole_journal_or_an_exact_range);
