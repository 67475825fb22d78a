//! Email to guests and operators over SMTP (issue 21 item 1).
//!
//! Mail is an outbox in the database, never a call made while a fact is handled:
//! - [`outbox`]: a journal subscriber that writes one outbox row per fact worth a mail (a
//!   door code issued: the receipt; a refund Stripe reported: the notice) in the same
//!   transaction as its checkpoint, keyed by the fact (`receipt:<payment>`,
//!   `refund:<payment>:<refunded total>`), so a crash or a replay never adds a second row;
//! - [`worker`]: sends pending rows with retries and backoff, marks them sent, and gives up
//!   after [`worker::MailWorkerOptions::attempts_max`] (status `failed`, visible on the
//!   dashboard's mail page and in the row's last error).
//!
//! A mail is sent at least once and, but for a crash between the SMTP server's "250" and
//! the row's update, exactly once on the wire; the message is rendered once and frozen on
//! its row (its `Message-ID` derived from the outbox key), so even that repeat is the
//! same message, byte for byte, and a mailbox that files by `Message-ID` shows it once.
//! [`worker`] explains each crash window.
//!
//! Besides: [`requests`] rate-limits the pages that mail an address a stranger typed
//! ("lost your link?", "forgot password").
//!
//! Without `LATCHKEY_SMTP_URL` and `LATCHKEY_MAIL_FROM` the module is "not configured" in
//! module health and nothing is sent; the outbox still records what would be.

pub mod outbox;
pub mod render;
pub mod requests;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use lettre::address::{Address, Envelope};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};

use crate::integrations::health::ModuleHealth;

/// `LATCHKEY_SMTP_URL` and `LATCHKEY_MAIL_FROM`.
#[derive(Clone, Debug, Default)]
pub struct MailSettings {
    /// `smtp://user:pass@host:port` (plain, or STARTTLS with `?tls=starttls`),
    /// `smtps://user:pass@host:port` (TLS from the first byte). Holds a password.
    pub smtp_url: Option<SecretString>,
    /// The sender, `Latchkey <pay@example.com>` or a bare address.
    pub from: Option<Mailbox>,
}

/// Checks an SMTP URL: scheme `smtp` or `smtps`, a host, and a `tls` parameter we know.
pub fn parse_smtp_url(value: &str) -> Result<SecretString, String> {
    lettre_url(value)?;
    Ok(SecretString::from(value.to_string()))
}

/// The URL in lettre's own terms: `tls=starttls` is lettre's `tls=required` (STARTTLS,
/// refusing a server that does not offer it).
fn lettre_url(value: &str) -> Result<String, String> {
    let mut url = url::Url::parse(value).map_err(|error| format!("not a URL: {error}"))?;
    if !matches!(url.scheme(), "smtp" | "smtps") {
        return Err("expected smtp://… or smtps://…".to_string());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL names no host".to_string());
    }
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    let mut translated = Vec::new();
    for (key, value) in pairs {
        match (key.as_str(), value.as_str()) {
            ("tls", "starttls" | "required") => translated.push((key, "required".to_string())),
            ("tls", "opportunistic") => translated.push((key, value)),
            ("tls", other) => {
                return Err(format!(
                    "tls={other} is unknown (use tls=starttls, or smtps:// for TLS)"
                ))
            }
            _ => translated.push((key, value)),
        }
    }
    if translated.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(translated);
    }
    Ok(url.to_string())
}

/// Checks `LATCHKEY_MAIL_FROM`.
pub fn parse_from(value: &str) -> Result<Mailbox, String> {
    value
        .parse::<Mailbox>()
        .map_err(|error| format!("not an email address ({error})"))
}

const NOT_CONFIGURED: &str = "email is not configured (LATCHKEY_SMTP_URL, LATCHKEY_MAIL_FROM)";

/// How long one SMTP conversation may take before the attempt counts as failed.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// The SMTP client and its health, shared by the worker and the health endpoint.
#[derive(Clone)]
pub struct Mail {
    transport: Option<Arc<AsyncSmtpTransport<Tokio1Executor>>>,
    from: Option<Mailbox>,
    pub health: ModuleHealth,
}

impl Mail {
    /// The client the settings describe; "not configured" unless both variables are set.
    pub fn from_settings(settings: &MailSettings) -> anyhow::Result<Mail> {
        let (Some(url), Some(from)) = (&settings.smtp_url, &settings.from) else {
            return Ok(Mail {
                transport: None,
                from: None,
                health: ModuleHealth::not_configured("email"),
            });
        };
        let url = lettre_url(url.expose_secret()).map_err(anyhow::Error::msg)?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
            .map_err(|error| anyhow::anyhow!("LATCHKEY_SMTP_URL: {error}"))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Mail {
            transport: Some(Arc::new(transport)),
            from: Some(from.clone()),
            health: ModuleHealth::new("email"),
        })
    }

    pub fn configured(&self) -> bool {
        self.transport.is_some()
    }

    /// The sender every mail carries.
    pub fn from(&self) -> Option<&Mailbox> {
        self.from.as_ref()
    }

    /// Hands one message to the SMTP server; the outcome is recorded in module health.
    pub async fn send(&self, message: Message) -> Result<(), String> {
        let Some(transport) = &self.transport else {
            return Err(NOT_CONFIGURED.into());
        };
        let outcome = transport.send(message).await.map(|_| ());
        self.record(outcome)
    }

    /// Hands already-formatted message bytes to the SMTP server, from the configured
    /// sender to `to` (the envelope); the outcome is recorded in module health.
    pub async fn send_raw(&self, to: &[String], message: &[u8]) -> Result<(), String> {
        let (Some(transport), Some(from)) = (&self.transport, &self.from) else {
            return Err(NOT_CONFIGURED.into());
        };
        let to = to
            .iter()
            .map(|address| address.parse::<Address>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("a recipient is not an address: {error}"))?;
        let envelope = Envelope::new(Some(from.email.clone()), to)
            .map_err(|error| format!("the envelope: {error}"))?;
        let outcome = transport.send_raw(&envelope, message).await.map(|_| ());
        self.record(outcome)
    }

    fn record(&self, outcome: Result<(), lettre::transport::smtp::Error>) -> Result<(), String> {
        match outcome {
            Ok(_) => {
                self.health.record_ok();
                Ok(())
            }
            Err(error) => {
                let reason = error.to_string();
                self.health.record_error(&reason);
                Err(reason)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_are_checked_and_starttls_is_lettres_required() {
        assert!(parse_smtp_url("smtp://user:pass@mail.example.com:587").is_ok());
        assert!(parse_smtp_url("smtps://mail.example.com").is_ok());
        assert!(parse_smtp_url("http://mail.example.com").is_err());
        assert!(parse_smtp_url("smtp://host?tls=sometimes").is_err());
        assert_eq!(
            lettre_url("smtp://host:587?tls=starttls").unwrap(),
            "smtp://host:587?tls=required"
        );
        assert!(parse_from("Latchkey <pay@example.com>").is_ok());
        assert!(parse_from("not an address").is_err());
    }
}
