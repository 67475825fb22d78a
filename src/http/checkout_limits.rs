//! Rate limits on starting a checkout. Each start journals a payment and calls Stripe, so
//! an unthrottled endpoint is a card-testing tool and a way to flood the journal. Two
//! sliding windows apply: per client address (one phone, one script) and per door or
//! device (a distributed flood at one target). Limits are per process: with several
//! instances behind a balancer the effective limit is that many times higher, which
//! still bounds the damage.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ApiError;

/// A guest retrying a declined card or a family paying for several doors stays far below
/// this; a card-testing script does not.
pub const PER_ADDRESS_PER_MINUTE: usize = 10;
/// A door or a device sells at most a few sessions a minute, even at a busy site.
pub const PER_TARGET_PER_MINUTE: usize = 30;
const WINDOW: Duration = Duration::from_secs(60);
/// Keys remembered at most; past this the oldest-idle are forgotten (memory stays bounded
/// under a flood from many addresses).
const KEYS_MAX: usize = 100_000;

/// The counters of one process.
#[derive(Debug)]
pub struct CheckoutLimits {
    per_address: usize,
    per_target: usize,
    starts: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Default for CheckoutLimits {
    fn default() -> Self {
        CheckoutLimits::new(PER_ADDRESS_PER_MINUTE, PER_TARGET_PER_MINUTE)
    }
}

impl CheckoutLimits {
    pub fn new(per_address: usize, per_target: usize) -> Self {
        CheckoutLimits {
            per_address,
            per_target,
            starts: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one checkout start for `address` at `target` (`door:<uid>`, `device:<uid>`),
    /// or refuses it with 429 and when to retry. A refused start is not counted.
    pub fn admit(&self, address: Option<IpAddr>, target: &str) -> Result<(), ApiError> {
        let now = Instant::now();
        let mut starts = self.starts.lock().unwrap_or_else(|p| p.into_inner());
        if starts.len() > KEYS_MAX {
            starts.retain(|_, times| times.back().is_some_and(|last| now - *last < WINDOW));
        }
        let mut keys = vec![(
            format!("target:{target}"),
            self.per_target,
            "this door or device",
        )];
        if let Some(address) = address {
            keys.push((
                format!("address:{address}"),
                self.per_address,
                "your network address",
            ));
        }
        for (key, limit, what) in &keys {
            let times = starts.entry(key.clone()).or_default();
            while times.front().is_some_and(|first| now - *first >= WINDOW) {
                times.pop_front();
            }
            if times.len() >= *limit {
                let retry = times
                    .front()
                    .map_or(WINDOW, |first| WINDOW.saturating_sub(now - *first));
                let seconds = retry.as_secs().max(1);
                tracing::warn!(key, "checkout start rate-limited");
                return Err(ApiError::RateLimited {
                    message: format!(
                        "Too many payments were started from {what} in the last minute. \
                         Nothing was charged; please try again in {seconds} seconds."
                    ),
                    retry_after_seconds: seconds,
                });
            }
        }
        for (key, _, _) in keys {
            starts.entry(key).or_default().push_back(now);
        }
        Ok(())
    }
}
