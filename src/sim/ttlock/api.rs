//! The vendor endpoints: one handler that records the request, applies injected faults,
//! dispatches on the path, and answers like TTLock (HTTP 200 with a JSON body).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::state::{ApiError, Params};
use super::TtlockSim;
use crate::sim::{parse_pairs, withhold_answer, FaultAction, RecordedRequest};

/// The `errcode` `fail_next` answers with unless told otherwise: TTLock's internal error.
const DEFAULT_FAIL_ERRCODE: i64 = 90000;

pub(super) async fn handle(
    State(sim): State<TtlockSim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let query = parse_pairs(uri.query().unwrap_or_default().as_bytes());
    let is_form = content_type
        .as_deref()
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    let form = if is_form {
        parse_pairs(&body)
    } else {
        BTreeMap::new()
    };
    // The real server merges query and body (hass-ttlock relies on it); body wins.
    let mut params = query.clone();
    params.extend(form.clone());

    let now_ms = sim.clock.now_ms();
    let (seq, latency, action, fail_errcode, hold_ms) = {
        let mut world = sim.world();
        let seq = world.requests.push(RecordedRequest {
            seq: 0,
            at_ms: now_ms,
            method: method.to_string(),
            path: path.clone(),
            content_type,
            query,
            form,
            json: None,
            response_status: None,
            response: None,
            dropped: false,
        });
        let (latency, action) = world.faults.take();
        (
            seq,
            latency,
            action,
            world.faults.fail_errcode,
            world.config.drop_hold_ms,
        )
    };
    tokio::time::sleep(latency).await;

    let result = match action {
        FaultAction::Fail => Err(ApiError::new(
            fail_errcode.unwrap_or(DEFAULT_FAIL_ERRCODE),
            "simulated failure",
        )),
        FaultAction::Proceed | FaultAction::ApplyThenDrop => dispatch(&sim, &path, &params),
    };
    let answer = match result {
        Ok(value) => value,
        Err(error) => error.body(),
    };
    let dropped = action == FaultAction::ApplyThenDrop;
    sim.world()
        .requests
        .answer(seq, 200, Some(answer.clone()), dropped);
    if dropped {
        return withhold_answer(Duration::from_millis(hold_ms)).await;
    }
    Json(answer).into_response()
}

fn dispatch(
    sim: &TtlockSim,
    path: &str,
    params: &BTreeMap<String, String>,
) -> Result<Value, ApiError> {
    let params = Params(params);
    let now_ms = sim.clock.now_ms();
    let mut world = sim.world();
    if path == "/oauth2/token" {
        return world.oauth(&params, now_ms);
    }
    world.authorize(&params, now_ms)?;
    match path {
        "/v3/lock/list" => world.lock_list(&params),
        "/v3/lock/detail" => world.lock_detail(&params),
        "/v3/lock/listKeyboardPwd" => world.passcode_list(&params),
        "/v3/lock/getPassageModeConfiguration" => world.passage_mode(&params),
        "/v3/keyboardPwd/get" => world.passcode_get(&params, now_ms),
        "/v3/keyboardPwd/add" => world.passcode_add(&params, now_ms),
        "/v3/keyboardPwd/delete" => world.passcode_delete(&params),
        _ => Err(ApiError::new(
            -3,
            format!("the simulator does not serve {path}"),
        )),
    }
}
