//! The domain's ports as this process wires them: the configured Stripe, TTLock and
//! Shelly clients, or, for a module that is not configured, an adapter that refuses every
//! call with a message naming the variables to set (a missing integration is not a
//! start-up error; the flows that need it fail clearly instead).
//!
//! [`LiveGateways`] holds the current set and lets the settings page replace it while the
//! process runs: the command buses and the reconciler hold its [`LiveGateways::ports`],
//! proxies that call whatever set is current at the time of each call.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use crate::config::Settings;
use crate::integrations::health::ModuleHealth;
use crate::integrations::shelly::gateway::ShellyRelayGateway;
use crate::integrations::shelly::{ShellyClient, ShellyCloudConfig, ShellyConfig};
use crate::integrations::stripe::gateway::{StripeCheckoutGateway, StripePaymentGateway};
use crate::integrations::stripe::StripeClient;
use crate::integrations::ttlock::gateway::TtlockLockGateway;
use crate::integrations::ttlock::{TtlockClient, TtlockConfig};
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
    /// The TTLock client itself, for what the domain's port does not cover (the lock list).
    pub ttlock: Option<TtlockClient>,
    /// The Shelly client itself (device status for the settings page's connection test).
    pub shelly: Option<ShellyClient>,
    /// Each integration's health record (Stripe, TTLock, Shelly), for
    /// `/api/health/modules` and the metrics.
    pub health: Vec<ModuleHealth>,
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
            ttlock: None,
            shelly: None,
            health: vec![
                ModuleHealth::not_configured("stripe"),
                ModuleHealth::not_configured("ttlock"),
                ModuleHealth::not_configured("shelly"),
            ],
        }
    }

    /// The gateways the settings configure: real clients where credentials are set, the
    /// refusing adapter elsewhere.
    pub fn from_settings(
        settings: &Settings,
        stripe: Option<&StripeClient>,
    ) -> anyhow::Result<Self> {
        let mut gateways = Gateways::unconfigured();
        if let Some(client) = stripe {
            gateways.payments = Arc::new(StripePaymentGateway::new(client.clone()));
            gateways.checkout = Arc::new(StripeCheckoutGateway::new(client.clone()));
            gateways.stripe_missing = None;
            gateways.health[0] = ModuleHealth::new("stripe");
        }
        if let Some(config) = ttlock_config(settings) {
            let health = ModuleHealth::new("ttlock");
            let client = TtlockClient::new(config, health.clone())
                .map_err(|error| anyhow::anyhow!("TTLock client: {error}"))?;
            gateways.locks = Arc::new(TtlockLockGateway::new(client.clone()));
            gateways.ttlock = Some(client);
            gateways.ttlock_missing = None;
            gateways.health[1] = health;
        }
        let cloud = match (&settings.shelly.server, &settings.shelly.auth_key) {
            (Some(server), Some(key)) => Some(ShellyCloudConfig::new(server.clone(), key.clone())),
            _ => None,
        };
        let health = if cloud.is_some() {
            gateways.shelly_missing = None;
            ModuleHealth::new("shelly")
        } else {
            ModuleHealth::not_configured("shelly")
        };
        // Built even without Cloud credentials: devices on the LAN need none.
        let mut config = ShellyConfig::new(cloud);
        // The domain already adds its margin to the session's remaining time.
        config.auto_off_margin_s = 0;
        config.device_networks = settings.security.device_networks.clone();
        let client = ShellyClient::new(config, health.clone())
            .map_err(|error| anyhow::anyhow!("Shelly client: {error}"))?;
        gateways.shelly = Some(client.clone());
        gateways.relays = Arc::new(ShellyRelayGateway::new(client));
        gateways.health[2] = health;
        Ok(gateways)
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
            ttlock: None,
            shelly: None,
            health: vec![
                ModuleHealth::new("stripe"),
                ModuleHealth::new("ttlock"),
                ModuleHealth::new("shelly"),
            ],
            stripe_missing: None,
            ttlock_missing: None,
            shelly_missing: None,
        }
    }
}

/// The gateways of a running process, replaceable without a restart.
#[derive(Clone)]
pub struct LiveGateways {
    current: Arc<RwLock<Arc<Gateways>>>,
}

impl LiveGateways {
    pub fn new(gateways: Gateways) -> Self {
        LiveGateways {
            current: Arc::new(RwLock::new(Arc::new(gateways))),
        }
    }

    /// The set in use now (what is missing, health records, the TTLock client).
    pub fn current(&self) -> Arc<Gateways> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Switches every port to `gateways`; calls already under way finish on the old set.
    pub fn replace(&self, gateways: Gateways) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(gateways);
    }

    /// Ports that forward each call to the set current at that moment, for the
    /// long-lived holders (command buses, reconciler).
    pub fn ports(&self) -> Gateways {
        let proxy = Arc::new(Forward(self.clone()));
        let mut ports = (*self.current()).clone();
        ports.payments = proxy.clone();
        ports.locks = proxy.clone();
        ports.relays = proxy.clone();
        ports.checkout = proxy;
        ports
    }
}

/// Forwards to the current gateways of a [`LiveGateways`].
struct Forward(LiveGateways);

#[async_trait]
impl PaymentGateway for Forward {
    async fn capture(&self, request: CaptureRequest) -> Result<(), GatewayError> {
        self.0.current().payments.capture(request).await
    }

    async fn cancel_authorization(
        &self,
        request: CancelAuthorizationRequest,
    ) -> Result<(), GatewayError> {
        self.0
            .current()
            .payments
            .cancel_authorization(request)
            .await
    }

    async fn refund(&self, request: RefundRequest) -> Result<RefundReceipt, GatewayError> {
        self.0.current().payments.refund(request).await
    }
}

#[async_trait]
impl LockGateway for Forward {
    async fn issue_passcode(&self, request: PasscodeRequest) -> Result<IssuedPasscode, LockError> {
        self.0.current().locks.issue_passcode(request).await
    }

    async fn delete_passcode(&self, lock_id: i64, passcode_id: i64) -> Result<(), LockError> {
        self.0
            .current()
            .locks
            .delete_passcode(lock_id, passcode_id)
            .await
    }

    async fn delete_passcodes_named(&self, lock_id: i64, name: &str) -> Result<u32, LockError> {
        self.0
            .current()
            .locks
            .delete_passcodes_named(lock_id, name)
            .await
    }
}

#[async_trait]
impl RelayGateway for Forward {
    async fn switch(&self, command: RelayCommand) -> Result<RelayOutcome, RelayError> {
        self.0.current().relays.switch(command).await
    }

    async fn status(&self, target: RelayTarget) -> Result<RelayOutcome, RelayError> {
        self.0.current().relays.status(target).await
    }

    async fn configure_auto_off(
        &self,
        target: RelayTarget,
        seconds: u64,
    ) -> Result<(), RelayError> {
        self.0
            .current()
            .relays
            .configure_auto_off(target, seconds)
            .await
    }
}

#[async_trait]
impl CheckoutGateway for Forward {
    async fn create_checkout(
        &self,
        request: CheckoutRequest,
    ) -> Result<CheckoutCreated, CheckoutError> {
        self.0.current().checkout.create_checkout(request).await
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

    /// Without TTLock no code was ever issued, so none can be stray.
    async fn delete_passcodes_named(&self, _: i64, _: &str) -> Result<u32, LockError> {
        Ok(0)
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

    async fn configure_auto_off(&self, _: RelayTarget, _: u64) -> Result<(), RelayError> {
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

/// The TTLock account, when all four credentials are set.
fn ttlock_config(settings: &Settings) -> Option<TtlockConfig> {
    let ttlock = &settings.ttlock;
    let api_base = ttlock.api_base.clone().or_else(|| {
        crate::integrations::ttlock::config::DEFAULT_API_BASE
            .parse()
            .ok()
    })?;
    match (
        &ttlock.client_id,
        &ttlock.client_secret,
        &ttlock.username,
        &ttlock.password,
    ) {
        (Some(id), Some(secret), Some(username), Some(password)) => Some(TtlockConfig::new(
            api_base,
            id.clone(),
            secret.clone(),
            username.clone(),
            password.clone(),
        )),
        _ => None,
    }
}
