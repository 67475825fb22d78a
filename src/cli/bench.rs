//! `latchkey bench webhooks`: signed deliveries against a running server, compared with
//! the database's own single-row INSERT+COMMIT rate measured in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::config::Settings;
use crate::integrations::stripe::signature;
use crate::on_pool;
use crate::store::{Database, PoolSize};

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// N signed payment_intent.succeeded deliveries at concurrency C.
    Webhooks {
        /// The server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
        #[arg(long, default_value_t = 2000)]
        n: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Render times of the operator pages over 1,000,000 payments in a fresh PostgreSQL
    /// database, against a 1,000-payment baseline measured in the same run.
    Dashboard(super::bench_dashboard::DashboardArgs),
    /// Append throughput with the global commitment against without it, and `verify` of
    /// 1,000,000 events, in a fresh PostgreSQL database.
    Ledger(super::bench_ledger::LedgerArgs),
    /// The whole suite, each benchmark against its baseline in the same run, on fresh
    /// PostgreSQL databases: a table on stdout and `target/bench/summary.json`.
    All(super::bench_all::AllArgs),
}

pub async fn run(target: BenchTarget, settings: &Settings) -> anyhow::Result<()> {
    match target {
        BenchTarget::Webhooks {
            url,
            n,
            concurrency,
        } => webhooks(settings, &url, n, concurrency).await,
        BenchTarget::Dashboard(args) => super::bench_dashboard::run(args).await,
        BenchTarget::Ledger(args) => super::bench_ledger::run(args).await,
        BenchTarget::All(args) => super::bench_all::run(args).await,
    }
}

async fn webhooks(
    settings: &Settings,
    url: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let secret = settings
        .stripe
        .webhook_secrets
        .first()
        .map(|s| s.expose_secret().to_string())
        .context("set STRIPE_WEBHOOK_SECRET to the server's webhook secret")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let endpoint = format!("{}/api/stripe/webhook", url.trim_end_matches('/'));
    let run = uuid::Uuid::new_v4().simple().to_string();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, endpoint, secret, run, next) = (
            client.clone(),
            endpoint.clone(),
            secret.clone(),
            run.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let body = json!({
                    "id": format!("evt_bench_{run}_{i}"),
                    "object": "event",
                    "api_version": "2026-09-30.endive",
                    "created": chrono::Utc::now().timestamp(),
                    "livemode": false,
                    "type": "payment_intent.succeeded",
                    "data": { "object": { "id": format!("pi_bench_{i}"), "object": "payment_intent",
                        "amount": 500, "amount_received": 500, "currency": "eur", "status": "succeeded",
                        "metadata": { "latchkey_payment_id": uuid::Uuid::new_v4().to_string() } } },
                    "request": { "id": null, "idempotency_key": null },
                })
                .to_string();
                let header =
                    signature::header(body.as_bytes(), &[&secret], chrono::Utc::now().timestamp());
                let sent = Instant::now();
                let response = client
                    .post(&endpoint)
                    .header("stripe-signature", header)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "delivery {i} answered {}",
                    response.status()
                );
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for worker in workers {
        latencies.extend(worker.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let rate = n as f64 / elapsed.as_secs_f64();
    let baseline = insert_commit_baseline(settings, n, concurrency).await?;
    println!("webhook deliveries: {n} at concurrency {concurrency} in {elapsed:.2?}");
    println!("  deliveries/s: {rate:.0}");
    println!(
        "  latency p50: {:.2?}  p99: {:.2?}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99)
    );
    println!(
        "baseline single-row INSERT+COMMIT/s (same database, same concurrency): {baseline:.0}"
    );
    println!("ratio deliveries/s ÷ baseline: {:.2}", rate / baseline);
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Single-row INSERT + COMMIT into a scratch table, at the same concurrency.
async fn insert_commit_baseline(
    settings: &Settings,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let pool_size = u32::try_from(concurrency.clamp(1, 64)).unwrap_or(16);
    let database = Database::connect(
        &settings.database_url,
        PoolSize {
            max_connections: pool_size,
        },
    )
    .await?;
    on_pool!(&database, pool => {
        sqlx::query("CREATE TABLE IF NOT EXISTS bench_baseline (id TEXT PRIMARY KEY, payload TEXT NOT NULL)")
            .execute(pool)
            .await?;
        sqlx::query("DELETE FROM bench_baseline").execute(pool).await?;
    });
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (database, next) = (database.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                let mut tx = database.begin().await?;
                crate::on_backend!(&mut tx, conn => {
                    sqlx::query("INSERT INTO bench_baseline (id, payload) VALUES ($1, $2)")
                        .bind(format!("row_{i}"))
                        .bind("{\"bench\":true}")
                        .execute(conn)
                        .await?;
                });
                tx.commit().await?;
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    on_pool!(&database, pool => {
        sqlx::query("DROP TABLE bench_baseline").execute(pool).await?;
    });
    database.close().await;
    Ok(rate)
}
