//! The mail worker: sends due outbox rows, one SMTP conversation each, and records the
//! outcome on the row. A row is claimed with a compare-and-set on its due time (so two
//! instances never send it at once: the claim is a lease of [`MailWorkerOptions::lease`],
//! after which a crashed sender's row is due again), rendered and *frozen* on the row
//! (the exact bytes, links included), sent, then marked `sent`; a failure is retried with
//! exponential backoff up to [`MailWorkerOptions::attempts_max`], then left `failed` with
//! its last error for an operator (dashboard: `/dashboard/mail`).
//!
//! What a crash does, by where it strikes:
//! - after the row was queued, before or while the SMTP conversation: the server has not
//!   accepted anything (a conversation cut before the final "." is discarded by the
//!   server), the lease runs out, the row is sent once by whichever instance claims it;
//! - after the server's "250" and before the row is marked: nothing on the wire can tell
//!   us the server has it, so the row is sent again — the frozen bytes, with the same
//!   `Message-ID`, the same links and the same `Date`. It is the same message (RFC 5322
//!   3.6.4), and a receiver that files by `Message-ID` keeps one; the window is the time
//!   of one `UPDATE`.

use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

use lettre::message::Mailbox;

use super::outbox::{
    self, fact_age_max, Frozen, OutboxRow, ADMINS, ADMIN_ALERT, DEVICE_RECEIPT, DOOR_RECEIPT,
    LINK_RESEND, PASSWORD_RESET, REFUND_NOTICE,
};
use super::render::{self, Content, Place};
use super::Mail;
use crate::on_pool;
use crate::payments::tokens;
use crate::store::Database;
use crate::workflows::schedule::backoff;

/// How the worker paces itself.
#[derive(Clone, Debug)]
pub struct MailWorkerOptions {
    /// How often it looks for due rows when there is nothing to do.
    pub poll_interval: Duration,
    /// Backoff after the first failure, doubling up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Attempts before a row is left `failed`: with the defaults about a day of retries,
    /// enough to outlast a mail provider's outage.
    pub attempts_max: u32,
    /// How long a claimed row is kept from other instances while it is being sent; longer
    /// than one SMTP conversation may take.
    pub lease: Duration,
}

impl Default for MailWorkerOptions {
    fn default() -> Self {
        MailWorkerOptions {
            poll_interval: Duration::from_secs(2),
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(4 * 3600),
            attempts_max: 12,
            lease: Duration::from_secs(120),
        }
    }
}

/// Rows sent per round at most; the rest wait for the next round.
const BATCH_SIZE: i64 = 20;

pub struct MailWorker {
    pub database: Database,
    pub mail: Mail,
    pub public_url: Url,
    pub options: MailWorkerOptions,
}

impl MailWorker {
    /// Sends due mail until `shutdown`; idle while email is not configured.
    pub fn spawn(self, shutdown: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                if self.mail.configured() {
                    if let Err(error) = self.run_due().await {
                        tracing::warn!(error = %error, "mail: a round failed");
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.options.poll_interval) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        })
    }

    /// Claims and sends every row due now; returns how many were attempted.
    pub async fn run_due(&self) -> anyhow::Result<usize> {
        let now = Utc::now().timestamp_millis();
        let mut attempted = 0;
        for row in outbox::due(&self.database, now, BATCH_SIZE).await? {
            let lease = now + self.options.lease.as_millis() as i64;
            if !self.claim(&row, lease).await? {
                continue;
            }
            attempted += 1;
            if row.frozen.is_none() && Utc::now() - row.fact_at > fact_age_max() {
                self.finish(
                    &row,
                    "expired",
                    Some("the fact is too old to be worth a mail"),
                )
                .await?;
                continue;
            }
            match self.deliver(&row).await {
                Ok(()) => {
                    tracing::info!(mail_key = %row.mail_key, payment_id = %row.payment_id, "mail sent");
                    self.finish(&row, "sent", None).await?;
                }
                Err(error) => self.failed(&row, &format!("{error:#}")).await?,
            }
        }
        Ok(attempted)
    }

    /// Sends the row's frozen message, freezing it first on the first attempt.
    async fn deliver(&self, row: &OutboxRow) -> anyhow::Result<()> {
        let frozen = match &row.frozen {
            Some(frozen) => frozen.clone(),
            None => self.freeze(row).await?,
        };
        self.mail
            .send_raw(&frozen.envelope_to, frozen.message.as_bytes())
            .await
            .map_err(anyhow::Error::msg)
    }

    /// Renders the row's message once (minting its links) and stores it on the row before
    /// anything is sent: from then on every attempt — after a failure, a timeout or a
    /// crash — sends these same bytes, with the same `Message-ID` and the same links.
    async fn freeze(&self, row: &OutboxRow) -> anyhow::Result<Frozen> {
        let Some(from) = self.mail.from() else {
            anyhow::bail!("email is not configured");
        };
        let to = self.recipients(row).await?;
        let content = self.content(row).await?;
        let message = render::message(row, from, &to, content)?;
        let message = String::from_utf8(message.formatted())
            .map_err(|_| anyhow::anyhow!("the rendered message is not UTF-8"))?;
        let envelope_to: Vec<String> = to.iter().map(|to| to.email.to_string()).collect();
        let sql = "UPDATE mail_outbox SET message = $1, envelope_to = $2 \
                   WHERE mail_key = $3 AND message IS NULL";
        on_pool!(&self.database, pool => {
            sqlx::query(sql)
                .bind(&message)
                .bind(envelope_to.join(","))
                .bind(&row.mail_key)
                .execute(pool)
                .await
                .map(|_| ())
        })?;
        Ok(Frozen {
            message,
            envelope_to,
        })
    }

    /// The row's recipient, or every active admin for an alert.
    async fn recipients(&self, row: &OutboxRow) -> anyhow::Result<Vec<Mailbox>> {
        let addresses = if row.recipient == ADMINS {
            let sql = "SELECT email FROM users WHERE role = 'admin' AND deactivated_ms IS NULL \
                       ORDER BY email";
            let admins: Vec<String> = on_pool!(&self.database, pool => {
                sqlx::query_scalar(sql).fetch_all(pool).await
            })?;
            if admins.is_empty() {
                anyhow::bail!("there is no active admin to alert");
            }
            admins
        } else {
            vec![row.recipient.clone()]
        };
        addresses
            .iter()
            .map(|address| {
                address
                    .parse::<Mailbox>()
                    .map_err(|error| anyhow::anyhow!("recipient {address:?}: {error}"))
            })
            .collect()
    }

    async fn content(&self, row: &OutboxRow) -> anyhow::Result<Content> {
        match row.kind.as_str() {
            DOOR_RECEIPT => {
                let uid = row.facts["door_uid"].as_str().unwrap_or_default();
                let door = self.place("catalogue_doors", "door_uid", uid).await?;
                let link = self.guest_link(&row.payment_id, "door").await?;
                render::door_receipt(row, &door, &link)
            }
            DEVICE_RECEIPT => {
                let uid = row.facts["device_uid"].as_str().unwrap_or_default();
                let device = self.place("catalogue_devices", "device_uid", uid).await?;
                let link = self.guest_link(&row.payment_id, "device").await?;
                render::device_receipt(row, &device, &link)
            }
            REFUND_NOTICE => render::refund_notice(row),
            LINK_RESEND => {
                let mut links = Vec::new();
                for payment in row.facts["payments"].as_array().into_iter().flatten() {
                    let payment_id = payment["payment_id"].as_str().unwrap_or_default();
                    let kind = payment["kind"].as_str().unwrap_or_default();
                    let uid = payment["target_uid"].as_str().unwrap_or_default();
                    let (table, column) = match kind {
                        "door" => ("catalogue_doors", "door_uid"),
                        _ => ("catalogue_devices", "device_uid"),
                    };
                    let name = match self.place(table, column, uid).await {
                        Ok(place) => place.name,
                        Err(_) => uid.to_string(),
                    };
                    links.push((name, self.guest_link(payment_id, kind).await?));
                }
                render::link_resend(&links)
            }
            PASSWORD_RESET => {
                let reset_id = row.facts["reset_id"].as_str().unwrap_or_default();
                let token = crate::accounts::resets::mint_token(&self.database, reset_id).await?;
                let public = self.public_url.as_str().trim_end_matches('/');
                render::password_reset(row, &format!("{public}/login/reset/{token}"))
            }
            ADMIN_ALERT => {
                let public = self.public_url.as_str().trim_end_matches('/');
                render::admin_alert(row, public)
            }
            other => anyhow::bail!("no mail of kind {other}"),
        }
    }

    /// A door's or device's name, location and time zone from the catalogue.
    async fn place(&self, table: &str, column: &str, uid: &str) -> anyhow::Result<Place> {
        let sql = format!("SELECT name, location, time_zone FROM {table} WHERE {column} = $1");
        let found: Option<(String, String, String)> = on_pool!(&self.database, pool => {
            sqlx::query_as(&sql).bind(uid).fetch_optional(pool).await
        })?;
        let (name, location, time_zone) =
            found.ok_or_else(|| anyhow::anyhow!("{uid} is not in the catalogue yet"))?;
        Ok(Place {
            name,
            location,
            time_zone,
        })
    }

    /// A fresh capability for the guest's page (`/access/…` for a door, `/session/…` for
    /// a device): the checkout's token is stored only as a hash, so each mail carries a
    /// token of its own, bound to the same payment.
    async fn guest_link(&self, payment_id: &str, kind: &str) -> anyhow::Result<String> {
        let payment = Uuid::parse_str(payment_id)?;
        let token = tokens::generate();
        tokens::store(&self.database, &token, payment, kind).await?;
        let page = if kind == "door" { "access" } else { "session" };
        let public = self.public_url.as_str().trim_end_matches('/');
        Ok(format!("{public}/{page}/{token}"))
    }

    async fn claim(&self, row: &OutboxRow, leased_until_ms: i64) -> Result<bool, sqlx::Error> {
        let sql = "UPDATE mail_outbox SET next_attempt_at_ms = $1 \
                   WHERE mail_key = $2 AND status = 'pending' AND next_attempt_at_ms = $3";
        let claimed = on_pool!(&self.database, pool => {
            sqlx::query(sql)
                .bind(leased_until_ms)
                .bind(&row.mail_key)
                .bind(row.next_attempt_at_ms)
                .execute(pool)
                .await
                .map(|result| result.rows_affected())
        })?;
        Ok(claimed == 1)
    }

    async fn finish(
        &self,
        row: &OutboxRow,
        status: &str,
        note: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        // The frozen message goes with the row's last attempt: a sent row holds no link.
        let sql = "UPDATE mail_outbox SET status = $1, attempts = attempts + 1, last_error = $2, \
                   sent_at_ms = $3, message = NULL, envelope_to = NULL WHERE mail_key = $4";
        let sent_at = (status == "sent").then(|| Utc::now().timestamp_millis());
        on_pool!(&self.database, pool => {
            sqlx::query(sql)
                .bind(status)
                .bind(note)
                .bind(sent_at)
                .bind(&row.mail_key)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }

    async fn failed(&self, row: &OutboxRow, error: &str) -> Result<(), sqlx::Error> {
        let attempt = u32::try_from(row.attempts)
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        if attempt >= self.options.attempts_max {
            tracing::error!(mail_key = %row.mail_key, attempt, error, "mail failed for good");
            return self.finish(row, "failed", Some(error)).await;
        }
        let retry = backoff(self.options.retry_base, self.options.retry_max, attempt);
        tracing::warn!(mail_key = %row.mail_key, attempt, error, "mail failed; retrying later");
        let sql = "UPDATE mail_outbox SET attempts = attempts + 1, last_error = $1, \
                   next_attempt_at_ms = $2 WHERE mail_key = $3";
        on_pool!(&self.database, pool => {
            sqlx::query(sql)
                .bind(error)
                .bind(Utc::now().timestamp_millis() + retry.as_millis() as i64)
                .bind(&row.mail_key)
                .execute(pool)
                .await
                .map(|_| ())
        })
    }
}
