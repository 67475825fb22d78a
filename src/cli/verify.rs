//! `latchkey verify`: check the journal against its global commitment and signed
//! checkpoints (stored ones, and one held outside with `--checkpoint`), then recompute
//! every aggregate's hash chain. Exits non-zero naming the first bad position.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};
use ed25519_dalek::VerifyingKey;

use crate::config::Settings;
use crate::store::chain::{BrokenLink, ChainVerifier, ChainedFields};
use crate::store::journal::Journal;
use crate::store::ledger::{self, Checkpoint, LedgerVerification};
use crate::store::{Database, PoolSize};

/// Events read per query while walking the journal.
const PAGE_SIZE: i64 = 1_000;

#[derive(Debug, Default, clap::Args)]
pub struct VerifyArgs {
    /// A checkpoint held outside the database (the JSON `latchkey checkpoint` printed, or
    /// an array of them); checked in addition to the stored ones.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// The base64 Ed25519 public key every checkpoint must be signed with (default: the
    /// key of LATCHKEY_SIGNING_KEY; without either, each checkpoint's own key).
    #[arg(long)]
    pub public_key: Option<String>,
}

/// The outcome of a full verification.
#[derive(Debug)]
pub struct Verification {
    pub events_checked: u64,
    pub aggregates_checked: u64,
    pub broken: Option<BrokenLink>,
}

/// Walks the whole journal and stops at the first broken link.
pub async fn verify_journal(journal: &Journal) -> anyhow::Result<Verification> {
    let mut verifier = ChainVerifier::default();
    let mut broken = None;
    journal
        .walk_by_aggregate(PAGE_SIZE, |event| {
            let fields = ChainedFields {
                aggregate_type: &event.aggregate_type,
                aggregate_id: &event.aggregate_id,
                sequence: event.sequence,
                event_type: &event.event_type,
                event_version: &event.event_version,
                payload: &event.payload,
            };
            broken = verifier.check(&fields, &event.metadata).map(|mut link| {
                link.position = Some(event.position);
                link
            });
            broken.is_none()
        })
        .await?;
    Ok(Verification {
        events_checked: verifier.events_checked,
        aggregates_checked: verifier.aggregates_checked,
        broken,
    })
}

/// Reads a checkpoint file: one checkpoint object, or an array of them.
pub fn read_checkpoints(path: &std::path::Path) -> anyhow::Result<Vec<Checkpoint>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the checkpoint file {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let checkpoints = match value {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<Vec<Checkpoint>, _>>(),
        single => serde_json::from_value(single).map(|checkpoint| vec![checkpoint]),
    };
    checkpoints.with_context(|| {
        format!(
            "{} is not a checkpoint as `latchkey checkpoint` prints it",
            path.display()
        )
    })
}

/// The key checkpoints must verify with: `--public-key`, else the signing key's.
pub fn pinned_key(
    settings: &Settings,
    public_key: Option<&str>,
) -> anyhow::Result<Option<VerifyingKey>> {
    match public_key {
        Some(text) => Ok(Some(
            ledger::parse_public_key(text).map_err(|e| anyhow!(e))?,
        )),
        None => Ok(settings
            .ledger
            .signing_key
            .as_ref()
            .map(|key| key.verifying_key())),
    }
}

/// The global commitment, then the chains: the first problem found, if any.
pub async fn verify_all(
    journal: &Journal,
    external: Vec<Checkpoint>,
    key: Option<&VerifyingKey>,
) -> anyhow::Result<(LedgerVerification, Verification)> {
    let mut checkpoints = ledger::checkpoints(journal.database()).await?;
    checkpoints.extend(external);
    // The two walks are independent and each mostly hashing: on their own tasks they run
    // on two cores (the `verify_1m` benchmark).
    let by_position = tokio::spawn({
        let journal = journal.clone();
        let key = key.copied();
        async move { ledger::verify_ledger(&journal, checkpoints, key.as_ref()).await }
    });
    let chains = verify_journal(journal).await?;
    let ledger = by_position
        .await
        .context("the walk over the global commitment panicked")??;
    Ok((ledger, chains))
}

pub async fn run(settings: &Settings, args: VerifyArgs) -> anyhow::Result<()> {
    let database = Database::connect(&settings.database_url, PoolSize::default()).await?;
    let external = match &args.checkpoint {
        Some(path) => read_checkpoints(path)?,
        None => Vec::new(),
    };
    if args.checkpoint.is_some() && args.public_key.is_none() {
        bail!("--checkpoint needs --public-key: the key the checkpoint must be signed with");
    }
    let key = pinned_key(settings, args.public_key.as_deref())?;
    let journal = Journal::new(database);
    let (ledger, chains) = verify_all(&journal, external, key.as_ref()).await?;
    if let Some(problem) = ledger.problem {
        bail!(
            "journal tampered: {problem} (checked {} events against {} checkpoints); restore \
             the journal from a backup and investigate who changed it",
            ledger.events_checked,
            ledger.checkpoints_checked
        );
    }
    if let Some(link) = chains.broken {
        bail!(
            "hash chain broken at {link} (checked {} events before stopping); \
             restore this aggregate's events from a backup and investigate who changed them",
            chains.events_checked
        );
    }
    println!(
        "ok: {} events in {} aggregates, every hash chain intact",
        chains.events_checked, chains.aggregates_checked
    );
    match &ledger.latest_checkpoint {
        Some(checkpoint) => println!(
            "ok: {} sealed events match the global commitment and {} signed checkpoints \
             (latest: size {}, root {}, signed at {}){}; {} events not sealed yet",
            ledger.sealed_size,
            ledger.checkpoints_checked,
            checkpoint.tree_size,
            checkpoint.root_hash,
            checkpoint.signed_at,
            if key.is_some() {
                ""
            } else {
                " — signatures checked with the key each names; pass --public-key to pin it"
            },
            ledger.unsealed
        ),
        None => println!(
            "warning: {} sealed events match the stored commitment, but no checkpoint has \
             been signed: run `latchkey checkpoint` and keep its output outside the database",
            ledger.sealed_size
        ),
    }
    Ok(())
}
