//! The pacer that keeps every Shelly Cloud request of this process at least one interval
//! apart. Callers queue in arrival order (tokio's mutex is fair) instead of being
//! dropped; an over-limit answer pushes the next slot back for everyone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::{sleep_until, Instant};

use super::error::ShellyError;

pub struct Pacer {
    interval: Duration,
    queue_max: usize,
    /// Held by the caller whose turn is next while it waits for its slot: the FIFO queue.
    turnstile: tokio::sync::Mutex<()>,
    /// Earliest instant the next request may leave. A std mutex: held only to read or
    /// move the instant, never across an await, so `defer` never waits for the queue.
    next_slot: Mutex<Instant>,
    waiting: AtomicUsize,
}

impl Pacer {
    pub fn new(interval: Duration, queue_max: usize) -> Self {
        Self {
            interval,
            queue_max,
            turnstile: tokio::sync::Mutex::new(()),
            next_slot: Mutex::new(Instant::now()),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Waits until this caller may send one request.
    pub async fn wait_turn(&self) -> Result<(), ShellyError> {
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = WaitingGuard(&self.waiting);
        if queued >= self.queue_max {
            return Err(ShellyError::QueueFull { queued });
        }
        let _turn = self.turnstile.lock().await;
        // Re-read after each sleep: a `defer` may have moved the slot meanwhile.
        loop {
            let slot = *self.slot();
            if Instant::now() >= slot {
                break;
            }
            sleep_until(slot).await;
        }
        *self.slot() = Instant::now() + self.interval;
        Ok(())
    }

    /// Pushes the next slot to at least `backoff` from now (after an over-limit answer).
    pub fn defer(&self, backoff: Duration) {
        let mut slot = self.slot();
        *slot = (*slot).max(Instant::now() + backoff);
    }

    /// Calls currently waiting for a slot (for metrics).
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Instant> {
        // Poisoning cannot corrupt an `Instant`; keep pacing.
        self.next_slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
