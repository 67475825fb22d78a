//! Module health and the Stripe catch-up status, shared through the database so every
//! instance shows the same dashboard.
//!
//! Each instance observes its own calls ([`ModuleHealth`], in memory, updated on every
//! call without touching the database). A publisher task copies this instance's snapshot
//! of every module into its own `module_health` row whenever it changed (checked every
//! [`PUBLISH_INTERVAL`]); readers merge the rows of all instances ([`merge`]): the newest
//! error and the newest success anywhere, the failures counted since that success, the
//! totals summed. Whether a module is configured is the reader's own (settings are shared,
//! see [`crate::settings_sync`]). The catch-up job's last run is one JSON document in
//! `shared_status`, written by whichever instance ran it.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::http::AppState;
use crate::integrations::health::{HealthState, ModuleHealth, ModuleHealthSnapshot};
use crate::integrations::stripe::CatchUpStatus;
use crate::on_pool;
use crate::store::Database;

/// How often an instance publishes its module health when it changed: the longest another
/// instance's dashboard lags behind a call made here.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(500);

/// The `shared_status` name of the catch-up job's last run.
const CATCH_UP: &str = "stripe_catch_up";

/// Rows of instances silent for this long are deleted (each start is a new instance): their
/// last error is old news by then.
const FORGET_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;

type Row = (
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    i64,
);

/// Every module's health as all instances observed it, in this instance's module order.
pub async fn modules(state: &AppState) -> Result<Vec<ModuleHealthSnapshot>, sqlx::Error> {
    let local = local_snapshots(state);
    let sql = "SELECT module, instance, last_error, last_error_at_ms, last_ok_at_ms, \
               consecutive_failures, calls_ok_total, calls_failed_total FROM module_health";
    let rows: Vec<Row> =
        on_pool!(&state.database, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
    Ok(local
        .into_iter()
        .map(|snapshot| {
            // This instance's own row is its live snapshot, not what it published last.
            let own = row_of(&snapshot, &state.instance);
            let rows: Vec<&Row> = rows
                .iter()
                .filter(|row| row.0 == snapshot.name && *row.1 != *state.instance)
                .chain([&own])
                .collect();
            merge(snapshot, &rows)
        })
        .collect())
}

/// This instance's own snapshots: the integrations' and email's.
fn local_snapshots(state: &AppState) -> Vec<ModuleHealthSnapshot> {
    let gateways = state.gateways.current();
    gateways
        .health
        .iter()
        .chain([&state.mail.health])
        .map(ModuleHealth::snapshot)
        .collect()
}

/// A snapshot as the row it is published as.
fn row_of(snapshot: &ModuleHealthSnapshot, instance: &str) -> Row {
    let count = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    (
        snapshot.name.clone(),
        instance.to_string(),
        snapshot.last_error.clone(),
        snapshot.last_error_at.map(|at| at.timestamp_millis()),
        snapshot.last_ok_at.map(|at| at.timestamp_millis()),
        count(snapshot.consecutive_failures),
        count(snapshot.calls_ok_total),
        count(snapshot.calls_failed_total),
    )
}

/// `local` (for its name and whether it is configured here) with the observations of every
/// instance in `rows`.
fn merge(local: ModuleHealthSnapshot, rows: &[&Row]) -> ModuleHealthSnapshot {
    let last_error_row = rows
        .iter()
        .filter(|row| row.3.is_some())
        .max_by_key(|row| row.3);
    let last_error_at_ms = last_error_row.and_then(|row| row.3);
    let last_ok_at_ms = rows.iter().filter_map(|row| row.4).max();
    // Failures since the newest success anywhere: an instance whose last error is older
    // than that success is not failing any more.
    let consecutive_failures: i64 = rows
        .iter()
        .filter(|row| row.3.is_some() && row.3 > last_ok_at_ms)
        .map(|row| row.5)
        .sum();
    let consecutive_failures = u64::try_from(consecutive_failures).unwrap_or(0);
    let state = if !local.configured {
        HealthState::NotConfigured
    } else if consecutive_failures > 0 {
        HealthState::Failing
    } else {
        HealthState::Ok
    };
    let total = |pick: fn(&Row) -> i64| {
        u64::try_from(rows.iter().map(|row| pick(row)).sum::<i64>()).unwrap_or(0)
    };
    ModuleHealthSnapshot {
        name: local.name,
        configured: local.configured,
        state,
        last_error: last_error_row.and_then(|row| row.2.clone()),
        last_error_at: last_error_at_ms.and_then(from_ms),
        last_ok_at: last_ok_at_ms.and_then(from_ms),
        consecutive_failures,
        calls_ok_total: total(|row| row.6),
        calls_failed_total: total(|row| row.7),
    }
}

fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

/// Writes this instance's row of each module.
async fn publish(
    database: &Database,
    instance: &str,
    snapshots: &[ModuleHealthSnapshot],
) -> Result<(), sqlx::Error> {
    let now_ms = Utc::now().timestamp_millis();
    let sql = "INSERT INTO module_health (module, instance, last_error, last_error_at_ms, \
               last_ok_at_ms, consecutive_failures, calls_ok_total, calls_failed_total, \
               updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
               ON CONFLICT (module, instance) DO UPDATE SET last_error = excluded.last_error, \
               last_error_at_ms = excluded.last_error_at_ms, last_ok_at_ms = excluded.last_ok_at_ms, \
               consecutive_failures = excluded.consecutive_failures, \
               calls_ok_total = excluded.calls_ok_total, \
               calls_failed_total = excluded.calls_failed_total, updated_at_ms = excluded.updated_at_ms";
    for snapshot in snapshots {
        let row = row_of(snapshot, instance);
        on_pool!(database, pool => {
            sqlx::query(sql)
                .bind(&row.0)
                .bind(&row.1)
                .bind(&row.2)
                .bind(row.3)
                .bind(row.4)
                .bind(row.5)
                .bind(row.6)
                .bind(row.7)
                .bind(now_ms)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
    }
    let sql = "DELETE FROM module_health WHERE updated_at_ms < $1";
    on_pool!(database, pool => sqlx::query(sql).bind(now_ms - FORGET_AFTER_MS).execute(pool).await.map(|_| ()))
}

/// Publishes this instance's module health whenever it changed, until `shutdown`.
pub fn spawn_publisher(state: AppState, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let instance = state.instance.clone();
        let mut published: Option<Vec<ModuleHealthSnapshot>> = None;
        loop {
            let snapshots = local_snapshots(&state);
            if published.as_ref() != Some(&snapshots) {
                let outcome = tokio::select! {
                    outcome = publish(&state.database, &instance, &snapshots) => outcome,
                    _ = shutdown.cancelled() => return,
                };
                match outcome {
                    Ok(()) => published = Some(snapshots),
                    Err(error) => warn!(error = %error, "could not publish module health"),
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(PUBLISH_INTERVAL) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    })
}

/// Stores the catch-up job's last run for every instance. A run skipped because another
/// instance held the job's lock is not stored: it says nothing about Stripe.
pub async fn save_catch_up(database: &Database, status: &CatchUpStatus) {
    let skipped = status.error.is_none() && status.report.as_ref().is_some_and(|r| !r.ran);
    if skipped {
        return;
    }
    let Ok(body) = serde_json::to_string(status) else {
        return;
    };
    let sql = "INSERT INTO shared_status (name, body, updated_at_ms) VALUES ($1, $2, $3) \
               ON CONFLICT (name) DO UPDATE SET body = excluded.body, \
               updated_at_ms = excluded.updated_at_ms";
    let saved = on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(CATCH_UP)
            .bind(&body)
            .bind(Utc::now().timestamp_millis())
            .execute(pool)
            .await
            .map(|_| ())
    });
    if let Err(error) = saved {
        warn!(error = %error, "could not store the catch-up status");
    }
}

/// The catch-up job's last run in any instance.
pub async fn catch_up(database: &Database) -> Result<Option<CatchUpStatus>, sqlx::Error> {
    let sql = "SELECT body FROM shared_status WHERE name = $1";
    let body: Option<String> = on_pool!(database, pool => {
        sqlx::query_scalar(sql).bind(CATCH_UP).fetch_optional(pool).await
    })?;
    Ok(body.and_then(|body| serde_json::from_str(&body).ok()))
}
