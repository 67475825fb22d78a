//! Shelly Cloud v2 endpoints: `POST /v2/devices/api/get` and
//! `POST /v2/devices/api/set/switch`, `auth_key` in the query, JSON bodies.
//!
//! Order of checks per request: record it; the rate limit (at arrival, before anything
//! else, so a refused request costs nothing); the key; injected faults; the body.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::config::OverLimitAnswer;
use super::state::OpError;
use super::ShellySim;
use crate::sim::{parse_pairs, withhold_answer, FaultAction, RecordedRequest};

#[derive(Clone, Copy)]
enum Op {
    Get,
    SetSwitch,
}

pub(super) async fn get(
    State(sim): State<ShellySim>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(sim, Op::Get, uri, headers, body).await
}

pub(super) async fn set_switch(
    State(sim): State<ShellySim>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(sim, Op::SetSwitch, uri, headers, body).await
}

/// An answer: status and optional JSON body (`None` = empty body).
type Answer = (u16, Option<Value>);

async fn handle(sim: ShellySim, op: Op, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    let query = parse_pairs(uri.query().unwrap_or_default().as_bytes());
    let json_body: Option<Value> = serde_json::from_slice(&body).ok();
    let now_ms = sim.clock.now_ms();
    let admitted = {
        let mut world = sim.world();
        let seq = world.requests.push(RecordedRequest {
            seq: 0,
            at_ms: now_ms,
            method: "POST".into(),
            path: path.clone(),
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            query: query.clone(),
            form: Default::default(),
            json: json_body.clone(),
            response_status: None,
            response: None,
            dropped: false,
        });
        if !world.admit(&path, now_ms) {
            let answer = over_limit(world.config.over_limit_answer);
            world
                .requests
                .answer(seq, answer.0, answer.1.clone(), false);
            return respond(answer);
        }
        let key_ok = query.get("auth_key").map(String::as_str)
            == Some(world.config.auth_key.expose_secret());
        if !key_ok {
            let answer = (401, Some(json!({})));
            world
                .requests
                .answer(seq, answer.0, answer.1.clone(), false);
            return respond(answer);
        }
        let (latency, action) = world.faults.take();
        (seq, latency, action, world.config.drop_hold_ms)
    };
    let (seq, latency, action, hold_ms) = admitted;
    tokio::time::sleep(latency).await;

    let answer: Answer = match (action, json_body) {
        (FaultAction::Fail, _) => {
            error_answer(500, "UNEXPECTED_SUBSERVICE_ERROR", "simulated failure")
        }
        (_, None) => error_answer(400, "BAD_REQUEST", "body must be JSON"),
        (_, Some(body)) => {
            let now_ms = sim.clock.now_ms();
            let mut world = sim.world();
            let result = match op {
                Op::Get => world.cloud_get(&body, now_ms).map(Some),
                Op::SetSwitch => world.cloud_set_switch(&body, now_ms).map(|()| None),
            };
            match result {
                Ok(value) => (200, value),
                Err(OpError::Cloud(status, code, message)) => error_answer(status, code, &message),
                Err(OpError::Rpc(code, message)) => error_answer(
                    500,
                    "UNEXPECTED_SUBSERVICE_ERROR",
                    &format!("{code} {message}"),
                ),
            }
        }
    };
    let dropped = action == FaultAction::ApplyThenDrop;
    sim.world()
        .requests
        .answer(seq, answer.0, answer.1.clone(), dropped);
    if dropped {
        return withhold_answer(Duration::from_millis(hold_ms)).await;
    }
    respond(answer)
}

fn error_answer(status: u16, code: &str, message: &str) -> Answer {
    (
        status,
        Some(json!({ "error": code, "data": { "messages": [message] } })),
    )
}

fn over_limit(kind: OverLimitAnswer) -> Answer {
    match kind {
        OverLimitAnswer::Http401 => (401, Some(json!({}))),
        OverLimitAnswer::Http429 => (429, Some(json!({ "error": "TOO_MANY_REQUESTS" }))),
        OverLimitAnswer::MaxReq => (
            200,
            Some(json!({ "isok": false, "errors": { "max_req": "Request limit reached!" } })),
        ),
    }
}

fn respond((status, body): Answer) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match body {
        Some(body) => (status, Json(body)).into_response(),
        None => status.into_response(),
    }
}
