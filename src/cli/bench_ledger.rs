//! `latchkey bench ledger`: what the global commitment costs, on PostgreSQL.
//!
//! 1. Append throughput through the real event repository (chain hashing, postgres-es
//!    insert, commit) with `concurrency` writers, with the sealer and checkpointer running
//!    beside them and without; alternated twice so that drift on a shared machine hits
//!    both sides, each side's best run kept. The goal is a ratio of at least 0.9.
//! 2. `verify` of a journal of `events` (default 1,000,000) valid events: generated with
//!    their hash chains, bulk-inserted, sealed and checkpointed, then checked end to end
//!    (commitment, checkpoint, every chain). The goal is under 60 s.

use std::time::{Duration, Instant};

use anyhow::Context;
use cqrs_es::persist::{PersistedEventRepository, SerializedEvent};
use latchkey_aggregates::door::Door;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::bench_dashboard::{create_database, drop_database};
use crate::config::LedgerSettings;
use crate::store::chain::{self, ChainedFields};
use crate::store::journal::Journal;
use crate::store::ledger::{self, LedgerKey};
use crate::store::repository::{AppendSignal, JournalRepository};
use crate::store::{Database, PoolSize};

#[derive(Debug, clap::Args)]
pub struct LedgerArgs {
    #[arg(
        long,
        env = "BENCH_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    admin_url: String,
    /// Appends per throughput run.
    #[arg(long, default_value_t = 4_000)]
    appends: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Size of the journal `verify` is timed on.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Keep the databases afterwards.
    #[arg(long)]
    keep: bool,
}

/// Rows per bulk INSERT while building the large journal.
const BULK_ROWS: usize = 5_000;

/// Events per aggregate in the large journal (a payment's life is about that long).
const EVENTS_PER_AGGREGATE: usize = 8;

pub async fn run(args: LedgerArgs) -> anyhow::Result<()> {
    let name = format!("latchkey_bench_ledger_{}", std::process::id());
    let url = create_database(&args.admin_url, &name).await?;
    let outcome = measure(&url, &args).await;
    if args.keep {
        eprintln!("kept database {name}");
    } else {
        drop_database(&args.admin_url, &name).await?;
    }
    outcome
}

async fn measure(url: &str, args: &LedgerArgs) -> anyhow::Result<()> {
    let database = Database::connect(
        &crate::config::DatabaseUrl::Postgres(url.to_string()),
        PoolSize {
            max_connections: (args.concurrency as u32 + 4).max(8),
        },
    )
    .await?;
    database.migrate().await?;
    let key = bench_key()?;

    let mut without = 0_f64;
    let mut with = 0_f64;
    for round in 0..2 {
        let load = AppendLoad {
            appends: args.appends,
            writers: args.concurrency,
        };
        without = without.max(
            appends(&database, load, &format!("off{round}"), None)
                .await?
                .rate,
        );
        with = with.max(
            appends(&database, load, &format!("on{round}"), Some(&key))
                .await?
                .rate,
        );
    }
    println!("append throughput without the global commitment: {without:.0} events/s");
    println!("append throughput with the sealer and checkpoints:  {with:.0} events/s");
    println!("ratio: {:.3} (goal >= 0.9)", with / without);

    eprintln!("building a journal of {} events", args.events);
    let started = Instant::now();
    bulk_journal(&database, args.events).await?;
    eprintln!("  inserted in {:.1} s", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let checkpoint = ledger::make_checkpoint(&database, &key, Duration::from_secs(600)).await?;
    eprintln!(
        "  sealed and checkpointed ({} leaves) in {:.1} s",
        checkpoint.tree_size,
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let journal = Journal::new(database.clone());
    let (outcome, chains) =
        super::verify::verify_all(&journal, Vec::new(), Some(&key.verifying_key())).await?;
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        outcome.problem.is_none() && chains.broken.is_none(),
        "the generated journal does not verify: {:?} {:?}",
        outcome.problem,
        chains.broken
    );
    println!(
        "verify of {} events ({} aggregates, commitment + checkpoint + chains): {seconds:.1} s \
         (goal < 60 s)",
        chains.events_checked, chains.aggregates_checked
    );
    Ok(())
}

/// A fixed signing key: the benchmark's checkpoints are thrown away with its database.
pub(super) fn bench_key() -> anyhow::Result<LedgerKey> {
    use base64::Engine;
    let seed = base64::engine::general_purpose::STANDARD.encode([19_u8; 32]);
    LedgerKey::from_base64_seed(&seed).map_err(anyhow::Error::msg)
}

/// How many events one throughput run appends, and by how many concurrent writers.
#[derive(Clone, Copy, Debug)]
pub(super) struct AppendLoad {
    pub appends: usize,
    pub writers: usize,
}

/// What one throughput run measured.
#[derive(Clone, Copy, Debug)]
pub(super) struct AppendRun {
    /// Events per second over the whole run.
    pub rate: f64,
    /// Median time of one append (one `persist` call).
    pub p50: Duration,
}

/// One throughput run: `load.appends` events by `load.writers` writers, each on its own
/// aggregates, through the real repository; with `key`, the sealer runs meanwhile.
pub(super) async fn appends(
    database: &Database,
    load: AppendLoad,
    run: &str,
    key: Option<&LedgerKey>,
) -> anyhow::Result<AppendRun> {
    let shutdown = CancellationToken::new();
    let appended = AppendSignal::default();
    let sealer = key.map(|key| {
        ledger::spawn_sealer(
            database.clone(),
            appended.clone(),
            LedgerSettings {
                signing_key: Some(key.clone()),
                checkpoint_every_events: 1_000,
                checkpoint_every: Duration::from_secs(10),
            },
            shutdown.clone(),
        )
    });
    let writer_count = load.writers.max(1);
    let per_writer = load.appends / writer_count;
    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..writer_count {
        let repository = JournalRepository::new(database.clone(), appended.clone());
        let run = run.to_string();
        writers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_writer);
            for index in 0..per_writer {
                // Ten events per aggregate, like a busy payment.
                let aggregate_id = format!("{run}-{writer}-{}", index / 10);
                let event = SerializedEvent::new(
                    aggregate_id,
                    index % 10 + 1,
                    "Door".to_string(),
                    "BenchAppended".to_string(),
                    "1".to_string(),
                    sample_payload(index),
                    json!({"actor": "system", "source": "bench"}),
                );
                let sent = Instant::now();
                repository.persist::<Door>(&[event], None).await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(per_writer * writer_count);
    for writer in writers {
        latencies.extend(writer.await.context("a writer panicked")??);
    }
    let rate = (per_writer * writer_count) as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    let p50 = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    shutdown.cancel();
    if let Some(sealer) = sealer {
        let _ = sealer.await;
    }
    Ok(AppendRun { rate, p50 })
}

fn sample_payload(index: usize) -> Value {
    json!({
        "type": "PaymentSucceeded",
        "payment_intent_id": format!("pi_{index}"),
        "charge_id": format!("ch_{index}"),
        "amount_received": {"amount_minor": 500 + index % 100, "currency": "eur"},
        "status": "succeeded",
        "stripe_event": {"id": format!("evt_{index}"), "created": "2026-12-03T09:00:00Z"},
        "at": "2026-12-03T09:00:00Z"
    })
}

/// Inserts `count` events with valid hash chains, bulk, bypassing the repository.
pub(super) async fn bulk_journal(database: &Database, count: usize) -> anyhow::Result<()> {
    let Database::Postgres(pool) = database else {
        anyhow::bail!("the ledger benchmark runs on PostgreSQL");
    };
    let sql = "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
               event_version, payload, metadata) \
               SELECT 'Payment', id, seq, 'PaymentSucceeded', '1', payload::json, metadata::json \
               FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[]) \
               AS t(id, seq, payload, metadata)";
    let mut prev_hash = chain::GENESIS.to_string();
    let mut index = 0;
    while index < count {
        let end = (index + BULK_ROWS).min(count);
        let (mut ids, mut sequences, mut payloads, mut metadatas) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for event in index..end {
            let aggregate_id = format!("bulk-{}", event / EVENTS_PER_AGGREGATE);
            let sequence = (event % EVENTS_PER_AGGREGATE) as i64 + 1;
            if sequence == 1 {
                prev_hash = chain::GENESIS.to_string();
            }
            let payload = sample_payload(event);
            let hash = chain::event_hash(
                &prev_hash,
                &ChainedFields {
                    aggregate_type: "Payment",
                    aggregate_id: &aggregate_id,
                    sequence,
                    event_type: "PaymentSucceeded",
                    event_version: "1",
                    payload: &payload,
                },
            );
            let metadata = json!({
                "actor": "stripe", "source": "bench",
                "prev_hash": prev_hash, "hash": hash,
            });
            prev_hash = hash;
            ids.push(aggregate_id);
            sequences.push(sequence);
            payloads.push(payload.to_string());
            metadatas.push(metadata.to_string());
        }
        sqlx::query(sql)
            .bind(ids)
            .bind(sequences)
            .bind(payloads)
            .bind(metadatas)
            .execute(pool)
            .await?;
        index = end;
    }
    sqlx::query("ANALYZE events").execute(pool).await?;
    Ok(())
}
