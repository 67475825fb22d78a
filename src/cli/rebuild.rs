//! `latchkey rebuild [NAME]`: empty the read models and fold the whole journal into them
//! again; `latchkey rebuild --check`: fold it into scratch tables and compare with the
//! live ones, changing nothing.
//!
//! The check runs in one snapshot on one connection. For every table of a projection it
//! creates a temporary table of the same name and shape; unqualified names resolve to
//! temporary tables first on both PostgreSQL and SQLite, so the projection's own SQL,
//! unchanged, writes into the scratch copy. Each projection is replayed up to its live
//! checkpoint as seen in the same snapshot, so a live projection that is merely behind
//! compares equal; then each pair of tables is compared with `EXCEPT` both ways. The
//! transaction is rolled back: the scratch tables vanish and nothing live is touched.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use latchkey_projections::Table;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::on_backend;
use crate::projections_runtime::{self, conn, record, ProjectionSubscriber};
use crate::store::journal::{self, Cursor, Journal};
use crate::store::repository::AppendSignal;
use crate::store::subscription::{
    BatchOutcome, Subscriber, SubscriptionOptions, SubscriptionRuntime,
};
use crate::store::{Database, PoolSize, Tx};

/// Events per transaction while rebuilding: large batches are much faster, and a rebuild
/// is an operator's deliberate, one-off job.
const REBUILD_BATCH_SIZE: i64 = 2_000;

/// Consecutive failed batches a rebuild retries before it gives up.
const REBUILD_RETRIES_MAX: u64 = 20;

/// Events read per query during a check.
const CHECK_PAGE_SIZE: i64 = 2_000;

/// Rows named per differing table in the check's report.
const DIFF_SAMPLE_ROWS: i64 = 5;

/// How often the progress line is redrawn.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, clap::Args)]
pub struct RebuildArgs {
    /// Only this projection: payments, sessions, audit_log, revenue or catalogue.
    pub name: Option<String>,
    /// Rebuild into scratch tables and compare with the live ones; change nothing and
    /// exit non-zero naming every difference.
    #[arg(long)]
    pub check: bool,
}

pub async fn run(settings: &Settings, args: RebuildArgs) -> anyhow::Result<()> {
    let database = Database::connect(&settings.database_url, PoolSize::default()).await?;
    database.migrate().await?;
    let selected = select(args.name.as_deref())?;
    let outcome = if args.check {
        check_and_report(&database, &selected).await
    } else {
        rebuild(&database, &selected).await
    };
    database.close().await;
    outcome
}

/// The projections named (all when `None`).
pub fn select(name: Option<&str>) -> anyhow::Result<Vec<Arc<ProjectionSubscriber>>> {
    let all = projections_runtime::subscribers();
    let Some(name) = name else {
        return Ok(all);
    };
    let names: Vec<&str> = all.iter().map(|p| p.projection().name()).collect();
    let chosen: Vec<_> = all
        .iter()
        .filter(|p| p.projection().name() == name)
        .cloned()
        .collect();
    if chosen.is_empty() {
        bail!(
            "no projection is called {name:?}; choose one of {}",
            names.join(", ")
        );
    }
    Ok(chosen)
}

/// Empties each projection and refills it from position 0, showing progress on stderr.
pub async fn rebuild(
    database: &Database,
    selected: &[Arc<ProjectionSubscriber>],
) -> anyhow::Result<()> {
    let journal = Journal::new(database.clone());
    let runtime = SubscriptionRuntime::new(
        journal.clone(),
        AppendSignal::default(),
        SubscriptionOptions::default(),
        Arc::new(Metrics::default()),
    );
    let total = journal.count().await?.max(0) as u64;
    for projection in selected {
        let name = projection.projection().name();
        runtime.reset(projection.as_ref()).await?;
        let started = Instant::now();
        let mut progress = Progress::new(name, total);
        let mut handled = 0_u64;
        let mut failures = 0;
        loop {
            // A running server replays the same projection from 0 too; the checkpoint's
            // compare-and-set lets one of each racing pair commit, and on PostgreSQL the
            // loser may fail with a serialization error instead: retry it, bounded.
            let outcome = match rebuild_batch(database, projection).await {
                Ok(outcome) => {
                    failures = 0;
                    outcome
                }
                Err(error) if failures < REBUILD_RETRIES_MAX => {
                    failures += 1;
                    tracing::debug!(error = %error, failures, "rebuild batch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * failures)).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            match outcome {
                BatchOutcome::Handled(count) => {
                    handled += count as u64;
                    progress.show(handled);
                }
                BatchOutcome::Lost => {}
                BatchOutcome::Idle => {
                    let cursor = journal::current_checkpoint(database, projection.name())
                        .await?
                        .unwrap_or(Cursor::START);
                    if !journal.has_events_after(cursor).await? {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        progress.finish(handled, started.elapsed());
    }
    Ok(())
}

/// One batch of a rebuild: like the subscription runtime's, but the whole batch goes to
/// the projection at once ([`latchkey_projections::Projection::apply_batch`]), which lets
/// the audit log insert many rows per statement.
async fn rebuild_batch(
    database: &Database,
    projection: &ProjectionSubscriber,
) -> anyhow::Result<BatchOutcome> {
    let name = projection.name();
    let mut tx = database.begin_subscriber().await?;
    let from = journal::load_checkpoint(&mut tx, name)
        .await?
        .unwrap_or(Cursor::START);
    let events = journal::read_after_in(&mut tx, from, REBUILD_BATCH_SIZE).await?;
    let Some(last) = events.last().map(|event| event.cursor()) else {
        tx.rollback().await?;
        return Ok(BatchOutcome::Idle);
    };
    let records: Vec<_> = events.iter().map(record).collect();
    projection
        .projection()
        .apply_batch(&mut conn(&mut tx), &records)
        .await?;
    let handled = i64::try_from(events.len())?;
    match journal::advance_checkpoint(&mut tx, name, from, last, handled).await {
        Ok(()) => {}
        Err(journal::CheckpointError::Moved) => {
            tx.rollback().await?;
            return Ok(BatchOutcome::Lost);
        }
        Err(journal::CheckpointError::Database(error)) => return Err(error.into()),
    }
    tx.commit().await?;
    Ok(BatchOutcome::Handled(events.len()))
}

/// A one-line progress bar on stderr.
struct Progress {
    name: &'static str,
    total: u64,
    drawn: Option<Instant>,
}

impl Progress {
    fn new(name: &'static str, total: u64) -> Self {
        let progress = Progress {
            name,
            total,
            drawn: None,
        };
        progress.draw(0);
        progress
    }

    fn show(&mut self, done: u64) {
        if self
            .drawn
            .is_some_and(|at| at.elapsed() < PROGRESS_INTERVAL)
        {
            return;
        }
        self.draw(done);
        self.drawn = Some(Instant::now());
    }

    fn draw(&self, done: u64) {
        const WIDTH: u64 = 30;
        let total = self.total.max(done).max(1);
        let filled = (done * WIDTH / total) as usize;
        let bar = format!(
            "{}{}",
            "#".repeat(filled),
            " ".repeat(WIDTH as usize - filled)
        );
        let percent = done * 100 / total;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rrebuilding {:<10} [{bar}] {done}/{} events {percent:>3}%",
            self.name, self.total
        );
        let _ = err.flush();
    }

    fn finish(&self, done: u64, elapsed: Duration) {
        self.draw(done);
        let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
        eprintln!(
            "\nrebuilt {}: {done} events in {:.1} s ({rate:.0} events/s)",
            self.name,
            elapsed.as_secs_f64()
        );
    }
}

async fn check_and_report(
    database: &Database,
    selected: &[Arc<ProjectionSubscriber>],
) -> anyhow::Result<()> {
    let differences = check(database, selected).await?;
    if differences.is_empty() {
        let names: Vec<&str> = selected.iter().map(|p| p.projection().name()).collect();
        println!(
            "ok: {} identical to a rebuild from position 0",
            names.join(", ")
        );
        return Ok(());
    }
    bail!(
        "the live read models differ from a rebuild from the journal:\n  {}\n\
         run `latchkey rebuild` to replace them, and look for a projection that is not a \
         pure fold of the journal",
        differences.join("\n  ")
    )
}

/// Rebuilds `selected` into scratch tables and returns every difference with the live
/// tables, one line per differing table (empty when identical).
pub async fn check(
    database: &Database,
    selected: &[Arc<ProjectionSubscriber>],
) -> anyhow::Result<Vec<String>> {
    // PostgreSQL: one REPEATABLE READ snapshot (not READ ONLY: it creates temporary
    // tables). SQLite: a deferred transaction, which holds one WAL snapshot and writes
    // only to the temporary database, so the live writer is never blocked.
    let mut tx = match database {
        Database::Postgres(_) => database.begin_subscriber().await?,
        Database::Sqlite(_) => database.begin_read().await?,
    };
    let mut checkpoints = Vec::new();
    for projection in selected {
        let cursor = journal::load_checkpoint(&mut tx, projection.name())
            .await?
            .unwrap_or(Cursor::START);
        checkpoints.push(cursor);
    }
    let schema = live_schema(&mut tx).await?;
    for projection in selected {
        for table in projection.projection().tables() {
            create_scratch(&mut tx, &schema, table.name)
                .await
                .with_context(|| format!("creating the scratch copy of {}", table.name))?;
        }
    }
    replay_into_scratch(&mut tx, selected, &checkpoints).await?;
    let mut differences = Vec::new();
    for projection in selected {
        for table in projection.projection().tables() {
            if let Some(difference) = compare(&mut tx, &schema, table).await? {
                differences.push(format!("{}: {difference}", projection.projection().name()));
            }
        }
    }
    tx.rollback().await?;
    Ok(differences)
}

/// The schema the live tables are in (`main` on SQLite).
async fn live_schema(tx: &mut Tx) -> anyhow::Result<String> {
    Ok(match tx {
        Tx::Postgres(tx) => {
            sqlx::query_scalar("SELECT current_schema()")
                .fetch_one(&mut **tx)
                .await?
        }
        Tx::Sqlite(_) => "main".to_owned(),
    })
}

async fn create_scratch(tx: &mut Tx, schema: &str, table: &str) -> anyhow::Result<()> {
    match tx {
        Tx::Postgres(tx) => {
            let sql = format!(
                "CREATE TEMPORARY TABLE {table} (LIKE {schema}.{table} INCLUDING ALL) \
                 ON COMMIT DROP"
            );
            sqlx::query(&sql).execute(&mut **tx).await?;
        }
        Tx::Sqlite(tx) => {
            let ddl: String = sqlx::query_scalar(
                "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = $1",
            )
            .bind(table)
            .fetch_one(&mut **tx)
            .await?;
            let Some(rest) = ddl.strip_prefix("CREATE TABLE") else {
                bail!("unexpected definition of {table}: {ddl}");
            };
            let sql = format!("CREATE TEMPORARY TABLE{rest}");
            sqlx::query(&sql).execute(&mut **tx).await?;
        }
    }
    Ok(())
}

/// Folds the journal, in global order, into the scratch tables: each event goes to the
/// projections whose live checkpoint is at or past it.
async fn replay_into_scratch(
    tx: &mut Tx,
    selected: &[Arc<ProjectionSubscriber>],
    checkpoints: &[Cursor],
) -> anyhow::Result<()> {
    let Some(last) = checkpoints.iter().max().copied() else {
        return Ok(());
    };
    let mut cursor = Cursor::START;
    while cursor < last {
        let events = journal::read_after_in(tx, cursor, CHECK_PAGE_SIZE).await?;
        let Some(page_end) = events.last().map(|event| event.cursor()) else {
            break;
        };
        let records: Vec<_> = events.iter().map(record).collect();
        for (projection, checkpoint) in selected.iter().zip(checkpoints) {
            // Pages are in global order, so the events up to the checkpoint are a prefix.
            let upto = events.partition_point(|event| event.cursor() <= *checkpoint);
            projection
                .projection()
                .apply_batch(&mut conn(tx), &records[..upto])
                .await?;
        }
        cursor = page_end;
    }
    Ok(())
}

/// `None` when the scratch and live copies of `table` hold the same rows; otherwise how
/// many rows differ each way and the keys of a few.
async fn compare(tx: &mut Tx, schema: &str, table: &Table) -> anyhow::Result<Option<String>> {
    let scratch = match tx {
        Tx::Postgres(_) => format!("pg_temp.{}", table.name),
        Tx::Sqlite(_) => format!("temp.{}", table.name),
    };
    let live = format!("{schema}.{}", table.name);
    let key = table
        .key
        .iter()
        .map(|column| format!("CAST({column} AS TEXT)"))
        .collect::<Vec<_>>()
        .join(" || '/' || ");
    let only_live = sample(tx, &live, &scratch, &key).await?;
    let only_rebuilt = sample(tx, &scratch, &live, &key).await?;
    if only_live.0 == 0 && only_rebuilt.0 == 0 {
        return Ok(None);
    }
    Ok(Some(format!(
        "table {} has {} row(s) only in the live copy (keys {}) and {} only in the rebuild (keys {})",
        table.name,
        only_live.0,
        only_live.1.join(", "),
        only_rebuilt.0,
        only_rebuilt.1.join(", ")
    )))
}

/// Rows of `left` missing from `right`: how many, and the keys of the first few.
async fn sample(
    tx: &mut Tx,
    left: &str,
    right: &str,
    key: &str,
) -> anyhow::Result<(i64, Vec<String>)> {
    let difference = format!("SELECT * FROM {left} EXCEPT SELECT * FROM {right}");
    let count_sql = format!("SELECT COUNT(*) FROM ({difference}) d");
    let keys_sql =
        format!("SELECT {key} FROM ({difference}) d ORDER BY 1 LIMIT {DIFF_SAMPLE_ROWS}");
    let count: i64 = on_backend!(tx, c => sqlx::query_scalar(&count_sql).fetch_one(c).await?);
    if count == 0 {
        return Ok((0, Vec::new()));
    }
    let keys: Vec<String> = on_backend!(tx, c => sqlx::query_scalar(&keys_sql).fetch_all(c).await?);
    Ok((count, keys))
}
