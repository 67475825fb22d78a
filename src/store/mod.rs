//! Storage: one database (PostgreSQL or SQLite) holds the journal, the subscriptions'
//! checkpoints and every read model.
//!
//! - [`repository`]: the cqrs-es event repository (postgres-es or sqlite-es underneath)
//!   that also chains every event's hash and wakes subscribers.
//! - [`journal`]: reads events in global order, for subscribers and auditors.
//! - [`subscription`]: runs named subscribers over the journal, exactly once each.
//! - [`lease`]: fenced singletons: a lease with a growing epoch per singleton, checked
//!   on every command the singleton sends.
//! - [`single_process`]: one server process per SQLite file (a lock file).
//! - [`parking`]: workflow reactions set aside for an operator instead of halting.
//! - [`chain`]: the tamper-evident hash chain and its verification.
//! - [`ledger`]: the global Merkle commitment, its sealer, signed checkpoints and proofs
//!   (over [`merkle`]).

pub mod chain;
pub mod group_commit;
pub mod inbox;
pub mod journal;
pub mod lease;
pub mod ledger;
pub mod merkle;
pub mod parking;
pub mod repository;
pub mod single_process;
pub mod subscription;

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

use crate::config::DatabaseUrl;

/// How long a request waits for a pooled connection before it fails. Long enough to ride
/// out a burst, short enough that `/ready` and callers see an outage quickly.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long SQLite waits on a locked database before giving up. SQLite allows one writer
/// at a time; every other writer queues behind this timeout.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which engine a [`Database`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A connection pool on one of the two supported backends.
#[derive(Clone, Debug)]
pub enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// An open transaction on either backend. Subscribers write their effects and their
/// checkpoint through one of these, so both commit or neither does.
pub enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// Runs `$body` with `$conn` bound to the backend-specific connection of a [`Tx`] (or a
/// pool of a [`Database`]). The body is compiled once per backend, so one portable SQL
/// string with `$1`-style parameters serves both.
#[macro_export]
macro_rules! on_backend {
    ($target:expr, $conn:ident => $body:expr) => {
        match $target {
            $crate::store::Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::store::Tx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

/// Like [`on_backend!`], for a [`Database`] pool.
#[macro_export]
macro_rules! on_pool {
    ($target:expr, $pool:ident => $body:expr) => {
        match $target {
            $crate::store::Database::Postgres($pool) => $body,
            $crate::store::Database::Sqlite($pool) => $body,
        }
    };
}

/// Pool sizing for one process.
#[derive(Clone, Copy, Debug)]
pub struct PoolSize {
    pub max_connections: u32,
}

impl Default for PoolSize {
    fn default() -> Self {
        // Enough for the HTTP handlers plus one connection per subscriber and the
        // LISTEN connection; PostgreSQL's own default limit is 100 for all instances.
        PoolSize {
            max_connections: 16,
        }
    }
}

impl Database {
    /// Opens a pool. SQLite files are created if missing and run in WAL mode so readers
    /// never block the writer.
    pub async fn connect(url: &DatabaseUrl, size: PoolSize) -> anyhow::Result<Self> {
        match url {
            DatabaseUrl::Postgres(raw) => {
                let options = PgConnectOptions::from_str(raw)
                    .with_context(|| "DATABASE_URL is not a valid PostgreSQL URL")?;
                let pool = PgPoolOptions::new()
                    .max_connections(size.max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .with_context(|| {
                        format!(
                            "could not connect to PostgreSQL at DATABASE_URL ({}); is it running?",
                            redact(raw)
                        )
                    })?;
                Ok(Database::Postgres(pool))
            }
            DatabaseUrl::Sqlite(raw) => {
                let options = SqliteConnectOptions::from_str(raw)
                    .with_context(|| "DATABASE_URL is not a valid SQLite URL")?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(size.max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(options)
                    .await
                    .with_context(|| format!("could not open the SQLite database {raw}"))?;
                Ok(Database::Sqlite(pool))
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Database::Postgres(_) => Backend::Postgres,
            Database::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies the migrations of this backend (forward only; applied files never change).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Database::Postgres(pool) => sqlx::migrate!("./migrations/postgres")
                .run(pool)
                .await
                .context("applying the PostgreSQL migrations failed")?,
            Database::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite")
                .run(pool)
                .await
                .context("applying the SQLite migrations failed")?,
        }
        Ok(())
    }

    /// Starts a write transaction. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads first and writes later can
    /// fail at once with SQLITE_BUSY instead of waiting its turn.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        match self {
            Database::Postgres(pool) => Ok(Tx::Postgres(pool.begin().await?)),
            Database::Sqlite(pool) => Ok(Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?)),
        }
    }

    /// Starts a transaction for one subscriber batch: it reads the journal and writes the
    /// subscriber's effects and checkpoint. On PostgreSQL it is REPEATABLE READ so the
    /// journal read sees one consistent snapshot (see [`journal::read_after_in`]); a
    /// conflicting concurrent checkpoint update then fails the batch, which is retried.
    pub async fn begin_subscriber(&self) -> Result<Tx, sqlx::Error> {
        match self {
            Database::Postgres(pool) => Ok(Tx::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ")
                    .await?,
            )),
            Database::Sqlite(pool) => Ok(Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?)),
        }
    }

    /// Starts a read-only snapshot for reading the journal.
    pub async fn begin_read(&self) -> Result<Tx, sqlx::Error> {
        match self {
            Database::Postgres(pool) => Ok(Tx::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            )),
            Database::Sqlite(pool) => Ok(Tx::Sqlite(pool.begin().await?)),
        }
    }

    /// A round trip to the database, for `/ready`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// Closes every connection; pending acquires fail.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit().await,
        }
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(tx) => tx.rollback().await,
            Tx::Sqlite(tx) => tx.rollback().await,
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Tx::Postgres(_) => Backend::Postgres,
            Tx::Sqlite(_) => Backend::Sqlite,
        }
    }
}

/// Hides the password of a database URL for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}
