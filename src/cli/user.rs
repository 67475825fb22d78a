//! `latchkey user …`: bootstrap the first admin and manage accounts from a shell.

use std::io::BufRead;

use anyhow::Context;

use crate::accounts::{password, users};
use crate::config::Settings;
use crate::http::auth::Role;
use crate::store::{Database, PoolSize};

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user. Prints a one-time password (the user chooses their own and enrols
    /// in two-factor at first login), or reads the password from stdin.
    Create {
        #[arg(long)]
        email: String,
        /// admin, operator or auditor.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Read the password from the first line of stdin instead of generating a
        /// one-time password; the user need not change it (two-factor enrolment still
        /// comes at first login).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users with role, state and two-factor status.
    List,
    /// Deactivate a user: no more logins; their sessions end and their tokens stop.
    Deactivate {
        #[arg(long)]
        email: String,
    },
    /// Let a deactivated user log in again.
    Reactivate {
        #[arg(long)]
        email: String,
    },
    /// Clear a user's two-factor set-up; they enrol again at next login.
    #[command(name = "reset-2fa")]
    Reset2fa {
        #[arg(long)]
        email: String,
    },
    /// Give a user a new one-time password (printed once).
    ResetPassword {
        #[arg(long)]
        email: String,
    },
}

fn parse_role(value: &str) -> Result<Role, String> {
    Role::parse(value)
        .ok_or_else(|| format!("{value:?} is not a role: use admin, operator or auditor"))
}

pub async fn run(settings: &Settings, command: UserCommand) -> anyhow::Result<()> {
    let database = Database::connect(&settings.database_url, PoolSize::default()).await?;
    database.migrate().await?;
    match command {
        UserCommand::Create {
            email,
            role,
            password_stdin,
        } => create(&database, &email, role, password_stdin).await,
        UserCommand::List => list(&database).await,
        UserCommand::Deactivate { email } => {
            let user = find(&database, &email).await?;
            if user.role == Role::Admin && users::active_admins(&database).await? <= 1 {
                anyhow::bail!(
                    "{} is the last active admin; create another admin first",
                    user.email
                );
            }
            users::deactivate(&database, &user.user_id).await?;
            println!(
                "{} deactivated; their sessions and API tokens no longer work",
                user.email
            );
            Ok(())
        }
        UserCommand::Reactivate { email } => {
            let user = find(&database, &email).await?;
            users::reactivate(&database, &user.user_id).await?;
            println!("{} may log in again", user.email);
            Ok(())
        }
        UserCommand::Reset2fa { email } => {
            let user = find(&database, &email).await?;
            users::reset_totp(&database, &user.user_id).await?;
            println!(
                "{}'s two-factor set-up cleared; they enrol again at next login",
                user.email
            );
            Ok(())
        }
        UserCommand::ResetPassword { email } => {
            let user = find(&database, &email).await?;
            let one_time = password::one_time();
            users::reset_password(&database, &user.user_id, &password::hash(&one_time)?).await?;
            println!("{one_time}");
            eprintln!(
                "one-time password for {}; it is not shown again",
                user.email
            );
            Ok(())
        }
    }
}

async fn create(
    database: &Database,
    email: &str,
    role: Role,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let (password, one_time) = if password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        password::check_policy(&password).map_err(|reason| anyhow::anyhow!("{reason}"))?;
        (password, false)
    } else {
        (password::one_time(), true)
    };
    let hash = password::hash(&password)?;
    let user = users::create(database, email, role, &hash, one_time)
        .await
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    if one_time {
        println!("{password}");
        eprintln!(
            "{} user {} created. The line above is a one-time password, not shown again: \
             log in at /login, choose a password and enrol in two-factor.",
            role.as_str(),
            user.email
        );
    } else {
        eprintln!(
            "{} user {} created; enrol in two-factor at first login at /login",
            role.as_str(),
            user.email
        );
    }
    Ok(())
}

async fn list(database: &Database) -> anyhow::Result<()> {
    println!("{:<40} {:<9} {:<12} two-factor", "email", "role", "state");
    for user in users::list(database).await? {
        println!(
            "{:<40} {:<9} {:<12} {}",
            user.email,
            user.role.as_str(),
            if user.is_active() {
                "active"
            } else {
                "deactivated"
            },
            if user.totp_confirmed {
                "enrolled"
            } else {
                "not enrolled"
            }
        );
    }
    Ok(())
}

async fn find(database: &Database, email: &str) -> anyhow::Result<users::User> {
    users::by_email(database, email)
        .await?
        .with_context(|| format!("no user with the email {email}; `latchkey user list` shows them"))
}
