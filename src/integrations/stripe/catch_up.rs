//! Recovering events whose webhook never arrived (or arrived while we were down): walk
//! Stripe's event list and feed any missing ones into the inbox, where they are processed
//! like any delivery.
//!
//! The job keeps its own durable cursor (`stripe_catch_up_cursor`: the newest event it
//! has fed, with its `created`) and walks forward from it, oldest first, a page at a time
//! (`ending_before` the cursor) until Stripe has nothing newer; the cursor is saved after
//! every page, so a run stopped half-way (Stripe down, a restart) resumes where it stopped
//! and there is no cap to silently drop events. Webhooks arriving meanwhile change nothing
//! here: the inbox skips ids it already holds. The first run starts at the oldest event of
//! the last 30 days (Stripe keeps 30), found by paging back with `starting_after`; a cursor
//! whose event Stripe no longer lists restarts the same way from its `created`. Only the
//! event types Latchkey uses are listed. With several instances on PostgreSQL one run
//! happens at a time (an advisory lock); a skipped run is harmless.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client::{EventPosition, EventQuery, ListedEvent, StripeApiError, StripeClient};
use crate::on_pool;
use crate::store::inbox::{Inbox, NewDelivery, Source};
use crate::store::subscription::try_advisory_lock;
use crate::store::Database;

/// The advisory-lock name of the job, and its cursor's name.
const LOCK_NAME: &str = "stripe_catch_up";

#[derive(Clone, Debug)]
pub struct CatchUpOptions {
    /// Run at start-up and then this often; `None` disables the job.
    pub interval: Option<Duration>,
    /// Where the first run starts. Stripe keeps events 30 days.
    pub initial_lookback: Duration,
    /// A payment `pending` or `authorized` for longer than this is checked against
    /// Stripe's PaymentIntent (and Checkout Session) at each run ([`super::resync`]).
    pub resync_after: Duration,
}

impl Default for CatchUpOptions {
    fn default() -> Self {
        CatchUpOptions {
            interval: Some(Duration::from_secs(5 * 60)),
            initial_lookback: Duration::from_secs(30 * 24 * 60 * 60),
            resync_after: Duration::from_secs(60 * 60),
        }
    }
}

/// What one run did.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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
    #[error("the payments read model could not be read: {0}")]
    ReadModel(String),
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
    let mut report = CatchUpReport {
        ran: true,
        ..Default::default()
    };
    let walked = walk_forward(inbox, client, options, &mut report).await;
    if let Some(connection) = lock {
        // Closing the session releases the advisory lock; returning it to the pool
        // would leave the lock held by an idle connection.
        drop(connection.detach());
    }
    walked?;
    // Outside the lock (it needs a connection of its own): two instances re-syncing at
    // once store each synthetic event once anyway.
    super::resync::resync_stuck(inbox, client, options.resync_after, &mut report).await?;
    Ok(report)
}

/// The cursor: the newest event fed so far, and its `created`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cursor {
    event_id: String,
    created: i64,
}

async fn walk_forward(
    inbox: &Inbox,
    client: &StripeClient,
    options: &CatchUpOptions,
    report: &mut CatchUpReport,
) -> Result<(), CatchUpError> {
    let database = inbox.database();
    let mut cursor = match load_cursor(database).await? {
        Some(cursor) => cursor,
        None => {
            let since = chrono::Utc::now().timestamp() - seconds(options.initial_lookback);
            match start_at_oldest(inbox, client, since, report).await? {
                Some(cursor) => cursor,
                None => return Ok(()),
            }
        }
    };
    loop {
        let query = EventQuery {
            position: EventPosition::Newer {
                ending_before: &cursor.event_id,
            },
            types: crate::stripe_events::USED_EVENT_TYPES,
        };
        let page = match client.list_events(&query).await {
            Ok(page) => page,
            Err(StripeApiError::Stripe { status: 404, .. }) => {
                // The cursor's event is older than Stripe keeps: restart from its time.
                warn!(event_id = %cursor.event_id, "catch-up cursor no longer listed; restarting from its time");
                match start_at_oldest(inbox, client, cursor.created - 1, report).await? {
                    Some(restart) => {
                        cursor = restart;
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            Err(error) => return Err(error.into()),
        };
        report.listed += page.events.len();
        // Newest first within the page: fed oldest first.
        for event in page.events.iter().rev() {
            feed(inbox, event, report).await?;
        }
        if let Some(newest) = page.events.first() {
            cursor = Cursor {
                event_id: newest.id.clone(),
                created: newest.created,
            };
            save_cursor(database, &cursor).await?;
        }
        if !page.has_more || page.events.is_empty() {
            return Ok(());
        }
    }
}

/// Pages back (`starting_after`) to the oldest event created after `since`, feeds it and
/// makes it the cursor; `None` when there is none.
async fn start_at_oldest(
    inbox: &Inbox,
    client: &StripeClient,
    since: i64,
    report: &mut CatchUpReport,
) -> Result<Option<Cursor>, CatchUpError> {
    let mut oldest: Option<ListedEvent> = None;
    loop {
        let query = EventQuery {
            position: EventPosition::Older {
                created_after: since,
                starting_after: oldest.as_ref().map(|event| event.id.as_str()),
            },
            types: crate::stripe_events::USED_EVENT_TYPES,
        };
        let page = client.list_events(&query).await?;
        let has_more = page.has_more;
        match page.events.into_iter().last() {
            Some(last) => oldest = Some(last),
            None => break,
        }
        if !has_more {
            break;
        }
    }
    let Some(oldest) = oldest else {
        return Ok(None);
    };
    report.listed += 1;
    feed(inbox, &oldest, report).await?;
    let cursor = Cursor {
        event_id: oldest.id.clone(),
        created: oldest.created,
    };
    save_cursor(inbox.database(), &cursor).await?;
    Ok(Some(cursor))
}

/// Stores an event built from Stripe's objects (see [`super::resync`]) unless stored.
pub(super) async fn feed_raw(
    inbox: &Inbox,
    event: &serde_json::Value,
    report: &mut CatchUpReport,
) -> Result<(), CatchUpError> {
    let listed = ListedEvent {
        id: event["id"].as_str().unwrap_or_default().to_string(),
        event_type: event["type"].as_str().unwrap_or_default().to_string(),
        created: event["created"].as_i64().unwrap_or_default(),
        livemode: event["livemode"].as_bool().unwrap_or(false),
        api_version: None,
        raw: event.to_string(),
    };
    feed(inbox, &listed, report).await
}

/// Stores one listed event in the inbox unless it is there already.
async fn feed(
    inbox: &Inbox,
    event: &ListedEvent,
    report: &mut CatchUpReport,
) -> Result<(), CatchUpError> {
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
        info!(stripe_event_id = %event.id, event_type = %event.event_type, "catch-up found a missing stripe event");
        report.inserted += 1;
        report.inserted_ids.push(event.id.clone());
    }
    Ok(())
}

async fn load_cursor(database: &Database) -> Result<Option<Cursor>, sqlx::Error> {
    let sql = "SELECT event_id, created FROM stripe_catch_up_cursor WHERE name = $1";
    let row: Option<(String, i64)> = on_pool!(database, pool => {
        sqlx::query_as(sql).bind(LOCK_NAME).fetch_optional(pool).await
    })?;
    Ok(row.map(|(event_id, created)| Cursor { event_id, created }))
}

async fn save_cursor(database: &Database, cursor: &Cursor) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO stripe_catch_up_cursor (name, event_id, created, updated_at_ms) \
               VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE \
               SET event_id = excluded.event_id, created = excluded.created, \
                   updated_at_ms = excluded.updated_at_ms";
    on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(LOCK_NAME)
            .bind(&cursor.event_id)
            .bind(cursor.created)
            .bind(chrono::Utc::now().timestamp_millis())
            .execute(pool)
            .await
            .map(|_| ())
    })
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
            crate::shared_status::save_catch_up(inbox.database(), &record).await;
            *status.lock().unwrap_or_else(|p| p.into_inner()) = Some(record);
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }))
}

/// The last run, for diagnostics.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
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
