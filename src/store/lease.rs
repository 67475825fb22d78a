//! Fenced singletons: one instance runs each singleton, notices at once when it lost the
//! right to, and nothing it sends after that takes effect.
//!
//! The singletons are the reconciler, every journal subscriber run by
//! [`SubscriptionRuntime::spawn`](super::subscription::SubscriptionRuntime::spawn) (the
//! door-access, device-session, refund and capture workflows, the mail outbox) and the
//! projections task. (The job runner, the mail worker and the sealer are not singletons:
//! every instance runs them and they claim work row by row with a compare-and-set; the
//! Stripe catch-up holds its lock for one run only.)
//!
//! **The lease.** On PostgreSQL a singleton is held through a session-level advisory lock on
//! a dedicated connection. A lock alone is not enough: a connection cut by a failover, an
//! idle timeout or `pg_terminate_backend` releases it silently, another instance takes
//! over, and the old holder — still running — would keep sending relay and door-code
//! commands. So taking the lock also bumps the singleton's row in `singleton_leases`:
//! its `epoch` grows by one per holder, ever. The holder then re-checks every
//! [`CHECK_INTERVAL`] (one query on the lock connection that also reads its row back): a
//! failed or slow query, or another epoch in the row, means the lease is lost. The
//! singleton's work is then dropped at once (the future is cancelled at its next await,
//! an in-flight command included), the loss is logged (`warn`, with name and epoch) and
//! counted (`latchkey_singleton_lost_total`), and the instance competes for the lock
//! again like a fresh one after the takeover interval.
//!
//! **The fence.** Noticing within half a second still leaves a window, so the epoch also
//! travels with every command the singleton sends: the work runs inside a task-local
//! [`Fence`], and [`CommandBus::execute`](crate::cqrs::CommandBus::execute) stamps it into
//! the command's metadata (`singleton`, `singleton_epoch`) and checks it before running
//! the command — and the command is where TTLock and Shelly are called (the aggregates'
//! services). The check is the simplest design that is sound against the network: on a
//! connection of its own, the command takes the singleton's *fence lock* (a second
//! advisory key) in shared mode for the length of the command, then reads the row's epoch
//! in a new statement; a different epoch refuses the command ([`FenceError::Stale`]). A
//! new holder bumps the epoch while holding the same fence lock exclusively, so the bump
//! waits for commands of the old epoch that are already past their check (their effect
//! lands before the new holder starts, and it reads the relays back first), and every
//! check after the bump sees the new epoch. Cutting the old holder's lock connection does
//! not release the shared locks: they live on other connections. The fence connections
//! come from a small pool of their own, so a command holding one never waits for the main
//! pool while every main connection waits for it.
//!
//! What is not fenced: effects not sent through a command (the reconciler's idempotent
//! relay read-backs and auto-off settings), and writes that carry their own compare-and-set
//! (subscriber checkpoints, claimed jobs).
//!
//! **SQLite** is one process: the lease is held trivially (no lock, never lost); the epoch
//! still grows per start, is stamped on commands and checked with a plain read.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Acquire, PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::subscription::singleton_key;
use super::Database;
use crate::metrics::Metrics;

/// How often a holder checks that its lease is still its own. The lost-lock window is at
/// most this plus [`CHECK_TIMEOUT`].
pub const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// A check that has not answered in this long counts as a lost lease: a connection that
/// hangs is as good as cut, and the lock may already be someone else's.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long taking a lease waits for commands of the previous epoch to finish (they hold
/// the fence lock shared) before it gives up and tries again later. Longer than any
/// outbound call's timeout.
const BUMP_LOCK_TIMEOUT: &str = "30s";

/// Connections of the fence pool: one per singleton that may be running a command.
const FENCE_POOL_SIZE: u32 = 8;

/// The metadata keys a fenced command carries.
pub const METADATA_SINGLETON: &str = "singleton";
pub const METADATA_EPOCH: &str = "singleton_epoch";

tokio::task_local! {
    static FENCE: Fence;
}

/// Which singleton, at which epoch, is sending the commands of the current task.
#[derive(Clone, Debug)]
pub struct Fence {
    pub name: String,
    pub epoch: i64,
    database: FenceDatabase,
}

#[derive(Clone, Debug)]
enum FenceDatabase {
    Postgres(PgPool),
    Sqlite(sqlx::SqlitePool),
}

/// Why a fenced command was not run.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error(
        "singleton {name} at epoch {epoch} no longer holds its lease (the lease is at epoch \
         {current}); the command is refused"
    )]
    Stale {
        name: String,
        epoch: i64,
        current: i64,
    },
    #[error("could not check the lease of singleton {name}: {source}")]
    Database {
        name: String,
        #[source]
        source: sqlx::Error,
    },
}

impl Fence {
    /// A fence for `name` at `epoch` on `database`; singletons get theirs from their
    /// [`Lease`], tests build one to send a command with an old epoch.
    pub fn new(database: &Database, name: &str, epoch: i64) -> Self {
        let database = match database {
            Database::Postgres(pool) => FenceDatabase::Postgres(fence_pool(pool)),
            Database::Sqlite(pool) => FenceDatabase::Sqlite(pool.clone()),
        };
        Fence {
            name: name.to_string(),
            epoch,
            database,
        }
    }

    /// The fence of the current task, if a singleton's work is running in it.
    pub fn current() -> Option<Fence> {
        FENCE.try_with(Fence::clone).ok()
    }

    /// Runs `work` with this fence on every command it sends.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        FENCE.scope(self, work).await
    }

    /// Checks that this fence's epoch is the lease's; the guard keeps a new holder from
    /// taking over until it is released (PostgreSQL), so hold it for the whole command.
    pub async fn hold(&self) -> Result<FenceGuard, FenceError> {
        let database_error = |source| FenceError::Database {
            name: self.name.clone(),
            source,
        };
        let (current, guard) = match &self.database {
            FenceDatabase::Postgres(pool) => {
                let mut tx = pool.begin().await.map_err(database_error)?;
                sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
                    .bind(fence_key(&self.name))
                    .execute(&mut *tx)
                    .await
                    .map_err(database_error)?;
                // A statement of its own: under READ COMMITTED it takes its snapshot now,
                // after the lock, so a bump that committed while we waited is seen.
                let current: Option<i64> =
                    sqlx::query_scalar("SELECT epoch FROM singleton_leases WHERE name = $1")
                        .bind(&self.name)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(database_error)?;
                (current, FenceGuard(Some(tx)))
            }
            FenceDatabase::Sqlite(pool) => {
                let current: Option<i64> =
                    sqlx::query_scalar("SELECT epoch FROM singleton_leases WHERE name = ?1")
                        .bind(&self.name)
                        .fetch_optional(pool)
                        .await
                        .map_err(database_error)?;
                (current, FenceGuard(None))
            }
        };
        let current = current.unwrap_or(0);
        if current != self.epoch {
            return Err(FenceError::Stale {
                name: self.name.clone(),
                epoch: self.epoch,
                current,
            });
        }
        Ok(guard)
    }
}

/// Keeps the fence lock shared while a command runs; [`release`](Self::release) it after.
pub struct FenceGuard(Option<Transaction<'static, Postgres>>);

impl FenceGuard {
    pub async fn release(self) {
        if let Some(tx) = self.0 {
            // Read-only: ending it only releases the shared lock. Dropped instead (a
            // cancelled command), sqlx rolls it back when the connection is reused.
            let _ = tx.rollback().await;
        }
    }
}

/// The advisory key of a singleton's fence lock (not the singleton lock itself, which is
/// held on the connection that may be cut).
fn fence_key(name: &str) -> i64 {
    singleton_key(&format!("fence:{name}"))
}

/// A small pool beside `pool`, on the same server and database, for the fence locks.
fn fence_pool(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(FENCE_POOL_SIZE)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(60))
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// One holding of a singleton: its epoch and, on PostgreSQL, the connection holding the
/// advisory lock (closed, not pooled, when the lease is dropped: that releases the lock).
pub struct Lease {
    name: String,
    epoch: i64,
    connection: Option<PoolConnection<Postgres>>,
    fence: Fence,
}

impl Lease {
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Whether the lease is still ours: the lock connection answers and the row still
    /// carries our epoch. `Err` says why not.
    async fn check(&mut self) -> Result<(), String> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(());
        };
        let query =
            sqlx::query_scalar::<_, i64>("SELECT epoch FROM singleton_leases WHERE name = $1")
                .bind(&self.name)
                .fetch_optional(&mut **connection);
        match tokio::time::timeout(CHECK_TIMEOUT, query).await {
            Err(_) => Err(format!(
                "the lock connection did not answer within {CHECK_TIMEOUT:?}"
            )),
            Ok(Err(error)) => Err(format!("the lock connection failed: {error}")),
            Ok(Ok(Some(epoch))) if epoch == self.epoch => Ok(()),
            Ok(Ok(current)) => Err(format!(
                "the lease is at epoch {} now",
                current.unwrap_or(0)
            )),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            // Closing the session releases its advisory lock; returning it to the pool
            // would keep the lock held by an idle connection.
            drop(connection.detach());
        }
    }
}

/// Takes and keeps the process's singleton leases.
#[derive(Clone)]
pub struct Leases {
    database: Database,
    /// Where fences check their epoch: on PostgreSQL a pool of its own, shared by every
    /// lease of the process.
    fences: FenceDatabase,
    metrics: Arc<Metrics>,
    /// Who we are in `singleton_leases.holder`: process id and a random suffix (several
    /// test instances share one process).
    holder: String,
    check_interval: Duration,
}

impl Leases {
    pub fn new(database: Database, metrics: Arc<Metrics>) -> Self {
        let fences = match &database {
            Database::Postgres(pool) => FenceDatabase::Postgres(fence_pool(pool)),
            Database::Sqlite(pool) => FenceDatabase::Sqlite(pool.clone()),
        };
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Leases {
            database,
            fences,
            metrics,
            holder: format!("pid {} / {}", std::process::id(), &suffix[..8]),
            check_interval: CHECK_INTERVAL,
        }
    }

    /// Closes the fence pool's connections (at shutdown, after every singleton stopped).
    pub async fn close(&self) {
        if let FenceDatabase::Postgres(fences) = &self.fences {
            fences.close().await;
        }
    }

    /// Takes the lease of `name` if no other instance holds it, with a new epoch.
    pub async fn try_acquire(&self, name: &str) -> Result<Option<Lease>, sqlx::Error> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        match &self.database {
            Database::Postgres(pool) => {
                let mut connection = pool.acquire().await?;
                let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(singleton_key(name))
                    .fetch_one(&mut *connection)
                    .await?;
                if !locked {
                    return Ok(None);
                }
                let epoch = match self.bump(&mut connection, name, now_ms).await {
                    Ok(epoch) => epoch,
                    Err(error) => {
                        // Release the lock with the session rather than hold it unfenced.
                        drop(connection.detach());
                        return Err(error);
                    }
                };
                Ok(Some(Lease {
                    name: name.to_string(),
                    epoch,
                    connection: Some(connection),
                    fence: Fence {
                        name: name.to_string(),
                        epoch,
                        database: self.fences.clone(),
                    },
                }))
            }
            Database::Sqlite(pool) => {
                let epoch: i64 = sqlx::query_scalar(
                    "INSERT INTO singleton_leases (name, epoch, holder, holder_pid, acquired_at_ms) \
                     VALUES (?1, 1, ?2, NULL, ?3) \
                     ON CONFLICT (name) DO UPDATE SET epoch = singleton_leases.epoch + 1, \
                       holder = excluded.holder, acquired_at_ms = excluded.acquired_at_ms \
                     RETURNING epoch",
                )
                .bind(name)
                .bind(&self.holder)
                .bind(now_ms)
                .fetch_one(pool)
                .await?;
                Ok(Some(Lease {
                    name: name.to_string(),
                    epoch,
                    connection: None,
                    fence: Fence {
                        name: name.to_string(),
                        epoch,
                        database: self.fences.clone(),
                    },
                }))
            }
        }
    }

    /// The new epoch, under the fence lock held exclusively: it waits for commands of
    /// the previous epoch that are past their check.
    async fn bump(
        &self,
        connection: &mut PoolConnection<Postgres>,
        name: &str,
        now_ms: i64,
    ) -> Result<i64, sqlx::Error> {
        let mut tx = connection.begin().await?;
        sqlx::query(&format!("SET LOCAL lock_timeout = '{BUMP_LOCK_TIMEOUT}'"))
            .execute(&mut *tx)
            .await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(fence_key(name))
            .execute(&mut *tx)
            .await?;
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO singleton_leases (name, epoch, holder, holder_pid, acquired_at_ms) \
             VALUES ($1, 1, $2, pg_backend_pid(), $3) \
             ON CONFLICT (name) DO UPDATE SET epoch = singleton_leases.epoch + 1, \
               holder = EXCLUDED.holder, holder_pid = EXCLUDED.holder_pid, \
               acquired_at_ms = EXCLUDED.acquired_at_ms \
             RETURNING epoch",
        )
        .bind(name)
        .bind(&self.holder)
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(epoch)
    }

    /// Waits for the lease of `name` (trying every `takeover_interval`); `None` once
    /// `shutdown` is cancelled.
    async fn acquire(
        &self,
        name: &str,
        takeover_interval: Duration,
        shutdown: &CancellationToken,
    ) -> Option<Lease> {
        loop {
            let attempt = tokio::select! {
                attempt = self.try_acquire(name) => attempt,
                _ = shutdown.cancelled() => return None,
            };
            match attempt {
                Ok(Some(lease)) => return Some(lease),
                Ok(None) => {}
                Err(error) => {
                    warn!(singleton = name, error = %error, "could not try the singleton lease")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(takeover_interval) => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }

    /// Resolves when the lease is lost (with why); never after `shutdown` (the work is
    /// ending on its own then).
    async fn watch(&self, lease: &mut Lease, shutdown: &CancellationToken) -> String {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.check_interval) => {}
                _ = shutdown.cancelled() => std::future::pending::<()>().await,
            }
            if let Err(reason) = lease.check().await {
                return reason;
            }
        }
    }

    /// Runs the singleton `name` in this instance whenever it holds its lease, until
    /// `shutdown`: `work` is started with a token cancelled at shutdown, inside the
    /// lease's [`Fence`], and dropped at once if the lease is lost; the instance then
    /// competes for the lease again. `work` is expected to run until its token is
    /// cancelled.
    pub async fn run<F, Fut>(
        &self,
        name: &str,
        takeover_interval: Duration,
        shutdown: &CancellationToken,
        mut work: F,
    ) where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        let labels = [("singleton", name)];
        loop {
            let Some(mut lease) = self.acquire(name, takeover_interval, shutdown).await else {
                return;
            };
            let epoch = lease.epoch();
            info!(
                singleton = name,
                epoch, "singleton lease taken; running here"
            );
            self.metrics
                .set_gauge("latchkey_singleton_held", &labels, 1.0);
            self.metrics
                .set_gauge("latchkey_singleton_epoch", &labels, epoch as f64);
            let token = shutdown.child_token();
            let lost = {
                let running = lease.fence().scope(work(token.clone()));
                tokio::select! {
                    () = running => None,
                    reason = self.watch(&mut lease, shutdown) => Some(reason),
                }
            };
            token.cancel();
            drop(lease);
            self.metrics
                .set_gauge("latchkey_singleton_held", &labels, 0.0);
            let Some(reason) = lost else {
                return;
            };
            self.metrics
                .increment("latchkey_singleton_lost_total", &labels);
            warn!(
                singleton = name,
                epoch,
                reason = %reason,
                "singleton lease lost; its work is stopped and this instance competes for it again"
            );
            tokio::select! {
                _ = tokio::time::sleep(takeover_interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
