//! The refund ledger: what Stripe says was refunded, refund by refund, and which of our own
//! refund requests Stripe has not accounted for yet.
//!
//! Why a ledger and not one running total: a refund reaches us up to three times — as
//! Stripe's answer to our `POST /v1/refunds`, as `refund.created` (then `refund.updated` /
//! `refund.failed`), and inside `charge.refunded`'s cumulative `amount_refunded` — in any
//! order, each maybe twice. Adding amounts as they arrive counts one refund twice (the bug
//! that left "refund the rest" short). Keyed by Stripe's refund id (`re_…`), a refund is
//! counted once however often it is reported, and a refund that fails later simply stops
//! counting.
//!
//! Stripe's cumulative total is then read from the newest `charge.refunded` total, which
//! is Stripe's own word for every refund created up to it (refunds made in Stripe's
//! Dashboard, refunds whose `refund.created` is still on its way, and refunds that failed
//! before it even if their `refund.failed` has not reached us), plus the refunds created
//! after it that still count, minus those in it that failed after it. Without a charge
//! report it is the sum of the refunds known by id that still count.
//!
//! Our own requests are journalled before Stripe is called. Until Stripe's answer or one
//! of its webhooks ties a request to a refund, the request's amount is reserved ("in
//! flight"), so two quick requests can never together ask for more than was received, and
//! "refund the rest" asks for exactly what is neither refunded nor in flight.
//!
//! Every decision is a small named function so it can be read (and tested) on its own.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A Stripe Refund's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Pending,
    RequiresAction,
    Succeeded,
    Failed,
    Canceled,
}

impl RefundStatus {
    /// Stripe's spelling; `None` for a status this version does not know.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "requires_action" => Some(Self::RequiresAction),
            "succeeded" => Some(Self::Succeeded),
            "failed" => Some(Self::Failed),
            "canceled" => Some(Self::Canceled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::RequiresAction => "requires_action",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    /// Whether the refund counts in the charge's `amount_refunded`: Stripe counts a refund
    /// from its creation (pending included) until it fails or is cancelled.
    pub fn counts_as_refunded(self) -> bool {
        !self.is_final_failure()
    }

    /// A failed or cancelled refund never comes back; a later report cannot revive it.
    pub fn is_final_failure(self) -> bool {
        matches!(self, Self::Failed | Self::Canceled)
    }
}

impl fmt::Display for RefundStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One refund as Stripe last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownRefund {
    pub amount_minor: i64,
    pub status: RefundStatus,
    /// Stripe's time of the report the status came from: an older report never
    /// overwrites a newer one. For a failed refund, when it failed.
    pub reported_at: DateTime<Utc>,
    /// The refund's own `created`: from then on, charge totals include it.
    pub created_at: DateTime<Utc>,
    /// Our request, when the refund is one we asked for.
    pub refund_request_id: Option<Uuid>,
}

/// One of our refund requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestState {
    pub amount_minor: i64,
    /// Why, as the person or workflow said it.
    pub reason: String,
    /// "Refund the rest" rather than an amount.
    #[serde(default)]
    pub asked_for_the_rest: bool,
    /// The refund Stripe created for it, once Stripe answered (or a webhook named it).
    pub stripe_refund_id: Option<String>,
    /// Stripe refused the request: it refunded nothing and reserves nothing.
    pub refused: bool,
    /// A `charge.refunded` carrying this request's idempotency key was recorded, so the
    /// charge total already includes it.
    pub in_charge_total: bool,
    /// Journals written before the ledger existed: the request is accounted for once the
    /// charge total reaches this cumulative amount.
    pub legacy_settled_at_minor: Option<i64>,
}

/// A refund decision, as `RefundOrdered` records it.
pub struct OrderedRefund {
    pub amount_minor: i64,
    pub reason: String,
    pub asked_for_the_rest: bool,
}

/// The newest `charge.refunded` total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeTotal {
    pub total_minor: i64,
    pub reported_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundLedger {
    refunds: BTreeMap<String, KnownRefund>,
    charge_total: Option<ChargeTotal>,
    requests: BTreeMap<Uuid, RequestState>,
}

impl RefundLedger {
    /// Stripe's cumulative refunded total, as far as Stripe's reports tell.
    ///
    /// Without a charge report it is the refunds known by id that still count. With one,
    /// the newest charge total is Stripe's own word for every refund created up to it —
    /// including a failure we have not heard of yet (the refund's last report is older than
    /// the charge's), which a sum by id would still count — adjusted by what happened
    /// since: refunds created after it add, and refunds in it that failed after it
    /// subtract.
    pub fn refunded_minor(&self) -> i64 {
        let Some(charge) = self.charge_total else {
            return self
                .refunds
                .values()
                .filter(|refund| refund.status.counts_as_refunded())
                .map(|refund| refund.amount_minor)
                .sum();
        };
        let created_since: i64 = self
            .refunds
            .values()
            .filter(|refund| refund.created_at > charge.reported_at)
            .filter(|refund| refund.status.counts_as_refunded())
            .map(|refund| refund.amount_minor)
            .sum();
        (charge.total_minor - self.failed_since_minor(charge)).max(0) + created_since
    }

    /// What the refunds in `charge`'s total that failed after it add up to.
    ///
    /// Stripe's clock has one-second steps, so a failure reported in the same second as
    /// the charge total may have come before or after it. It is taken to follow the report
    /// — unless the total has no room for it beside the refunds certainly in it, which
    /// means it had already failed when the total was reported. Where the reports cannot
    /// tell, this errs towards a lower refunded total: "refund the rest" may then ask for
    /// too much, which Stripe refuses (nothing moves, the refusal is journalled) until the
    /// next report settles it, rather than too little, which would short the guest.
    fn failed_since_minor(&self, charge: ChargeTotal) -> i64 {
        let in_total = || {
            self.refunds
                .values()
                .filter(move |refund| refund.created_at <= charge.reported_at)
        };
        let still_counting: i64 = in_total()
            .filter(|refund| refund.status.counts_as_refunded())
            .map(|refund| refund.amount_minor)
            .sum();
        let failed_later: i64 = in_total()
            .filter(|refund| refund.status.is_final_failure())
            .filter(|refund| refund.reported_at > charge.reported_at)
            .map(|refund| refund.amount_minor)
            .sum();
        let mut room = charge.total_minor - still_counting - failed_later;
        let mut failed_since = failed_later;
        let same_second = in_total()
            .filter(|refund| refund.status.is_final_failure())
            .filter(|refund| refund.reported_at == charge.reported_at);
        for refund in same_second {
            if refund.amount_minor <= room {
                room -= refund.amount_minor;
                failed_since += refund.amount_minor;
            }
        }
        failed_since
    }

    /// What our requests still reserve: asked for, not refused, not yet seen in any of
    /// Stripe's reports.
    pub fn in_flight_minor(&self) -> i64 {
        self.requests
            .values()
            .filter(|request| self.is_in_flight(request))
            .map(|request| request.amount_minor)
            .sum()
    }

    /// What a new request may ask for, out of `received_minor`.
    pub fn refundable_minor(&self, received_minor: i64) -> i64 {
        let mut refunded = self.refunded_minor();
        if crate::planted::active(crate::planted::Bug::RefundDoubleCount) {
            // The bug of the first design: what Stripe already reported counted again.
            refunded *= 2;
        }
        (received_minor - refunded - self.in_flight_minor()).max(0)
    }

    fn is_in_flight(&self, request: &RequestState) -> bool {
        if request.refused || request.in_charge_total {
            return false;
        }
        if let Some(settled_at) = request.legacy_settled_at_minor {
            return self.charge_total_minor() < settled_at;
        }
        match &request.stripe_refund_id {
            Some(refund_id) => !self.refunds.contains_key(refund_id),
            None => true,
        }
    }

    pub fn request(&self, refund_request_id: Uuid) -> Option<&RequestState> {
        self.requests.get(&refund_request_id)
    }

    pub fn refund(&self, refund_id: &str) -> Option<&KnownRefund> {
        self.refunds.get(refund_id)
    }

    /// Whether `refund_request_id` is still waiting for Stripe to be asked or to answer.
    pub fn awaits_submission(&self, refund_request_id: Uuid) -> bool {
        self.requests
            .get(&refund_request_id)
            .is_some_and(|request| !request.refused && request.stripe_refund_id.is_none())
    }

    pub fn is_request_in_flight(&self, refund_request_id: Uuid) -> bool {
        self.requests
            .get(&refund_request_id)
            .is_some_and(|request| self.is_in_flight(request))
    }

    pub fn charge_total_minor(&self) -> i64 {
        self.charge_total.map_or(0, |charge| charge.total_minor)
    }

    pub fn charge_total(&self) -> Option<ChargeTotal> {
        self.charge_total
    }

    /// Why a report of refund `refund_id` in `status`, made at `reported_at`, changes
    /// nothing — or `None` when it is news. A failure is final; otherwise the newer
    /// report wins, and at the same instant a settled status beats a pending one.
    pub fn refund_report_is_stale(
        &self,
        refund_id: &str,
        status: RefundStatus,
        reported_at: DateTime<Utc>,
    ) -> Option<String> {
        let known = self.refunds.get(refund_id)?;
        if known.status == status {
            return Some(format!(
                "refund {refund_id} is already recorded as {status}"
            ));
        }
        if known.status.is_final_failure() {
            return Some(format!(
                "refund {refund_id} already {}; a failed refund never counts again",
                known.status
            ));
        }
        if status.is_final_failure() {
            return None;
        }
        let older = reported_at < known.reported_at
            || (reported_at == known.reported_at && status < known.status);
        older.then(|| {
            format!(
                "refund {refund_id} was reported {} at {}; this {status} report is older",
                known.status, known.reported_at
            )
        })
    }

    // Recording (called from `apply` only).

    pub fn record_request(&mut self, refund_request_id: Uuid, ordered: OrderedRefund) {
        self.requests
            .entry(refund_request_id)
            .or_insert(RequestState {
                amount_minor: ordered.amount_minor,
                reason: ordered.reason,
                asked_for_the_rest: ordered.asked_for_the_rest,
                stripe_refund_id: None,
                refused: false,
                in_charge_total: false,
                legacy_settled_at_minor: None,
            });
    }

    /// A request journalled by the first design, which called Stripe inside the command
    /// and expected the charge total to reach `expected_total_minor`.
    pub fn record_legacy_request(
        &mut self,
        refund_request_id: Uuid,
        amount_minor: i64,
        reason: String,
        stripe_refund_id: String,
        expected_total_minor: i64,
    ) {
        self.requests.insert(
            refund_request_id,
            RequestState {
                amount_minor,
                reason,
                asked_for_the_rest: false,
                stripe_refund_id: Some(stripe_refund_id),
                refused: false,
                in_charge_total: false,
                legacy_settled_at_minor: Some(expected_total_minor),
            },
        );
    }

    pub fn record_submission(&mut self, refund_request_id: Uuid, stripe_refund_id: String) {
        if let Some(refund) = self.refunds.get_mut(&stripe_refund_id) {
            refund.refund_request_id.get_or_insert(refund_request_id);
        }
        if let Some(request) = self.requests.get_mut(&refund_request_id) {
            request.stripe_refund_id = Some(stripe_refund_id);
        }
    }

    pub fn record_refusal(&mut self, refund_request_id: Uuid) {
        if let Some(request) = self.requests.get_mut(&refund_request_id) {
            request.refused = true;
        }
    }

    pub fn record_refund(&mut self, refund_id: String, refund: KnownRefund) {
        if let Some(request_id) = refund.refund_request_id {
            if let Some(request) = self.requests.get_mut(&request_id) {
                request
                    .stripe_refund_id
                    .get_or_insert_with(|| refund_id.clone());
            }
        }
        let linked = self
            .refunds
            .get(&refund_id)
            .and_then(|known| known.refund_request_id);
        let known = self.refunds.get(&refund_id);
        let refund_request_id = refund.refund_request_id.or(linked);
        let created_at = known.map_or(refund.created_at, |known| {
            known.created_at.min(refund.created_at)
        });
        self.refunds.insert(
            refund_id,
            KnownRefund {
                refund_request_id,
                created_at,
                ..refund
            },
        );
    }

    /// A charge report: the newest (by Stripe's clock) total is kept, so an older report
    /// arriving late changes nothing; at the same instant the larger total is the later one,
    /// since only refunds (not failures) produce charge reports. It names the request that
    /// caused it, if any: that request is then accounted for by the charge total.
    pub fn record_charge_total(
        &mut self,
        total_minor: i64,
        reported_at: DateTime<Utc>,
        refund_request_id: Option<Uuid>,
    ) {
        let newer = match self.charge_total {
            None => true,
            Some(current) => {
                reported_at > current.reported_at
                    || (reported_at == current.reported_at && total_minor > current.total_minor)
            }
        };
        if newer {
            self.charge_total = Some(ChargeTotal {
                total_minor,
                reported_at,
            });
        }
        if let Some(request) = refund_request_id.and_then(|id| self.requests.get_mut(&id)) {
            request.in_charge_total = true;
        }
    }
}

/// The Stripe idempotency key of one of our refund requests. Stripe echoes it in the
/// `request.idempotency_key` of the events the request caused, which is how a
/// `charge.refunded` is tied back to the request.
pub fn refund_idempotency_key(refund_request_id: Uuid) -> String {
    format!("latchkey-refund-{refund_request_id}")
}

/// The request id inside one of our refund idempotency keys.
pub fn refund_request_of_key(idempotency_key: &str) -> Option<Uuid> {
    idempotency_key
        .strip_prefix("latchkey-refund-")
        .and_then(|id| Uuid::parse_str(id).ok())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn second(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, s).unwrap()
    }

    fn refund(amount_minor: i64, status: RefundStatus, created: u32, reported: u32) -> KnownRefund {
        KnownRefund {
            amount_minor,
            status,
            reported_at: second(reported),
            created_at: second(created),
            refund_request_id: None,
        }
    }

    /// Found by `refunds::a_refund_that_fails_later_takes_the_refunded_total_back_down`
    /// under load: the first refund failed in the same second as the second refund was
    /// created, so the new charge total's second equals the failure's.
    #[test]
    fn a_failure_in_the_charge_total_s_second_that_the_total_has_no_room_for_preceded_it() {
        let mut ledger = RefundLedger::default();
        ledger.record_refund("re_1".into(), refund(120, RefundStatus::Succeeded, 1, 1));
        ledger.record_charge_total(120, second(1), None);
        ledger.record_refund("re_1".into(), refund(120, RefundStatus::Failed, 1, 5));
        assert_eq!(ledger.refunded_minor(), 0);
        ledger.record_refund("re_2".into(), refund(300, RefundStatus::Succeeded, 5, 5));
        ledger.record_charge_total(300, second(5), None);
        assert_eq!(ledger.refunded_minor(), 300);
    }

    #[test]
    fn a_failure_in_the_charge_total_s_second_that_fits_in_it_is_taken_to_follow_it() {
        let mut ledger = RefundLedger::default();
        ledger.record_charge_total(120, second(1), None);
        ledger.record_refund("re_1".into(), refund(120, RefundStatus::Failed, 1, 1));
        assert_eq!(ledger.refunded_minor(), 0);
    }

    #[test]
    fn a_newer_charge_total_wins_over_a_refund_whose_failure_has_not_arrived() {
        let mut ledger = RefundLedger::default();
        ledger.record_refund("re_1".into(), refund(120, RefundStatus::Succeeded, 1, 1));
        ledger.record_refund("re_2".into(), refund(300, RefundStatus::Succeeded, 5, 5));
        // re_1 failed at second 3 (its refund.failed is still on its way): Stripe's total
        // at second 5 holds only re_2.
        ledger.record_charge_total(300, second(5), None);
        assert_eq!(ledger.refunded_minor(), 300);
    }
}
