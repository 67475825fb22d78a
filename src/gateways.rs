//! The domain's ports as this process wires them: the configured Stripe, TTLock and
//! Shelly clients, or, for a module that is not configured, an adapter that refuses every
//! call with a message naming the variables to set (a missing integration is not a
//! start-up error; the flows that need it fail clearly instead).

use std::sync::Arc;

use async_trait::async_trait;

use crate::payments::checkout::{CheckoutCreated, CheckoutError, CheckoutGateway, CheckoutRequest};
use latchkey_aggregates::door::services::{
    IssuedPasscode, LockError, LockGateway, PasscodeRequest,
};
use latchkey_aggregates::payment::services::{
    CancelAuthorizationRequest, CaptureRequest, GatewayError, PaymentGateway, RefundReceipt,
    RefundRequest,
};
use latchkey_aggregates::session::services::{
    RelayCommand, RelayError, RelayGateway, RelayOutcome, RelayTarget,
};

/// One implementation of each port, and which of them are real.
#[derive(Clone)]
pub struct Gateways {
    pub payments: Arc<dyn PaymentGateway>,
    pub locks: Arc<dyn LockGateway>,
    pub relays: Arc<dyn RelayGateway>,
    pub checkout: Arc<dyn CheckoutGateway>,
    /// `None` where the port is real; the refusal otherwise, for a 503 up front.
    pub stripe_missing: Option<NotConfigured>,
    pub ttlock_missing: Option<NotConfigured>,
    pub shelly_missing: Option<NotConfigured>,
}

impl Gateways {
    /// Every module unconfigured.
    pub fn unconfigured() -> Self {
        Gateways {
            payments: Arc::new(NotConfigured::STRIPE),
            locks: Arc::new(NotConfigured::TTLOCK),
            relays: Arc::new(NotConfigured::SHELLY),
            checkout: Arc::new(NotConfigured::STRIPE),
            stripe_missing: Some(NotConfigured::STRIPE),
            ttlock_missing: Some(NotConfigured::TTLOCK),
            shelly_missing: Some(NotConfigured::SHELLY),
        }
    }

    /// Real (or fake, in tests) implementations of every port.
    pub fn with(
        payments: Arc<dyn PaymentGateway>,
        locks: Arc<dyn LockGateway>,
        relays: Arc<dyn RelayGateway>,
        checkout: Arc<dyn CheckoutGateway>,
    ) -> Self {
        Gateways {
            payments,
            locks,
            relays,
            checkout,
            stripe_missing: None,
            ttlock_missing: None,
            shelly_missing: None,
        }
    }
}

/// Refuses every call: the module has no credentials.
#[derive(Clone, Copy, Debug)]
pub struct NotConfigured {
    module: &'static str,
    variables: &'static str,
}

impl NotConfigured {
    pub const STRIPE: NotConfigured = NotConfigured {
        module: "Stripe",
        variables: "STRIPE_SECRET_KEY",
    };
    pub const TTLOCK: NotConfigured = NotConfigured {
        module: "TTLock",
        variables: "TTLOCK_CLIENT_ID, TTLOCK_CLIENT_SECRET, TTLOCK_USERNAME and TTLOCK_PASSWORD",
    };
    pub const SHELLY: NotConfigured = NotConfigured {
        module: "Shelly",
        variables: "SHELLY_AUTH_KEY and SHELLY_SERVER",
    };

    pub fn message(&self) -> String {
        format!("{} is not configured: set {}", self.module, self.variables)
    }
}

#[async_trait]
impl PaymentGateway for NotConfigured {
    async fn capture(&self, _: CaptureRequest) -> Result<(), GatewayError> {
        Err(GatewayError::permanent(self.message()))
    }

    async fn cancel_authorization(
        &self,
        _: CancelAuthorizationRequest,
    ) -> Result<(), GatewayError> {
        Err(GatewayError::permanent(self.message()))
    }

    async fn refund(&self, _: RefundRequest) -> Result<RefundReceipt, GatewayError> {
        Err(GatewayError::permanent(self.message()))
    }
}

#[async_trait]
impl LockGateway for NotConfigured {
    async fn issue_passcode(&self, _: PasscodeRequest) -> Result<IssuedPasscode, LockError> {
        Err(LockError::permanent(self.message()))
    }

    async fn delete_passcode(&self, _: i64, _: i64) -> Result<(), LockError> {
        Err(LockError::permanent(self.message()))
    }
}

#[async_trait]
impl RelayGateway for NotConfigured {
    async fn switch(&self, _: RelayCommand) -> Result<RelayOutcome, RelayError> {
        Err(RelayError::permanent(self.message()))
    }

    async fn status(&self, _: RelayTarget) -> Result<RelayOutcome, RelayError> {
        Err(RelayError::permanent(self.message()))
    }
}

#[async_trait]
impl CheckoutGateway for NotConfigured {
    async fn create_checkout(&self, _: CheckoutRequest) -> Result<CheckoutCreated, CheckoutError> {
        Err(CheckoutError {
            message: self.message(),
        })
    }
}
