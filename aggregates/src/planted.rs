//! Known bugs the whole-system simulation must be able to find, planted back on demand.
//!
//! A simulation that finds nothing proves nothing: `latchkey-simulation`'s tests switch one
//! of these on (per thread) and check the simulation reports it within 1,000 seeds. The
//! switch exists only with the `planted-bugs` feature, which refuses to compile without
//! debug assertions, so no release build can ever carry a planted bug; without the feature
//! [`active`] is a constant `false` the compiler removes.

#[cfg(all(feature = "planted-bugs", not(debug_assertions)))]
compile_error!("the `planted-bugs` feature is for the simulation's tests only: never enable it in a release build");

/// One planted bug. The plant points are `if planted::active(Bug::X) { … }` in the code
/// that had (or could have) the bug.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bug {
    /// A new refund request counts refunds Stripe already reported twice (refundable too low).
    RefundDoubleCount,
    /// A capture that Stripe refused is dropped: the authorization is never released.
    CaptureFailureDropped,
    /// A session that failed to start keeps the guest's authorization.
    HoldKeptAfterSessionFailed,
    /// A session completes at its end without switching the relay OFF.
    RelayLeftOnAtEnd,
    /// The webhook endpoint answers 2xx before the delivery is durably stored.
    WebhookAckedBeforeDurable,
    /// A door guest's page still says the code is being sent once it is live on the lock
    /// (the application's `ui::guest::view::access_status`).
    GuestPageIssuingWithLiveCode,
}

impl Bug {
    pub const ALL: [Bug; 6] = [
        Bug::RefundDoubleCount,
        Bug::CaptureFailureDropped,
        Bug::HoldKeptAfterSessionFailed,
        Bug::RelayLeftOnAtEnd,
        Bug::WebhookAckedBeforeDurable,
        Bug::GuestPageIssuingWithLiveCode,
    ];

    /// The name used on the command line (`scripts/simulate --bug NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Bug::RefundDoubleCount => "refund-double-count",
            Bug::CaptureFailureDropped => "capture-failure-dropped",
            Bug::HoldKeptAfterSessionFailed => "hold-kept-after-session-failed",
            Bug::RelayLeftOnAtEnd => "relay-left-on-at-end",
            Bug::WebhookAckedBeforeDurable => "webhook-acked-before-durable",
            Bug::GuestPageIssuingWithLiveCode => "guest-page-issuing-with-live-code",
        }
    }

    pub fn parse(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|bug| bug.name() == name)
    }
}

#[cfg(feature = "planted-bugs")]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Bug>> = const { std::cell::Cell::new(None) };
}

/// Whether `bug` is planted on this thread.
#[inline(always)]
pub fn active(bug: Bug) -> bool {
    #[cfg(feature = "planted-bugs")]
    {
        ACTIVE.with(|active| active.get() == Some(bug))
    }
    #[cfg(not(feature = "planted-bugs"))]
    {
        let _ = bug;
        false
    }
}

/// Plants `bug` (or none) on this thread.
#[cfg(feature = "planted-bugs")]
pub fn plant(bug: Option<Bug>) {
    ACTIVE.with(|active| active.set(bug));
}
