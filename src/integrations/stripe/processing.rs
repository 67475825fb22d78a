//! Turning stored deliveries into effects: the [`DeliveryProcessor`] port (implemented
//! against the Payment aggregate elsewhere), one attempt at a time, and the worker that
//! retries what failed.
//!
//! The inbox row is the unit of work. An attempt runs under a lease (the row's
//! `next_attempt_at` pushed into the future), so a crash mid-attempt only delays the row:
//! it becomes due again when the lease runs out. Processors must therefore be idempotent
//! (the Payment aggregate is: a second confirmation of a payment intent emits nothing).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::store::inbox::{now_ms, Finish, Inbox, InboxDelivery};

/// What a processor decided about one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessOutcome {
    /// Applied; `payment_id` is the payment it concerned, when there is one.
    Processed { payment_id: Option<String> },
    /// Deliberately not applied (an event type we don't consume, another mode, …).
    Ignored { reason: String },
    /// Applied as a flagged fact (an amount that is not the price): processed, never
    /// retried, with the note kept for the deliveries page.
    Flagged { payment_id: String, note: String },
}

/// A failure worth retrying (database busy, aggregate conflict, Stripe unreachable…).
/// Permanent conditions are `Ignored`, not errors: retrying cannot change them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProcessError {
    pub message: String,
}

impl ProcessError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ProcessError {
            message: message.into(),
        }
    }
}

/// Applies one stored Stripe event. Called at least once per event, possibly again after
/// a crash or a lost lease, so it must be idempotent.
#[async_trait]
pub trait DeliveryProcessor: Send + Sync {
    async fn process(&self, delivery: &InboxDelivery) -> Result<ProcessOutcome, ProcessError>;
}

/// Retry and lease policy.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// How often the worker looks for due rows when it has nothing to do.
    pub poll_interval: Duration,
    /// Rows claimed per round.
    pub batch_size: i64,
    /// Attempts after which a row stays `failed` for an operator: with the default
    /// backoff that is about a day of retries, longer than a typical outage of ours.
    pub max_attempts: i32,
    /// Delay before the first retry; doubled per attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long a claimed row is reserved for its claimant. Longer than `attempt_timeout`
    /// so a slow attempt never overlaps with a retry of itself.
    pub lease: Duration,
    /// An attempt running longer than this is abandoned and counted as failed.
    pub attempt_timeout: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            poll_interval: Duration::from_secs(1),
            batch_size: 20,
            max_attempts: 20,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60 * 60),
            lease: Duration::from_secs(120),
            attempt_timeout: Duration::from_secs(60),
        }
    }
}

impl WorkerOptions {
    /// When to retry after `attempts` failed attempts, or `None` when they are used up.
    pub fn next_attempt_ms(&self, attempts: i32, now_ms: i64) -> Option<i64> {
        if attempts >= self.max_attempts {
            return None;
        }
        let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let delay = self
            .backoff_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.backoff_max);
        Some(now_ms + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2))
    }

    pub fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX / 2)
    }
}

/// Runs one attempt on a delivery the caller has claimed, and records the outcome.
pub async fn process_one(
    inbox: &Inbox,
    processor: &dyn DeliveryProcessor,
    options: &WorkerOptions,
    metrics: &Metrics,
    delivery: &InboxDelivery,
) -> Result<(), sqlx::Error> {
    let result =
        match tokio::time::timeout(options.attempt_timeout, processor.process(delivery)).await {
            Ok(result) => result,
            Err(_) => Err(ProcessError::retryable(format!(
                "processing did not finish within {:?}",
                options.attempt_timeout
            ))),
        };
    let event_id = delivery.event_id.as_str();
    let label = match &result {
        Ok(ProcessOutcome::Processed { payment_id }) => {
            info!(event_id, event_type = %delivery.event_type, payment_id = ?payment_id, "stripe event processed");
            inbox
                .finish(
                    event_id,
                    Finish::Processed {
                        payment_id: payment_id.as_deref(),
                    },
                )
                .await?;
            "processed"
        }
        Ok(ProcessOutcome::Flagged { payment_id, note }) => {
            warn!(event_id, event_type = %delivery.event_type, payment_id = %payment_id, note = %note, "stripe event processed and flagged");
            let finish = Finish::Flagged { payment_id, note };
            inbox.finish(event_id, finish).await?;
            "flagged"
        }
        Ok(ProcessOutcome::Ignored { reason }) => {
            info!(event_id, event_type = %delivery.event_type, reason = %reason, "stripe event ignored");
            inbox.finish(event_id, Finish::Ignored { reason }).await?;
            "ignored"
        }
        Err(error) => {
            let attempts = delivery.attempts + 1;
            let next = options.next_attempt_ms(attempts, now_ms());
            warn!(event_id, event_type = %delivery.event_type, attempts, gives_up = next.is_none(), error = %error, "stripe event processing failed");
            inbox
                .finish(
                    event_id,
                    Finish::Failed {
                        error: &error.message,
                        next_attempt_at_ms: next,
                    },
                )
                .await?;
            "failed"
        }
    };
    metrics.increment(
        "latchkey_stripe_deliveries_processed_total",
        &[("outcome", label)],
    );
    Ok(())
}

/// Claims due rows and processes them until `shutdown`. Every instance may run one: on
/// PostgreSQL claims skip rows another instance holds.
pub fn spawn_worker(
    inbox: Inbox,
    processor: Arc<dyn DeliveryProcessor>,
    options: WorkerOptions,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now = now_ms();
            let claimed = inbox
                .claim_due(now, now + options.lease_ms(), options.batch_size)
                .await;
            let busy = match claimed {
                Ok(deliveries) => {
                    for delivery in &deliveries {
                        if shutdown.is_cancelled() {
                            // Unprocessed claims simply become due again after the lease.
                            return;
                        }
                        if let Err(error) =
                            process_one(&inbox, processor.as_ref(), &options, &metrics, delivery)
                                .await
                        {
                            warn!(event_id = %delivery.event_id, error = %error, "could not record a processing outcome");
                        }
                    }
                    !deliveries.is_empty()
                }
                Err(error) => {
                    warn!(error = %error, "could not claim stripe inbox rows");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(options.poll_interval) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stops_at_max_attempts() {
        let options = WorkerOptions {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5),
            max_attempts: 5,
            ..Default::default()
        };
        assert_eq!(options.next_attempt_ms(1, 0), Some(1000));
        assert_eq!(options.next_attempt_ms(2, 0), Some(2000));
        assert_eq!(options.next_attempt_ms(3, 0), Some(4000));
        assert_eq!(options.next_attempt_ms(4, 0), Some(5000));
        assert_eq!(options.next_attempt_ms(5, 0), None);
    }
}
