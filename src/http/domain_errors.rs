//! How the domain's refusals map onto HTTP: each aggregate error gets the status API.md
//! assigns (404 unknown, 409 conflicting state, 422 invalid value, 502 upstream), and its
//! message — written for people — becomes the response message.

use cqrs_es::AggregateError;
use latchkey_aggregates::device::DeviceError;
use latchkey_aggregates::door::DoorError;
use latchkey_aggregates::payment::PaymentError;
use latchkey_aggregates::session::SessionError;

use super::ApiError;

/// The HTTP family of a business refusal.
pub trait Refusal: std::error::Error {
    fn into_api_error(self) -> ApiError
    where
        Self: Sized;
}

impl<E: Refusal> From<AggregateError<E>> for ApiError {
    fn from(error: AggregateError<E>) -> Self {
        match error {
            AggregateError::UserError(refusal) => refusal.into_api_error(),
            AggregateError::AggregateConflict => ApiError::Unavailable(
                "the record is being changed by many requests at once; retry in a moment".into(),
            ),
            other => ApiError::Internal(anyhow::anyhow!(other.to_string())),
        }
    }
}

impl Refusal for DoorError {
    fn into_api_error(self) -> ApiError {
        let message = self.to_string();
        match self {
            DoorError::NotRegistered => ApiError::NotFound(message),
            DoorError::InvalidDoor { .. } => ApiError::Invalid(message),
            DoorError::PreviousCodeNotDeleted { .. } => ApiError::Upstream(message),
            _ => ApiError::Conflict(message),
        }
    }
}

impl Refusal for DeviceError {
    fn into_api_error(self) -> ApiError {
        let message = self.to_string();
        match self {
            DeviceError::NotRegistered => ApiError::NotFound(message),
            DeviceError::InvalidDevice { .. } => ApiError::Invalid(message),
            DeviceError::RelayFailed { .. } => ApiError::Upstream(message),
            _ => ApiError::Conflict(message),
        }
    }
}

impl Refusal for SessionError {
    fn into_api_error(self) -> ApiError {
        let message = self.to_string();
        match self {
            SessionError::NotCreated => ApiError::NotFound(message),
            SessionError::InvalidTerms { .. } => ApiError::Invalid(message),
            SessionError::RelayUnreachable { .. } => ApiError::Upstream(message),
            _ => ApiError::Conflict(message),
        }
    }
}

impl Refusal for PaymentError {
    fn into_api_error(self) -> ApiError {
        let message = self.to_string();
        match self {
            PaymentError::NotStarted => ApiError::NotFound(message),
            PaymentError::InvalidCheckout { .. } | PaymentError::NonPositiveAmount { .. } => {
                ApiError::Invalid(message)
            }
            _ => ApiError::Conflict(message),
        }
    }
}
