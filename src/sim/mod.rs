//! Wire-faithful simulators of the vendors Latchkey cannot reach from test machines.
//!
//! - [`ttlock`]: TTLock Open API v3 (OAuth, locks, passcodes) plus a keypad you can
//!   "type" a code into at any instant to learn whether the door would open.
//! - [`stripe`]: the subset of Stripe's API Latchkey calls, a hosted checkout page where
//!   test cards decide the outcome, and signed webhook delivery.
//! - [`shelly`]: Shelly Cloud v2 and local Gen2 RPC over one relay model with device-side
//!   auto-off timers, the cloud's rate limit and a relay log.
//! - [`smtp`]: an SMTP server that keeps what it is sent, with a page listing it (the
//!   mail's far end: a guest's or an operator's mailbox).
//!
//! Each simulator is an axum `Router` with its vendor's endpoints plus control endpoints
//! under `/_sim/` (fault injection, clock, inspection), usable three ways: `spawn` in
//! process (tests, `latchkey demo`), `serve` on its own (`latchkey sim …`), or `router`.
//! This module holds what both share: the controllable clock, fault settings, the
//! request log and the server plumbing.

pub mod shelly;
pub mod smtp;
pub mod stripe;
pub mod ttlock;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

/// Requests kept in a simulator's log; older ones are dropped first.
const REQUEST_LOG_MAX: usize = 1_000;

/// How long the graceful shutdown waits for in-flight requests (a request whose answer
/// is being "dropped" hangs on purpose) before the server task is aborted.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The simulators' notion of now: real time plus an offset that tests can advance, so
/// timers, token expiry and validity windows are exercised without sleeping.
#[derive(Debug, Clone, Default)]
pub struct SimClock {
    offset_ms: Arc<AtomicI64>,
}

impl SimClock {
    pub fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis() + self.offset_ms.load(Ordering::SeqCst)
    }

    pub fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms()).unwrap_or_else(Utc::now)
    }

    /// Moves simulated time forward (never backward).
    pub fn advance(&self, by: Duration) {
        let by_ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(by_ms, Ordering::SeqCst);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

/// Fault injection, applied to vendor endpoints (never to `/_sim/`). Every field is
/// optional in a control request: absent fields keep their current value.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FaultSettings {
    /// Delay before each request is handled ("answer slowly").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The next N requests fail without being applied (TTLock: `fail_errcode`, default
    /// 90000 internal error; Shelly: HTTP 500 `UNEXPECTED_SUBSERVICE_ERROR`, locally an
    /// RPC error -104).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_next: Option<u32>,
    /// The next N requests are applied, but the answer never comes (the connection is
    /// held until the client gives up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_next: Option<u32>,
    /// TTLock only: the `errcode` `fail_next` answers with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_errcode: Option<i64>,
}

/// What the fault settings decide for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultAction {
    Proceed,
    Fail,
    ApplyThenDrop,
}

/// Current fault state of a simulator.
#[derive(Debug, Clone, Default)]
pub(crate) struct Faults {
    pub latency_ms: u64,
    pub fail_next: u32,
    pub drop_next: u32,
    pub fail_errcode: Option<i64>,
}

impl Faults {
    pub(crate) fn update(&mut self, settings: &FaultSettings) {
        if let Some(latency_ms) = settings.latency_ms {
            self.latency_ms = latency_ms;
        }
        if let Some(fail_next) = settings.fail_next {
            self.fail_next = fail_next;
        }
        if let Some(drop_next) = settings.drop_next {
            self.drop_next = drop_next;
        }
        if settings.fail_errcode.is_some() {
            self.fail_errcode = settings.fail_errcode;
        }
    }

    /// Consumes one request's worth of faults: failures first, then drops.
    pub(crate) fn take(&mut self) -> (Duration, FaultAction) {
        let latency = Duration::from_millis(self.latency_ms);
        let action = if self.fail_next > 0 {
            self.fail_next -= 1;
            FaultAction::Fail
        } else if self.drop_next > 0 {
            self.drop_next -= 1;
            FaultAction::ApplyThenDrop
        } else {
            FaultAction::Proceed
        };
        (latency, action)
    }

    pub(crate) fn settings(&self) -> FaultSettings {
        FaultSettings {
            latency_ms: Some(self.latency_ms),
            fail_next: Some(self.fail_next),
            drop_next: Some(self.drop_next),
            fail_errcode: self.fail_errcode,
        }
    }
}

/// One request a simulator received, as it arrived and as it was answered; tests check
/// the wire shapes against the reference with it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RecordedRequest {
    /// Arrival order, from 1.
    pub seq: u64,
    pub at_ms: i64,
    pub method: String,
    pub path: String,
    pub content_type: Option<String>,
    /// Query-string parameters.
    pub query: BTreeMap<String, String>,
    /// Form-body parameters (`application/x-www-form-urlencoded`).
    pub form: BTreeMap<String, String>,
    /// JSON body, when there was one.
    pub json: Option<Value>,
    pub response_status: Option<u16>,
    /// JSON answer; `None` for an empty body or a dropped answer.
    pub response: Option<Value>,
    /// The answer was withheld by a `drop_next` fault.
    pub dropped: bool,
}

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    entries: VecDeque<RecordedRequest>,
    last_seq: u64,
}

impl RequestLog {
    /// Appends `request` (its `seq` is assigned here) and returns the `seq` to pass to
    /// [`RequestLog::answer`].
    pub(crate) fn push(&mut self, mut request: RecordedRequest) -> u64 {
        if self.entries.len() >= REQUEST_LOG_MAX {
            self.entries.pop_front();
        }
        self.last_seq += 1;
        request.seq = self.last_seq;
        self.entries.push_back(request);
        self.last_seq
    }

    /// Fills in the answer of request `seq`.
    pub(crate) fn answer(&mut self, seq: u64, status: u16, response: Option<Value>, dropped: bool) {
        if let Some(entry) = self.entries.iter_mut().rev().find(|entry| entry.seq == seq) {
            entry.response_status = Some(status);
            entry.response = response;
            entry.dropped = dropped;
        }
    }

    pub(crate) fn all(&self) -> Vec<RecordedRequest> {
        self.entries.iter().cloned().collect()
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Parses `a=1&b=2` (query string or form body) into a map; later keys win.
pub(crate) fn parse_pairs(raw: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(raw).into_owned().collect()
}

/// A running simulator server: its base URL and its shutdown switch. Dropping it asks
/// the server to stop.
#[derive(Debug)]
pub struct ServerHandle {
    base_url: Url,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    pub fn base_url(&self) -> &Url {
        &self.base_url
    }

    /// Stops accepting, waits briefly for in-flight requests, then aborts.
    pub async fn shutdown(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

/// Serves `router` on `listener` in a background task.
pub(crate) fn spawn_server(listener: TcpListener, router: Router) -> io::Result<ServerHandle> {
    let address = listener.local_addr()?;
    // A wildcard bind is reachable on loopback; clients cannot connect to 0.0.0.0.
    let host = if address.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        address.ip()
    };
    let base_url = Url::parse(&format!(
        "http://{}/",
        SocketAddr::new(host, address.port())
    ))
    .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
    let (shutdown, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    Ok(ServerHandle {
        base_url,
        shutdown: Some(shutdown),
        task: Some(task),
    })
}

/// Serves `router` until Ctrl-C (for `latchkey sim …`).
pub(crate) async fn serve_until_interrupted(
    listener: TcpListener,
    router: Router,
) -> io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

/// Holds a request whose answer is being "dropped" until the client gives up (which
/// cancels this future) or `hold` passes.
pub(crate) async fn withhold_answer(hold: Duration) -> Response {
    tokio::time::sleep(hold).await;
    StatusCode::GATEWAY_TIMEOUT.into_response()
}

/// Errors of the control API (`/_sim/…` and the `SimHandle` methods).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimControlError {
    #[error("unknown lock {0}")]
    UnknownLock(i64),
    #[error("unknown device {0}")]
    UnknownDevice(String),
    #[error("device {device} has no channel {channel}")]
    UnknownChannel { device: String, channel: u32 },
    #[error("{0}")]
    Invalid(String),
}

impl IntoResponse for SimControlError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::NOT_FOUND,
        };
        (
            status,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// Request body of `POST /_sim/clock/advance`.
#[derive(Debug, Deserialize)]
pub(crate) struct AdvanceClock {
    pub ms: u64,
}

/// Reads a `SECRET`-like environment variable, falling back to a demo value.
pub(crate) fn env_or(name: &str, fallback: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.is_empty())
        .unwrap_or_else(|| fallback.to_owned())
}
