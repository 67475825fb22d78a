//! The `latchkey` command line: one subcommand per operator or auditor task.

mod export;
pub mod rebuild;
pub mod replay;
mod token;
pub mod verify;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::startup::{self, Application};
use crate::store::{Database, PoolSize};

#[derive(Debug, Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Event-sourced payments and access ledger"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the database, then serve HTTP until SIGINT/SIGTERM.
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Recompute every aggregate's hash chain; exit non-zero naming the first broken link.
    Verify,
    /// Write the journal (or a range of it) to stdout as NDJSON, in position order.
    Export(export::ExportArgs),
    /// Print an aggregate's state as JSON after the events recorded at or before a time.
    Replay(replay::ReplayArgs),
    /// Rebuild the read models from position 0 (all, or one by name); `--check` compares
    /// them with a rebuild instead, changing nothing.
    Rebuild(rebuild::RebuildArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(token::TokenCommand),
}

/// Runs a parsed command; the error, if any, is printed by `main` and the exit status is 1.
pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => {
            let application = Application::build(settings).await?;
            let shutdown = application.shutdown_token();
            tokio::spawn(async move {
                startup::shutdown_signal().await;
                tracing::info!("shutdown signal received; draining");
                shutdown.cancel();
            });
            application.run_until_stopped().await
        }
        Command::Migrate => {
            let database = Database::connect(&settings.database_url, PoolSize::default()).await?;
            database.migrate().await?;
            println!(
                "migrations applied to {}",
                crate::store::redact(settings.database_url.as_str())
            );
            Ok(())
        }
        Command::Verify => verify::run(&settings).await,
        Command::Export(args) => export::run(&settings, args).await,
        Command::Replay(args) => replay::run(&settings, args).await,
        Command::Rebuild(args) => rebuild::run(&settings, args).await,
        Command::Token(command) => token::run(&settings, command).await,
    }
}
