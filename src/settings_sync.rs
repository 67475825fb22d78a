//! Settings saved on one instance apply on every instance within seconds.
//!
//! The settings page saves into `operator_settings` and swaps the clients of the instance
//! that served it ([`settings_store::apply`]). Every other instance on the same database
//! has to notice: a save sends a PostgreSQL `NOTIFY` on [`SETTINGS_CHANNEL`], which every
//! instance `LISTEN`s to, and every instance also compares a digest of the stored rows with
//! the one it runs on every [`CHECK_INTERVAL`] — the safety net for a notification lost
//! while its listening connection was down (a restart of the database, a failover), and the
//! only path on SQLite (one process; only tests run two instances on one file). When the
//! rows changed, the instance re-reads them and rebuilds its Stripe, TTLock and Shelly
//! clients, exactly as a save on its own page does.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::http::AppState;
use crate::settings_store;
use crate::store::Database;

/// The NOTIFY channel a settings save signals on.
pub const SETTINGS_CHANNEL: &str = "latchkey_settings";

/// How often every instance compares the stored settings with the ones it runs on: the
/// longest a change takes to apply when its notification was lost. A few rows, read by
/// primary key order: cheap enough for every few seconds.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(3);

/// Tells the other instances that the settings changed (PostgreSQL; nothing on SQLite).
/// A failed NOTIFY is only logged: the timer check still brings them up to date.
pub async fn announce(database: &Database) {
    let Database::Postgres(pool) = database else {
        return;
    };
    let sent = sqlx::query("SELECT pg_notify($1, '')")
        .bind(SETTINGS_CHANNEL)
        .execute(pool)
        .await;
    if let Err(error) = sent {
        warn!(error = %error, "could not notify the other instances of a settings change");
    }
}

/// Re-reads the settings if another instance changed them, and rebuilds the clients.
pub async fn refresh(state: &AppState) -> anyhow::Result<bool> {
    if !state.settings_store.reload_if_changed().await? {
        return Ok(false);
    }
    settings_store::apply(state)?;
    info!("settings changed on another instance; applied here");
    Ok(true)
}

/// Follows settings changes until `shutdown`: on every notification and every
/// `check_interval`.
pub fn spawn(
    state: AppState,
    check_interval: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut listener = None;
        loop {
            if listener.is_none() {
                // Raced with shutdown: connecting to a database that is gone can take the
                // pool's whole acquire timeout.
                listener = tokio::select! {
                    listener = listen(&state.database) => listener,
                    _ = shutdown.cancelled() => return,
                };
            }
            let notified = async {
                match listener.as_mut() {
                    Some(listener) => listener.try_recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = notified => {
                    if let Err(error) = received {
                        warn!(error = %error, "settings LISTEN lost; reconnecting");
                        listener = None;
                    }
                }
                _ = tokio::time::sleep(check_interval) => {}
                _ = shutdown.cancelled() => return,
            }
            let refreshed = tokio::select! {
                refreshed = refresh(&state) => refreshed,
                _ = shutdown.cancelled() => return,
            };
            if let Err(error) = refreshed {
                warn!(error = %error, "could not check the stored settings");
            }
        }
    })
}

/// A listener on [`SETTINGS_CHANNEL`] (PostgreSQL), or `None` (SQLite, or it failed: the
/// timer carries on and the next round tries again).
async fn listen(database: &Database) -> Option<PgListener> {
    let Database::Postgres(pool) = database else {
        return None;
    };
    // A one-connection pool of its own: a listener keeps its connection for good, and the
    // main pool's connections are counted for the singletons and the requests.
    let own = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut listener = match PgListener::connect_with(&own).await {
        Ok(listener) => listener,
        Err(error) => {
            warn!(error = %error, "settings LISTEN connection failed; relying on the timer");
            return None;
        }
    };
    match listener.listen(SETTINGS_CHANNEL).await {
        Ok(()) => Some(listener),
        Err(error) => {
            warn!(error = %error, "settings LISTEN failed; relying on the timer");
            None
        }
    }
}
