//! Recovering events whose webhook never arrived (or arrived while we were down): list
//! them through the Events API and feed any missing ones into the inbox, where they are
//! processed like any delivery.
//!
//! Stripe's `created` is in whole seconds and events arrive out of order, so the
//! high-water mark (the newest `created` stored) is only a hint: each run lists from the
//! mark minus an overlap and skips ids already stored. With several instances on
//! PostgreSQL one run happens at a time (an advisory lock); a skipped run is harmless.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client::{StripeApiError, StripeClient};
use crate::store::inbox::{Inbox, NewDelivery, Source};
use crate::store::subscription::try_advisory_lock;
use crate::store::Database;

/// The advisory-lock name of the job.
const LOCK_NAME: &str = "stripe_catch_up";

/// A safety stop: pages per run. 100 pages of 100 events is far more than a day of a
/// busy site; the next run continues from the new mark.
const MAX_PAGES: usize = 100;

#[derive(Clone, Debug)]
pub struct CatchUpOptions {
    /// Run at start-up and then this often; `None` disables the job.
    pub interval: Option<Duration>,
    /// How far before the high-water mark each run starts listing. Covers events created
    /// in the same second as the mark and events that were slow to be delivered.
    pub overlap: Duration,
    /// Where the first run starts when the inbox is empty. Stripe keeps events 30 days.
    pub initial_lookback: Duration,
}

impl Default for CatchUpOptions {
    fn default() -> Self {
        CatchUpOptions {
            interval: Some(Duration::from_secs(5 * 60)),
            overlap: Duration::from_secs(60 * 60),
            initial_lookback: Duration::from_secs(3 * 24 * 60 * 60),
        }
    }
}

/// What one run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CatchUpReport {
    /// False when another instance held the lock.
    pub ran: bool,
    pub listed: usize,
    pub inserted: usize,
    /// Event ids it inserted, so they can be processed at once.
    #[serde(skip)]
    pub inserted_ids: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error(transparent)]
    Stripe(#[from] StripeApiError),
    #[error("the inbox could not be read or written: {0}")]
    Database(#[from] sqlx::Error),
}

/// One catch-up run.
pub async fn run_once(
    inbox: &Inbox,
    client: &StripeClient,
    options: &CatchUpOptions,
) -> Result<CatchUpReport, CatchUpError> {
    let lock = match inbox.database() {
        Database::Postgres(pool) => match try_advisory_lock(pool, LOCK_NAME).await? {
            Some(connection) => Some(connection),
            None => return Ok(CatchUpReport::default()),
        },
        // One process owns a SQLite file.
        Database::Sqlite(_) => None,
    };
    let result = list_and_insert(inbox, client, options).await;
    if let Some(connection) = lock {
        // Closing the session releases the advisory lock; returning it to the pool
        // would leave the lock held by an idle connection.
        drop(connection.detach());
    }
    result
}

async fn list_and_insert(
    inbox: &Inbox,
    client: &StripeClient,
    options: &CatchUpOptions,
) -> Result<CatchUpReport, CatchUpError> {
    let now = chrono::Utc::now().timestamp();
    let since = match inbox.newest_created().await? {
        Some(mark) => mark - seconds(options.overlap),
        None => now - seconds(options.initial_lookback),
    };
    let mut report = CatchUpReport {
        ran: true,
        ..Default::default()
    };
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let page = client.list_events_since(since, cursor.as_deref()).await?;
        // Stripe pages newest first; `starting_after` continues to older ones.
        cursor = page.events.last().map(|event| event.id.clone());
        report.listed += page.events.len();
        for event in page.events.iter().rev() {
            let delivery = NewDelivery {
                event_id: &event.id,
                event_type: &event.event_type,
                api_version: event.api_version.as_deref(),
                livemode: event.livemode,
                stripe_created: event.created,
                payload: &event.raw,
                source: Source::CatchUp,
            };
            // Due at once: the worker (or the caller) processes what we add.
            if let crate::store::inbox::Inserted::New = inbox
                .insert(&delivery, crate::store::inbox::now_ms())
                .await?
            {
                info!(event_id = %event.id, event_type = %event.event_type, "catch-up found a missing stripe event");
                report.inserted += 1;
                report.inserted_ids.push(event.id.clone());
            }
        }
        if !page.has_more || cursor.is_none() {
            break;
        }
    }
    Ok(report)
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX / 2)
}

/// Runs the job now and then every `interval` until `shutdown`.
pub fn spawn(
    inbox: Inbox,
    client: impl Fn() -> Option<StripeClient> + Send + 'static,
    options: CatchUpOptions,
    status: Arc<std::sync::Mutex<Option<CatchUpStatus>>>,
    shutdown: CancellationToken,
) -> Option<JoinHandle<()>> {
    let interval = options.interval?;
    Some(tokio::spawn(async move {
        loop {
            let Some(client) = client() else {
                // Not configured (yet): an admin may add a key in Settings at any time.
                tokio::select! {
                    _ = tokio::time::sleep(interval) => continue,
                    _ = shutdown.cancelled() => return,
                }
            };
            let result = run_once(&inbox, &client, &options).await;
            let record = CatchUpStatus::from_result(&result);
            match &result {
                Ok(report) if report.inserted > 0 => {
                    info!(
                        listed = report.listed,
                        inserted = report.inserted,
                        "stripe catch-up run"
                    )
                }
                Ok(_) => {}
                Err(error) => warn!(error = %error, "stripe catch-up failed; next run retries"),
            }
            *status.lock().unwrap_or_else(|p| p.into_inner()) = Some(record);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }))
}

/// The last run, for diagnostics.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CatchUpStatus {
    pub at: chrono::DateTime<chrono::Utc>,
    pub report: Option<CatchUpReport>,
    pub error: Option<String>,
}

impl CatchUpStatus {
    pub fn from_result(result: &Result<CatchUpReport, CatchUpError>) -> Self {
        CatchUpStatus {
            at: chrono::Utc::now(),
            report: result.as_ref().ok().cloned(),
            error: result.as_ref().err().map(|e| e.to_string()),
        }
    }
}
