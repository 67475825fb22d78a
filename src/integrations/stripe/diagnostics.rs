//! What an operator needs to see to tell whether Stripe is wired up: which keys are
//! present and their mode (never the keys), the inbox's health, the catch-up job's last
//! run, and optionally a live API call.

use serde::Serialize;

use super::client::KeyMode;
use super::StripeRuntime;
use crate::config::Settings;
use crate::store::inbox::{InboxStats, SignatureFailure};

/// Refused deliveries shown in diagnostics.
const RECENT_FAILURES: i64 = 10;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Diagnostics {
    pub secret_key: KeyStatus,
    pub publishable_key: KeyStatus,
    pub webhook_secrets: usize,
    pub api_base: String,
    pub inbox: InboxStats,
    pub recent_signature_failures: Vec<SignatureFailure>,
    pub catch_up: Option<super::CatchUpStatus>,
    pub processor_configured: bool,
    /// Present when asked for (`?test=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection: Option<ConnectionTest>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyStatus {
    pub present: bool,
    pub mode: Option<KeyMode>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConnectionTest {
    pub ok: bool,
    pub error: Option<String>,
}

fn key_status(key: Option<&str>) -> KeyStatus {
    KeyStatus {
        present: key.is_some(),
        mode: key.map(KeyMode::of),
    }
}

pub async fn collect(
    settings: &Settings,
    stripe: &StripeRuntime,
    test_connection: bool,
) -> Result<Diagnostics, sqlx::Error> {
    use secrecy::ExposeSecret;
    let connection = if test_connection {
        Some(match &stripe.client() {
            None => ConnectionTest {
                ok: false,
                error: Some("STRIPE_SECRET_KEY is not set".to_string()),
            },
            Some(client) => match client.test_connection().await {
                Ok(()) => ConnectionTest {
                    ok: true,
                    error: None,
                },
                Err(error) => ConnectionTest {
                    ok: false,
                    error: Some(error.to_string()),
                },
            },
        })
    } else {
        None
    };
    Ok(Diagnostics {
        secret_key: key_status(
            settings
                .stripe
                .secret_key
                .as_ref()
                .map(|key| key.expose_secret()),
        ),
        publishable_key: key_status(settings.stripe.publishable_key.as_deref()),
        webhook_secrets: stripe.webhook_secrets().len(),
        api_base: settings
            .stripe
            .api_base
            .as_ref()
            .map(|url| url.to_string())
            .unwrap_or_else(|| "https://api.stripe.com/".to_string()),
        inbox: stripe.inbox.stats().await?,
        recent_signature_failures: stripe.inbox.signature_failures(RECENT_FAILURES).await?,
        // The last run in any instance (shared), else this one's (e.g. a skipped run).
        catch_up: match crate::shared_status::catch_up(stripe.inbox.database()).await? {
            Some(status) => Some(status),
            None => stripe
                .catch_up_status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        },
        processor_configured: stripe.options.processor.is_some(),
        connection,
    })
}
