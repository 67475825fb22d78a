//! `latchkey verify`: recompute every hash chain in the journal.

use anyhow::bail;

use crate::config::Settings;
use crate::store::chain::{BrokenLink, ChainVerifier, ChainedFields};
use crate::store::journal::Journal;
use crate::store::{Database, PoolSize};

/// Events read per query while walking the journal.
const PAGE_SIZE: i64 = 1_000;

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
            broken = verifier.check(&fields, &event.metadata);
            broken.is_none()
        })
        .await?;
    Ok(Verification {
        events_checked: verifier.events_checked,
        aggregates_checked: verifier.aggregates_checked,
        broken,
    })
}

pub async fn run(settings: &Settings) -> anyhow::Result<()> {
    let database = Database::connect(&settings.database_url, PoolSize::default()).await?;
    let outcome = verify_journal(&Journal::new(database)).await?;
    match outcome.broken {
        None => {
            println!(
                "ok: {} events in {} aggregates, every hash chain intact",
                outcome.events_checked, outcome.aggregates_checked
            );
            Ok(())
        }
        Some(link) => bail!(
            "hash chain broken at {link} (checked {} events before stopping); \
             restore this aggregate's events from a backup and investigate who changed them",
            outcome.events_checked
        ),
    }
}
