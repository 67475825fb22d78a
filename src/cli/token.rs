//! `latchkey token create|list|revoke`: API tokens for scripts and auditors, and their
//! lifecycle (a token that leaked, or whose holder left, is revoked by its id).

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
    /// List every token (id, label, role, owner, last four characters, created,
    /// revoked); never the tokens themselves.
    List,
    /// Revoke a token by its id (from `token list`), or every live token with that label.
    Revoke {
        /// The token's id, or its label.
        id_or_label: String,
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
        TokenCommand::List => {
            for token in crate::accounts::tokens::list_all(&database).await? {
                println!("{}", list_line(&token));
            }
            Ok(())
        }
        TokenCommand::Revoke { id_or_label } => {
            let revoked =
                crate::accounts::tokens::revoke_by_id_or_label(&database, &id_or_label).await?;
            if revoked == 0 {
                anyhow::bail!(
                    "no live token has the id or label {id_or_label:?}; see `latchkey token list`"
                );
            }
            eprintln!("{revoked} token(s) revoked");
            Ok(())
        }
    }
}

/// One tab-separated line of `token list`.
pub fn list_line(token: &crate::accounts::tokens::TokenRow) -> String {
    [
        token.token_id.as_deref().unwrap_or("-"),
        &token.label,
        &token.role,
        token.owner.as_deref().unwrap_or("-"),
        &format!("…{}", token.last4.as_deref().unwrap_or("????")),
        &token.created_at,
        if token.revoked { "revoked" } else { "live" },
    ]
    .join("\t")
}
