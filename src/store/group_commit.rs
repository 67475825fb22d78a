//! Group commit for the webhook inbox: concurrent deliveries share one INSERT and one
//! commit (one WAL flush on PostgreSQL, one journal sync on SQLite).
//!
//! Each webhook handler hands its row to a single committer task and waits. The committer
//! takes whatever has queued up while the previous batch was being written (never waiting
//! for more: a lone delivery is written at once, so grouping adds no latency when the
//! endpoint is quiet), writes it as one multi-row upsert in one transaction, and answers
//! every handler only after that commit returned. A handler therefore still acknowledges
//! Stripe only once its own row is durable.
//!
//! Exactly-once is the single-row statement's: the event id is the primary key and the
//! upsert bumps `duplicates` on a conflict. Two deliveries of the same event id never go
//! in the same batch (PostgreSQL refuses to upsert one row twice in a statement); the
//! later one waits for the next batch and there sees the first as a duplicate.
//!
//! If a batch fails, nothing of it committed, and every handler falls back to the
//! single-row statement, which reports its own error. If the committer is gone (runtime
//! shutting down), handlers fall back too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::inbox::{now, Inserted, NewDelivery};
use crate::on_pool;
use crate::store::Database;

/// Rows per batch at most: nine bind parameters each, far below either backend's limit,
/// and above the number of concurrent deliveries one instance usually serves.
const BATCH_ROWS_MAX: usize = 128;

/// Deliveries that may queue for the committer before handlers wait to enqueue: a bound
/// on memory under a flood, above any useful batch.
const QUEUE_CAPACITY: usize = 1024;

/// One delivery waiting for its batch, with what the handler is told.
struct Pending {
    row: Row,
    reply: oneshot::Sender<Option<Inserted>>,
}

/// The delivery's columns, owned for the trip to the committer.
struct Row {
    event_id: String,
    event_type: String,
    api_version: Option<String>,
    livemode: bool,
    stripe_created: i64,
    payload: String,
    source: &'static str,
    due_at_ms: i64,
    received_at: DateTime<Utc>,
}

/// The handle the inbox holds; the committer starts on first use, on the caller's runtime,
/// and stops when the last handle is dropped.
#[derive(Clone, Default)]
pub struct GroupCommit {
    queue: Arc<OnceLock<mpsc::Sender<Pending>>>,
    /// Batches written so far (diagnostics and tests).
    batches: Arc<AtomicU64>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// How many batches the committer has written (successfully or not).
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Stores one delivery in the next batch. `None`: the batch failed or the committer is
    /// gone, and the caller must store the row on its own.
    pub async fn store(
        &self,
        database: &Database,
        delivery: &NewDelivery<'_>,
        due_at_ms: i64,
    ) -> Option<Inserted> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
            tokio::spawn(run(database.clone(), receiver, self.batches.clone()));
            sender
        });
        let (reply, answer) = oneshot::channel();
        let row = Row {
            event_id: delivery.event_id.to_string(),
            event_type: delivery.event_type.to_string(),
            api_version: delivery.api_version.map(str::to_string),
            livemode: delivery.livemode,
            stripe_created: delivery.stripe_created,
            payload: delivery.payload.to_string(),
            source: delivery.source.as_str(),
            due_at_ms,
            received_at: now(),
        };
        queue.send(Pending { row, reply }).await.ok()?;
        answer.await.ok().flatten()
    }
}

/// The committer: one batch at a time, each made of what queued during the last one.
async fn run(database: Database, mut queue: mpsc::Receiver<Pending>, batches: Arc<AtomicU64>) {
    let mut waiting: VecDeque<Pending> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match queue.recv().await {
                Some(pending) => waiting.push_back(pending),
                None => return,
            }
        }
        while waiting.len() < BATCH_ROWS_MAX {
            match queue.try_recv() {
                Ok(pending) => waiting.push_back(pending),
                Err(_) => break,
            }
        }
        let mut batch = take_batch(&mut waiting);
        // One order for every instance's batches, so two instances upserting the same
        // ids lock them in the same order and cannot deadlock each other.
        batch.sort_by(|a, b| a.row.event_id.cmp(&b.row.event_id));
        commit(&database, batch).await;
        batches.fetch_add(1, Ordering::Relaxed);
    }
}

/// Up to `BATCH_ROWS_MAX` deliveries with distinct event ids, oldest first; a repeated
/// id stays queued for the next batch.
fn take_batch(waiting: &mut VecDeque<Pending>) -> Vec<Pending> {
    let mut ids = HashSet::new();
    let mut batch = Vec::new();
    let mut later = VecDeque::new();
    for pending in waiting.drain(..) {
        if batch.len() < BATCH_ROWS_MAX && ids.insert(pending.row.event_id.clone()) {
            batch.push(pending);
        } else {
            later.push_back(pending);
        }
    }
    *waiting = later;
    debug_assert!(
        !batch.is_empty(),
        "a batch is taken only when something waits"
    );
    batch
}

/// Writes one batch in one statement (one implicit transaction) and answers everyone.
async fn commit(database: &Database, batch: Vec<Pending>) {
    let stored = match insert(database, &batch).await {
        Ok(stored) => stored,
        Err(error) => {
            warn!(error = %error, rows = batch.len(), "inbox group commit failed; each delivery retries on its own");
            HashMap::new()
        }
    };
    for pending in batch {
        let answer = stored
            .get(&pending.row.event_id)
            .map(|(duplicates, status, stored_at)| {
                // A fresh row has no duplicates and carries the time we just wrote.
                if *duplicates == 0 && *stored_at == pending.row.received_at {
                    Inserted::New
                } else {
                    Inserted::Duplicate {
                        status: status.clone(),
                    }
                }
            });
        // A handler that gave up waiting (client gone) no longer listens; its row stays.
        let _ = pending.reply.send(answer);
    }
}

type Stored = HashMap<String, (i32, String, DateTime<Utc>)>;

/// The multi-row form of `Inbox::insert`'s upsert; by event id, what each row now holds.
async fn insert(database: &Database, batch: &[Pending]) -> Result<Stored, sqlx::Error> {
    let mut sql = String::from(
        "INSERT INTO stripe_inbox (event_id, type, api_version, livemode, stripe_created, \
         payload, source, next_attempt_at, received_at) VALUES ",
    );
    for index in 0..batch.len() {
        let first = index * 9;
        if index > 0 {
            sql.push_str(", ");
        }
        let params: Vec<String> = (1..=9).map(|n| format!("${}", first + n)).collect();
        sql.push('(');
        sql.push_str(&params.join(", "));
        sql.push(')');
    }
    // Only webhook deliveries are grouped, and each repeat of one counts.
    sql.push_str(
        " ON CONFLICT (event_id) DO UPDATE SET duplicates = stripe_inbox.duplicates + 1 \
         RETURNING event_id, duplicates, status, received_at",
    );
    let rows: Vec<(String, i32, String, DateTime<Utc>)> = on_pool!(database, pool => {
        let mut query = sqlx::query_as(&sql);
        for pending in batch {
            let row = &pending.row;
            query = query
                .bind(&row.event_id)
                .bind(&row.event_type)
                .bind(row.api_version.as_deref())
                .bind(row.livemode)
                .bind(row.stripe_created)
                .bind(&row.payload)
                .bind(row.source)
                .bind(row.due_at_ms)
                .bind(row.received_at);
        }
        query.fetch_all(pool).await
    })?;
    Ok(rows
        .into_iter()
        .map(|(event_id, duplicates, status, stored_at)| {
            (event_id, (duplicates, status, stored_at))
        })
        .collect())
}
