//! Subscriptions: exactly-once effects, crash recovery, and no skipped events under
//! concurrent writers (the "sequence gap" problem).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use latchkey::startup::BuildOptions;
use latchkey::store::Database;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::helpers::{eventually, spawn_app_with, Backend, TestDatabase};
use crate::on_both_backends;
use crate::support::{
    counter_bus, create_recorder_table, events_handled, recorded_counts, recorded_in_order,
    test_metadata, CounterCommand, Recorder,
};

async fn append_counters(
    database: &Database,
    appended: &latchkey::store::repository::AppendSignal,
    count: usize,
) {
    let bus = counter_bus(database, appended);
    for index in 0..count {
        let id = format!("c-{}", index % 7);
        bus.execute(&id, CounterCommand::Add { amount: 1 }, test_metadata())
            .await
            .unwrap();
    }
}

/// Every aggregate's events were applied in sequence order, each exactly once.
fn assert_in_sequence_order(applied: &[(String, i64)]) {
    let mut next: HashMap<&str, i64> = HashMap::new();
    for (aggregate_id, sequence) in applied {
        let expected = next.entry(aggregate_id.as_str()).or_insert(1);
        assert_eq!(*sequence, *expected, "{aggregate_id} applied out of order");
        *expected += 1;
    }
}

async fn a_failing_batch_is_retried_without_applying_anything_twice(backend: Backend) {
    let test_database = TestDatabase::create(backend).await;
    let database = test_database.connect().await;
    create_recorder_table(&database).await;
    append_counters(&database, &Default::default(), 120).await;
    let app = spawn_app_with(test_database, BuildOptions::default()).await;
    let recorder = Recorder::new("crashy");
    // Position 75 is in the middle of the second batch (batches of 50).
    recorder.fail_once_at.store(75, Ordering::SeqCst);
    let error = app.subscriptions.catch_up(&recorder).await.unwrap_err();
    assert!(format!("{error:#}").contains("injected failure at position 75"));
    // The failed batch rolled back whole: its effects and its checkpoint move alike.
    let (rows, distinct) = recorded_counts(&app.database, "crashy").await;
    assert_eq!(rows, distinct);
    assert!(rows < 75);
    assert_eq!(rows, events_handled(&app.database, "crashy").await);
    let handled = app.subscriptions.catch_up(&recorder).await.unwrap();
    assert_eq!(handled as i64, 120 - rows);
    assert_eq!(recorded_counts(&app.database, "crashy").await, (120, 120));
    assert_in_sequence_order(&recorded_in_order(&app.database, "crashy").await);
    app.stop().await;
}

async fn a_subscriber_killed_mid_batch_resumes_from_its_checkpoint(backend: Backend) {
    let test_database = TestDatabase::create(backend).await;
    let database = test_database.connect().await;
    create_recorder_table(&database).await;
    append_counters(&database, &Default::default(), 100).await;
    let app = spawn_app_with(test_database, BuildOptions::default()).await;
    let mut slow = Recorder::new("killed");
    slow.delay_ms = 5;
    let slow = Arc::new(slow);
    let shutdown = CancellationToken::new();
    let task = app.subscriptions.spawn(slow.clone(), shutdown.clone());
    assert!(
        eventually(200, Duration::from_millis(20), || async {
            recorded_counts(&app.database, "killed").await.0 >= 50
        })
        .await
    );
    // Kill it in the middle of its second batch: the uncommitted half must vanish.
    task.abort();
    let _ = task.await;
    let (rows, distinct) = recorded_counts(&app.database, "killed").await;
    assert_eq!(rows, distinct);
    assert_eq!(
        rows,
        events_handled(&app.database, "killed").await,
        "effects and checkpoint commit together"
    );
    let fresh = Recorder::new("killed");
    // A real crash closes the process's connections. An aborted task inside a live process
    // instead hands its connection back with the rollback still queued, and on SQLite that
    // connection can keep the write lock until the pool flushes it; so retry.
    let mut resumed = app.subscriptions.catch_up(&fresh).await;
    for _ in 0..5 {
        if resumed.is_ok() {
            break;
        }
        resumed = app.subscriptions.catch_up(&fresh).await;
    }
    resumed.unwrap();
    assert_eq!(recorded_counts(&app.database, "killed").await, (100, 100));
    app.stop().await;
}

async fn a_new_append_wakes_a_running_subscriber(backend: Backend) {
    let test_database = TestDatabase::create(backend).await;
    let database = test_database.connect().await;
    create_recorder_table(&database).await;
    let recorder = Arc::new(Recorder::new("live"));
    let options = BuildOptions {
        subscribers: vec![recorder],
        ..Default::default()
    };
    let app = spawn_app_with(test_database, options).await;
    append_counters(&app.database, &app.appended, 30).await;
    assert!(
        eventually(300, Duration::from_millis(20), || async {
            recorded_counts(&app.database, "live").await == (30, 30)
        })
        .await
    );
    app.stop().await;
}

async fn rebuild_replays_from_position_zero(backend: Backend) {
    let test_database = TestDatabase::create(backend).await;
    let database = test_database.connect().await;
    create_recorder_table(&database).await;
    append_counters(&database, &Default::default(), 20).await;
    let app = spawn_app_with(test_database, BuildOptions::default()).await;
    let recorder = Recorder::new("rebuilt");
    assert_eq!(app.subscriptions.catch_up(&recorder).await.unwrap(), 20);
    assert_eq!(
        app.subscriptions.catch_up(&recorder).await.unwrap(),
        0,
        "a restart resumes, it does not replay"
    );
    app.subscriptions.reset(&recorder).await.unwrap();
    assert_eq!(app.subscriptions.catch_up(&recorder).await.unwrap(), 20);
    app.stop().await;
}

on_both_backends!(
    a_failing_batch_is_retried_without_applying_anything_twice,
    a_subscriber_killed_mid_batch_resumes_from_its_checkpoint,
    a_new_append_wakes_a_running_subscriber,
    rebuild_replays_from_position_zero,
);

/// A transaction that took its position early but commits late must still be seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_append_committing_late_is_not_skipped() {
    let test_database = TestDatabase::create(Backend::Postgres).await;
    let database = test_database.connect().await;
    create_recorder_table(&database).await;
    let app = spawn_app_with(test_database, BuildOptions::default()).await;
    let Database::Postgres(pool) = &app.database else {
        unreachable!()
    };

    let mut slow = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('Counter', 'slow', 1, 'Added', '1', '{\"Added\":{\"amount\":1,\"total\":1}}', '{}')",
    )
    .execute(&mut *slow)
    .await
    .unwrap();
    let slow_position: i64 =
        sqlx::query_scalar("SELECT position FROM events WHERE aggregate_id = 'slow'")
            .fetch_one(&mut *slow)
            .await
            .unwrap();

    // Later appends commit while the slow one is still open, with higher positions.
    append_counters(&app.database, &app.appended, 10).await;
    let recorder = Recorder::new("gap");
    for _ in 0..5 {
        app.subscriptions.run_batch(&recorder).await.unwrap();
    }
    // Held back, not skipped: nothing behind the open transaction is handed out yet, so
    // the cursor cannot move past the slow event's position.
    let (seen_while_open, _) = recorded_counts(&app.database, "gap").await;
    assert_eq!(seen_while_open, 0);

    slow.commit().await.unwrap();
    app.subscriptions.catch_up(&recorder).await.unwrap();
    assert_eq!(
        recorded_counts(&app.database, "gap").await,
        (11, 11),
        "saw {seen_while_open} while open"
    );
    let positions: Vec<i64> =
        sqlx::query_scalar("SELECT position FROM recorded WHERE subscriber = 'gap'")
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(positions.contains(&slow_position));
    assert!(
        positions.iter().any(|p| *p > slow_position),
        "the later appends really had higher positions"
    );
    app.stop().await;
}

/// A write transaction held open in *another* database on the same server holds nothing
/// back here: the settled horizon counts only this database's transactions (PostgreSQL's
/// own `pg_snapshot_xmin` is cluster-wide, so a busy neighbour once delayed every code
/// and refund by as long as its longest transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_transaction_held_in_another_database_holds_nothing_back() {
    let test_database = TestDatabase::create(Backend::Postgres).await;
    let database = test_database.connect().await;
    create_recorder_table(&database).await;
    let app = spawn_app_with(test_database, BuildOptions::default()).await;
    let neighbour = TestDatabase::create(Backend::Postgres).await;
    let Database::Postgres(neighbour_pool) = neighbour.connect().await else {
        unreachable!()
    };
    let mut held = neighbour_pool.begin().await.unwrap();
    // Takes a transaction id, as any write does.
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *held)
        .await
        .unwrap();

    append_counters(&app.database, &app.appended, 10).await;
    let recorder = Recorder::new("neighbour");
    app.subscriptions.catch_up(&recorder).await.unwrap();
    assert_eq!(
        recorded_counts(&app.database, "neighbour").await,
        (10, 10),
        "every event here was handed out while the neighbour's transaction stayed open"
    );
    held.rollback().await.unwrap();
    app.stop().await;
}

/// Eight writers over two pools, some holding their transaction open before commit,
/// append 2,000+ events while a subscriber runs: it must see each exactly once, and each
/// aggregate's events in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_concurrent_writers_with_slow_commits_lose_no_event() {
    let test_database = TestDatabase::create(Backend::Postgres).await;
    let first = test_database.connect().await;
    let second = test_database.connect().await;
    create_recorder_table(&first).await;
    // Test-only trigger: a random third of the appends hold their transaction open for up
    // to 30 ms after taking their position, so commits land out of position order.
    let Database::Postgres(pool) = &first else {
        unreachable!()
    };
    sqlx::raw_sql(
        "CREATE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF random() < 0.33 THEN PERFORM pg_sleep(random() * 0.03); END IF; RETURN NULL; END; $$; \
         CREATE TRIGGER test_slow_commit AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION test_slow_commit();",
    )
    .execute(pool)
    .await
    .unwrap();
    let recorder = Arc::new(Recorder::new("gapless"));
    let app = spawn_app_with(
        test_database,
        BuildOptions {
            subscribers: vec![recorder],
            ..Default::default()
        },
    )
    .await;

    const WRITERS: usize = 8;
    const EVENTS_PER_WRITER: usize = 256;
    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let database = if writer % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        writers.push(tokio::spawn(async move {
            let bus = counter_bus(&database, &Default::default());
            for index in 0..EVENTS_PER_WRITER {
                // Shared aggregates across writers, so conflicts and retries happen too.
                let id = format!("agg-{}", (writer * 31 + index) % 40);
                let amount = rand::thread_rng().gen_range(1..5);
                bus.execute(&id, CounterCommand::Add { amount }, test_metadata())
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let total = (WRITERS * EVENTS_PER_WRITER) as i64;
    let caught_up = eventually(600, Duration::from_millis(100), || async {
        recorded_counts(&app.database, "gapless").await.0 >= total
    })
    .await;
    let (rows, distinct) = recorded_counts(&app.database, "gapless").await;
    assert!(
        caught_up,
        "subscriber saw {rows} of {total} after {:?}",
        started.elapsed()
    );
    assert_eq!((rows, distinct), (total, total));
    assert_in_sequence_order(&recorded_in_order(&app.database, "gapless").await);
    app.stop().await;
}

/// On PostgreSQL a subscriber runs in one instance at a time; when that instance stops,
/// another takes over within seconds and carries on where the first left off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_one_instance_runs_a_subscriber_and_another_takes_over() {
    let test_database = TestDatabase::create(Backend::Postgres).await;
    let database = test_database.connect().await;
    create_recorder_table(&database).await;
    let first_recorder = Arc::new(Recorder::new("singleton"));
    let second_recorder = Arc::new(Recorder::new("singleton"));
    let first = spawn_app_with(
        test_database,
        BuildOptions {
            subscribers: vec![first_recorder.clone()],
            ..Default::default()
        },
    )
    .await;
    // Give the first instance time to take the lock before the second starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second_database = first.test_database.another_handle();
    let second = spawn_app_with(
        second_database,
        BuildOptions {
            subscribers: vec![second_recorder.clone()],
            ..Default::default()
        },
    )
    .await;

    append_counters(&second.database, &second.appended, 20).await;
    assert!(
        eventually(200, Duration::from_millis(20), || async {
            recorded_counts(&database, "singleton").await == (20, 20)
        })
        .await
    );
    assert_eq!(first_recorder.applied.load(Ordering::SeqCst), 20);
    assert_eq!(
        second_recorder.applied.load(Ordering::SeqCst),
        0,
        "the second instance waits"
    );

    first.stop().await;
    append_counters(&second.database, &second.appended, 10).await;
    assert!(
        eventually(250, Duration::from_millis(20), || async {
            recorded_counts(&database, "singleton").await == (30, 30)
        })
        .await
    );
    assert_eq!(second_recorder.applied.load(Ordering::SeqCst), 10);
    second.stop().await;
}

async fn a_reacting_subscriber_checkpoints_after_each_event(backend: Backend) {
    let test_database = TestDatabase::create(backend).await;
    let database = test_database.connect().await;
    append_counters(&database, &Default::default(), 30).await;
    let app = spawn_app_with(test_database, BuildOptions::default()).await;
    let reactor = crate::support::Reactor::new("reactor");
    let positions: Vec<i64> = latchkey::store::journal::Journal::new(app.database.clone())
        .page(&Default::default(), 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    reactor.fail_once_at.store(positions[17], Ordering::SeqCst);
    assert!(app.subscriptions.catch_up(&reactor).await.is_err());
    // Everything before the failure was reacted to once and checkpointed one by one.
    assert_eq!(*reactor.reacted.lock().unwrap(), positions[..17].to_vec());
    assert_eq!(events_handled(&app.database, "reactor").await, 17);
    app.subscriptions.catch_up(&reactor).await.unwrap();
    assert_eq!(*reactor.reacted.lock().unwrap(), positions);
    app.stop().await;
}

on_both_backends!(a_reacting_subscriber_checkpoints_after_each_event);

/// A reaction that keeps failing (not known to be permanent) is retried — each catch-up
/// reports the failure — until `park_after_attempts`, then parked; the subscriber moves
/// on, and an operator's retry after the cause is gone resolves it.
async fn a_reaction_failing_past_the_attempt_limit_is_parked_and_retried(backend: Backend) {
    use latchkey::store::parking::{self, OperatorDecision};
    let test_database = TestDatabase::create(backend).await;
    let database = test_database.connect().await;
    append_counters(&database, &Default::default(), 10).await;
    let options = BuildOptions {
        subscriptions: crate::helpers::fast_subscriptions(),
        ..Default::default()
    };
    let park_after = options.subscriptions.park_after_attempts;
    let app = spawn_app_with(test_database, options).await;
    let reactor = crate::support::Reactor::new("stubborn");
    let positions: Vec<i64> = latchkey::store::journal::Journal::new(app.database.clone())
        .page(&Default::default(), 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    let poison = positions[3];
    reactor.fail_always_at.store(poison, Ordering::SeqCst);
    // Transient until the limit: every attempt but the last reports the error.
    for attempt in 1..park_after {
        let error = app.subscriptions.catch_up(&reactor).await.unwrap_err();
        assert!(
            format!("{error:#}").contains("always fails"),
            "attempt {attempt}"
        );
        assert!(parking::list(&app.database, None, 10)
            .await
            .unwrap()
            .is_empty());
    }
    app.subscriptions.catch_up(&reactor).await.unwrap();
    let expected: Vec<i64> = positions.iter().copied().filter(|p| *p != poison).collect();
    assert_eq!(
        *reactor.reacted.lock().unwrap(),
        expected,
        "the others were reacted to"
    );
    let rows = parking::list(&app.database, None, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].position, poison);
    assert_eq!(rows[0].attempts, park_after as i32);
    assert_eq!(rows[0].status, "parked");
    assert!(rows[0].error.contains("always fails"), "{}", rows[0].error);

    reactor.fail_always_at.store(-1, Ordering::SeqCst);
    assert!(parking::decide(
        &app.database,
        &rows[0].parked_id,
        OperatorDecision::Retry,
        "test",
        None
    )
    .await
    .unwrap());
    app.subscriptions.catch_up(&reactor).await.unwrap();
    assert_eq!(reactor.reacted.lock().unwrap().last(), Some(&poison));
    let row = parking::get(&app.database, &rows[0].parked_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.status, "resolved");
    app.stop().await;
}

on_both_backends!(a_reaction_failing_past_the_attempt_limit_is_parked_and_retried);
