//! TTLock failures, typed so callers can branch: retry later, fall back, or tell an
//! operator what to fix. Codes and meanings come from the reference's error table.

use thiserror::Error;

/// Why TTLock refused a passcode, so the caller can choose another code or window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasscodeRejection {
    /// -3006: custom codes must be 4–9 digits.
    WrongLength,
    /// -3007: the lock already holds this code.
    Duplicate,
    /// -3009: the lock's passcode storage is full.
    StorageFull,
    /// -2032: consecutive or repeated digits.
    TooSimple,
    /// -1026: this random-code window was issued before and deleted; pick another hour.
    PeriodReused,
    /// -1007: the lock has no passcode key data; its passcodes must be reset on site.
    NoPasscodeData,
}

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TtlockError {
    #[error("TTLock rejected the client id/secret (errcode {errcode}): check TTLOCK_CLIENT_ID and TTLOCK_CLIENT_SECRET")]
    BadClientCredentials { errcode: i64 },

    #[error("TTLock rejected the account login (errcode {errcode}: {errmsg}): check TTLOCK_USERNAME and TTLOCK_PASSWORD (the TTLock app account that owns the locks, not the developer login)")]
    BadAccountCredentials { errcode: i64, errmsg: String },

    #[error("TTLock application is not approved for this account (errcode 10006): only test accounts can log in until the open-platform application is reviewed")]
    AppNotApproved,

    #[error("TTLock says this account belongs to another region (errcode 30008): point TTLOCK_API_BASE at the account's host (https://euapi.ttlock.com or https://cnapi.ttlock.com)")]
    WrongRegion,

    #[error("TTLock rejected the request time (errcode 80000): this host's clock is more than 5 minutes off; check NTP")]
    ClockSkew,

    #[error("TTLock rejected a fresh access token (errcode {errcode}); retry later, and check TTLOCK_CLIENT_ID if it persists")]
    TokenRejected { errcode: i64 },

    #[error("TTLock could not reach the lock through its gateway (errcode {errcode}: {errmsg}); nothing was changed on the lock")]
    GatewayOffline { errcode: i64, errmsg: String },

    #[error("TTLock gateway or lock is busy (errcode {errcode}: {errmsg}); retry shortly")]
    Busy { errcode: i64, errmsg: String },

    #[error("TTLock API call limit reached (errcode 30006); slow down")]
    RateLimited,

    #[error("TTLock monthly API quota exhausted (errcode 30007): upgrade the developer account or wait for the 1st of the month (Beijing time)")]
    QuotaExhausted,

    #[error("TTLock does not know this lock or gateway for this account (errcode {errcode}: {errmsg}): sync doors and check the door's lock id")]
    LockNotFound { errcode: i64, errmsg: String },

    #[error("TTLock has no such passcode (errcode -2009)")]
    PasscodeNotFound,

    #[error("TTLock refused the passcode ({reason:?}, errcode {errcode}: {errmsg})")]
    PasscodeRejected {
        reason: PasscodeRejection,
        errcode: i64,
        errmsg: String,
    },

    #[error("this lock does not support the operation (errcode -4043)")]
    NotSupported,

    #[error("TTLock denied permission (errcode {errcode}: {errmsg}): TTLOCK_USERNAME must be the lock's administrator and the lock must not be frozen")]
    PermissionDenied { errcode: i64, errmsg: String },

    #[error("TTLock server error ({detail}); retry later")]
    Server { detail: String },

    #[error("TTLock did not answer within {timeout_ms} ms; the request may or may not have been applied")]
    Timeout { timeout_ms: u64 },

    #[error("could not reach TTLock: {message}")]
    Network { message: String },

    #[error("TTLock answered something Latchkey does not understand: {message}")]
    UnexpectedResponse { message: String },

    /// A code this client does not classify; treated as permanent except the generic
    /// errcode 1 ("failed"), which TTLock returns for parallel gateway commands.
    #[error("TTLock error {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },

    /// Rejected before sending: the request itself is wrong.
    #[error("invalid TTLock request: {0}")]
    InvalidRequest(String),
}

impl TtlockError {
    /// Classifies a non-zero `errcode` from a TTLock response body.
    pub fn from_errcode(errcode: i64, errmsg: String) -> Self {
        use PasscodeRejection as R;
        let rejected = |reason| TtlockError::PasscodeRejected {
            reason,
            errcode,
            errmsg: errmsg.clone(),
        };
        match errcode {
            10000 | 10001 => Self::BadClientCredentials { errcode },
            10007 | 30005 => Self::BadAccountCredentials { errcode, errmsg },
            10006 => Self::AppNotApproved,
            // 10003 (unknown token), 10004 (expired) and 10011 (bad refresh token) reach
            // callers only if a fresh login is rejected too; the token cache handles them.
            10003 | 10004 | 10011 => Self::TokenRejected { errcode },
            30006 => Self::RateLimited,
            30007 => Self::QuotaExhausted,
            30008 => Self::WrongRegion,
            80000 => Self::ClockSkew,
            90000 => Self::Server {
                detail: format!("errcode 90000: {errmsg}"),
            },
            -2012 | -3002 | -3034 | -3035 | -3036 => Self::GatewayOffline { errcode, errmsg },
            1 | -3003 | -3037 => Self::Busy { errcode, errmsg },
            -1003 | -4037 => Self::LockNotFound { errcode, errmsg },
            -2009 => Self::PasscodeNotFound,
            -3006 => rejected(R::WrongLength),
            -3007 => rejected(R::Duplicate),
            -3009 => rejected(R::StorageFull),
            -2032 => rejected(R::TooSimple),
            -1026 => rejected(R::PeriodReused),
            -1007 => rejected(R::NoPasscodeData),
            -4043 => Self::NotSupported,
            20002 | -2018 | -2025 => Self::PermissionDenied { errcode, errmsg },
            _ => Self::Api { errcode, errmsg },
        }
    }

    /// True when the same call may succeed later without anyone changing anything:
    /// offline gateways, busy locks, rate limits, server and network trouble.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::GatewayOffline { .. }
            | Self::Busy { .. }
            | Self::RateLimited
            | Self::Server { .. }
            | Self::Timeout { .. }
            | Self::Network { .. }
            | Self::TokenRejected { .. } => true,
            Self::Api { errcode, .. } => *errcode == 1,
            _ => false,
        }
    }

    /// The TTLock `errcode`, when the error came from one.
    pub fn errcode(&self) -> Option<i64> {
        match self {
            Self::BadClientCredentials { errcode }
            | Self::BadAccountCredentials { errcode, .. }
            | Self::TokenRejected { errcode }
            | Self::GatewayOffline { errcode, .. }
            | Self::Busy { errcode, .. }
            | Self::LockNotFound { errcode, .. }
            | Self::PasscodeRejected { errcode, .. }
            | Self::PermissionDenied { errcode, .. }
            | Self::Api { errcode, .. } => Some(*errcode),
            Self::AppNotApproved => Some(10006),
            Self::WrongRegion => Some(30008),
            Self::ClockSkew => Some(80000),
            Self::RateLimited => Some(30006),
            Self::QuotaExhausted => Some(30007),
            Self::PasscodeNotFound => Some(-2009),
            Self::NotSupported => Some(-4043),
            _ => None,
        }
    }

    /// Whether this failure says something about the integration as a whole (feeds the
    /// module health), as opposed to one request being refused for its own content.
    pub(crate) fn degrades_module(&self) -> bool {
        !matches!(
            self,
            Self::LockNotFound { .. }
                | Self::PasscodeNotFound
                | Self::PasscodeRejected { .. }
                | Self::NotSupported
                | Self::InvalidRequest(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_reference_table() {
        let offline = TtlockError::from_errcode(-3002, "gateway offline".into());
        assert!(offline.is_retryable());
        let secret = TtlockError::from_errcode(10001, "bad".into());
        assert!(!secret.is_retryable());
        assert!(secret.to_string().contains("TTLOCK_CLIENT_SECRET"));
        assert!(matches!(
            TtlockError::from_errcode(-1026, String::new()),
            TtlockError::PasscodeRejected {
                reason: PasscodeRejection::PeriodReused,
                ..
            }
        ));
        assert!(!TtlockError::from_errcode(-1003, String::new()).is_retryable());
    }
}
