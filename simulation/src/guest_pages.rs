//! Guest pages agree with the journal (issue 14, the property's second half).
//!
//! For every payment, the state its guest page shows is computed by the application's own
//! pure page functions (`latchkey::ui::guest::view::{access_status, session_status}`, the
//! ones behind `/access/{token}` and `/session/{token}`) from the simulation's aggregate
//! states, and compared with what the journal's facts say the guest is owed:
//! - door: paid with a live code → ready, showing that code and window; compensated →
//!   "refunded" (done only once the refund is recorded); refunded → gone, never "revoked"
//!   while the lock keeps the code; paid without a code → issuing, but never longer than
//!   the access deadline plus [`ISSUING_AFTER_DEADLINE_MAX_SECONDS`];
//! - device: the session's state decides the phase; "not charged" only when the journal
//!   received nothing, "released" only once Stripe confirmed the release.
//!
//! The pages are checked after every step that appended to the journal, and otherwise once
//! a virtual minute (deadlines pass with time alone), and at the end of every run.

use std::cell::Cell;

use crate::world::{World, ACCESS_DEADLINE_SECONDS};
use chrono::{DateTime, Duration, Utc};
use latchkey::http::ApiError;
use latchkey::ui::guest::view::{
    access_status, session_status, AccessState, AccessStatus, PageContext, SessionPhase,
    SessionStatus, RELEASED,
};
use latchkey_aggregates::door::{AccessCode, AccessCodeState, Door};
use latchkey_aggregates::payment::{Payment, PaymentStatus, PaymentTarget};
use latchkey_aggregates::session::{DeviceSession, SessionState};

/// How long past the access deadline a paid door guest may still read "being sent": the
/// deadline job is scheduled by the door workflow, whose retries back off up to 10 minutes,
/// and the refund it orders is one more job round.
pub const ISSUING_AFTER_DEADLINE_MAX_SECONDS: i64 = 1200;

/// Between journal appends, pages are checked again once this much virtual time passed.
const RECHECK_SECONDS: i64 = 60;

/// Links in the pages point here; nothing checks them.
const PUBLIC_URL: &str = "https://latchkey.invalid";

thread_local! {
    /// `(journal length, virtual time)` of this thread's last check in the current run
    /// (reset by [`forget_last_check`] when a run starts).
    static LAST_CHECK: Cell<Option<(usize, DateTime<Utc>)>> = const { Cell::new(None) };
}

/// Starts a run's checks afresh: the throttle must not carry one seed's last check into
/// the next seed run on the same thread.
pub fn forget_last_check() {
    LAST_CHECK.with(|last| last.set(None));
}

/// The violations of this check, if it is due (see the module header).
pub fn check(world: &World) -> Vec<String> {
    let now = world.now;
    let appended = world.store.journal.len();
    let due = LAST_CHECK.with(|last| match last.get() {
        Some((len, at)) if len == appended && at <= now => {
            now - at >= Duration::seconds(RECHECK_SECONDS)
        }
        _ => true,
    });
    if !due {
        return Vec::new();
    }
    LAST_CHECK.with(|last| last.set(Some((appended, now))));
    check_all(world)
}

/// Every payment's page, now.
pub fn check_all(world: &World) -> Vec<String> {
    let context = PageContext {
        now: world.now,
        public_url: PUBLIC_URL,
    };
    let mut found = Vec::new();
    for stream in world.store.payments.values() {
        let payment = &stream.state;
        let Some(id) = payment.payment_id() else {
            continue;
        };
        if !payment.is_started() {
            continue;
        }
        let problem = match payment.target() {
            Some(PaymentTarget::Door { door_uid }) => {
                let Some(door) = world.store.doors.get(door_uid) else {
                    continue;
                };
                let page = access_status(payment, &door.state, &context);
                judge_door(&DoorFacts::of(payment, &door.state), &page, world.now)
            }
            Some(PaymentTarget::Device { device_uid, .. }) => {
                let Some(device) = world.store.devices.get(device_uid) else {
                    continue;
                };
                let session = world
                    .store
                    .sessions
                    .get(&id.to_string())
                    .map(|stream| stream.state.clone())
                    .unwrap_or_default();
                let page = session_status(payment, &device.state, &session, &context);
                judge_device(&DeviceFacts::of(payment, &session), &page)
            }
            None => None,
        };
        if let Some(problem) = problem {
            found.push(format!("guests: page of payment {id}: {problem}"));
        }
    }
    found
}

/// What the journal says about one door payment.
#[derive(Clone, Debug)]
pub struct DoorFacts {
    pub status: PaymentStatus,
    pub code: Option<AccessCode>,
    /// Stripe's success time (the deadline runs from it).
    pub paid_at: Option<DateTime<Utc>>,
    /// Held for an operator (amount mismatch) or disputed: no code is owed by a deadline.
    pub waiting_for_operator: bool,
}

impl DoorFacts {
    pub fn of(payment: &Payment, door: &Door) -> Self {
        let id = payment.payment_id().unwrap_or_default();
        DoorFacts {
            status: payment.status(),
            code: door.access_code(id).cloned(),
            paid_at: payment.succeeded_at(),
            waiting_for_operator: payment.is_access_held() || payment.is_disputed(),
        }
    }
}

/// What a door page shows, reduced to what the facts decide.
#[derive(Clone, Debug, PartialEq, Eq)]
enum DoorPage {
    Shows(AccessState),
    /// 410 with this message.
    Gone(String),
    Other(String),
}

fn door_page(page: &Result<AccessStatus, ApiError>) -> DoorPage {
    match page {
        Ok(status) => DoorPage::Shows(status.state),
        Err(ApiError::Gone(message)) => DoorPage::Gone(message.clone()),
        Err(other) => DoorPage::Other(other.to_string()),
    }
}

/// The mismatch between a door page and the facts, if any.
pub fn judge_door(
    facts: &DoorFacts,
    page: &Result<AccessStatus, ApiError>,
    now: DateTime<Utc>,
) -> Option<String> {
    let shown = door_page(page);
    let code = facts.code.as_ref();
    let code_state = code.map(|code| code.state);
    let live = code.filter(|code| {
        code.state == AccessCodeState::Issued && code.valid_to.is_some_and(|end| end > now)
    });
    // A code the lock keeps until its end whatever the cloud says (no gateway, or a
    // period code): once revoked or refunded, the page must say it still opens.
    let lingering = code.is_some_and(|code| {
        !code.remotely_revocable
            && matches!(
                code.state,
                AccessCodeState::Issued
                    | AccessCodeState::Revoked
                    | AccessCodeState::RevocationPending
            )
            && code
                .still_valid_until
                .or(code.valid_to)
                .is_some_and(|end| end > now)
    });
    let paid = matches!(
        facts.status,
        PaymentStatus::Succeeded | PaymentStatus::PartiallyRefunded
    );
    match (&shown, facts.status) {
        (DoorPage::Shows(AccessState::Confirming), PaymentStatus::Pending)
        | (DoorPage::Shows(AccessState::Confirming), PaymentStatus::Authorized)
        | (DoorPage::Shows(AccessState::PaymentFailed), PaymentStatus::Failed) => return None,
        (DoorPage::Gone(_), PaymentStatus::Cancelled | PaymentStatus::Expired) => return None,
        (_, PaymentStatus::Pending | PaymentStatus::Authorized) => {
            return Some(format!(
                "shows {shown:?} for a payment still {}",
                facts.status
            ))
        }
        (_, PaymentStatus::Failed | PaymentStatus::Cancelled | PaymentStatus::Expired) => {
            return Some(format!("shows {shown:?} for a {} payment", facts.status))
        }
        _ => {}
    }
    if code_state == Some(AccessCodeState::Compensated) {
        let done = facts.status == PaymentStatus::Refunded;
        return match page {
            Ok(status)
                if status.state == AccessState::Refunded
                    && status.refund_completed == Some(done)
                    && status.message.contains("refunded") =>
            {
                None
            }
            _ => Some(format!(
                "compensation decided (refund recorded: {done}) but the page shows {shown:?}"
            )),
        };
    }
    if let Some(code) = live.filter(|_| paid) {
        return match page {
            Ok(status)
                if status.state == AccessState::Ready
                    && status.passcode == code.code
                    && status.valid_to == code.valid_to
                    && status.remotely_revocable == Some(code.remotely_revocable) =>
            {
                None
            }
            _ => Some(format!(
                "a live code was issued (passcode {:?}) but the page shows {shown:?}",
                code.passcode_id
            )),
        };
    }
    if let DoorPage::Shows(AccessState::Ready) = shown {
        return Some(format!(
            "shows a ready code but the journal has none live ({code_state:?}, payment {})",
            facts.status
        ));
    }
    if matches!(shown, DoorPage::Shows(AccessState::Refunded)) {
        return Some("says the guest was refunded without a compensation decision".into());
    }
    let waiting = paid
        && matches!(
            code_state,
            None | Some(AccessCodeState::Requested | AccessCodeState::Failed)
        );
    if waiting {
        if shown != DoorPage::Shows(AccessState::Issuing) {
            return Some(format!("paid without a code, but the page shows {shown:?}"));
        }
        let bound = Duration::seconds(ACCESS_DEADLINE_SECONDS + ISSUING_AFTER_DEADLINE_MAX_SECONDS);
        let overdue = facts
            .paid_at
            .filter(|paid_at| now - *paid_at > bound && !facts.waiting_for_operator);
        if let Some(paid_at) = overdue {
            return Some(format!(
                "still says the code is being sent {} min after payment (paid at {paid_at})",
                (now - paid_at).num_minutes()
            ));
        }
        return None;
    }
    // Refunded, or a code that is no longer live: 410, honest about a code the lock keeps.
    match &shown {
        DoorPage::Gone(message) if lingering => {
            (!message.contains("keeps opening the door")).then(|| {
                format!("the lock keeps the code until its end, but the page says {message:?}")
            })
        }
        DoorPage::Gone(message) => message.contains("keeps opening the door").then(|| {
            format!("says the code keeps opening the door, but the lock removed it: {message:?}")
        }),
        _ => Some(format!(
            "code {code_state:?} of a {} payment, but the page shows {shown:?}",
            facts.status
        )),
    }
}

/// What the journal says about one device payment.
#[derive(Clone, Debug)]
pub struct DeviceFacts {
    pub status: PaymentStatus,
    pub session: Option<SessionState>,
    pub started_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub received_minor: i64,
    pub capture_failed: bool,
}

impl DeviceFacts {
    pub fn of(payment: &Payment, session: &DeviceSession) -> Self {
        DeviceFacts {
            status: payment.status(),
            session: session.state(),
            started_at: session.started_at(),
            ends_at: session.ends_at(),
            received_minor: payment.amount_received().map_or(0, |m| m.amount_minor),
            capture_failed: payment.capture_failure().is_some(),
        }
    }
}

/// The mismatch between a device page and the facts, if any.
pub fn judge_device(facts: &DeviceFacts, page: &Result<SessionStatus, ApiError>) -> Option<String> {
    use SessionPhase as P;
    let status = match page {
        Ok(status) => status,
        Err(ApiError::Gone(_))
            if facts.session.is_none()
                && matches!(
                    facts.status,
                    PaymentStatus::Cancelled | PaymentStatus::Expired
                ) =>
        {
            return None
        }
        Err(error) => {
            return Some(format!(
                "answers {error} for a {} payment with session {:?}",
                facts.status, facts.session
            ))
        }
    };
    let phase = status.state;
    let expected: &[SessionPhase] = match facts.session {
        None => match facts.status {
            PaymentStatus::Pending => &[P::Confirming],
            PaymentStatus::Failed => &[P::PaymentFailed],
            PaymentStatus::Cancelled | PaymentStatus::Authorized => &[P::NotCharged, P::Starting],
            _ => &[P::Starting],
        },
        Some(SessionState::Queued) => &[P::Waiting],
        Some(SessionState::Opened) => &[P::Starting],
        Some(SessionState::Active) => &[P::Active],
        Some(SessionState::Finishing) => &[P::Finishing],
        Some(SessionState::Completed | SessionState::ForceEnded) if facts.capture_failed => {
            &[P::ChargeFailed]
        }
        Some(SessionState::Completed | SessionState::ForceEnded) if facts.started_at.is_some() => {
            &[P::Finished]
        }
        Some(SessionState::ForceEnded | SessionState::Cancelled | SessionState::Failed) => {
            &[P::NotCharged]
        }
        Some(SessionState::Completed) => &[P::Finished],
    };
    if !expected.contains(&phase) {
        return Some(format!(
            "session {:?} of a {} payment, but the page shows {phase:?}",
            facts.session, facts.status
        ));
    }
    if matches!(phase, P::NotCharged | P::ChargeFailed) && facts.received_minor > 0 {
        return Some(format!(
            "says nothing was charged, but the journal received {}",
            facts.received_minor
        ));
    }
    if status.message == RELEASED
        && !matches!(
            facts.status,
            PaymentStatus::Cancelled | PaymentStatus::Expired
        )
    {
        return Some(format!(
            "says the hold was released, but Stripe has not confirmed it (payment {})",
            facts.status
        ));
    }
    if phase == P::Active && status.ends_at != facts.ends_at {
        return Some(format!(
            "counts down to {:?}, the session ends at {:?}",
            status.ends_at, facts.ends_at
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use latchkey::ui::guest::view::{DoorSummary, ISSUING};
    use uuid::Uuid;

    fn at(minutes: i64) -> DateTime<Utc> {
        crate::world::epoch() + Duration::minutes(minutes)
    }

    fn page(state: AccessState, message: &str) -> Result<AccessStatus, ApiError> {
        Ok(AccessStatus {
            state,
            door: DoorSummary {
                door_uid: "1".into(),
                name: "Door".into(),
                location: String::new(),
                time_zone: "UTC".into(),
            },
            offer: None,
            passcode: None,
            valid_from: None,
            valid_to: None,
            remotely_revocable: None,
            offline_fallback: false,
            failure_reason: None,
            retry_url: None,
            refund_completed: None,
            message: message.into(),
        })
    }

    fn issued(remotely_revocable: bool) -> AccessCode {
        AccessCode {
            payment_id: Uuid::nil(),
            state: AccessCodeState::Issued,
            passcode_id: Some(7),
            code: Some("4711042".into()),
            valid_from: Some(at(0)),
            valid_to: Some(at(60)),
            remotely_revocable,
            issue_attempts: 1,
            revocation_attempts: 0,
            last_error: None,
            still_valid_until: None,
            access_minutes: Some(60),
            compensation: None,
            fallback: None,
        }
    }

    fn paid(code: Option<AccessCode>) -> DoorFacts {
        DoorFacts {
            status: PaymentStatus::Succeeded,
            code,
            paid_at: Some(at(0)),
            waiting_for_operator: false,
        }
    }

    #[test]
    fn a_page_still_issuing_while_the_journal_has_a_live_code_is_caught() {
        let problem = judge_door(
            &paid(Some(issued(true))),
            &page(AccessState::Issuing, ISSUING),
            at(5),
        );
        assert!(problem.is_some_and(|text| text.contains("a live code was issued")));
    }

    #[test]
    fn a_ready_page_showing_the_journal_code_passes() {
        let code = issued(true);
        let mut shown = page(AccessState::Ready, "Type the code");
        if let Ok(status) = &mut shown {
            status.passcode = code.code.clone();
            status.valid_to = code.valid_to;
            status.remotely_revocable = Some(true);
        }
        assert_eq!(judge_door(&paid(Some(code)), &shown, at(5)), None);
    }

    #[test]
    fn issuing_past_the_deadline_is_caught_but_not_before() {
        let facts = paid(None);
        let waiting = page(AccessState::Issuing, ISSUING);
        assert_eq!(judge_door(&facts, &waiting, at(10)), None);
        let late = judge_door(&facts, &waiting, at(40));
        assert!(late.is_some_and(|text| text.contains("being sent")));
    }

    #[test]
    fn a_refunded_page_without_a_compensation_is_caught() {
        let problem = judge_door(&paid(None), &page(AccessState::Refunded, "refunded"), at(5));
        assert!(problem.is_some());
    }

    #[test]
    fn a_revoked_message_for_a_code_the_lock_keeps_is_caught() {
        let mut code = issued(false);
        code.state = AccessCodeState::Revoked;
        code.still_valid_until = code.valid_to;
        let facts = DoorFacts {
            status: PaymentStatus::Refunded,
            ..paid(Some(code))
        };
        let lie = Err(ApiError::Gone(
            "Access revoked: this code no longer opens the door.".into(),
        ));
        assert!(judge_door(&facts, &lie, at(5)).is_some());
        let honest = Err(ApiError::Gone(
            "… keeps opening the door until 01:00.".into(),
        ));
        assert_eq!(judge_door(&facts, &honest, at(5)), None);
    }

    #[test]
    fn a_device_page_saying_released_before_stripe_confirmed_is_caught() {
        let facts = DeviceFacts {
            status: PaymentStatus::Authorized,
            session: Some(SessionState::Failed),
            started_at: None,
            ends_at: None,
            received_minor: 0,
            capture_failed: false,
        };
        let status = SessionStatus {
            state: SessionPhase::NotCharged,
            device: latchkey::ui::guest::view::DeviceSummary {
                device_uid: "d".into(),
                name: "d".into(),
                location: String::new(),
                time_zone: "UTC".into(),
            },
            plan: None,
            offer: None,
            started_at: None,
            ends_at: None,
            remaining_seconds: None,
            expected_start: None,
            failure_reason: None,
            retry_url: None,
            message: RELEASED.into(),
        };
        assert!(judge_device(&facts, &Ok(status)).is_some_and(|text| text.contains("released")));
    }
}

/// The simulation finds a guest page that disagrees with the journal: with the page of a
/// guest whose code is live planted back to "being sent", some seed below 1,000 fails on it.
#[cfg(all(test, feature = "planted-bugs"))]
mod planted {
    use latchkey_aggregates::planted::{plant, Bug};

    #[test]
    fn a_page_still_issuing_with_a_live_code_is_found() {
        plant(Some(Bug::GuestPageIssuingWithLiveCode));
        let found = (0..1000).find(|seed| {
            crate::run(*seed, false)
                .violations
                .iter()
                .any(|violation| violation.contains("a live code was issued"))
        });
        plant(None);
        println!("guest-page-issuing-with-live-code: first failing seed {found:?}");
        assert!(found.is_some());
    }
}
