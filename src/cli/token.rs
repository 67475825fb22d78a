//! `latchkey token create`: issue an API token for scripts and auditors.

use crate::config::Settings;
use crate::http::auth::{create_token, Role};
use crate::store::{Database, PoolSize};

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once and stored only as a hash.
    Create {
        /// admin, operator or auditor.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A name for the audit log, e.g. the machine or person that will use it.
        #[arg(long)]
        label: String,
    },
}

fn parse_role(value: &str) -> Result<Role, String> {
    Role::parse(value)
        .ok_or_else(|| format!("{value:?} is not a role: use admin, operator or auditor"))
}

pub async fn run(settings: &Settings, command: TokenCommand) -> anyhow::Result<()> {
    let database = Database::connect(&settings.database_url, PoolSize::default()).await?;
    database.migrate().await?;
    match command {
        TokenCommand::Create { role, label } => {
            let token = create_token(&database, role, &label).await?;
            println!("{token}");
            eprintln!(
                "{} token for {label:?} created; it is not shown again",
                role.as_str()
            );
            Ok(())
        }
    }
}
