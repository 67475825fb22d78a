//! The simulator's HTTP surface: the Stripe API subset Latchkey calls (`/v1/…`), the
//! hosted checkout page, and control endpoints for tests (`/_sim/…`).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::state::{new_id, Origin, Params, RecordedRequest, SimError};
use super::webhooks::DeliveryMode;
use super::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/checkout/sessions", post(stripe_post))
        .route("/v1/checkout/sessions/{id}", get(stripe_get))
        .route("/v1/checkout/sessions/{id}/expire", post(stripe_post))
        .route("/v1/payment_intents/{id}", get(stripe_get))
        .route("/v1/payment_intents/{id}/capture", post(stripe_post))
        .route("/v1/payment_intents/{id}/cancel", post(stripe_post))
        .route("/v1/refunds", post(stripe_post))
        .route("/v1/events", get(stripe_get))
        .route("/v1/events/{id}", get(stripe_get))
        .route("/checkout/{id}", get(checkout_page))
        .route("/_sim/checkout/{id}/pay", post(pay))
        .route("/_sim/delivery", get(get_delivery).post(set_delivery))
        .route("/_sim/fail_next", post(fail_next))
        .route("/_sim/refunds/{id}/fail", post(fail_refund))
        .route(
            "/_sim/payment_intents/{id}/decline_capture",
            post(decline_capture),
        )
        .route("/_sim/payment_intents/{id}/dispute", post(create_dispute))
        .route("/_sim/disputes/{id}/close", post(close_dispute))
        .route("/_sim/requests", get(requests))
        .route("/_sim/deliveries", get(deliveries))
        .route("/_sim/events/{id}/deliver", post(redeliver))
        .with_state(shared)
}

fn stripe_error(error: &SimError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(error.body())).into_response()
}

/// Bearer auth with the configured secret key, answered like Stripe when wrong.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<(), SimError> {
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let unauthorized = |message: String| SimError {
        status: 401,
        kind: "invalid_request_error",
        code: None,
        decline_code: None,
        message,
        param: None,
    };
    match presented {
        None => Err(unauthorized("You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').".to_string())),
        Some(key) if key == shared.config.secret_key => Ok(()),
        Some(key) => {
            let shown: String = key.chars().take(8).collect();
            Err(unauthorized(format!("Invalid API Key provided: {shown}****")))
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn stripe_post(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = uri.path().to_string();
    let key = header(&headers, "idempotency-key");
    let mut record = RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().map(str::to_string),
        idempotency_key: key.clone(),
        stripe_version: header(&headers, "stripe-version"),
        body: body.clone(),
        status: 0,
        replayed: false,
    };
    let (status, value, replayed) = match authenticate(&shared, &headers) {
        Err(error) => (error.status, error.body(), false),
        Ok(()) => match shared.injected_failure() {
            Some(error) => (error.status, error.body(), false),
            None => execute_post(&shared, &path, &body, key.as_deref()),
        },
    };
    if let Some(delay) = shared.answer_delay() {
        tokio::time::sleep(delay).await;
    }
    record.status = status;
    record.replayed = replayed;
    shared.lock_state().requests.push(record);
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(value),
    )
        .into_response();
    let request_id = new_id("req");
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("request-id", value);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(key) = key {
        if let Ok(value) = HeaderValue::from_str(&key) {
            response.headers_mut().insert("idempotency-key", value);
        }
    }
    response
}

/// Runs a POST under Stripe's idempotency rules: the first response for a key is
/// stored and replayed for the same parameters; other parameters are an error.
fn execute_post(shared: &Shared, path: &str, body: &str, key: Option<&str>) -> (u16, Value, bool) {
    let params = Params::parse(body);
    let fingerprint = params.fingerprint("POST", path);
    let mut state = shared.lock_state();
    if let Some(key) = key {
        if let Some(stored) = state.idempotency.get(key) {
            if stored.fingerprint == fingerprint {
                return (stored.status, stored.body.clone(), true);
            }
            let error = SimError {
                kind: "idempotency_error",
                ..SimError::invalid(
                    format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request."),
                    None,
                )
            };
            return (400, error.body(), false);
        }
    }
    let origin = Origin {
        request_id: Some(new_id("req")),
        idempotency_key: key.map(str::to_string),
    };
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let result = match segments.as_slice() {
        ["v1", "checkout", "sessions"] => state
            .create_checkout_session(&params, &shared.checkout_base)
            .map(|session| (session, Vec::new())),
        ["v1", "checkout", "sessions", id, "expire"] => state.expire_session(id, &origin),
        ["v1", "payment_intents", id, "capture"] => state.capture(id, &params, &origin),
        ["v1", "payment_intents", id, "cancel"] => state.cancel(id, &params, &origin),
        ["v1", "refunds"] => state.refund(&params, &origin),
        _ => Err(SimError::invalid(
            format!("Unrecognized request URL (POST: {path})."),
            None,
        )),
    };
    let (status, value, events) = match result {
        Ok((value, events)) => (200, value, events),
        Err(error) => (error.status, error.body(), Vec::new()),
    };
    // Stripe saves the outcome once execution began; validation failures are not saved.
    if let Some(key) = key {
        if status != 400 {
            state.idempotency.insert(
                key.to_string(),
                super::state::IdempotentRecord {
                    fingerprint,
                    status,
                    body: value.clone(),
                },
            );
        }
    }
    drop(state);
    shared.deliverer.dispatch(events);
    (status, value, false)
}

async fn stripe_get(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = authenticate(&shared, &headers) {
        return stripe_error(&error);
    }
    let path = uri.path().to_string();
    let params = Params::parse(query.as_deref().unwrap_or_default());
    let mut state = shared.lock_state();
    state.requests.push(RecordedRequest {
        method: "GET".into(),
        path: path.clone(),
        query: query.clone(),
        idempotency_key: header(&headers, "idempotency-key"),
        stripe_version: header(&headers, "stripe-version"),
        body: String::new(),
        status: 200,
        replayed: false,
    });
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let result = match segments.as_slice() {
        ["v1", "checkout", "sessions", id] => state
            .sessions
            .get(*id)
            .cloned()
            .ok_or_else(|| SimError::missing("checkout.session", id)),
        ["v1", "payment_intents", id] => state
            .intents
            .get(*id)
            .cloned()
            .ok_or_else(|| SimError::missing("payment_intent", id)),
        ["v1", "events"] if shared.event_list_fails() => Err(SimError {
            status: 500,
            kind: "api_error",
            code: None,
            decline_code: None,
            message: "Simulated Stripe failure while listing events.".to_string(),
            param: None,
        }),
        ["v1", "events"] => state.list_events(&params),
        ["v1", "events", id] => state
            .events
            .iter()
            .find(|event| event["id"] == *id)
            .cloned()
            .ok_or_else(|| SimError::missing("event", id)),
        _ => Err(SimError::invalid(
            format!("Unrecognized request URL (GET: {path})."),
            None,
        )),
    };
    match result {
        Ok(value) => Json(value).into_response(),
        Err(error) => stripe_error(&error),
    }
}

async fn checkout_page(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let state = shared.lock_state();
    let Some(session) = state.sessions.get(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>Checkout session not found</h1>".to_string()),
        )
            .into_response();
    };
    let amount = session["amount_total"].as_i64().unwrap_or(0);
    let currency = session["currency"].as_str().unwrap_or("").to_uppercase();
    let email = session["customer_email"].as_str().unwrap_or("");
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Stripe simulator checkout</title></head>\
         <body><h1>Pay {}.{:02} {currency}</h1><p>Simulated Stripe Checkout ({id}).</p>\
         <form method=\"post\" action=\"/_sim/checkout/{id}/pay\">\
         <label>Email <input name=\"email\" value=\"{email}\"></label><br>\
         <label>Card number <input name=\"card\" value=\"4242424242424242\"></label><br>\
         <small>4242424242424242 succeeds · 4000000000000002 declined · 4000000000009995 insufficient funds · \
         4000002500003155 requires authentication</small><br>\
         <button type=\"submit\">Pay</button></form></body></html>",
        amount / 100,
        amount % 100,
    ))
    .into_response()
}

#[derive(Deserialize)]
struct PayForm {
    card: String,
    email: Option<String>,
}

/// The checkout page's form target, also used by tests to pay without a browser.
/// Answers JSON when asked for it, else a small page (or the success redirect).
async fn pay(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<PayForm>,
) -> Response {
    let wants_json = header(&headers, "accept").is_some_and(|a| a.contains("application/json"));
    let result = {
        let mut state = shared.lock_state();
        state
            .pay(
                &id,
                &form.card,
                form.email.as_deref().filter(|e| !e.is_empty()),
                &shared.config.manual_capture_payment_status,
            )
            .map(|(intent, events)| {
                let success_url = state
                    .sessions
                    .get(&id)
                    .and_then(|s| s["success_url"].as_str().map(str::to_string));
                (intent, events, success_url)
            })
    };
    match result {
        Ok((intent, events, success_url)) => {
            shared.deliverer.dispatch(events);
            let status = intent["status"].as_str().unwrap_or_default().to_string();
            let paid = status == "succeeded" || status == "requires_capture";
            if wants_json {
                return Json(json!({
                    "session_id": id,
                    "payment_intent": intent["id"],
                    "status": status,
                    "last_payment_error": intent["last_payment_error"],
                }))
                .into_response();
            }
            match (paid, success_url) {
                (true, Some(url)) => axum::response::Redirect::to(&url).into_response(),
                _ => Html(format!(
                    "<!doctype html><p>Payment {status}: {}</p><p><a href=\"/checkout/{id}\">Try another card</a></p>",
                    intent["last_payment_error"]["message"].as_str().unwrap_or("")
                ))
                .into_response(),
            }
        }
        Err(error) => stripe_error(&error),
    }
}

async fn get_delivery(State(shared): State<Arc<Shared>>) -> Response {
    Json(
        shared
            .deliverer
            .mode
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    )
    .into_response()
}

async fn set_delivery(
    State(shared): State<Arc<Shared>>,
    Json(mode): Json<DeliveryMode>,
) -> Response {
    *shared
        .deliverer
        .mode
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = mode.clone();
    Json(mode).into_response()
}

async fn requests(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.lock_state().requests.clone()).into_response()
}

async fn deliveries(State(shared): State<Arc<Shared>>) -> Response {
    Json(
        shared
            .deliverer
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
    )
    .into_response()
}

async fn redeliver(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let event = shared
        .lock_state()
        .events
        .iter()
        .find(|e| e["id"] == id.as_str())
        .cloned();
    match event {
        Some(event) => {
            shared.deliverer.deliver(&event).await;
            StatusCode::NO_CONTENT.into_response()
        }
        None => stripe_error(&SimError::missing("event", &id)),
    }
}

#[derive(Deserialize)]
struct FailNext {
    count: u32,
    #[serde(default = "default_failure_status")]
    status: u16,
}

fn default_failure_status() -> u16 {
    500
}

async fn fail_next(State(shared): State<Arc<Shared>>, Json(failure): Json<FailNext>) -> Response {
    *shared.failures.lock().unwrap_or_else(|p| p.into_inner()) = (failure.count, failure.status);
    StatusCode::NO_CONTENT.into_response()
}

/// Opens a dispute on a PaymentIntent's charge (`charge.dispute.created`, then
/// `charge.dispute.funds_withdrawn`), as test card 4000 0000 0000 0259 does.
async fn create_dispute(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let result = shared.lock_state().create_dispute(&id, &Origin::default());
    match result {
        Ok((dispute, events)) => {
            shared.deliverer.dispatch(events);
            Json(dispute).into_response()
        }
        Err(error) => stripe_error(&error),
    }
}

#[derive(Deserialize)]
struct CloseDispute {
    /// `won` or `lost`.
    status: String,
}

/// Closes a dispute `won` (`funds_reinstated`, `closed`) or `lost` (`closed`).
async fn close_dispute(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    Json(close): Json<CloseDispute>,
) -> Response {
    let result = shared
        .lock_state()
        .close_dispute(&id, &close.status, &Origin::default());
    match result {
        Ok((dispute, events)) => {
            shared.deliverer.dispatch(events);
            Json(dispute).into_response()
        }
        Err(error) => stripe_error(&error),
    }
}

/// Makes a refund fail later (`refund.failed`), as test card 4000 0000 0000 5126 does.
async fn fail_refund(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let origin = Origin {
        request_id: None,
        idempotency_key: None,
    };
    let result = shared.lock_state().fail_refund(&id, &origin);
    match result {
        Ok((refund, events)) => {
            shared.deliverer.dispatch(events);
            Json(refund).into_response()
        }
        Err(error) => stripe_error(&error),
    }
}

/// Makes the issuer decline the next capture of a PaymentIntent.
async fn decline_capture(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match shared.lock_state().decline_next_capture(&id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => stripe_error(&error),
    }
}
