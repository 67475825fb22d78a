//! Durable delayed work: "retry this TTLock call in 8 s", "delete this code at 14:00".
//!
//! A job is stored with a key (so scheduling the same decision twice stores it once) and a
//! due time. The worker claims due jobs by moving their due time forward by a lease with a
//! compare-and-set (so two instances never run one job at once), runs them, and deletes
//! them; a failed run is retried with backoff and its error kept on the row.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cqrs_es::AggregateError;
use latchkey_aggregates::door::{CompensationRule, DoorCommand, DoorError};
use latchkey_aggregates::Actor;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::door_access::{self, IssueOutcome};
use crate::cqrs::{Buses, CommandMetadata};
use crate::on_pool;
use crate::store::Database;

/// Something to do later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    IssueAccessCode {
        door_uid: String,
        payment_id: Uuid,
    },
    RevokeAccessCode {
        door_uid: String,
        payment_id: Uuid,
        reason: String,
    },
    ExpireAccessCodes {
        door_uid: String,
    },
    /// Delete passcodes the lock holds for a payment the journal knows no live code of.
    RemoveStrayPasscodes {
        door_uid: String,
        payment_id: Uuid,
    },
    /// Ask Stripe for one refund request and record the answer.
    SubmitRefund {
        payment_id: Uuid,
        refund_request_id: Uuid,
    },
    /// Ask Stripe to capture a payment and record the answer.
    CapturePayment {
        payment_id: Uuid,
    },
    /// Ask Stripe to release a payment's authorization and record the answer.
    CancelAuthorization {
        payment_id: Uuid,
    },
    /// Capture or release an authorization before Stripe's 7-day limit.
    AuthorizationDeadline {
        payment_id: Uuid,
    },
    /// The access deadline of a paid door payment: refund the guest if no code is live.
    AccessDeadline {
        door_uid: String,
        payment_id: Uuid,
        paid_at: DateTime<Utc>,
        deadline_seconds: u64,
    },
}

/// Worker tuning.
#[derive(Clone, Debug)]
pub struct ScheduleOptions {
    /// How often the worker looks for due jobs.
    pub poll_interval: Duration,
    /// How long a claimed job is reserved for the instance running it.
    pub lease: Duration,
    /// Retry delay after a job fails: doubled per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        ScheduleOptions {
            poll_interval: Duration::from_millis(250),
            lease: Duration::from_secs(60),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// `base · 2^(attempt-1)`, at most `max`.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 2_u32.saturating_pow(attempt.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(max)
}

/// Stores `job` to run at `due_at`, unless a job with this key is already scheduled.
pub async fn schedule(
    database: &Database,
    key: &str,
    due_at: DateTime<Utc>,
    job: &Job,
) -> anyhow::Result<()> {
    let sql = "INSERT INTO scheduled_jobs (job_key, due_at_ms, job) VALUES ($1, $2, $3) \
               ON CONFLICT (job_key) DO NOTHING";
    let body = serde_json::to_string(job)?;
    on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(key)
            .bind(due_at.timestamp_millis())
            .bind(&body)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    Ok(())
}

/// Drops the job stored under `key`, if any: a decision made moot before it fell due.
pub async fn unschedule(database: &Database, key: &str) -> anyhow::Result<()> {
    on_pool!(database, pool => {
        sqlx::query("DELETE FROM scheduled_jobs WHERE job_key = $1")
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    Ok(())
}

/// Makes every job whose key starts with `key_prefix` due now (e.g. the issue jobs of a
/// door whose maintenance just ended); returns how many. A job being run by another
/// instance right now may then run twice at once; the commands jobs send are idempotent.
pub async fn bring_forward(database: &Database, key_prefix: &str) -> anyhow::Result<u64> {
    let now = Utc::now().timestamp_millis();
    // `substr` rather than LIKE: a door uid is free text and could hold `%` or `_`.
    let sql = "UPDATE scheduled_jobs SET due_at_ms = $1 \
               WHERE substr(job_key, 1, $2) = $3 AND due_at_ms > $1";
    let prefix_chars = i32::try_from(key_prefix.chars().count())?;
    let moved = on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(now)
            .bind(prefix_chars)
            .bind(key_prefix)
            .execute(pool)
            .await
            .map(|result| result.rows_affected())
    })?;
    Ok(moved)
}

/// How many jobs are waiting (for tests and health).
pub async fn pending(database: &Database) -> Result<i64, sqlx::Error> {
    on_pool!(database, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM scheduled_jobs").fetch_one(pool).await
    })
}

/// Runs due jobs until `shutdown`.
pub fn spawn_worker(
    database: Database,
    buses: Arc<Buses>,
    options: ScheduleOptions,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while !shutdown.is_cancelled() {
            if let Err(error) = run_due(&database, &buses, &options).await {
                tracing::warn!(error = %error, "scheduled jobs: a round failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(options.poll_interval) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    })
}

/// Claims and runs every job due now; returns how many ran.
pub async fn run_due(
    database: &Database,
    buses: &Buses,
    options: &ScheduleOptions,
) -> anyhow::Result<usize> {
    let now = Utc::now().timestamp_millis();
    let sql = "SELECT job_key, due_at_ms, job, attempts FROM scheduled_jobs \
               WHERE due_at_ms <= $1 ORDER BY due_at_ms LIMIT 50";
    let due: Vec<(String, i64, String, i32)> = on_pool!(database, pool => {
        sqlx::query_as(sql).bind(now).fetch_all(pool).await
    })?;
    let mut ran = 0;
    for (key, due_at_ms, body, attempts) in due {
        if !claim(
            database,
            &key,
            due_at_ms,
            now + options.lease.as_millis() as i64,
        )
        .await?
        {
            continue;
        }
        ran += 1;
        let outcome = match serde_json::from_str::<Job>(&body) {
            Ok(job) => run(buses, &job).await,
            Err(error) => Err(anyhow::anyhow!("unreadable job: {error}")),
        };
        match outcome {
            Ok(()) => {
                on_pool!(database, pool => {
                    sqlx::query("DELETE FROM scheduled_jobs WHERE job_key = $1").bind(&key).execute(pool).await.map(|_| ())
                })?;
            }
            Err(error) => {
                let attempt = u32::try_from(attempts).unwrap_or(0) + 1;
                let retry = backoff(options.retry_base, options.retry_max, attempt);
                tracing::warn!(job_key = %key, attempt, error = %error, "scheduled job failed; retrying later");
                let sql = "UPDATE scheduled_jobs SET attempts = attempts + 1, last_error = $1, due_at_ms = $2 \
                           WHERE job_key = $3";
                on_pool!(database, pool => {
                    sqlx::query(sql)
                        .bind(error.to_string())
                        .bind(Utc::now().timestamp_millis() + retry.as_millis() as i64)
                        .bind(&key)
                        .execute(pool)
                        .await
                        .map(|_| ())
                })?;
            }
        }
    }
    Ok(ran)
}

async fn claim(
    database: &Database,
    key: &str,
    due_at_ms: i64,
    leased_until_ms: i64,
) -> Result<bool, sqlx::Error> {
    let sql = "UPDATE scheduled_jobs SET due_at_ms = $1 WHERE job_key = $2 AND due_at_ms = $3";
    let claimed = on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(leased_until_ms)
            .bind(key)
            .bind(due_at_ms)
            .execute(pool)
            .await
            .map(|result| result.rows_affected())
    })?;
    Ok(claimed == 1)
}

/// Executes one job. Business refusals that retrying cannot change (the code was revoked
/// meanwhile, attempts are exhausted) complete the job; they are already in the journal.
async fn run(buses: &Buses, job: &Job) -> anyhow::Result<()> {
    let metadata = CommandMetadata::new(Actor::System.to_string(), "scheduler");
    let (door_uid, command) = match job.clone() {
        Job::IssueAccessCode {
            door_uid,
            payment_id,
        } => {
            return match door_access::issue_code(buses, &door_uid, payment_id, metadata).await? {
                // Retried with the scheduler's backoff, or sooner when maintenance ends.
                IssueOutcome::InMaintenance => {
                    Err(anyhow::anyhow!("door {door_uid} is in maintenance"))
                }
                IssueOutcome::Done | IssueOutcome::NotPaid | IssueOutcome::Withheld => Ok(()),
            };
        }
        Job::AccessDeadline {
            door_uid,
            payment_id,
            paid_at,
            deadline_seconds,
        } => {
            let compensation = door_access::Compensation {
                door_uid,
                payment_id,
                rule: CompensationRule::DeadlinePassed,
                paid_at: Some(paid_at),
                deadline_seconds,
            };
            return door_access::compensate(buses, compensation, metadata).await;
        }
        Job::RevokeAccessCode {
            door_uid,
            payment_id,
            reason,
        } => (
            door_uid,
            DoorCommand::RevokeAccessCode {
                payment_id,
                reason,
                actor: Actor::System,
                at: Utc::now(),
            },
        ),
        Job::RemoveStrayPasscodes {
            door_uid,
            payment_id,
        } => (
            door_uid,
            DoorCommand::RemoveStrayPasscodes {
                payment_id,
                actor: Actor::System,
                at: Utc::now(),
            },
        ),
        Job::ExpireAccessCodes { door_uid } => (
            door_uid,
            DoorCommand::ExpireAccessCodes {
                actor: Actor::System,
                at: Utc::now(),
            },
        ),
        Job::SubmitRefund {
            payment_id,
            refund_request_id,
        } => return super::refunds::submit_refund(buses, payment_id, refund_request_id).await,
        Job::CapturePayment { payment_id } => {
            return super::captures::submit_capture(buses, payment_id).await
        }
        Job::CancelAuthorization { payment_id } => {
            return super::captures::submit_cancellation(buses, payment_id).await
        }
        Job::AuthorizationDeadline { payment_id } => {
            return super::captures::authorization_deadline(buses, payment_id).await
        }
    };
    match buses.doors.execute(&door_uid, command, metadata).await {
        Ok(()) => Ok(()),
        // TTLock could not be asked: the job runs again after its backoff.
        Err(AggregateError::UserError(refusal @ DoorError::LockUnreachable { .. })) => {
            Err(anyhow::anyhow!("door {door_uid}: {refusal}"))
        }
        // Revoking and expiring work in maintenance too: a refusal is final.
        Err(AggregateError::UserError(refusal)) => {
            tracing::info!(door_uid = %door_uid, refusal = %refusal, "scheduled job no longer applies");
            Ok(())
        }
        Err(other) => Err(anyhow::anyhow!("{other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(base, max, 1), Duration::from_secs(2));
        assert_eq!(backoff(base, max, 3), Duration::from_secs(8));
        assert_eq!(backoff(base, max, 10), max);
        assert_eq!(backoff(base, max, u32::MAX), max);
    }
}
