//! `latchkey bench all [--quick]`: the performance suite (issue 16), every benchmark with
//! its baseline measured in the same run, on fresh PostgreSQL databases.
//!
//! Absolute numbers move from run to run on a shared machine, so each benchmark is set
//! against the physical floor for the same work, measured in the same run: the
//! database's own single-row `INSERT … COMMIT` rate at the same concurrency for the write
//! paths, a raw read (or COPY) of the journal for verify and rebuild. `ratio` is always
//! "throughput relative to the baseline" (above 1.0 beats it), whether the value is a
//! rate or a duration. Where a benchmark drives a server, the server is `latchkey serve`
//! in its own process and this process is the client; the CPU each side spent is
//! reported, since on two cores the client takes CPU from the server.
//!
//! The results go to a table on stdout and to `--out` (default
//! `target/bench/summary.json`) as `{"name": {"value", "baseline", "ratio", "unit",
//! "goal", "note"}}`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolCopyExt, PgPoolOptions};

use super::bench_dashboard::{create_database, drop_database};
use super::bench_ledger::{self, AppendLoad};
use crate::config::DatabaseUrl;
use crate::integrations::stripe::signature;
use crate::store::journal::Journal;
use crate::store::{ledger, Database, PoolSize};

/// Options of `latchkey bench all`.
#[derive(Debug, clap::Args)]
pub struct AllArgs {
    /// A PostgreSQL server URL (any database on it): the suite creates and drops its own.
    #[arg(
        long,
        env = "BENCH_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    admin_url: String,
    /// Smaller sizes (100,000 events instead of 1,000,000; one round instead of two):
    /// under five minutes.
    #[arg(long)]
    quick: bool,
    /// Where the JSON summary is written.
    #[arg(long, default_value = "target/bench/summary.json")]
    out: PathBuf,
    /// Only the benchmark groups named (comma-separated): webhooks, journal, verify,
    /// rebuild, report.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// How big each benchmark is.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// Deliveries per webhook throughput run.
    deliveries: usize,
    /// Alternated rounds of value and baseline; each side's best is kept.
    rounds: usize,
    /// Length of the run at a fixed 200 deliveries/s.
    paced: Duration,
    /// Appends per journal throughput run.
    appends: usize,
    /// Journal size for verify and rebuild, payments for the report.
    events: usize,
    /// Timed requests per report variant.
    requests: usize,
}

impl Sizes {
    fn of(quick: bool) -> Sizes {
        if quick {
            Sizes {
                deliveries: 2_000,
                rounds: 1,
                paced: Duration::from_secs(3),
                appends: 1_000,
                events: 100_000,
                requests: 50,
            }
        } else {
            Sizes {
                deliveries: 6_000,
                rounds: 2,
                paced: Duration::from_secs(10),
                appends: 4_000,
                events: 1_000_000,
                requests: 200,
            }
        }
    }
}

/// One line of the summary.
#[derive(Clone, Debug, Serialize)]
struct Metric {
    value: f64,
    baseline: Option<f64>,
    ratio: Option<f64>,
    unit: &'static str,
    goal: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl Metric {
    /// A rate against a baseline rate.
    fn rate(value: f64, baseline: f64, unit: &'static str, goal: &'static str) -> Metric {
        Metric {
            value,
            baseline: Some(baseline),
            ratio: Some(value / baseline),
            unit,
            goal,
            note: None,
        }
    }

    /// A duration against a baseline duration: the ratio is baseline ÷ value, so it
    /// still reads as relative throughput.
    fn duration(value: f64, baseline: f64, unit: &'static str, goal: &'static str) -> Metric {
        Metric {
            value,
            baseline: Some(baseline),
            ratio: Some(baseline / value),
            unit,
            goal,
            note: None,
        }
    }

    /// A figure with no physical floor to compare with (latencies, memory).
    fn plain(value: f64, unit: &'static str, goal: &'static str) -> Metric {
        Metric {
            value,
            baseline: None,
            ratio: None,
            unit,
            goal,
            note: None,
        }
    }

    fn note(mut self, note: impl Into<String>) -> Metric {
        self.note = Some(note.into());
        self
    }
}

type Summary = BTreeMap<String, Metric>;

/// The webhook signing secret the benchmark server is started with.
const SECRET: &str = "whsec_bench_secret";

/// The bearer token the benchmark server accepts for API reads.
const API_TOKEN: &str = "bench-token";

pub async fn run(args: AllArgs) -> anyhow::Result<()> {
    let sizes = Sizes::of(args.quick);
    let wanted = |group: &str| args.only.is_empty() || args.only.iter().any(|o| o == group);
    let mut summary = Summary::new();
    eprintln!("load at start: {}", load_average());
    let started = Instant::now();
    if wanted("webhooks") {
        let scratch = Scratch::create(&args.admin_url, "webhooks").await?;
        let outcome = webhooks(&scratch.url, &args.admin_url, sizes, &mut summary).await;
        scratch.drop_after(outcome).await?;
    }
    if wanted("journal") || wanted("verify") {
        let scratch = Scratch::create(&args.admin_url, "journal").await?;
        let outcome = journal(&scratch.url, &args.admin_url, sizes, &mut summary).await;
        scratch.drop_after(outcome).await?;
    }
    if wanted("rebuild") {
        let scratch = Scratch::create(&args.admin_url, "rebuild").await?;
        let outcome = rebuild(&scratch.url, sizes, &mut summary).await;
        scratch.drop_after(outcome).await?;
    }
    if wanted("report") {
        let scratch = Scratch::create(&args.admin_url, "report").await?;
        let outcome = report(&scratch.url, sizes, &mut summary).await;
        scratch.drop_after(outcome).await?;
    }
    let load = load_average();
    print_table(&summary);
    println!(
        "{} run in {:.0} s; load average at the end: {load}",
        if args.quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64()
    );
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("summary written to {}", args.out.display());
    Ok(())
}

/// A fresh database, dropped once its benchmark is done whatever the outcome.
struct Scratch {
    admin_url: String,
    name: String,
    url: String,
}

impl Scratch {
    async fn create(admin_url: &str, label: &str) -> anyhow::Result<Scratch> {
        let name = database_name(label);
        let url = create_database(admin_url, &name).await?;
        Ok(Scratch {
            admin_url: admin_url.to_string(),
            name,
            url,
        })
    }

    async fn drop_after<T>(self, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
        drop_database(&self.admin_url, &self.name).await?;
        outcome
    }
}

fn database_name(label: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "latchkey_bench_{label}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

async fn connect(url: &str, connections: u32) -> anyhow::Result<Database> {
    let database = Database::connect(
        &DatabaseUrl::Postgres(url.to_string()),
        PoolSize {
            max_connections: connections,
        },
    )
    .await?;
    database.migrate().await?;
    Ok(database)
}

// ---------------------------------------------------------------------------------------
// Webhooks: ack throughput at 16 and 64 senders, latency at 200/s, memory, client CPU.

async fn webhooks(
    url: &str,
    admin_url: &str,
    sizes: Sizes,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    eprintln!("== webhooks");
    let server = Server::start(url, &[("STRIPE_WEBHOOK_SECRET", SECRET)]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kb = server.memory_kb("VmRSS");
    let sender = Sender::new(&server.url, 64)?;
    sender.saturate(200, 16).await?;
    let (mut client_cpu, mut server_cpu) = (0.0, 0.0);
    for concurrency in [16, 64] {
        let (mut ack, mut floor) = (0_f64, 0_f64);
        for _ in 0..sizes.rounds {
            let (client_before, server_before) = (cpu_seconds("self"), server.cpu_seconds());
            ack = ack.max(sender.saturate(sizes.deliveries, concurrency).await?);
            client_cpu += cpu_seconds("self") - client_before;
            server_cpu += server.cpu_seconds() - server_before;
            floor = floor.max(
                insert_commit_rate(admin_url, sizes.deliveries, concurrency, sender.body_len())
                    .await?,
            );
        }
        eprintln!("   {concurrency} senders: {ack:.0}/s, baseline {floor:.0}/s");
        let (name, goal) = match concurrency {
            64 => ("webhook_ack", ">= 1.0x at 64 senders"),
            _ => ("webhook_ack_16", ">= 0.7x at 16 senders"),
        };
        summary.insert(
            name.to_string(),
            Metric::rate(ack, floor, "deliveries/s", goal).note(format!(
                "{concurrency} senders; baseline: single-row INSERT+COMMIT of a same-size row, \
                 {concurrency} connections, fresh database"
            )),
        );
    }
    let mut latencies = sender.paced(200, sizes.paced).await?;
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    summary.insert(
        "webhook_ack_p99_200".to_string(),
        Metric::plain(ms(p99), "ms", "< 50 ms").note(format!(
            "{} deliveries at 200/s; p50 {:.1} ms",
            latencies.len(),
            ms(p50)
        )),
    );
    summary.insert(
        "bench_client_cpu".to_string(),
        Metric {
            value: client_cpu,
            baseline: Some(server_cpu),
            ratio: Some(client_cpu / server_cpu),
            unit: "CPU s (client; baseline = server)",
            goal: "report only",
            note: Some("CPU time of the bench client and of the server process during the saturating webhook runs".to_string()),
        },
    );
    summary.insert(
        "rss_idle".to_string(),
        Metric::plain(idle_kb as f64 / 1024.0, "MB", "< 64 MB")
            .note("server VmRSS one second after it is ready"),
    );
    summary.insert(
        "rss_peak_load".to_string(),
        Metric::plain(server.memory_kb("VmHWM") as f64 / 1024.0, "MB", "< 256 MB")
            .note("server VmHWM after every webhook run"),
    );
    drop(server);
    Ok(())
}

/// Signs and posts synthetic `payment_intent.succeeded` deliveries, each with a new id.
#[derive(Clone)]
struct Sender {
    client: reqwest::Client,
    endpoint: Arc<str>,
    run: Arc<str>,
    next: Arc<AtomicUsize>,
}

impl Sender {
    fn new(base_url: &str, connections: usize) -> anyhow::Result<Sender> {
        Ok(Sender {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(connections)
                .build()?,
            endpoint: format!("{base_url}/api/stripe/webhook").into(),
            run: uuid::Uuid::new_v4().simple().to_string().into(),
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn body(&self, index: usize) -> String {
        serde_json::json!({
            "id": format!("evt_bench_{}_{index}", self.run),
            "object": "event",
            "api_version": "2026-09-30.endive",
            "created": chrono::Utc::now().timestamp(),
            "livemode": false,
            "type": "payment_intent.succeeded",
            "data": { "object": { "id": format!("pi_bench_{index}"), "object": "payment_intent",
                "amount": 500, "amount_received": 500, "currency": "eur", "status": "succeeded",
                "metadata": { "latchkey_payment_id": uuid::Uuid::new_v4().to_string() } } },
            "request": { "id": null, "idempotency_key": null },
        })
        .to_string()
    }

    fn body_len(&self) -> usize {
        self.body(0).len()
    }

    /// Posts one delivery; the time until its 2xx.
    async fn send(&self) -> anyhow::Result<Duration> {
        let index = self.next.fetch_add(1, Ordering::SeqCst);
        let body = self.body(index);
        let header = signature::header(body.as_bytes(), &[SECRET], chrono::Utc::now().timestamp());
        let sent = Instant::now();
        let response = self
            .client
            .post(&*self.endpoint)
            .header("stripe-signature", header)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "delivery {index} answered {}",
            response.status()
        );
        Ok(sent.elapsed())
    }

    /// `n` deliveries by `concurrency` senders as fast as the server answers; per second.
    async fn saturate(&self, n: usize, concurrency: usize) -> anyhow::Result<f64> {
        let remaining = Arc::new(AtomicUsize::new(n));
        let started = Instant::now();
        let mut senders = Vec::new();
        for _ in 0..concurrency.max(1) {
            let (sender, remaining) = (self.clone(), remaining.clone());
            senders.push(tokio::spawn(async move {
                while take_one(&remaining) {
                    sender.send().await?;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for sender in senders {
            sender.await??;
        }
        Ok(n as f64 / started.elapsed().as_secs_f64())
    }

    /// One delivery every `1 / per_second` for `length`, whatever the answers; latencies.
    async fn paced(&self, per_second: u64, length: Duration) -> anyhow::Result<Vec<Duration>> {
        let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
        let deadline = Instant::now() + length;
        let mut sent = Vec::new();
        while Instant::now() < deadline {
            ticks.tick().await;
            let sender = self.clone();
            sent.push(tokio::spawn(async move { sender.send().await }));
        }
        let mut latencies = Vec::with_capacity(sent.len());
        for delivery in sent {
            latencies.push(delivery.await??);
        }
        Ok(latencies)
    }
}

/// Takes one unit of work from a shared countdown; false once none is left.
fn take_one(remaining: &AtomicUsize) -> bool {
    remaining
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        })
        .is_ok()
}

/// The physical floor: single-row INSERT + COMMIT of a `payload_len`-byte row into a
/// table with a text primary key, `concurrency` connections, in a fresh database.
async fn insert_commit_rate(
    admin_url: &str,
    n: usize,
    concurrency: usize,
    payload_len: usize,
) -> anyhow::Result<f64> {
    let scratch = Scratch::create(admin_url, "baseline").await?;
    let outcome = insert_commit_on(&scratch.url, n, concurrency, payload_len).await;
    scratch.drop_after(outcome).await
}

async fn insert_commit_on(
    url: &str,
    n: usize,
    concurrency: usize,
    payload_len: usize,
) -> anyhow::Result<f64> {
    let pool = PgPoolOptions::new()
        .max_connections(concurrency as u32)
        .connect(url)
        .await?;
    sqlx::query("CREATE TABLE bench_baseline (id text PRIMARY KEY, payload text NOT NULL)")
        .execute(&pool)
        .await?;
    let payload: Arc<str> = "x".repeat(payload_len).into();
    let remaining = Arc::new(AtomicUsize::new(n));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut writers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (pool, payload, remaining, next) = (
            pool.clone(),
            payload.clone(),
            remaining.clone(),
            next.clone(),
        );
        writers.push(tokio::spawn(async move {
            while take_one(&remaining) {
                let mut tx = pool.begin().await?;
                sqlx::query("INSERT INTO bench_baseline (id, payload) VALUES ($1, $2)")
                    .bind(format!("row_{}", next.fetch_add(1, Ordering::SeqCst)))
                    .bind(&*payload)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rate)
}

// ---------------------------------------------------------------------------------------
// Journal: appends through the repository at 1 and 8 writers, the global commitment's
// cost, and verify of a large journal.

async fn journal(
    url: &str,
    admin_url: &str,
    sizes: Sizes,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    eprintln!("== journal appends");
    let database = connect(url, 12).await?;
    let key = bench_ledger::bench_key()?;
    for writers in [1, 8] {
        let load = AppendLoad {
            appends: sizes.appends,
            writers,
        };
        let (mut plain, mut sealed, mut floor) = (0_f64, 0_f64, 0_f64);
        let mut p50 = Duration::MAX;
        for round in 0..sizes.rounds {
            let run =
                bench_ledger::appends(&database, load, &format!("off{writers}_{round}"), None)
                    .await?;
            plain = plain.max(run.rate);
            p50 = p50.min(run.p50);
            if writers == 8 {
                let run = bench_ledger::appends(
                    &database,
                    load,
                    &format!("on{writers}_{round}"),
                    Some(&key),
                )
                .await?;
                sealed = sealed.max(run.rate);
            }
            floor = floor.max(insert_commit_rate(admin_url, sizes.appends, writers, 300).await?);
        }
        eprintln!("   {writers} writers: {plain:.0}/s (p50 {p50:.1?}), baseline {floor:.0}/s");
        let name = if writers == 8 {
            "journal_append"
        } else {
            "journal_append_1"
        };
        let goal = if writers == 8 {
            ">= 0.7x at 8 writers"
        } else {
            "report only"
        };
        summary.insert(
            name.to_string(),
            Metric::rate(plain, floor, "events/s", goal).note(format!(
                "{writers} writers through the repository (hash chain, no sealer); baseline: \
                 single-row INSERT+COMMIT, {writers} connections, fresh database"
            )),
        );
        if writers == 1 {
            summary.insert(
                "journal_append_1_p50".to_string(),
                Metric::plain(ms(p50), "ms", "<= 5 ms"),
            );
        } else {
            summary.insert(
                "ledger_append".to_string(),
                Metric::rate(sealed, plain, "events/s", ">= 0.9x (issue 19)").note(
                    "8 writers with the sealer and checkpoints running; baseline: the same \
                     without them (journal_append), alternated, best of each",
                ),
            );
        }
    }
    // A journal that does not verify is a finding, not a reason to lose the other numbers.
    if let Err(error) = verify(&database, sizes, summary).await {
        eprintln!("   verify failed: {error:#}");
        summary.insert(
            "verify_1m".to_string(),
            Metric::plain(f64::NAN, "s", "< 60 s for 1,000,000 events (issue 19)")
                .note(format!("failed: {error:#}")),
        );
    }
    database.close().await;
    Ok(())
}

async fn verify(database: &Database, sizes: Sizes, summary: &mut Summary) -> anyhow::Result<()> {
    eprintln!("== verify: building a journal of {} events", sizes.events);
    bench_ledger::bulk_journal(database, sizes.events).await?;
    let key = bench_ledger::bench_key()?;
    ledger::make_checkpoint(database, &key, Duration::from_secs(600)).await?;
    let started = Instant::now();
    let rows = read_journal(database).await?;
    let floor = started.elapsed().as_secs_f64();
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
    eprintln!("   verify of {rows} events: {seconds:.1} s (reading them: {floor:.1} s)");
    summary.insert(
        "verify_1m".to_string(),
        Metric::duration(
            seconds,
            floor,
            "s",
            "< 60 s for 1,000,000 events (issue 19)",
        )
        .note(format!(
            "{rows} events (commitment + checkpoint + every chain); baseline: one read of \
                 every event's hashed columns in position order"
        )),
    );
    Ok(())
}

/// Streams every event's hashed columns to this process in position order; the count.
async fn read_journal(database: &Database) -> anyhow::Result<u64> {
    let Database::Postgres(pool) = database else {
        anyhow::bail!("the suite runs on PostgreSQL");
    };
    let mut rows = sqlx::query(
        "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload::text, metadata::text, recorded_at FROM events ORDER BY position",
    )
    .fetch(pool);
    let mut count = 0;
    while let Some(row) = rows.next().await {
        row?;
        count += 1;
    }
    Ok(count)
}

// ---------------------------------------------------------------------------------------
// Rebuild: every projection from a synthetic journal, against reading it and COPYing it.

const JOURNAL_GENERATOR: &str = include_str!("bench_journal.sql");

async fn rebuild(url: &str, sizes: Sizes, summary: &mut Summary) -> anyhow::Result<()> {
    let database = connect(url, 8).await?;
    let Database::Postgres(pool) = &database else {
        anyhow::bail!("the suite runs on PostgreSQL");
    };
    // 6.6 events per payment on average (see the generator).
    let payments = sizes.events * 10 / 66 + 100;
    eprintln!("== rebuild: generating about {} events", sizes.events);
    sqlx::raw_sql(&JOURNAL_GENERATOR.replace(":payments", &payments.to_string()))
        .execute(pool)
        .await
        .context("generating the journal")?;
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(pool)
        .await?;
    let floor = copy_journal(pool).await?;
    let mut seconds = 0.0;
    let mut parts = Vec::new();
    for projection in super::rebuild::select(None)? {
        let started = Instant::now();
        super::rebuild::rebuild(&database, std::slice::from_ref(&projection)).await?;
        let took = started.elapsed().as_secs_f64();
        parts.push(format!("{} {took:.1} s", projection.projection().name()));
        seconds += took;
    }
    eprintln!("   rebuild of {events} events: {seconds:.1} s; read + COPY: {floor:.1} s");
    summary.insert(
        "rebuild_1m".to_string(),
        Metric::duration(seconds, floor, "s", "< 30 s and >= 0.5x").note(format!(
            "{events} events, every projection ({}); baseline: COPY of the journal in \
             position order into an unlogged table",
            parts.join(", ")
        )),
    );
    database.close().await;
    Ok(())
}

/// Reads the journal with COPY TO and writes the same rows with COPY FROM into an
/// unlogged table; seconds.
async fn copy_journal(pool: &PgPool) -> anyhow::Result<f64> {
    let columns = "position, aggregate_type, aggregate_id, sequence, event_type, event_version, \
                   payload, metadata, recorded_at";
    sqlx::raw_sql(&format!(
        "CREATE UNLOGGED TABLE bench_copy AS SELECT {columns} FROM events WITH NO DATA"
    ))
    .execute(pool)
    .await?;
    let started = Instant::now();
    let mut source = pool
        .copy_out_raw(&format!(
            "COPY (SELECT {columns} FROM events ORDER BY position) TO STDOUT"
        ))
        .await?;
    let mut sink = pool.copy_in_raw("COPY bench_copy FROM STDIN").await?;
    while let Some(chunk) = source.next().await {
        sink.send(chunk?).await?;
    }
    sink.finish().await?;
    let seconds = started.elapsed().as_secs_f64();
    sqlx::raw_sql("DROP TABLE bench_copy").execute(pool).await?;
    Ok(seconds)
}

// ---------------------------------------------------------------------------------------
// Report: a 30-day revenue report over many payments, re-bucketed into another zone.

async fn report(url: &str, sizes: Sizes, summary: &mut Summary) -> anyhow::Result<()> {
    eprintln!("== report: generating {} payments", sizes.events);
    let database = connect(url, 4).await?;
    super::bench_dashboard::fill(&database, sizes.events as u64).await?;
    database.close().await;
    let server = Server::start(url, &[("LATCHKEY_API_TOKEN", API_TOKEN)]).await?;
    let client = reqwest::Client::new();
    let today = chrono::Utc::now().date_naive();
    let from = today - chrono::Duration::days(30);
    let path = format!(
        "{}/api/reports/revenue?from={from}&to={today}&group_by=device",
        server.url
    );
    let own_zones = p99_of(&client, &path, sizes.requests).await?;
    let rebucketed = p99_of(&client, &format!("{path}&tz=UTC"), sizes.requests).await?;
    eprintln!("   p99 {rebucketed:.1?} in UTC, {own_zones:.1?} in the targets' own zones");
    summary.insert(
        "report_tz_1m".to_string(),
        Metric::duration(ms(rebucketed), ms(own_zones), "ms (p99)", "< 100 ms").note(format!(
            "{} payments, 30-day revenue by device re-bucketed into UTC, {} sequential \
             requests; baseline: the same report in each target's own zone",
            sizes.events, sizes.requests
        )),
    );
    drop(server);
    Ok(())
}

/// The p99 of `requests` sequential GETs (after 5 untimed ones).
async fn p99_of(client: &reqwest::Client, url: &str, requests: usize) -> anyhow::Result<Duration> {
    let mut samples = Vec::with_capacity(requests);
    for index in 0..requests + 5 {
        let started = Instant::now();
        let response = client.get(url).bearer_auth(API_TOKEN).send().await?;
        let status = response.status();
        let body = response.text().await?;
        anyhow::ensure!(status.is_success(), "{url} answered {status}: {body:.300}");
        if index >= 5 {
            samples.push(started.elapsed());
        }
    }
    samples.sort();
    Ok(percentile(&samples, 0.99))
}

// ---------------------------------------------------------------------------------------
// The server under test, in its own process.

struct Server {
    child: std::process::Child,
    url: String,
}

impl Server {
    /// Starts `latchkey serve` (this same binary) on a free port and waits until ready.
    async fn start(database_url: &str, env: &[(&str, &str)]) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("LATCHKEY_LISTEN", format!("127.0.0.1:{port}"))
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,sqlx=error".to_string()),
            )
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting latchkey serve")?;
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for _ in 0..300 {
            let ready = client.get(format!("{}/ready", server.url)).send().await;
            if ready.is_ok_and(|response| response.status().is_success()) {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the server at {} was not ready within 30 s", server.url)
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&self.pid())
    }

    /// A `/proc/PID/status` memory field (`VmRSS`, `VmHWM`), in kB.
    fn memory_kb(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU time of a process (`self` or a pid), from `/proc/PID/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    // Linux's USER_HZ is 100 on every platform we run on.
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may hold spaces: state is 0, utime 11, stime 12.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> f64 {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / TICKS_PER_SECOND
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_string())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted
        .get(index.min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn print_table(summary: &Summary) {
    let cell = |value: Option<f64>| match value {
        Some(value) if value.abs() >= 100.0 => format!("{value:.0}"),
        Some(value) => format!("{value:.2}"),
        None => "-".to_string(),
    };
    println!(
        "{:<22} {:>10} {:>10} {:>7}  {:<34} goal",
        "name", "value", "baseline", "ratio", "unit"
    );
    for (name, metric) in summary {
        println!(
            "{:<22} {:>10} {:>10} {:>7}  {:<34} {}",
            name,
            cell(Some(metric.value)),
            cell(metric.baseline),
            cell(metric.ratio),
            metric.unit,
            metric.goal
        );
    }
}
