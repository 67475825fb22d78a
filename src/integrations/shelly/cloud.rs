//! Shelly Cloud Control API v2: `POST /v2/devices/api/set/switch` and
//! `POST /v2/devices/api/get`, JSON bodies, `auth_key` in the query.
//!
//! Every request waits for the shared [`Pacer`]. What an over-limit answer looks like is
//! unconfirmed (HTTP 401, 429 or a v1-style `max_req` body), so all three mean "slow down
//! and retry"; a 401 is read as bad credentials only if the key never worked and a
//! second, paced attempt is refused too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use tracing::warn;
use url::Url;

use super::config::ShellyCloudConfig;
use super::error::ShellyError;
use super::rate_limit::Pacer;
use super::types::RelayStatus;

/// `ids` per `get` request, as documented.
pub(crate) const GET_IDS_MAX: usize = 10;

pub(crate) struct CloudApi {
    http: reqwest::Client,
    server: Url,
    auth_key: SecretString,
    timeout_ms: u64,
    pacer: Pacer,
    over_limit_backoff: Duration,
    over_limit_retries_max: u32,
    /// Set once the cloud has accepted the key; from then on a 401 is taken for the rate
    /// limit (node-red-contrib-shelly observed 401 on overruns), not for a bad key.
    key_accepted: AtomicBool,
}

/// One device as `get` reports it.
#[derive(Debug, Clone)]
pub(crate) struct CloudDevice {
    pub id: String,
    pub online: bool,
    pub status: Option<Value>,
}

/// What one HTTP exchange amounted to.
enum Answer {
    Done(Result<Option<Value>, ShellyError>),
    OverLimit(String),
    Unauthorized,
}

impl CloudApi {
    pub(crate) fn new(config: &ShellyCloudConfig) -> Result<Self, ShellyError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|error| ShellyError::Unreachable {
                device: "Shelly Cloud".into(),
                message: format!("cannot build the HTTP client: {error}"),
            })?;
        let mut server = config.server.clone();
        if !server.path().ends_with('/') {
            let path = format!("{}/", server.path());
            server.set_path(&path);
        }
        Ok(Self {
            http,
            server,
            auth_key: config.auth_key.clone(),
            timeout_ms: config.timeout_ms,
            pacer: Pacer::new(
                Duration::from_millis(config.min_interval_ms),
                config.queue_max,
            ),
            over_limit_backoff: Duration::from_millis(config.over_limit_backoff_ms),
            over_limit_retries_max: config.over_limit_retries_max,
            key_accepted: AtomicBool::new(false),
        })
    }

    pub(crate) fn queued(&self) -> usize {
        self.pacer.queued()
    }

    /// Switches one output; `toggle_after_s` arms the device's flip-back timer.
    pub(crate) async fn set_switch(
        &self,
        device_id: &str,
        channel: u32,
        on: bool,
        toggle_after_s: Option<u64>,
    ) -> Result<(), ShellyError> {
        let mut body = json!({ "id": device_id, "channel": channel, "on": on });
        if let Some(seconds) = toggle_after_s {
            body["toggle_after"] = json!(seconds);
        }
        match self
            .exchange("v2/devices/api/set/switch", device_id, &body)
            .await
        {
            Ok(_) => Ok(()),
            // The error body does not say which channel; we know it.
            Err(ShellyError::InvalidChannel { device, .. }) => {
                Err(ShellyError::InvalidChannel { device, channel })
            }
            Err(error) => Err(error),
        }
    }

    /// Reads up to [`GET_IDS_MAX`] devices' status in one request.
    pub(crate) async fn get(&self, device_ids: &[&str]) -> Result<Vec<CloudDevice>, ShellyError> {
        let label = device_ids.join(",");
        if device_ids.is_empty() || device_ids.len() > GET_IDS_MAX {
            return Err(ShellyError::InvalidCommand(format!(
                "a cloud status read takes 1 to {GET_IDS_MAX} device ids, got {}",
                device_ids.len()
            )));
        }
        let body = json!({ "ids": device_ids, "select": ["status"] });
        let answer = self.exchange("v2/devices/api/get", &label, &body).await?;
        let Some(Value::Array(entries)) = answer else {
            return Err(ShellyError::UnexpectedResponse {
                device: label,
                message: "get did not answer with a JSON array".into(),
            });
        };
        Ok(entries.iter().filter_map(parse_device).collect())
    }

    /// Paced request with the over-limit retry policy described in the module header.
    async fn exchange(
        &self,
        op: &str,
        device: &str,
        body: &Value,
    ) -> Result<Option<Value>, ShellyError> {
        let mut refusals = 0_u32;
        loop {
            self.pacer.wait_turn().await?;
            let last_answer = match self.send_once(op, device, body).await {
                Answer::Done(result) => return result,
                Answer::Unauthorized => {
                    if refusals >= 1 && !self.key_accepted.load(Ordering::SeqCst) {
                        return Err(ShellyError::BadCredentials);
                    }
                    "HTTP 401 (the rate limit, or a changed SHELLY_AUTH_KEY)".to_owned()
                }
                Answer::OverLimit(what) => what,
            };
            refusals += 1;
            if refusals > self.over_limit_retries_max {
                return Err(ShellyError::RateLimited {
                    attempts: refusals,
                    last_answer,
                });
            }
            warn!(refusals, %last_answer, "Shelly Cloud refused a request; slowing down");
            self.pacer.defer(self.over_limit_backoff);
        }
    }

    async fn send_once(&self, op: &str, device: &str, body: &Value) -> Answer {
        let mut url = match self.server.join(op) {
            Ok(url) => url,
            Err(error) => {
                return Answer::Done(Err(ShellyError::InvalidCommand(format!(
                    "bad Shelly server URL: {error}"
                ))))
            }
        };
        url.query_pairs_mut()
            .append_pair("auth_key", self.auth_key.expose_secret());
        let response = match self.http.post(url).json(body).send().await {
            Ok(response) => response,
            Err(error) => return Answer::Done(Err(self.transport_error(device, error))),
        };
        let status = response.status().as_u16();
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => return Answer::Done(Err(self.transport_error(device, error))),
        };
        let answer = classify(status, &text, device);
        if let Answer::Done(result) = &answer {
            // Anything but a transport failure or a refusal proves the key is good.
            let reached_api = match result {
                Ok(_) => true,
                Err(error) => !matches!(
                    error,
                    ShellyError::Timeout { .. }
                        | ShellyError::Network { .. }
                        | ShellyError::Unreachable { .. }
                ),
            };
            if reached_api {
                self.key_accepted.store(true, Ordering::SeqCst);
            }
        }
        answer
    }

    fn transport_error(&self, device: &str, error: reqwest::Error) -> ShellyError {
        transport_error(device, self.timeout_ms, error)
    }
}

/// Maps a reqwest failure; the URL is dropped because it carries the auth key.
pub(crate) fn transport_error(device: &str, timeout_ms: u64, error: reqwest::Error) -> ShellyError {
    let device = device.to_owned();
    if error.is_timeout() {
        return ShellyError::Timeout { device, timeout_ms };
    }
    let connect = error.is_connect();
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    if connect {
        ShellyError::Unreachable { device, message }
    } else {
        ShellyError::Network { device, message }
    }
}

fn classify(status: u16, text: &str, device: &str) -> Answer {
    match status {
        401 => return Answer::Unauthorized,
        429 => return Answer::OverLimit("HTTP 429".into()),
        _ => {}
    }
    let trimmed = text.trim();
    if (200..300).contains(&status) && trimmed.is_empty() {
        // v2 success is an empty 200 body.
        return Answer::Done(Ok(None));
    }
    let Ok(value) = serde_json::from_str::<Value>(trimmed) else {
        let message = format!(
            "HTTP {status}: {}",
            trimmed.chars().take(200).collect::<String>()
        );
        let error = if status >= 500 {
            ShellyError::Server {
                device: device.into(),
                message,
            }
        } else {
            ShellyError::UnexpectedResponse {
                device: device.into(),
                message,
            }
        };
        return Answer::Done(Err(error));
    };
    // v1-style envelope, seen as the over-limit answer: {"isok":false,"errors":{"max_req":…}}.
    if value.get("isok") == Some(&Value::Bool(false)) {
        let errors = value.get("errors").cloned().unwrap_or(Value::Null);
        if errors.get("max_req").is_some() {
            return Answer::OverLimit("max_req".into());
        }
        return Answer::Done(Err(ShellyError::CommandFailed {
            device: device.into(),
            message: errors.to_string(),
        }));
    }
    if let Some(code) = value.get("error").and_then(Value::as_str) {
        return Answer::Done(Err(v2_error(code, &value, device)));
    }
    if (200..300).contains(&status) {
        return Answer::Done(Ok(Some(value)));
    }
    let message = format!("HTTP {status}: {value}");
    Answer::Done(Err(if status >= 500 {
        ShellyError::Server {
            device: device.into(),
            message,
        }
    } else {
        ShellyError::BadRequest {
            device: device.into(),
            message,
        }
    }))
}

/// The v2 error table (reference §4.4).
fn v2_error(code: &str, body: &Value, device: &str) -> ShellyError {
    let device = device.to_owned();
    let messages = body
        .pointer("/data/messages")
        .map(Value::to_string)
        .unwrap_or_default();
    let message = format!("{code} {messages}").trim().to_owned();
    match code {
        "DEVICE_OFFLINE" => ShellyError::DeviceOffline { device },
        "DEVICE_NOT_FOUND" => ShellyError::DeviceNotFound { device },
        "DEVICE_INVALID_CHANNEL" => ShellyError::InvalidChannel { device, channel: 0 },
        "DEVICE_FAILED_COMMAND" => ShellyError::CommandFailed { device, message },
        // A server-side instance problem, not a wrong id: worth retrying.
        "INSTANCE_NOT_FOUND" | "UNEXPECTED_SUBSERVICE_ERROR" => {
            ShellyError::Server { device, message }
        }
        _ => ShellyError::BadRequest { device, message },
    }
}

fn parse_device(entry: &Value) -> Option<CloudDevice> {
    let id = entry.get("id")?.as_str()?.to_owned();
    // `online` is documented as 0/1; accept a boolean too.
    let online = match entry.get("online") {
        Some(Value::Bool(online)) => *online,
        Some(value) => value.as_i64() == Some(1),
        None => false,
    };
    Some(CloudDevice {
        id,
        online,
        status: entry.get("status").cloned(),
    })
}

/// Reads one channel out of a device status document: Gen2+ `switch:<n>` objects, or
/// Gen1 `relays[n]` entries.
pub(crate) fn relay_from_status(status: &Value, channel: u32) -> Option<RelayStatus> {
    if let Some(switch) = status.get(format!("switch:{channel}")) {
        return relay_from_switch(switch);
    }
    let relay = status.get("relays")?.get(usize::try_from(channel).ok()?)?;
    Some(RelayStatus {
        output: relay.get("ison")?.as_bool()?,
        source: relay
            .get("source")
            .and_then(Value::as_str)
            .map(str::to_owned),
        timer_started_at: relay.get("timer_started").and_then(Value::as_f64),
        timer_duration_s: relay.get("timer_duration").and_then(Value::as_f64),
    })
}

/// A Gen2 `Switch.GetStatus` result or a `switch:<n>` status object.
pub(crate) fn relay_from_switch(switch: &Value) -> Option<RelayStatus> {
    Some(RelayStatus {
        output: switch.get("output")?.as_bool()?,
        source: switch
            .get("source")
            .and_then(Value::as_str)
            .map(str::to_owned),
        timer_started_at: switch.get("timer_started_at").and_then(Value::as_f64),
        timer_duration_s: switch.get("timer_duration").and_then(Value::as_f64),
    })
}
