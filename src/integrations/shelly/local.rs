//! Local Gen2+ JSON-RPC over HTTP: `POST <device>/rpc` with a whole request frame
//! (`{"id","src","method","params"}`), answered by a frame holding `result` or `error`.
//!
//! A device's address is typed by an operator, so every call is held to the device
//! networks (`LATCHKEY_DEVICE_NETWORKS`, see `crate::net_policy`): the host is resolved
//! and checked before anything is sent, the connection itself resolves through the same
//! check (a name cannot re-point elsewhere between the two), redirects are never
//! followed, and an answer that is not a JSON-RPC frame is reported by its status and
//! size only, never by its content.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use url::Url;

use super::cloud::{relay_from_switch, transport_error};
use super::error::ShellyError;
use super::types::RelayStatus;
use crate::net_policy::DeviceNetworks;

/// Our name in RPC frames (`src`); devices echo it as `dst`.
const RPC_SOURCE: &str = "latchkey";

pub(crate) struct LocalRpc {
    http: reqwest::Client,
    networks: DeviceNetworks,
    timeout_ms: u64,
    /// Frame ids, so a response can be matched to its request.
    next_id: AtomicU64,
}

impl LocalRpc {
    pub(crate) fn new(timeout_ms: u64, networks: DeviceNetworks) -> Result<Self, ShellyError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(timeout_ms))
            .connect_timeout(Duration::from_millis(timeout_ms))
            // A redirect could lead anywhere (a metadata address): devices never send one.
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(CheckedResolver {
                networks: networks.clone(),
            }))
            // Devices serve one-shot HTTP and hold at most 6 channels: do not keep idle
            // connections open against them.
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|error| ShellyError::Unreachable {
                device: "local Shelly".into(),
                message: format!("cannot build the HTTP client: {error}"),
            })?;
        Ok(Self {
            http,
            networks,
            timeout_ms,
            next_id: AtomicU64::new(1),
        })
    }

    /// `Switch.Set`; returns `was_on`.
    pub(crate) async fn switch_set(
        &self,
        base_url: &Url,
        channel: u32,
        on: bool,
        toggle_after_s: Option<u64>,
    ) -> Result<Option<bool>, ShellyError> {
        let mut params = json!({ "id": channel, "on": on });
        if let Some(seconds) = toggle_after_s {
            params["toggle_after"] = json!(seconds);
        }
        let result = self.call(base_url, "Switch.Set", params).await?;
        Ok(result.get("was_on").and_then(Value::as_bool))
    }

    /// `Switch.SetConfig` with the device-side auto-off: after any ON (ours, a button,
    /// the app) the device turns the output off after `delay_s`.
    pub(crate) async fn set_auto_off(
        &self,
        base_url: &Url,
        channel: u32,
        delay_s: u64,
    ) -> Result<(), ShellyError> {
        let config = json!({ "auto_off": true, "auto_off_delay": delay_s });
        self.call(
            base_url,
            "Switch.SetConfig",
            json!({ "id": channel, "config": config }),
        )
        .await
        .map(|_| ())
    }

    /// `Switch.GetStatus`.
    pub(crate) async fn switch_status(
        &self,
        base_url: &Url,
        channel: u32,
    ) -> Result<RelayStatus, ShellyError> {
        let result = self
            .call(base_url, "Switch.GetStatus", json!({ "id": channel }))
            .await?;
        relay_from_switch(&result).ok_or_else(|| ShellyError::UnexpectedResponse {
            device: base_url.to_string(),
            message: format!("Switch.GetStatus without a boolean output: {result}"),
        })
    }

    async fn call(
        &self,
        base_url: &Url,
        method: &str,
        params: Value,
    ) -> Result<Value, ShellyError> {
        let device = base_url.to_string();
        self.check_address(base_url).await?;
        let url = rpc_url(base_url)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = json!({ "id": id, "src": RPC_SOURCE, "method": method, "params": &params });
        let response = self
            .http
            .post(url)
            .json(&frame)
            .send()
            .await
            .map_err(|error| transport_error(&device, self.timeout_ms, error))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|error| transport_error(&device, self.timeout_ms, error))?;
        if status == 401 {
            return Err(ShellyError::AuthRequired { device });
        }
        let frame: Value = serde_json::from_str(&text).map_err(|_| {
            // The content stays out of the message: whatever answered may not be a
            // device, and its page must not travel back to the caller.
            let message = format!(
                "HTTP {status} with {} bytes that are not a JSON-RPC frame",
                text.len()
            );
            if status >= 500 {
                ShellyError::Server {
                    device: device.clone(),
                    message,
                }
            } else {
                ShellyError::UnexpectedResponse {
                    device: device.clone(),
                    message,
                }
            }
        })?;
        if let Some(error) = frame.get("error") {
            return Err(rpc_error(error, &device, channel_of(&params)));
        }
        match frame.get("result") {
            Some(result) => Ok(result.clone()),
            None => Err(ShellyError::UnexpectedResponse {
                device,
                message: format!("HTTP {status}, a JSON answer without a result"),
            }),
        }
    }

    /// Refuses, before any byte is sent, a device whose host is or resolves to an
    /// address outside the device networks.
    async fn check_address(&self, base_url: &Url) -> Result<(), ShellyError> {
        let refused = |reason: String| ShellyError::AddressNotAllowed {
            device: base_url.to_string(),
            reason,
        };
        let port = base_url.port_or_known_default().unwrap_or(80);
        let addresses: Vec<IpAddr> = match base_url.host() {
            Some(url::Host::Ipv4(v4)) => vec![IpAddr::V4(v4)],
            Some(url::Host::Ipv6(v6)) => vec![IpAddr::V6(v6)],
            Some(url::Host::Domain(name)) => tokio::net::lookup_host((name, port))
                .await
                .map_err(|error| ShellyError::Unreachable {
                    device: base_url.to_string(),
                    message: format!("cannot resolve {name}: {error}"),
                })?
                .map(|address| address.ip())
                .collect(),
            None => return Err(refused("the URL has no host".to_string())),
        };
        for address in addresses {
            self.networks.check(address).map_err(refused)?;
        }
        Ok(())
    }
}

/// Name resolution for device calls that keeps only allowed addresses, so the
/// connection goes where [`LocalRpc::check_address`] looked.
struct CheckedResolver {
    networks: DeviceNetworks,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let networks = self.networks.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| networks.check(address.ip()).is_ok())
                .collect();
            if resolved.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves to no address in the device networks").into();
                return Err(refused);
            }
            let addresses: reqwest::dns::Addrs = Box::new(resolved.into_iter());
            Ok(addresses)
        })
    }
}

fn channel_of(params: &Value) -> u32 {
    params
        .get("id")
        .and_then(Value::as_u64)
        .and_then(|channel| u32::try_from(channel).ok())
        .unwrap_or(0)
}

/// `<base>/rpc`, keeping any path prefix of the base.
fn rpc_url(base_url: &Url) -> Result<Url, ShellyError> {
    let mut base = base_url.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join("rpc").map_err(|error| {
        ShellyError::InvalidCommand(format!("bad device address {base_url}: {error}"))
    })
}

/// Gen2 RPC error codes (reference §6.3).
fn rpc_error(error: &Value, device: &str, channel: u32) -> ShellyError {
    let device = device.to_owned();
    let code = error.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match code {
        -105 => ShellyError::InvalidChannel { device, channel },
        -103 => ShellyError::BadRequest { device, message },
        // DEADLINE_EXCEEDED falls through to CommandFailed: retryable, and the relay is
        // read back because the device may have switched anyway.
        -108 => ShellyError::RateLimited {
            attempts: 1,
            last_answer: format!("RPC -108 {message}"),
        },
        401 => ShellyError::AuthRequired { device },
        _ => ShellyError::CommandFailed {
            device,
            message: format!("RPC error {code}: {message}"),
        },
    }
}
