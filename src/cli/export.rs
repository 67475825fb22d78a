//! `latchkey export`: the journal as NDJSON, one event per line, in position order.

use std::io::Write;

use crate::config::Settings;
use crate::store::journal::{EventFilter, Journal};
use crate::store::{Database, PoolSize};

/// Events fetched per query; the export streams, it never holds the journal in memory.
const PAGE_SIZE: i64 = 1_000;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Only events with a position greater than this.
    #[arg(long, default_value_t = 0)]
    pub after: i64,
    /// Only events with a position up to and including this.
    #[arg(long)]
    pub until: Option<i64>,
    /// Only events of this aggregate type (e.g. Payment).
    #[arg(long)]
    pub aggregate_type: Option<String>,
    /// Only events of this aggregate id.
    #[arg(long)]
    pub aggregate_id: Option<String>,
}

pub async fn run(settings: &Settings, args: ExportArgs) -> anyhow::Result<()> {
    let database = Database::connect(&settings.database_url, PoolSize::default()).await?;
    let journal = Journal::new(database);
    let mut filter = EventFilter {
        after: args.after,
        until: args.until,
        aggregate_type: args.aggregate_type,
        aggregate_id: args.aggregate_id,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    loop {
        let page = journal.page(&filter, PAGE_SIZE).await?;
        let Some(last) = page.last() else {
            break;
        };
        filter.after = last.position;
        for event in &page {
            serde_json::to_writer(&mut out, event)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}
