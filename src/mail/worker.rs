//! The mail worker: sends due outbox rows, one SMTP conversation each, and records the
//! outcome on the row. A row is claimed with a compare-and-set on its due time (so two
//! instances never send it at once), sent, then marked `sent`; a failure is retried with
//! exponential backoff up to [`MailWorkerOptions::attempts_max`], then left `failed` with
//! its last error for an operator (dashboard: `/dashboard/mail`).

use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

use super::outbox::{self, fact_age_max, OutboxRow, DOOR_RECEIPT, REFUND_NOTICE};
use super::render::{self, Door};
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
            if Utc::now() - row.fact_at > fact_age_max() {
                self.finish(
                    &row,
                    "expired",
                    Some("the fact is too old to be worth a mail"),
                )
                .await?;
                continue;
            }
            match self.send(&row).await {
                Ok(()) => {
                    tracing::info!(mail_key = %row.mail_key, payment_id = %row.payment_id, "mail sent");
                    self.finish(&row, "sent", None).await?;
                }
                Err(error) => self.failed(&row, &error.to_string()).await?,
            }
        }
        Ok(attempted)
    }

    async fn send(&self, row: &OutboxRow) -> anyhow::Result<()> {
        let Some(from) = self.mail.from() else {
            anyhow::bail!("email is not configured");
        };
        let content = match row.kind.as_str() {
            DOOR_RECEIPT => {
                let door = self.door(row).await?;
                let link = self.access_link(row, "door", "access").await?;
                render::door_receipt(row, &door, &link)?
            }
            REFUND_NOTICE => render::refund_notice(row)?,
            other => anyhow::bail!("no mail of kind {other}"),
        };
        let message = render::message(row, from, content)?;
        self.mail.send(message).await.map_err(anyhow::Error::msg)
    }

    async fn door(&self, row: &OutboxRow) -> anyhow::Result<Door> {
        let uid = row.facts["door_uid"].as_str().unwrap_or_default();
        let sql = "SELECT name, location, time_zone FROM catalogue_doors WHERE door_uid = $1";
        let found: Option<(String, String, String)> = on_pool!(&self.database, pool => {
            sqlx::query_as(sql).bind(uid).fetch_optional(pool).await
        })?;
        let (name, location, time_zone) =
            found.ok_or_else(|| anyhow::anyhow!("door {uid} is not in the catalogue yet"))?;
        Ok(Door {
            name,
            location,
            time_zone,
        })
    }

    /// A fresh capability for the guest's page: the checkout's token is stored only as a
    /// hash, so each mail carries a token of its own, bound to the same payment.
    async fn access_link(&self, row: &OutboxRow, kind: &str, page: &str) -> anyhow::Result<String> {
        let payment_id = Uuid::parse_str(&row.payment_id)?;
        let token = tokens::generate();
        tokens::store(&self.database, &token, payment_id, kind).await?;
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
        let sql = "UPDATE mail_outbox SET status = $1, attempts = attempts + 1, last_error = $2, \
                   sent_at_ms = $3 WHERE mail_key = $4";
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
