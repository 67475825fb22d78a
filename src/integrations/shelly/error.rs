//! Shelly failures, typed so callers can branch: retry, fix configuration, or treat the
//! relay state as unknown.

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ShellyError {
    #[error("Shelly Cloud refused the auth key (HTTP 401, twice, never accepted before): check SHELLY_AUTH_KEY and SHELLY_SERVER (the key changes when the Shelly account password changes)")]
    BadCredentials,

    #[error("Shelly Cloud rate limit: refused {attempts} paced attempts (last answer: {last_answer}); retry later")]
    RateLimited { attempts: u32, last_answer: String },

    #[error("Shelly Cloud request queue is full ({queued} calls waiting); retry later")]
    QueueFull { queued: usize },

    #[error("Shelly device {device} is offline; nothing was switched")]
    DeviceOffline { device: String },

    #[error("Shelly Cloud does not know device {device}: check the device's shelly_device_id")]
    DeviceNotFound { device: String },

    #[error("Shelly device {device} has no channel {channel}: check the device's shelly_channel")]
    InvalidChannel { device: String, channel: u32 },

    #[error("Shelly rejected the request for {device}: {message}")]
    BadRequest { device: String, message: String },

    #[error("Shelly device {device} failed the command: {message}")]
    CommandFailed { device: String, message: String },

    #[error("Shelly server error for {device}: {message}; retry later")]
    Server { device: String, message: String },

    #[error(
        "Shelly {device} did not answer within {timeout_ms} ms; the command may have been applied"
    )]
    Timeout { device: String, timeout_ms: u64 },

    #[error("cannot connect to Shelly {device}: {message}")]
    Unreachable { device: String, message: String },

    #[error("connection to Shelly {device} failed mid-request: {message}")]
    Network { device: String, message: String },

    #[error("the answer to a command for {device} was lost ({command_error}) and reading the relay back failed ({read_error}): relay state unknown")]
    Unconfirmed {
        device: String,
        command_error: String,
        read_error: String,
    },

    #[error("Shelly device {device} requires authentication; Latchkey supports local devices without a password")]
    AuthRequired { device: String },

    #[error("Shelly Cloud is not configured: set SHELLY_AUTH_KEY and SHELLY_SERVER, or give the device a LAN address")]
    CloudNotConfigured,

    #[error("Shelly device {device} is not called: {reason}")]
    AddressNotAllowed { device: String, reason: String },

    #[error("invalid relay command: {0}")]
    InvalidCommand(String),

    #[error("unexpected answer from Shelly {device}: {message}")]
    UnexpectedResponse { device: String, message: String },
}

impl ShellyError {
    /// True when the same call may succeed later without anyone changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::QueueFull { .. }
                | Self::DeviceOffline { .. }
                | Self::CommandFailed { .. }
                | Self::Server { .. }
                | Self::Timeout { .. }
                | Self::Unreachable { .. }
                | Self::Network { .. }
                | Self::Unconfirmed { .. }
        )
    }

    /// True when the command may have reached the device even though we got no success
    /// answer: the relay must be read back before calling the command failed.
    pub fn may_have_applied(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. }
                | Self::Network { .. }
                | Self::Server { .. }
                | Self::CommandFailed { .. }
                | Self::UnexpectedResponse { .. }
        )
    }

    /// Whether this failure says something about the integration rather than about one
    /// request's content.
    pub(crate) fn degrades_module(&self) -> bool {
        !matches!(
            self,
            Self::InvalidCommand(_)
                | Self::AddressNotAllowed { .. }
                | Self::InvalidChannel { .. }
                | Self::BadRequest { .. }
                | Self::DeviceNotFound { .. }
        )
    }
}
