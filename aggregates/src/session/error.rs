//! Why a session command was refused.

use chrono::{DateTime, Utc};

use super::events::SessionState;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    #[error("this session does not exist; open or queue it first")]
    NotCreated,
    #[error("this session already exists and is {state}")]
    AlreadyCreated { state: SessionState },
    #[error("the session terms are invalid: {reason}")]
    InvalidTerms { reason: String },
    #[error("session is {state}; only a queued session can be opened from the queue")]
    NotQueued { state: SessionState },
    #[error("the grace period ended at {grace_ends_at}; cancel the session instead of switching the relay ON")]
    GracePeriodOver { grace_ends_at: DateTime<Utc> },
    #[error("session is {state}; the relay is switched ON only for an opened or active session")]
    CannotSwitchOn { state: SessionState },
    #[error("the session's time ended at {ends_at}; finish it instead of switching the relay ON")]
    TimeIsUp { ends_at: DateTime<Utc> },
    #[error("the session runs until {ends_at}; force end it to stop earlier")]
    NotOverYet { ends_at: DateTime<Utc> },
    #[error("session is {state}; only an active or finishing session can be finished")]
    NotFinishable { state: SessionState },
    #[error("session is {state}; a session that started is ended with force end, not cancelled")]
    NotCancellable { state: SessionState },
    #[error("session already ended ({state})")]
    AlreadyEnded { state: SessionState },
    #[error("the relay could not be read: {message}")]
    RelayUnreachable { message: String },
    #[error("session is {state}; it does not hold the relay")]
    NotHoldingRelay { state: SessionState },
}
