//! Glue between the projections crate and the journal: each [`Projection`] runs as a
//! [`Subscriber`] with its own checkpoint (`projection:<name>`), all of them driven by one
//! background task.
//!
//! One task and one singleton lock for the five read models, rather than five: on
//! PostgreSQL every singleton holds a pooled connection for as long as it runs, and the
//! read models have no reason to run on different instances. Each projection still
//! commits its own batches and checkpoint: a failing projection is retried (the round
//! backs off) while the others keep handling a batch each round.
//!
//! Lag (events committed after a projection's checkpoint) is exported as
//! `latchkey_projection_lag_events{projection}` and returned by [`status`], which
//! `/api/health/modules` shows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use latchkey_projections::{Conn, EventRecord, Projection};
use serde::Serialize;
use sqlx::pool::PoolConnection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::on_pool;
use crate::store::journal::{self, JournalEvent};
use crate::store::repository::AppendSignal;
use crate::store::subscription::{
    BatchOutcome, Subscriber, SubscriptionOptions, SubscriptionRuntime,
};
use crate::store::{Database, Tx};

/// The singleton lock all projections run under.
const LOCK_NAME: &str = "projections";

/// Lag gauges are refreshed at most this often while the projections work: each refresh
/// counts the unhandled events of every projection.
const LAG_REFRESH: Duration = Duration::from_secs(1);

/// How often the gauges are refreshed while the projections are idle: lag can still grow
/// then (events held back behind another instance's long transaction), but slowly.
const LAG_REFRESH_IDLE: Duration = Duration::from_secs(10);

/// A projection seen as a journal subscriber.
pub struct ProjectionSubscriber {
    projection: Arc<dyn Projection>,
    checkpoint: String,
}

impl ProjectionSubscriber {
    pub fn new(projection: Arc<dyn Projection>) -> Self {
        let checkpoint = checkpoint_name(projection.name());
        ProjectionSubscriber {
            projection,
            checkpoint,
        }
    }

    pub fn projection(&self) -> &Arc<dyn Projection> {
        &self.projection
    }
}

/// The checkpoint (subscriber) name of a projection.
pub fn checkpoint_name(projection: &str) -> String {
    format!("projection:{projection}")
}

/// Lends the connection of a transaction to the projections crate.
pub fn conn(tx: &mut Tx) -> Conn<'_> {
    match tx {
        Tx::Postgres(tx) => Conn::Postgres(tx),
        Tx::Sqlite(tx) => Conn::Sqlite(tx),
    }
}

/// The projections crate's view of a journal event.
pub fn record(event: &JournalEvent) -> EventRecord<'_> {
    EventRecord {
        position: event.position,
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        sequence: event.sequence,
        event_type: &event.event_type,
        event_version: &event.event_version,
        payload: &event.payload,
        metadata: &event.metadata,
        recorded_at: event.recorded_at,
    }
}

#[async_trait]
impl Subscriber for ProjectionSubscriber {
    fn name(&self) -> &str {
        &self.checkpoint
    }

    async fn apply(&self, tx: &mut Tx, event: &JournalEvent) -> anyhow::Result<()> {
        self.projection
            .apply(&mut conn(tx), &record(event))
            .await
            .map_err(anyhow::Error::from)
    }

    async fn reset(&self, tx: &mut Tx) -> anyhow::Result<()> {
        self.projection
            .reset(&mut conn(tx))
            .await
            .map_err(anyhow::Error::from)
    }
}

/// Every projection as a subscriber, in registration order.
pub fn subscribers() -> Vec<Arc<ProjectionSubscriber>> {
    latchkey_projections::all()
        .into_iter()
        .map(|projection| Arc::new(ProjectionSubscriber::new(projection)))
        .collect()
}

/// A pooled connection for reading projection tables outside a subscriber.
pub enum PooledConn {
    Postgres(PoolConnection<sqlx::Postgres>),
    Sqlite(PoolConnection<sqlx::Sqlite>),
}

impl PooledConn {
    pub async fn acquire(database: &Database) -> Result<Self, sqlx::Error> {
        Ok(match database {
            Database::Postgres(pool) => PooledConn::Postgres(pool.acquire().await?),
            Database::Sqlite(pool) => PooledConn::Sqlite(pool.acquire().await?),
        })
    }

    pub fn conn(&mut self) -> Conn<'_> {
        match self {
            PooledConn::Postgres(conn) => Conn::Postgres(conn),
            PooledConn::Sqlite(conn) => Conn::Sqlite(conn),
        }
    }
}

/// Where a projection is in the journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProjectionStatus {
    pub projection: String,
    /// Last journal position handled (0 before the first event).
    pub position: i64,
    pub events_handled: i64,
    /// Committed events the projection has not handled yet.
    pub lag_events: i64,
}

/// Position and lag of every projection, for `/api/health/modules` and the metrics.
pub async fn status(database: &Database) -> anyhow::Result<Vec<ProjectionStatus>> {
    let checkpoint_sql = "SELECT transaction_id, position, events_handled \
                          FROM subscription_checkpoints WHERE name = $1";
    let lag_sql = "SELECT COUNT(*) FROM events WHERE (transaction_id, position) > ($1, $2)";
    let mut statuses = Vec::new();
    for projection in latchkey_projections::all() {
        let name = checkpoint_name(projection.name());
        let checkpoint: Option<(i64, i64, i64)> = on_pool!(database, pool => {
            sqlx::query_as(checkpoint_sql).bind(&name).fetch_optional(pool).await?
        });
        let (transaction_id, position, events_handled) = checkpoint.unwrap_or((0, 0, 0));
        let lag_events: i64 = on_pool!(database, pool => {
            sqlx::query_scalar(lag_sql)
                .bind(transaction_id)
                .bind(position)
                .fetch_one(pool)
                .await?
        });
        statuses.push(ProjectionStatus {
            projection: projection.name().to_owned(),
            position,
            events_handled,
            lag_events,
        });
    }
    Ok(statuses)
}

/// Sets `latchkey_projection_lag_events` and `latchkey_projection_position`.
pub fn record_metrics(metrics: &Metrics, statuses: &[ProjectionStatus]) {
    for status in statuses {
        let labels = [("projection", status.projection.as_str())];
        metrics.set_gauge(
            "latchkey_projection_lag_events",
            &labels,
            status.lag_events as f64,
        );
        metrics.set_gauge(
            "latchkey_projection_position",
            &labels,
            status.position as f64,
        );
    }
}

/// What the projection task needs from the application.
pub struct ProjectionTask {
    pub runtime: SubscriptionRuntime,
    pub database: Database,
    pub appended: AppendSignal,
    pub options: SubscriptionOptions,
    pub metrics: Arc<Metrics>,
}

impl ProjectionTask {
    /// Runs every projection until `shutdown` is cancelled (on PostgreSQL, on the one
    /// instance holding the `projections` lock; the others take over if it dies).
    pub fn spawn(self, shutdown: CancellationToken) -> JoinHandle<()> {
        let task = Arc::new(self);
        tokio::spawn(async move {
            let leases = task.runtime.leases().clone();
            let takeover = task.options.takeover_interval;
            leases
                .run(LOCK_NAME, takeover, &shutdown, |token| {
                    let task = task.clone();
                    async move {
                        info!("projections running");
                        task.run(&subscribers(), &token).await;
                        info!("projections stopped");
                    }
                })
                .await;
        })
    }

    async fn run(&self, projections: &[Arc<ProjectionSubscriber>], shutdown: &CancellationToken) {
        let mut wake = self.appended.subscribe();
        let mut delay = self.options.retry_delay;
        let mut lag_refreshed: Option<Instant> = None;
        let mut was_busy = false;
        while !shutdown.is_cancelled() {
            let mut busy = false;
            let mut failed = false;
            for projection in projections {
                match self.runtime.run_batch(projection.as_ref()).await {
                    Ok(BatchOutcome::Handled(_)) => busy = true,
                    Ok(BatchOutcome::Idle) => {}
                    Ok(BatchOutcome::Lost) => {
                        warn!(
                            projection = projection.name(),
                            "another instance handled this batch"
                        )
                    }
                    Err(error) => {
                        failed = true;
                        self.metrics.increment(
                            "latchkey_subscription_failures_total",
                            &[("subscriber", projection.name())],
                        );
                        error!(
                            projection = projection.name(),
                            error.message = %error,
                            error.cause_chain = ?error,
                            "projection batch failed; it will be retried"
                        );
                    }
                }
            }
            // Refresh when due, and at once when the projections have just caught up, so
            // the gauges show 0 as soon as they are.
            let caught_up = was_busy && !busy;
            let interval = if busy { LAG_REFRESH } else { LAG_REFRESH_IDLE };
            was_busy = busy;
            if caught_up || lag_refreshed.is_none_or(|at| at.elapsed() >= interval) {
                match status(&self.database).await {
                    Ok(statuses) => record_metrics(&self.metrics, &statuses),
                    Err(error) => warn!(error = %error, "could not measure projection lag"),
                }
                lag_refreshed = Some(Instant::now());
            }
            if failed {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => {}
                }
                delay = (delay * 2).min(self.options.retry_delay_max);
                continue;
            }
            delay = self.options.retry_delay;
            if !busy {
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(self.options.idle_poll) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
    }
}

/// Makes sure every projection has a checkpoint row (so `status` reports them all).
pub async fn ensure_checkpoints(database: &Database) -> Result<(), sqlx::Error> {
    for projection in latchkey_projections::all() {
        journal::ensure_checkpoint(database, &checkpoint_name(projection.name())).await?;
    }
    Ok(())
}
