//! Local Gen2 RPC of each simulated device, under `/local/{device_id}`, so a device's
//! "LAN address" is `<sim>/local/<device_id>`:
//! - `POST …/rpc` with a whole frame → a whole response frame (HTTP 200, `result` or
//!   `error`);
//! - `POST …/rpc/{method}` with the params object, or `GET …/rpc/{method}?id=0&on=true`
//!   → the bare result (HTTP 200) or the bare error object (HTTP 500; unconfirmed).
//!
//! An offline device does not answer at all (the connection hangs, as for an unplugged
//! device on the LAN), and the local API has no rate limit.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::state::OpError;
use super::ShellySim;
use crate::sim::{parse_pairs, withhold_answer, FaultAction, RecordedRequest};

pub(super) async fn frame(
    State(sim): State<ShellySim>,
    Path(device_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let frame: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let method = frame
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let params = frame.get("params").cloned().unwrap_or_else(|| json!({}));
    let framing = Framing::Frame {
        id: frame.get("id").cloned().unwrap_or(Value::Null),
        dst: frame.get("src").cloned(),
    };
    let request = Incoming {
        method: "POST",
        uri,
        headers,
        json: Some(frame.clone()),
    };
    handle(sim, device_id, method, params, framing, request).await
}

pub(super) async fn method_post(
    State(sim): State<ShellySim>,
    Path((device_id, method)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let request = Incoming {
        method: "POST",
        uri,
        headers,
        json: Some(params.clone()),
    };
    handle(sim, device_id, Some(method), params, Framing::Bare, request).await
}

pub(super) async fn method_get(
    State(sim): State<ShellySim>,
    Path((device_id, method)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let query = parse_pairs(uri.query().unwrap_or_default().as_bytes());
    let params = Value::Object(
        query
            .iter()
            .map(|(key, raw)| (key.clone(), query_value(raw)))
            .collect::<Map<_, _>>(),
    );
    let request = Incoming {
        method: "GET",
        uri,
        headers,
        json: None,
    };
    handle(sim, device_id, Some(method), params, Framing::Bare, request).await
}

/// Since fw 1.0 only "true"/"false"/numerals need quoting to be strings (reference §6.1).
fn query_value(raw: &str) -> Value {
    match raw {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => serde_json::from_str::<serde_json::Number>(raw)
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(raw.trim_matches('"').to_owned())),
    }
}

enum Framing {
    Frame { id: Value, dst: Option<Value> },
    Bare,
}

struct Incoming {
    method: &'static str,
    uri: Uri,
    headers: HeaderMap,
    json: Option<Value>,
}

async fn handle(
    sim: ShellySim,
    device_id: String,
    method: Option<String>,
    params: Value,
    framing: Framing,
    request: Incoming,
) -> Response {
    let now_ms = sim.clock.now_ms();
    let (seq, latency, action, hold_ms, online, src) = {
        let mut world = sim.world();
        let seq = world.requests.push(RecordedRequest {
            seq: 0,
            at_ms: now_ms,
            method: request.method.into(),
            path: request.uri.path().to_owned(),
            content_type: request
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            query: parse_pairs(request.uri.query().unwrap_or_default().as_bytes()),
            form: BTreeMap::new(),
            json: request.json,
            response_status: None,
            response: None,
            dropped: false,
        });
        let Some(device) = world.device(&device_id) else {
            world.requests.answer(seq, 404, None, false);
            return StatusCode::NOT_FOUND.into_response();
        };
        let (online, src) = (device.online, device.rpc_name());
        let (latency, action) = if online {
            world.faults.take()
        } else {
            (Duration::ZERO, FaultAction::Proceed)
        };
        (seq, latency, action, world.config.drop_hold_ms, online, src)
    };
    let hold = Duration::from_millis(hold_ms);
    if !online {
        sim.world().requests.answer(seq, 504, None, true);
        return withhold_answer(hold).await;
    }
    tokio::time::sleep(latency).await;

    let result = match (action, method, params.is_object()) {
        (FaultAction::Fail, _, _) => Err((-104, "Deadline exceeded".to_owned())),
        (_, None, _) => Err((-103, "Missing required argument 'method'!".to_owned())),
        (_, Some(_), false) => Err((-103, "params must be an object".to_owned())),
        (_, Some(method), true) => {
            let now_ms = sim.clock.now_ms();
            sim.world()
                .rpc(&device_id, &method, &params, now_ms)
                .map_err(|error| match error {
                    OpError::Rpc(code, message) => (code, message),
                    OpError::Cloud(_, code, message) => (-114, format!("{code} {message}")),
                })
        }
    };
    let (status, body) = match framing {
        Framing::Frame { id, dst } => {
            let mut frame = json!({ "id": id, "src": src });
            if let Some(dst) = dst {
                frame["dst"] = dst;
            }
            match result {
                Ok(result) => frame["result"] = result,
                Err((code, message)) => {
                    frame["error"] = json!({ "code": code, "message": message })
                }
            }
            (200, frame)
        }
        Framing::Bare => match result {
            Ok(result) => (200, result),
            Err((code, message)) => (500, json!({ "code": code, "message": message })),
        },
    };
    let dropped = action == FaultAction::ApplyThenDrop;
    sim.world()
        .requests
        .answer(seq, status, Some(body.clone()), dropped);
    if dropped {
        return withhold_answer(hold).await;
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}
