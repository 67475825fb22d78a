//! The `latchkey` command line: one subcommand per operator or auditor task.

mod bench;
mod bench_all;
mod bench_dashboard;
mod bench_ledger;
mod demo;
mod export;
pub mod ledger;
pub mod rebuild;
pub mod replay;
pub mod token;
pub mod user;
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
    /// Serve with in-process Stripe, TTLock and Shelly simulators and a seeded door and
    /// device; print the URLs to open (database: DATABASE_URL, else ./latchkey-demo.db).
    Demo(demo::DemoArgs),
    /// Check the journal against its global commitment and signed checkpoints, and every
    /// aggregate's hash chain; exit non-zero naming the first bad position.
    Verify(verify::VerifyArgs),
    /// Seal the journal, sign a checkpoint (size, root, time) with LATCHKEY_SIGNING_KEY,
    /// store it and print it as JSON; `--public-key` prints the public key.
    Checkpoint(ledger::CheckpointArgs),
    /// Print an inclusion proof of the event at POSITION against the latest checkpoint, or
    /// `--consistency OLD NEW` between two checkpoints' tree sizes.
    Prove(ledger::ProveArgs),
    /// Check a proof printed by `prove` (offline: no database needed).
    CheckProof(ledger::CheckProofArgs),
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
    /// Manage operator accounts (`user create --email … --role admin` bootstraps the
    /// first admin).
    #[command(subcommand)]
    User(user::UserCommand),
    /// Run one simulator of an outside service on its own.
    Sim {
        #[command(subcommand)]
        service: SimService,
    },
    /// Measure throughput against a running server.
    Bench {
        #[command(subcommand)]
        target: bench::BenchTarget,
    },
}

#[derive(Debug, Subcommand)]
pub enum SimService {
    /// TTLock: accepts TTLOCK_CLIENT_ID/…SECRET/…USERNAME/…PASSWORD (demo values if unset).
    Ttlock {
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:12112")]
        listen: std::net::SocketAddr,
    },
    /// Shelly Cloud and local RPC: accepts SHELLY_AUTH_KEY (a demo key if unset).
    Shelly {
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:12113")]
        listen: std::net::SocketAddr,
    },
    /// SMTP: keeps every message it is sent and lists them on a web page.
    Smtp {
        /// Address to accept SMTP on (LATCHKEY_SMTP_URL=smtp://ADDR).
        #[arg(long, default_value = "127.0.0.1:12125")]
        listen: std::net::SocketAddr,
        /// Address of the page listing what arrived.
        #[arg(long, default_value = "127.0.0.1:12126")]
        web: std::net::SocketAddr,
    },
    /// Stripe: accepts STRIPE_SECRET_KEY, signs webhooks with STRIPE_WEBHOOK_SECRET.
    Stripe {
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:12111")]
        listen: std::net::SocketAddr,
        /// Where to deliver webhooks, e.g. http://127.0.0.1:3000/api/stripe/webhook.
        #[arg(long, env = "STRIPE_SIM_WEBHOOK_URL")]
        webhook_url: Option<String>,
    },
}

/// Runs a parsed command; the error, if any, is printed by `main` and the exit status is 1.
pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => {
            // Held until the process ends: one server per SQLite file.
            let _sqlite_guard = crate::store::single_process::claim(&settings.database_url)?;
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
        Command::Demo(args) => demo::run(settings, args).await,
        Command::Verify(args) => verify::run(&settings, args).await,
        Command::Checkpoint(args) => ledger::checkpoint(&settings, args).await,
        Command::Prove(args) => ledger::prove(&settings, args).await,
        Command::CheckProof(args) => ledger::check_proof(&settings, args),
        Command::Export(args) => export::run(&settings, args).await,
        Command::Replay(args) => replay::run(&settings, args).await,
        Command::Rebuild(args) => rebuild::run(&settings, args).await,
        Command::Token(command) => token::run(&settings, command).await,
        Command::User(command) => user::run(&settings, command).await,
        Command::Sim {
            service:
                SimService::Stripe {
                    listen,
                    webhook_url,
                },
        } => run_stripe_sim(&settings, listen, webhook_url).await,
        Command::Sim {
            service: SimService::Ttlock { listen },
        } => {
            let listener = bind(listen).await?;
            println!("TTLock simulator on http://{listen} (TTLOCK_API_BASE)");
            Ok(
                crate::sim::ttlock::serve(
                    listener,
                    crate::sim::ttlock::TtlockSimConfig::from_env(),
                )
                .await?,
            )
        }
        Command::Sim {
            service: SimService::Smtp { listen, web },
        } => {
            let mut sink = crate::sim::smtp::SmtpSink::spawn(bind(listen).await?)?;
            sink.serve_web(bind(web).await?)?;
            println!(
                "SMTP sink on {} (LATCHKEY_SMTP_URL); what arrived: http://{web}",
                sink.url()
            );
            startup::shutdown_signal().await;
            sink.shutdown().await;
            Ok(())
        }
        Command::Sim {
            service: SimService::Shelly { listen },
        } => {
            let listener = bind(listen).await?;
            println!("Shelly simulator on http://{listen} (SHELLY_SERVER)");
            Ok(
                crate::sim::shelly::serve(
                    listener,
                    crate::sim::shelly::ShellySimConfig::from_env(),
                )
                .await?,
            )
        }
        Command::Bench { target } => bench::run(target, &settings).await,
    }
}

async fn run_stripe_sim(
    settings: &Settings,
    listen: std::net::SocketAddr,
    webhook_url: Option<String>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use secrecy::ExposeSecret;
    let secret_key = settings
        .stripe
        .secret_key
        .as_ref()
        .map(|key| key.expose_secret().to_string())
        .context("set STRIPE_SECRET_KEY (sk_test_…): the simulator accepts only that key")?;
    let webhook_secrets = settings
        .stripe
        .webhook_secrets
        .iter()
        .map(|secret| secret.expose_secret().to_string())
        .collect();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("could not listen on {listen}"))?;
    let handle = crate::sim::stripe::spawn(
        listener,
        crate::sim::stripe::StripeSimConfig {
            webhook_url,
            ..crate::sim::stripe::StripeSimConfig::new(secret_key, webhook_secrets)
        },
    )?;
    println!(
        "Stripe simulator on {} (STRIPE_API_BASE={})",
        handle.addr,
        handle.url()
    );
    startup::shutdown_signal().await;
    handle.stop().await;
    Ok(())
}

async fn bind(listen: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context;
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("could not listen on {listen}"))
}
