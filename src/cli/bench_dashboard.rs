//! `latchkey bench dashboard`: render times of the operator pages with a million payments.
//!
//! For each size (the baseline, 1,000 payments by default, then the full size), a fresh
//! PostgreSQL database is created, migrated and filled by `bench_dashboard.sql` (one
//! `INSERT … SELECT` per read-model table: writing the projections' rows directly loads a
//! million payments in about a minute, where folding ~6.6 million synthetic journal
//! events as `scripts/bench-projections` does would take half an hour). The application is
//! then built in-process on a free port and each page is fetched over HTTP through the
//! real router by a logged-in admin (a user and a dashboard session made directly in the
//! accounts tables), sequentially: p50 and p99 per page and size, and the ratio to the
//! baseline.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use sqlx::Connection;

use crate::config::Settings;
use crate::startup::{Application, BuildOptions};

const GENERATOR: &str = include_str!("bench_dashboard.sql");

/// Options of `latchkey bench dashboard`.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// A PostgreSQL server URL (any database on it): the benchmark creates and drops its own.
    #[arg(
        long,
        env = "BENCH_ADMIN_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    admin_url: String,
    /// Payments in the measured database.
    #[arg(long, default_value_t = 1_000_000)]
    payments: u64,
    /// Payments in the baseline database, measured in the same run.
    #[arg(long, default_value_t = 1_000)]
    baseline: u64,
    /// Timed requests per page (after 10 untimed ones).
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Keep the databases afterwards (their names are printed).
    #[arg(long)]
    keep: bool,
}

/// The pages measured, by name and path (the report covers the last 90 days).
fn pages() -> Vec<(&'static str, String)> {
    let today = Utc::now().date_naive();
    let from = today - chrono::Duration::days(89);
    vec![
        ("payments page", "/dashboard/payments".to_string()),
        (
            "filtered payments page",
            "/dashboard/payments?status=succeeded&door=d7".to_string(),
        ),
        (
            "90-day report",
            format!("/dashboard/reports?from={from}&to={today}&group_by=day"),
        ),
    ]
}

/// p50 and p99 of one page in one database.
struct Timing {
    p50: Duration,
    p99: Duration,
}

pub async fn run(args: DashboardArgs) -> anyhow::Result<()> {
    let mut results: Vec<(u64, Vec<Timing>)> = Vec::new();
    for size in [args.baseline, args.payments] {
        let name = format!("latchkey_bench_dashboard_{}_{size}", std::process::id());
        let url = create_database(&args.admin_url, &name).await?;
        let outcome = measure(&url, size, args.requests).await;
        if args.keep {
            eprintln!("kept database {name}");
        } else {
            drop_database(&args.admin_url, &name).await?;
        }
        results.push((size, outcome?));
    }
    print_results(&results);
    Ok(())
}

async fn measure(url: &str, payments: u64, requests: usize) -> anyhow::Result<Vec<Timing>> {
    let vars = HashMap::from([
        ("DATABASE_URL".to_string(), url.to_string()),
        ("LATCHKEY_LISTEN".to_string(), "127.0.0.1:0".to_string()),
    ]);
    let settings = Settings::from_vars(&vars)?;
    let application = Application::build_with(settings, BuildOptions::default()).await?;
    let database = application.state().database.clone();
    eprintln!("== {payments} payments: generating");
    let started = Instant::now();
    fill(&database, payments).await?;
    eprintln!("   generated in {:.1?}", started.elapsed());
    let cookie = log_in(&database).await?;
    let address = format!("http://127.0.0.1:{}", application.port());
    let shutdown = application.shutdown_token();
    let server = tokio::spawn(application.run_until_stopped());
    // No redirects: a page answering 303 to the login page must count as a failure.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut timings = Vec::new();
    for (name, path) in pages() {
        let timing = time_page(&client, &format!("{address}{path}"), &cookie, requests)
            .await
            .with_context(|| format!("measuring the {name} ({path})"))?;
        eprintln!("   {name}: p50 {:.1?} p99 {:.1?}", timing.p50, timing.p99);
        timings.push(timing);
    }
    shutdown.cancel();
    let _ = server.await;
    Ok(timings)
}

/// Runs the generator, then VACUUM ANALYZE (index-only scans and fresh statistics, as
/// autovacuum would leave a live database).
pub(super) async fn fill(database: &crate::store::Database, payments: u64) -> anyhow::Result<()> {
    let crate::store::Database::Postgres(pool) = database else {
        anyhow::bail!("the dashboard benchmark runs on PostgreSQL");
    };
    let sql = GENERATOR.replace(":payments", &payments.to_string());
    let mut conn = pool.acquire().await?;
    sqlx::raw_sql(&sql)
        .execute(&mut *conn)
        .await
        .context("generating payments")?;
    sqlx::raw_sql("VACUUM ANALYZE").execute(&mut *conn).await?;
    Ok(())
}

/// An enrolled admin with a logged-in session; the `Cookie` header value.
async fn log_in(database: &crate::store::Database) -> anyhow::Result<String> {
    use crate::accounts::{sessions, users, SessionStage};
    let user = users::create(
        database,
        "bench@example.com",
        crate::http::auth::Role::Admin,
        "-",
        false,
    )
    .await
    .map_err(|error| anyhow::anyhow!("creating the benchmark user: {error}"))?;
    users::begin_totp(database, &user.user_id, "JBSWY3DPEHPK3PXP", None).await?;
    users::confirm_totp(database, &user.user_id, 1, &[]).await?;
    let (cookie, _) = sessions::create(database, &user.user_id, SessionStage::Full).await?;
    Ok(format!("{}={cookie}", sessions::COOKIE_NAME))
}

async fn time_page(
    client: &reqwest::Client,
    url: &str,
    cookie: &str,
    requests: usize,
) -> anyhow::Result<Timing> {
    for _ in 0..10 {
        fetch(client, url, cookie).await?;
    }
    let mut samples = Vec::with_capacity(requests);
    for _ in 0..requests.max(1) {
        let started = Instant::now();
        fetch(client, url, cookie).await?;
        samples.push(started.elapsed());
    }
    samples.sort();
    Ok(Timing {
        p50: percentile(&samples, 0.50),
        p99: percentile(&samples, 0.99),
    })
}

async fn fetch(client: &reqwest::Client, url: &str, cookie: &str) -> anyhow::Result<()> {
    let response = client.get(url).header("cookie", cookie).send().await?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status.is_success(), "{url} answered {status}: {body:.300}");
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted
        .get(index.min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn print_results(results: &[(u64, Vec<Timing>)]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("page render time (full HTTP request through the router, logged in, sequential)");
    println!(
        "{:<24} {:>10} {:>14} {:>14} {:>12}",
        "page", "payments", "p50 ms", "p99 ms", "p99 ÷ base"
    );
    let Some((_, baseline)) = results.first() else {
        return;
    };
    for (index, (name, _)) in pages().iter().enumerate() {
        for (size, timings) in results {
            let Some(timing) = timings.get(index) else {
                continue;
            };
            let base = baseline.get(index).map(|t| ms(t.p99)).unwrap_or(f64::NAN);
            println!(
                "{:<24} {:>10} {:>14.1} {:>14.1} {:>12.2}",
                name,
                size,
                ms(timing.p50),
                ms(timing.p99),
                ms(timing.p99) / base
            );
        }
    }
}

pub(super) async fn create_database(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .with_context(|| {
            format!("connecting to {admin_url} (set --admin-url / BENCH_ADMIN_URL)")
        })?;
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    let mut url = url::Url::parse(admin_url).context("--admin-url is not a URL")?;
    url.set_path(name);
    Ok(url.to_string())
}

pub(super) async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(admin_url).await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    Ok(())
}
