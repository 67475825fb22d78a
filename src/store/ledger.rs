//! The verifiable ledger: one global commitment over the whole journal, beside the
//! per-aggregate hash chains of [`super::chain`].
//!
//! Each event is a leaf of an RFC 6962 Merkle tree ([`super::merkle`]), in position order.
//! The leaf covers everything that matters about the event — type, version, aggregate
//! type and id, sequence, payload, metadata (actor, source, Stripe event id, chain hashes),
//! `recorded_at` and the global position — so editing, deleting, inserting or reordering
//! any of it changes the tree's root. Signed checkpoints ([`Checkpoint`]) publish
//! `(size, root, time)`; once a checkpoint is held outside the database, nobody with write
//! access to it can rewrite history without `latchkey verify --checkpoint` noticing.
//!
//! # Sealing, and why appends are not serialized
//! Appends do not touch the tree: a [`Sealer`] extends it afterwards, in position order,
//! over a prefix of the journal that can no longer change. On SQLite that is every visible
//! event (one writer at a time: positions commit in order). On PostgreSQL positions are
//! handed out at INSERT but transactions commit in any order, so a visible event at
//! position `q` does not mean that position `q - 1` is settled: its transaction may still
//! be running, or may roll back and leave a gap forever.
//!
//! The sealer settles positions in two steps. When a snapshot shows a new largest visible
//! position `q`, the sealer takes an xid `x` of its own *after* that snapshot (a transaction
//! holding a position below `q` took its xid before its position — see the migration
//! `20261203400010_ledger.sql` — hence before `q` committed, hence before `x`: its xid is
//! below `x`). In a later transaction, once no transaction of this database below `x` is
//! running any more, every position up to `q` is final: committed (and visible) or never to
//! exist. The sealer seals up to there and leaves permanent gaps out.
//!
//! Why its own xid and not the snapshot's `xmax`: `xmax` is one past the newest *finished*
//! transaction. A writer whose xid is newer than every finished one is in no snapshot's
//! list of running transactions, so a snapshot can look idle while that writer still holds
//! a position below a committed one (`postgres_a_writer_newer_than_every_finished_…` in
//! `tests/api/ledger.rs`). The sealer's own xid is newer than that writer's; once the
//! sealer's transaction has ended, the next snapshot's `xmax` is past it, so a writer below
//! it that is still running is listed. Subscribers do not need this: they read by xid, not
//! by position, below the same horizon ([`super::journal::SETTLED_HORIZON`]).

use std::collections::VecDeque;

use anyhow::{anyhow, bail, Context};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::chain::canonical_json;
use super::journal::{EventFilter, Journal, JournalEvent};
use super::merkle::{self, Frontier, Hash};
use super::{Database, Tx};
use crate::{on_backend, on_pool};

/// The domain tag that starts every leaf's data, so a leaf can never be mistaken for
/// another structure hashed with the same function.
const LEAF_TAG: &[u8] = b"latchkey-journal-leaf-v1";

/// The first line of every signed checkpoint message.
const CHECKPOINT_TAG: &str = "latchkey-checkpoint-v1";

/// Events sealed per transaction: large enough to keep up with any append rate, small
/// enough that one seal holds SQLite's write lock for milliseconds.
pub const SEAL_BATCH: i64 = 1_000;

/// Rows per multi-row INSERT of leaves (3 parameters each; SQLite allows 32,766).
const LEAF_INSERT_CHUNK: usize = 500;

/// Events and leaves read per query while verifying.
const VERIFY_PAGE: i64 = 2_000;

/// The bytes a leaf hashes: every field length-prefixed, so no two events share them.
pub fn leaf_data(event: &JournalEvent) -> Vec<u8> {
    let mut data = Vec::with_capacity(256);
    let mut field = |bytes: &[u8]| {
        data.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        data.extend_from_slice(bytes);
    };
    field(LEAF_TAG);
    field(event.event_type.as_bytes());
    field(event.event_version.as_bytes());
    field(event.aggregate_type.as_bytes());
    field(event.aggregate_id.as_bytes());
    field(&event.sequence.to_be_bytes());
    field(canonical_json(&event.payload).as_bytes());
    field(canonical_json(&event.metadata).as_bytes());
    field(
        event
            .recorded_at
            .to_rfc3339_opts(SecondsFormat::Micros, true)
            .as_bytes(),
    );
    field(&event.position.to_be_bytes());
    data
}

/// The Merkle leaf hash of one stored event.
pub fn event_leaf_hash(event: &JournalEvent) -> Hash {
    merkle::leaf_hash(&leaf_data(event))
}

/// The sealed tree as stored: its size, the last position it covers, its right edge.
#[derive(Clone, Debug)]
pub struct TreeHead {
    pub size: u64,
    pub last_position: i64,
    pub frontier: Frontier,
}

impl TreeHead {
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }
}

async fn load_tree_head(tx: &mut Tx) -> anyhow::Result<TreeHead> {
    let sql = "SELECT tree_size, last_position, frontier FROM ledger_tree WHERE id = 1";
    let (size, last_position, frontier): (i64, i64, String) =
        on_backend!(tx, conn => sqlx::query_as(sql).fetch_one(conn).await)?;
    let peaks: Vec<String> = serde_json::from_str(&frontier).context("ledger_tree.frontier")?;
    let size = u64::try_from(size).context("negative tree size")?;
    let frontier = Frontier::from_hex(size, &peaks).map_err(|error| anyhow!(error))?;
    Ok(TreeHead {
        size,
        last_position,
        frontier,
    })
}

/// The sealed tree as it stands.
pub async fn tree_head(database: &Database) -> anyhow::Result<TreeHead> {
    let mut tx = database.begin_read().await?;
    let head = load_tree_head(&mut tx).await?;
    tx.rollback().await?;
    Ok(head)
}

/// What one [`Sealer::seal_once`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SealOutcome {
    pub sealed: u64,
    pub tree_size: u64,
    /// Every visible event is sealed.
    pub caught_up: bool,
}

/// Extends the tree over the settled prefix of the journal. Several sealers (one per app
/// instance) may run: each seal is a compare-and-set on the tree's size, so a sealer that
/// lost the race rolls back and tries again from the new head.
#[derive(Debug)]
pub struct Sealer {
    database: Database,
    /// PostgreSQL: `(largest visible position, an xid taken after seeing it)` of earlier
    /// snapshots, not yet known to be settled. Oldest first; positions increase.
    horizons: VecDeque<(i64, i64)>,
    batch_size: i64,
}

impl Sealer {
    pub fn new(database: Database) -> Self {
        Sealer {
            database,
            horizons: VecDeque::new(),
            batch_size: SEAL_BATCH,
        }
    }

    /// Seals up to one batch of settled events. Losing a race with another instance's
    /// sealer is not an error: nothing is sealed this time, the next call goes on.
    pub async fn seal_once(&mut self) -> anyhow::Result<SealOutcome> {
        match self.try_seal().await {
            Err(error) if lost_race(&error) => Ok(SealOutcome::default()),
            outcome => outcome,
        }
    }

    async fn try_seal(&mut self) -> anyhow::Result<SealOutcome> {
        let mut tx = self.database.begin_subscriber().await?;
        // On PostgreSQL this first statement takes the transaction's snapshot.
        let visible_max: i64 = on_backend!(&mut tx, conn => {
            sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
                .fetch_one(conn)
                .await
        })?;
        let head = load_tree_head(&mut tx).await?;
        let settled = match &mut tx {
            Tx::Sqlite(_) => visible_max,
            Tx::Postgres(conn) => {
                let unseen = self
                    .horizons
                    .back()
                    .map_or(head.last_position, |&(position, _)| position);
                if visible_max > unseen {
                    // Taken after the snapshot: newer than any writer below `visible_max`.
                    let xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
                        .fetch_one(&mut **conn)
                        .await?;
                    self.horizons.push_back((visible_max, xid));
                }
                // This database's horizon, not the cluster's (see `SETTLED_HORIZON`).
                let sql = format!("SELECT {}", super::journal::SETTLED_HORIZON);
                let horizon: i64 = sqlx::query_scalar(&sql).fetch_one(&mut **conn).await?;
                self.settled_postgres(horizon)
            }
        };
        if settled <= head.last_position {
            tx.rollback().await?;
            return Ok(SealOutcome {
                sealed: 0,
                tree_size: head.size,
                caught_up: head.last_position >= visible_max,
            });
        }
        let sql = format!(
            "SELECT {} FROM events WHERE position > $1 AND position <= $2 \
             ORDER BY position LIMIT $3",
            super::journal::COLUMNS
        );
        let events: Vec<JournalEvent> = on_backend!(&mut tx, conn => {
            let rows = sqlx::query(&sql)
                .bind(head.last_position)
                .bind(settled)
                .bind(self.batch_size)
                .fetch_all(conn)
                .await?;
            rows.iter().map(JournalEvent::from_row).collect::<Result<Vec<_>, _>>()?
        });
        let Some(last) = events.last() else {
            tx.rollback().await?;
            return Ok(SealOutcome {
                sealed: 0,
                tree_size: head.size,
                caught_up: settled >= visible_max,
            });
        };
        let last_position = last.position;
        let mut frontier = head.frontier.clone();
        let mut rows = Vec::with_capacity(events.len());
        for event in &events {
            let leaf = event_leaf_hash(event);
            rows.push((frontier.size() as i64, event.position, hex::encode(leaf)));
            frontier.push(leaf);
        }
        insert_leaves(&mut tx, &rows).await?;
        let moved = advance_tree(&mut tx, &head, &frontier, last_position).await?;
        if !moved {
            tx.rollback().await?;
            return Ok(SealOutcome {
                sealed: 0,
                tree_size: head.size,
                caught_up: false,
            });
        }
        tx.commit().await?;
        tracing::debug!(
            sealed = events.len(),
            tree_size = frontier.size(),
            last_position,
            "journal sealed"
        );
        Ok(SealOutcome {
            sealed: events.len() as u64,
            tree_size: frontier.size(),
            caught_up: last_position >= visible_max,
        })
    }

    /// The largest position known to be final, given the oldest transaction of this
    /// database still running in this snapshot (see the module docs). An entry
    /// `(position, xid)` settles once no transaction older than `xid` runs: `xid`'s own
    /// transaction, an earlier sealing one, has ended, so the snapshot lists every running
    /// transaction below it.
    fn settled_postgres(&mut self, horizon: i64) -> i64 {
        let mut settled = 0;
        while let Some(&(position, xid)) = self.horizons.front() {
            if xid >= horizon {
                break;
            }
            settled = settled.max(position);
            self.horizons.pop_front();
        }
        settled
    }

    /// Seals until every event visible when it started is sealed, or `budget` runs out.
    pub async fn seal_all(&mut self, budget: std::time::Duration) -> anyhow::Result<u64> {
        let started = std::time::Instant::now();
        loop {
            let outcome = self.seal_once().await?;
            if outcome.caught_up {
                return Ok(outcome.tree_size);
            }
            if started.elapsed() > budget {
                bail!(
                    "the journal could not be sealed within {budget:?}: a long transaction \
                     is holding back PostgreSQL's xmin horizon (see pg_stat_activity)"
                );
            }
            if outcome.sealed == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

/// A serialization failure or a duplicate leaf: another sealer extended the tree first.
fn lost_race(error: &anyhow::Error) -> bool {
    let Some(sqlx::Error::Database(error)) = error.downcast_ref::<sqlx::Error>() else {
        return false;
    };
    matches!(error.code().as_deref(), Some("40001" | "23505"))
}

async fn insert_leaves(tx: &mut Tx, rows: &[(i64, i64, String)]) -> Result<(), sqlx::Error> {
    for chunk in rows.chunks(LEAF_INSERT_CHUNK) {
        let placeholders: Vec<String> = (0..chunk.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO ledger_leaves (leaf_index, position, leaf_hash) VALUES {}",
            placeholders.join(", ")
        );
        on_backend!(tx, conn => {
            let mut query = sqlx::query(&sql);
            for (index, position, hash) in chunk {
                query = query.bind(*index).bind(*position).bind(hash);
            }
            query.execute(conn).await?;
        });
    }
    Ok(())
}

async fn advance_tree(
    tx: &mut Tx,
    from: &TreeHead,
    to: &Frontier,
    last_position: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE ledger_tree SET tree_size = $1, last_position = $2, frontier = $3, \
               updated_at = CURRENT_TIMESTAMP WHERE id = 1 AND tree_size = $4";
    let frontier = serde_json::to_string(&to.to_hex()).unwrap_or_else(|_| "[]".into());
    let affected = on_backend!(tx, conn => {
        sqlx::query(sql)
            .bind(to.size() as i64)
            .bind(last_position)
            .bind(frontier)
            .bind(from.size as i64)
            .execute(conn)
            .await?
            .rows_affected()
    });
    Ok(affected == 1)
}

/// The Ed25519 key that signs checkpoints (`LATCHKEY_SIGNING_KEY`: a 32-byte seed in
/// base64, e.g. `openssl rand -base64 32`).
#[derive(Clone)]
pub struct LedgerKey {
    signing: SigningKey,
}

impl std::fmt::Debug for LedgerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LedgerKey({})", self.public_key_base64())
    }
}

impl LedgerKey {
    pub fn from_base64_seed(text: &str) -> Result<Self, String> {
        let bytes = BASE64
            .decode(text.trim())
            .map_err(|error| format!("not base64: {error}"))?;
        let seed: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
            format!(
                "the seed must be 32 bytes, not {} (make one with `openssl rand -base64 32`)",
                bytes.len()
            )
        })?;
        Ok(LedgerKey {
            signing: SigningKey::from_bytes(&seed),
        })
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The public key as auditors receive it: 32 bytes, base64.
    pub fn public_key_base64(&self) -> String {
        BASE64.encode(self.verifying_key().as_bytes())
    }

    /// Signs `(size, root, now)`.
    pub fn sign(&self, tree_size: u64, root: &Hash, at: DateTime<Utc>) -> Checkpoint {
        let signed_at = at.to_rfc3339_opts(SecondsFormat::Secs, true);
        let root_hash = hex::encode(root);
        let message = checkpoint_message(tree_size, &root_hash, &signed_at);
        let signature = self.signing.sign(message.as_bytes());
        Checkpoint {
            tree_size,
            root_hash,
            signed_at,
            public_key: self.public_key_base64(),
            signature: BASE64.encode(signature.to_bytes()),
        }
    }
}

/// Reads a base64 Ed25519 public key (as `latchkey checkpoint --public-key` prints it).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|error| format!("the public key is not base64: {error}"))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "the public key must be 32 bytes".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|error| format!("not an Ed25519 public key: {error}"))
}

/// The exact text a checkpoint signature covers, one field a line.
pub fn checkpoint_message(tree_size: u64, root_hash: &str, signed_at: &str) -> String {
    format!("{CHECKPOINT_TAG}\n{tree_size}\n{root_hash}\n{signed_at}\n")
}

/// A signed tree head: the first `tree_size` events of the journal have Merkle root
/// `root_hash` (hex), as of `signed_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Checkpoint {
    pub tree_size: u64,
    pub root_hash: String,
    /// RFC 3339, exactly as signed.
    pub signed_at: String,
    /// Base64 Ed25519 public key of the signer.
    pub public_key: String,
    /// Base64 Ed25519 signature of [`checkpoint_message`].
    pub signature: String,
}

impl Checkpoint {
    pub fn root(&self) -> Result<Hash, String> {
        merkle::parse_hash(&self.root_hash)
    }

    /// Checks the signature with `key`, or with the key the checkpoint names if none is
    /// pinned (which proves integrity, not who signed).
    pub fn verify_signature(&self, key: Option<&VerifyingKey>) -> Result<(), String> {
        let named;
        let key = match key {
            Some(key) => key,
            None => {
                named = parse_public_key(&self.public_key)?;
                &named
            }
        };
        let bytes = BASE64
            .decode(&self.signature)
            .map_err(|error| format!("the signature is not base64: {error}"))?;
        let signature = Signature::from_slice(&bytes)
            .map_err(|error| format!("not an Ed25519 signature: {error}"))?;
        let message = checkpoint_message(self.tree_size, &self.root_hash, &self.signed_at);
        key.verify_strict(message.as_bytes(), &signature)
            .map_err(|_| {
                format!(
                    "the checkpoint of size {} signed at {} has a bad signature for this key",
                    self.tree_size, self.signed_at
                )
            })
    }
}

/// Seals everything settled, then signs and stores a checkpoint of the sealed tree.
pub async fn make_checkpoint(
    database: &Database,
    key: &LedgerKey,
    seal_budget: std::time::Duration,
) -> anyhow::Result<Checkpoint> {
    Sealer::new(database.clone()).seal_all(seal_budget).await?;
    let head = tree_head(database).await?;
    let checkpoint = key.sign(head.size, &head.root(), Utc::now());
    store_checkpoint(database, &checkpoint).await?;
    tracing::info!(
        tree_size = checkpoint.tree_size,
        root = %checkpoint.root_hash,
        "journal checkpoint signed"
    );
    Ok(checkpoint)
}

pub async fn store_checkpoint(database: &Database, checkpoint: &Checkpoint) -> anyhow::Result<()> {
    let sql = "INSERT INTO ledger_checkpoints (tree_size, root_hash, signed_at, public_key, \
               signature) VALUES ($1, $2, $3, $4, $5)";
    on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(checkpoint.tree_size as i64)
            .bind(&checkpoint.root_hash)
            .bind(&checkpoint.signed_at)
            .bind(&checkpoint.public_key)
            .bind(&checkpoint.signature)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    Ok(())
}

/// Every stored checkpoint, smallest tree first (oldest first for equal sizes).
pub async fn checkpoints(database: &Database) -> anyhow::Result<Vec<Checkpoint>> {
    select_checkpoints(
        database,
        "SELECT tree_size, root_hash, signed_at, public_key, signature \
         FROM ledger_checkpoints ORDER BY tree_size, id",
    )
    .await
}

/// The stored checkpoint of the largest tree (the latest signed of that size). One row:
/// the sealer asks after every seal, and checkpoints only accumulate.
pub async fn latest_checkpoint(database: &Database) -> anyhow::Result<Option<Checkpoint>> {
    Ok(select_checkpoints(
        database,
        "SELECT tree_size, root_hash, signed_at, public_key, signature \
         FROM ledger_checkpoints ORDER BY tree_size DESC, id DESC LIMIT 1",
    )
    .await?
    .pop())
}

async fn select_checkpoints(database: &Database, sql: &str) -> anyhow::Result<Vec<Checkpoint>> {
    let rows: Vec<(i64, String, String, String, String)> =
        on_pool!(database, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .map(
            |(tree_size, root_hash, signed_at, public_key, signature)| Checkpoint {
                tree_size: tree_size.max(0) as u64,
                root_hash,
                signed_at,
                public_key,
                signature,
            },
        )
        .collect())
}

/// How often the sealer looks at the journal when no append in this process woke it
/// (appends by other instances, and PostgreSQL's xmin horizon moving on).
const SEAL_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// How long the sealer lets appends gather after one woke it: larger batches, fewer
/// transactions; a quarter of a second is nothing to an auditor.
const SEAL_COALESCE: std::time::Duration = std::time::Duration::from_millis(250);

/// The background task of one app instance: seals the journal as it grows and, with a
/// signing key, signs a checkpoint every `checkpoint_every_events` sealed events or every
/// `checkpoint_every` if anything was sealed since the last one.
pub fn spawn_sealer(
    database: Database,
    appended: super::repository::AppendSignal,
    settings: crate::config::LedgerSettings,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut sealer = Sealer::new(database.clone());
        let mut woken = appended.subscribe();
        let mut last_signed = std::time::Instant::now();
        loop {
            match sealer.seal_once().await {
                Ok(outcome) if outcome.sealed > 0 && !outcome.caught_up => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "sealing the journal failed; retrying")
                }
            }
            if let Some(key) = &settings.signing_key {
                if let Err(error) =
                    checkpoint_if_due(&database, key, &settings, &mut last_signed).await
                {
                    tracing::warn!(error = %error, "signing a journal checkpoint failed");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = woken.changed() => {
                    // Appends come in bursts: one seal for the whole burst keeps the
                    // sealer's share of the CPU small under load (`ledger_append`).
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(SEAL_COALESCE) => {}
                    }
                }
                _ = tokio::time::sleep(SEAL_POLL) => {}
            }
        }
    })
}

async fn checkpoint_if_due(
    database: &Database,
    key: &LedgerKey,
    settings: &crate::config::LedgerSettings,
    last_signed: &mut std::time::Instant,
) -> anyhow::Result<()> {
    let head = tree_head(database).await?;
    let signed_size = latest_checkpoint(database)
        .await?
        .map_or(0, |checkpoint| checkpoint.tree_size);
    let new_events = head.size.saturating_sub(signed_size);
    let due = new_events >= settings.checkpoint_every_events
        || (new_events > 0 && last_signed.elapsed() >= settings.checkpoint_every);
    if !due {
        return Ok(());
    }
    let checkpoint = key.sign(head.size, &head.root(), Utc::now());
    store_checkpoint(database, &checkpoint).await?;
    *last_signed = std::time::Instant::now();
    tracing::info!(
        tree_size = checkpoint.tree_size,
        "journal checkpoint signed"
    );
    Ok(())
}

/// The first thing found wrong, with the journal position it concerns when there is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LedgerProblem {
    pub position: Option<i64>,
    pub reason: String,
}

impl std::fmt::Display for LedgerProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some(position) => write!(f, "position {position}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// The outcome of checking the journal against the global commitment.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerVerification {
    pub events_checked: u64,
    pub sealed_size: u64,
    /// Events after the sealed prefix (not yet committed to; the sealer will).
    pub unsealed: u64,
    pub checkpoints_checked: usize,
    /// The largest checkpoint the journal was checked against.
    pub latest_checkpoint: Option<Checkpoint>,
    pub problem: Option<LedgerProblem>,
}

/// One stored leaf.
#[derive(Clone, Debug)]
struct StoredLeaf {
    index: i64,
    position: i64,
    hash: String,
}

async fn leaf_page(
    database: &Database,
    from_index: i64,
    limit: i64,
) -> Result<Vec<StoredLeaf>, sqlx::Error> {
    let sql = "SELECT leaf_index, position, leaf_hash FROM ledger_leaves \
               WHERE leaf_index >= $1 ORDER BY leaf_index LIMIT $2";
    on_pool!(database, pool => {
        let rows = sqlx::query(sql).bind(from_index).bind(limit).fetch_all(pool).await?;
        rows.iter()
            .map(|row| {
                Ok(StoredLeaf {
                    index: row.try_get(0)?,
                    position: row.try_get(1)?,
                    hash: row.try_get(2)?,
                })
            })
            .collect()
    })
}

/// Pages through a sorted source one item at a time.
struct Paged<T> {
    buffer: std::vec::IntoIter<T>,
    exhausted: bool,
}

impl<T> Paged<T> {
    fn new() -> Self {
        Paged {
            buffer: Vec::new().into_iter(),
            exhausted: false,
        }
    }
}

/// Checks the journal against its sealed leaves and against `checkpoints`, whose
/// signatures must verify with `key` (or, if `None`, with the key each names). Stops at
/// the first problem, which is the one at the smallest position.
pub async fn verify_ledger(
    journal: &Journal,
    mut checkpoints: Vec<Checkpoint>,
    key: Option<&VerifyingKey>,
) -> anyhow::Result<LedgerVerification> {
    let database = journal.database();
    checkpoints.sort_by_key(|checkpoint| checkpoint.tree_size);
    let mut outcome = LedgerVerification {
        events_checked: 0,
        sealed_size: tree_head(database).await?.size,
        unsealed: 0,
        checkpoints_checked: 0,
        latest_checkpoint: None,
        problem: None,
    };
    // A checkpoint with a bad signature proves nothing; the journal is checked against
    // the genuine ones first, so a rewrite is reported as such, then the forgery.
    let (genuine, forged): (Vec<Checkpoint>, Vec<Checkpoint>) = checkpoints
        .into_iter()
        .partition(|checkpoint| checkpoint.verify_signature(key).is_ok());
    outcome.latest_checkpoint = genuine.last().cloned();
    outcome.problem = walk(journal, &genuine, &mut outcome).await?;
    if outcome.problem.is_none() {
        if let Some(checkpoint) = forged.first() {
            outcome.problem = Some(LedgerProblem {
                position: None,
                reason: checkpoint.verify_signature(key).err().unwrap_or_default(),
            });
        }
    }
    Ok(outcome)
}

/// Merges the journal (by position) with the stored leaves (by index), recomputing each
/// leaf and the root at every checkpoint's size.
async fn walk(
    journal: &Journal,
    checkpoints: &[Checkpoint],
    outcome: &mut LedgerVerification,
) -> anyhow::Result<Option<LedgerProblem>> {
    let database = journal.database();
    let sealed_through = tree_head(database).await?.last_position;
    let mut events = Paged::<JournalEvent>::new();
    let mut leaves = Paged::<StoredLeaf>::new();
    let mut filter = EventFilter::default();
    let mut next_leaf_index = 0_i64;
    let mut recomputed = Frontier::default();
    let mut pending = checkpoints.iter().peekable();
    // Where the last checkpoint that matched ends, to bound a rewrite we cannot localize.
    let mut last_good = (0_u64, 0_i64);
    let mut event = next_event(journal, &mut events, &mut filter).await?;
    let mut leaf = next_leaf(database, &mut leaves, next_leaf_index).await?;
    let problem = |position: i64, reason: String| {
        Ok(Some(LedgerProblem {
            position: Some(position),
            reason,
        }))
    };
    loop {
        while let Some(checkpoint) = pending.next_if(|c| c.tree_size == recomputed.size()) {
            outcome.checkpoints_checked += 1;
            if checkpoint.root().ok() != Some(recomputed.root()) {
                let reason = format!(
                    "the first {} events do not match the checkpoint signed at {} (root {}): \
                     history between positions {} and {} was rewritten",
                    checkpoint.tree_size,
                    checkpoint.signed_at,
                    checkpoint.root_hash,
                    last_good.1 + 1,
                    filter.after.max(last_good.1 + 1),
                );
                return Ok(Some(LedgerProblem {
                    position: None,
                    reason,
                }));
            }
            last_good = (checkpoint.tree_size, filter.after);
        }
        match (&event, &leaf) {
            (None, None) => break,
            (Some(e), None) => {
                if e.position <= sealed_through {
                    return problem(
                        e.position,
                        "this event is not in the sealed commitment: it was inserted".into(),
                    );
                }
                outcome.unsealed += 1;
                outcome.events_checked += 1;
                event = next_event(journal, &mut events, &mut filter).await?;
            }
            (None, Some(l)) => {
                return problem(
                    l.position,
                    "a sealed event is missing from the journal: it was deleted".into(),
                )
            }
            (Some(e), Some(l)) => {
                if l.index != next_leaf_index {
                    return problem(
                        l.position,
                        format!(
                            "the commitment's leaf {next_leaf_index} is missing: the stored \
                             commitment itself was edited"
                        ),
                    );
                }
                if e.position < l.position {
                    return problem(
                        e.position,
                        "this event is not in the sealed commitment: it was inserted".into(),
                    );
                }
                if e.position > l.position {
                    return problem(
                        l.position,
                        "a sealed event is missing from the journal: it was deleted".into(),
                    );
                }
                let hash = event_leaf_hash(e);
                if hex::encode(hash) != l.hash {
                    return problem(
                        e.position,
                        format!(
                            "{} {} sequence {} ({}) differs from what was sealed: its content, \
                             metadata, time or position was changed",
                            e.aggregate_type, e.aggregate_id, e.sequence, e.event_type
                        ),
                    );
                }
                recomputed.push(hash);
                outcome.events_checked += 1;
                next_leaf_index += 1;
                event = next_event(journal, &mut events, &mut filter).await?;
                leaf = next_leaf(database, &mut leaves, next_leaf_index).await?;
            }
        }
    }
    if let Some(checkpoint) = pending.next() {
        return Ok(Some(LedgerProblem {
            position: None,
            reason: format!(
                "the journal has only {} sealed events but the checkpoint signed at {} covers \
                 {}: events after position {} were deleted",
                recomputed.size(),
                checkpoint.signed_at,
                checkpoint.tree_size,
                last_good.1.max(filter.after),
            ),
        }));
    }
    Ok(None)
}

async fn next_event(
    journal: &Journal,
    paged: &mut Paged<JournalEvent>,
    filter: &mut EventFilter,
) -> anyhow::Result<Option<JournalEvent>> {
    if let Some(event) = paged.buffer.next() {
        filter.after = event.position;
        return Ok(Some(event));
    }
    if paged.exhausted {
        return Ok(None);
    }
    let page = journal.page(filter, VERIFY_PAGE).await?;
    paged.exhausted = (page.len() as i64) < VERIFY_PAGE;
    paged.buffer = page.into_iter();
    let event = paged.buffer.next();
    if let Some(event) = &event {
        filter.after = event.position;
    }
    Ok(event)
}

async fn next_leaf(
    database: &Database,
    paged: &mut Paged<StoredLeaf>,
    from_index: i64,
) -> anyhow::Result<Option<StoredLeaf>> {
    if let Some(leaf) = paged.buffer.next() {
        return Ok(Some(leaf));
    }
    if paged.exhausted {
        return Ok(None);
    }
    let page = leaf_page(database, from_index, VERIFY_PAGE).await?;
    paged.exhausted = (page.len() as i64) < VERIFY_PAGE;
    paged.buffer = page.into_iter();
    Ok(paged.buffer.next())
}

/// Every stored leaf hash of the first `size` leaves, checked against `root`.
async fn sealed_leaves(database: &Database, size: u64, root: &Hash) -> anyhow::Result<Vec<Hash>> {
    let mut hashes = Vec::with_capacity(size as usize);
    let mut from = 0_i64;
    while (hashes.len() as u64) < size {
        let page = leaf_page(database, from, 10_000).await?;
        if page.is_empty() {
            break;
        }
        for leaf in page {
            if (hashes.len() as u64) == size {
                break;
            }
            if leaf.index != hashes.len() as i64 {
                bail!(
                    "the stored commitment lacks leaf {}; run `latchkey verify`",
                    hashes.len()
                );
            }
            hashes.push(merkle::parse_hash(&leaf.hash).map_err(|error| anyhow!(error))?);
            from = leaf.index + 1;
        }
    }
    if (hashes.len() as u64) != size || merkle::root(&hashes) != *root {
        bail!(
            "the stored commitment no longer matches the checkpoint of size {size}; \
             run `latchkey verify` to find what changed"
        );
    }
    Ok(hashes)
}

/// Proof that one event is leaf `leaf_index` of the tree a signed checkpoint commits to.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InclusionProof {
    pub leaf_index: u64,
    /// The event, as `latchkey export` writes it; its leaf hash is recomputed from this.
    #[schema(value_type = Object)]
    pub event: serde_json::Value,
    pub leaf_hash: String,
    /// Sibling hashes from the leaf up (RFC 6962 PATH), hex.
    pub audit_path: Vec<String>,
    pub checkpoint: Checkpoint,
}

/// Proof that the tree of an older checkpoint is a prefix of a newer one.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConsistencyProof {
    pub old: Checkpoint,
    pub new: Checkpoint,
    /// RFC 6962 PROOF(old.tree_size, D[new.tree_size]), hex.
    pub consistency_path: Vec<String>,
}

/// Why a proof cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// An inclusion proof of the event at `position` against the latest stored checkpoint.
pub async fn prove_inclusion(
    journal: &Journal,
    position: i64,
) -> Result<InclusionProof, ProofError> {
    let database = journal.database();
    let checkpoint = latest_checkpoint(database).await?.ok_or_else(|| {
        ProofError::NotFound("no checkpoint has been signed yet; run `latchkey checkpoint`".into())
    })?;
    let sql = "SELECT leaf_index FROM ledger_leaves WHERE position = $1";
    let index: Option<i64> = on_pool!(database, pool => {
        sqlx::query_scalar(sql).bind(position).fetch_optional(pool).await
    })
    .map_err(anyhow::Error::from)?;
    let index = index
        .map(|index| index as u64)
        .filter(|index| *index < checkpoint.tree_size)
        .ok_or_else(|| {
            ProofError::NotFound(format!(
                "position {position} is not covered by the latest checkpoint (size {}); \
                 it may not exist, or be newer: sign a new checkpoint first",
                checkpoint.tree_size
            ))
        })?;
    let filter = EventFilter {
        after: position - 1,
        until: Some(position),
        ..Default::default()
    };
    let event = journal
        .page(&filter, 1)
        .await
        .map_err(anyhow::Error::from)?
        .pop()
        .ok_or_else(|| ProofError::NotFound(format!("no event at position {position}")))?;
    let root = checkpoint.root().map_err(|error| anyhow!(error))?;
    let leaves = sealed_leaves(database, checkpoint.tree_size, &root).await?;
    let leaf = leaves[index as usize];
    if event_leaf_hash(&event) != leaf {
        return Err(anyhow!(
            "the event at position {position} no longer matches its sealed leaf; run `latchkey verify`"
        )
        .into());
    }
    Ok(InclusionProof {
        leaf_index: index,
        event: serde_json::to_value(&event).map_err(anyhow::Error::from)?,
        leaf_hash: hex::encode(leaf),
        audit_path: merkle::inclusion_proof(&leaves, index as usize)
            .iter()
            .map(hex::encode)
            .collect(),
        checkpoint,
    })
}

/// A consistency proof between the stored checkpoints of sizes `old_size` and `new_size`.
pub async fn prove_consistency(
    database: &Database,
    old_size: u64,
    new_size: u64,
) -> Result<ConsistencyProof, ProofError> {
    if old_size == 0 || old_size > new_size {
        return Err(ProofError::NotFound(format!(
            "expected 0 < OLD <= NEW, got {old_size} and {new_size}"
        )));
    }
    let stored = checkpoints(database).await?;
    let find = |size: u64| {
        stored
            .iter()
            .rev()
            .find(|checkpoint| checkpoint.tree_size == size)
            .cloned()
            .ok_or_else(|| {
                let sizes: Vec<String> = stored.iter().map(|c| c.tree_size.to_string()).collect();
                ProofError::NotFound(format!(
                    "no checkpoint of size {size}; stored sizes: {}",
                    sizes.join(", ")
                ))
            })
    };
    let (old, new) = (find(old_size)?, find(new_size)?);
    let root = new.root().map_err(|error| anyhow!(error))?;
    let leaves = sealed_leaves(database, new_size, &root).await?;
    Ok(ConsistencyProof {
        consistency_path: merkle::consistency_proof(&leaves, old_size as usize)
            .iter()
            .map(hex::encode)
            .collect(),
        old,
        new,
    })
}

/// Reads an event as `latchkey export` writes it back into the fields a leaf covers.
pub fn event_from_export(value: &serde_json::Value) -> Result<JournalEvent, String> {
    let text = |key: &str| {
        value
            .get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("the event has no {key}"))
    };
    let number = |key: &str| {
        value
            .get(key)
            .and_then(serde_json::Value::as_i64)
            .ok_or_else(|| format!("the event has no {key}"))
    };
    Ok(JournalEvent {
        position: number("position")?,
        transaction_id: 0,
        aggregate_type: text("aggregate_type")?,
        aggregate_id: text("aggregate_id")?,
        sequence: number("sequence")?,
        event_type: text("event_type")?,
        event_version: text("event_version")?,
        payload: value
            .get("payload")
            .cloned()
            .ok_or("the event has no payload")?,
        metadata: value
            .get("metadata")
            .cloned()
            .ok_or("the event has no metadata")?,
        recorded_at: text("recorded_at")?
            .parse()
            .map_err(|error| format!("recorded_at: {error}"))?,
    })
}

fn hashes(texts: &[String]) -> Result<Vec<Hash>, String> {
    texts.iter().map(|text| merkle::parse_hash(text)).collect()
}

impl InclusionProof {
    /// Recomputes the leaf from the event, walks the path to the root, and checks the
    /// checkpoint's signature.
    pub fn check(&self, key: Option<&VerifyingKey>) -> Result<(), String> {
        let event = event_from_export(&self.event)?;
        let leaf = event_leaf_hash(&event);
        if hex::encode(leaf) != self.leaf_hash {
            return Err("the event does not hash to the proof's leaf_hash".into());
        }
        let path = hashes(&self.audit_path)?;
        if !merkle::verify_inclusion(
            self.leaf_index,
            self.checkpoint.tree_size,
            &leaf,
            &path,
            &self.checkpoint.root()?,
        ) {
            return Err(format!(
                "the audit path does not lead from leaf {} to the checkpoint's root",
                self.leaf_index
            ));
        }
        self.checkpoint.verify_signature(key)
    }
}

impl ConsistencyProof {
    pub fn check(&self, key: Option<&VerifyingKey>) -> Result<(), String> {
        let path = hashes(&self.consistency_path)?;
        if !merkle::verify_consistency(
            self.old.tree_size,
            self.new.tree_size,
            &self.old.root()?,
            &self.new.root()?,
            &path,
        ) {
            return Err(format!(
                "the tree of size {} is not a prefix of the tree of size {}",
                self.old.tree_size, self.new.tree_size
            ));
        }
        self.old.verify_signature(key)?;
        self.new.verify_signature(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(position: i64) -> JournalEvent {
        JournalEvent {
            position,
            transaction_id: 0,
            aggregate_type: "Payment".into(),
            aggregate_id: "p-1".into(),
            sequence: 1,
            event_type: "CheckoutStarted".into(),
            event_version: "1".into(),
            payload: json!({"a": 1}),
            metadata: json!({"actor": "guest"}),
            recorded_at: "2026-12-03T10:00:00.123456Z".parse().unwrap(),
        }
    }

    #[test]
    fn every_field_changes_the_leaf() {
        let base = event_leaf_hash(&event(1));
        let mut changes: Vec<JournalEvent> = Vec::new();
        let mut e = event(1);
        e.position = 2;
        changes.push(e);
        let mut e = event(1);
        e.metadata = json!({"actor": "operator:mallory"});
        changes.push(e);
        let mut e = event(1);
        e.recorded_at = "2026-12-03T10:00:00.123457Z".parse().unwrap();
        changes.push(e);
        let mut e = event(1);
        e.event_version = "2".into();
        changes.push(e);
        let mut e = event(1);
        e.payload = json!({"a": 2});
        changes.push(e);
        let mut e = event(1);
        e.sequence = 2;
        changes.push(e);
        for changed in changes {
            assert_ne!(event_leaf_hash(&changed), base, "{changed:?}");
        }
    }

    #[test]
    fn checkpoints_verify_only_with_their_key_and_unchanged() {
        let key = LedgerKey::from_base64_seed(&BASE64.encode([7_u8; 32])).unwrap();
        let other = LedgerKey::from_base64_seed(&BASE64.encode([8_u8; 32])).unwrap();
        let checkpoint = key.sign(5, &[1; 32], Utc::now());
        assert!(checkpoint
            .verify_signature(Some(&key.verifying_key()))
            .is_ok());
        assert!(checkpoint.verify_signature(None).is_ok());
        assert!(checkpoint
            .verify_signature(Some(&other.verifying_key()))
            .is_err());
        let mut grown = checkpoint.clone();
        grown.tree_size = 6;
        assert!(grown.verify_signature(Some(&key.verifying_key())).is_err());
        assert!(LedgerKey::from_base64_seed("c2hvcnQ=")
            .unwrap_err()
            .contains("32 bytes"));
    }

    #[test]
    fn an_exported_event_hashes_like_the_stored_one() {
        let stored = event(9);
        let exported = serde_json::to_value(&stored).unwrap();
        let back = event_from_export(&exported).unwrap();
        assert_eq!(event_leaf_hash(&back), event_leaf_hash(&stored));
    }
}
