//! Why a device command was refused.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeviceError {
    #[error("this device is not registered; register it first")]
    NotRegistered,
    #[error("device {device_uid} is already registered; update it instead")]
    AlreadyRegistered { device_uid: String },
    #[error("the device is invalid: {reason}")]
    InvalidDevice { reason: String },
    #[error("device {device_uid} is in maintenance; no new session can start")]
    InMaintenance { device_uid: String },
    #[error("device {device_uid} already has {limit} sessions waiting; try again later")]
    QueueFull { device_uid: String, limit: usize },
    #[error("the relay of device {device_uid} could not be switched: {message}")]
    RelayFailed { device_uid: String, message: String },
}
