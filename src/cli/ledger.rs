//! `latchkey checkpoint`, `latchkey prove` and `latchkey check-proof`: signed checkpoints
//! of the journal's global commitment, and the proofs an auditor checks offline.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

use crate::config::Settings;
use crate::store::journal::Journal;
use crate::store::ledger::{self, ConsistencyProof, InclusionProof};
use crate::store::{Database, PoolSize};

/// How long `checkpoint` waits for the journal's tail to settle (PostgreSQL: for running
/// transactions to end) before it gives up with a message.
const SEAL_BUDGET: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    /// Print the base64 public key of LATCHKEY_SIGNING_KEY instead (give it to auditors).
    #[arg(long)]
    pub public_key: bool,
}

#[derive(Debug, clap::Args)]
pub struct ProveArgs {
    /// The journal position of the event to prove (inclusion in the latest checkpoint).
    #[arg(required_unless_present = "consistency")]
    pub position: Option<i64>,
    /// OLD NEW: prove that the checkpoint of tree size OLD is a prefix of the one of NEW.
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"], conflicts_with = "position")]
    pub consistency: Option<Vec<u64>>,
}

#[derive(Debug, clap::Args)]
pub struct CheckProofArgs {
    /// A proof as `latchkey prove` printed it.
    pub file: PathBuf,
    /// The base64 Ed25519 public key the checkpoints must be signed with.
    #[arg(long)]
    pub public_key: Option<String>,
}

pub async fn checkpoint(settings: &Settings, args: CheckpointArgs) -> anyhow::Result<()> {
    let key = settings.ledger.signing_key.as_ref().context(
        "set LATCHKEY_SIGNING_KEY to a 32-byte Ed25519 seed in base64 \
         (make one with `openssl rand -base64 32`)",
    )?;
    if args.public_key {
        println!("{}", key.public_key_base64());
        return Ok(());
    }
    let database = Database::connect(&settings.database_url, PoolSize::default()).await?;
    let checkpoint = ledger::make_checkpoint(&database, key, SEAL_BUDGET).await?;
    println!("{}", serde_json::to_string_pretty(&checkpoint)?);
    Ok(())
}

pub async fn prove(settings: &Settings, args: ProveArgs) -> anyhow::Result<()> {
    let database = Database::connect(&settings.database_url, PoolSize::default()).await?;
    let proof = match (args.position, args.consistency.as_deref()) {
        (_, Some(&[old, new])) => {
            serde_json::to_value(ledger::prove_consistency(&database, old, new).await?)?
        }
        (Some(position), None) => {
            serde_json::to_value(ledger::prove_inclusion(&Journal::new(database), position).await?)?
        }
        _ => bail!("give a POSITION, or --consistency OLD NEW"),
    };
    println!("{}", serde_json::to_string_pretty(&proof)?);
    Ok(())
}

/// Checks an inclusion or consistency proof; needs no database.
pub fn check_proof(settings: &Settings, args: CheckProofArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("could not read {}", args.file.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.file.display()))?;
    let key = super::verify::pinned_key(settings, args.public_key.as_deref())?;
    let pinned = if key.is_some() {
        ""
    } else {
        " (signature checked with the key the proof names; pass --public-key to pin it)"
    };
    if value.get("audit_path").is_some() {
        let proof: InclusionProof = serde_json::from_value(value)?;
        proof
            .check(key.as_ref())
            .map_err(|e| anyhow!("proof rejected: {e}"))?;
        println!(
            "ok: the event at position {} is leaf {} of the tree of size {} signed at {}{pinned}",
            proof.event["position"],
            proof.leaf_index,
            proof.checkpoint.tree_size,
            proof.checkpoint.signed_at
        );
    } else if value.get("consistency_path").is_some() {
        let proof: ConsistencyProof = serde_json::from_value(value)?;
        proof
            .check(key.as_ref())
            .map_err(|e| anyhow!("proof rejected: {e}"))?;
        println!(
            "ok: the tree of size {} (signed at {}) is a prefix of the tree of size {} \
             (signed at {}){pinned}",
            proof.old.tree_size, proof.old.signed_at, proof.new.tree_size, proof.new.signed_at
        );
    } else {
        bail!(
            "{} is neither an inclusion proof (audit_path) nor a consistency proof \
             (consistency_path)",
            args.file.display()
        );
    }
    Ok(())
}
