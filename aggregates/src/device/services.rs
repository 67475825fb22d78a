//! The Device aggregate's port: the same relay as its sessions use, for switching by hand.

use std::fmt;
use std::sync::Arc;

pub use crate::session::services::{
    RelayCommand, RelayError, RelayErrorKind, RelayGateway, RelayOutcome, RelayTarget,
};

/// The Device aggregate's `Services`.
#[derive(Clone)]
pub struct DeviceServices {
    pub relay: Arc<dyn RelayGateway>,
}

impl DeviceServices {
    pub fn new(relay: Arc<dyn RelayGateway>) -> Self {
        Self { relay }
    }
}

impl fmt::Debug for DeviceServices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceServices").finish_non_exhaustive()
    }
}

/// The scripted relay fake, shared with the DeviceSession aggregate.
#[cfg(any(test, feature = "testing"))]
pub use crate::session::services::testing;
