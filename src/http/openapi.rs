//! `GET /api/openapi.json`: the OpenAPI 3 document, generated from the handlers'
//! `#[utoipa::path]` annotations and the response types' `ToSchema` derives.
//!
//! To document a route: annotate its handler with `#[utoipa::path(...)]` (see
//! `payments::list`) and add the handler to `paths(...)` below; its body types follow
//! on their own. Every route but the operations ones requires the `bearer` scheme.

use std::sync::LazyLock;

use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{
    audit, catalogue, checkout, devices, doors, health_modules, journal_api, operator_actions,
    parked, payments, reports, sessions, stripe_webhook, AppState,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(document))
}

/// The error shape of every JSON error: `{error: {code, message}}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for clients to branch on; the status says the same in HTTP's words.
    #[schema(value_type = ErrorCode)]
    pub code: String,
    /// What to fix, in words.
    pub message: String,
}

/// Every `code` an error body can carry (see [`super::ApiError::code`]).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Timeout,
    Conflict,
    Gone,
    TooLarge,
    Invalid,
    RateLimited,
    Internal,
    UpstreamFailed,
    NotConfigured,
    Unavailable,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Latchkey",
        description = "Event-sourced payments and access ledger: the operator and auditor API."
    ),
    paths(
        payments::list,
        payments::detail,
        sessions::list,
        catalogue::doors,
        catalogue::devices,
        audit::list,
        reports::revenue_report,
        journal_api::events,
        journal_api::aggregate_state,
        journal_api::verify,
        journal_api::list_checkpoints,
        journal_api::public_key,
        journal_api::inclusion_proof,
        journal_api::consistency_proof,
        operator_actions::refund,
        operator_actions::grant_access,
        operator_actions::force_end,
        operator_actions::retry_code,
        operator_actions::reissue_code,
        operator_actions::release_hold,
        operator_actions::sync_doors,
        doors::register_door,
        doors::change_door,
        devices::register_device,
        devices::change_device,
        devices::switch_relay,
        checkout::door_checkout,
        checkout::device_checkout,
        crate::ui::guest::api::access,
        crate::ui::guest::api::session,
        crate::ui::guest::api::door_sticker,
        crate::ui::guest::api::device_sticker,
        stripe_webhook::receive,
        stripe_webhook::list_deliveries,
        stripe_webhook::get_delivery,
        stripe_webhook::retry_delivery,
        stripe_webhook::get_diagnostics,
        stripe_webhook::run_catch_up,
        health_modules::modules,
        parked::list,
        parked::retry,
        parked::skip,
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode)),
    modifiers(&BearerAuth),
    tags(
        (name = "payments", description = "Guest payments (payments projection)"),
        (name = "sessions", description = "Device sessions (sessions projection)"),
        (name = "catalogue", description = "Doors and devices (catalogue projection)"),
        (name = "audit", description = "One entry per journal event"),
        (name = "reports", description = "Revenue per local day, target and currency"),
        (name = "auditors", description = "The journal, replay and hash-chain verification"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` scheme the paths refer to: `Authorization: Bearer <API token>`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

async fn document() -> Json<Value> {
    Json(served_document().clone())
}

/// The document as served (and as the reference page shows it): the handlers'
/// annotations, completed with the answers every route of a kind shares. Built once.
pub fn served_document() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(|| {
        let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|error| {
            tracing::error!(%error, "the OpenAPI document does not serialise");
            Value::Null
        });
        complete(&mut document);
        document
    });
    &DOCUMENT
}

/// The exact type of a query (or path) parameter the handlers take as text and check
/// themselves (`read_params`): built from the same lists the handlers check against, so
/// the document and the server cannot disagree. `(schema, required)`.
fn parameter_schema(path: &str, location: &str, name: &str) -> Option<(Value, bool)> {
    use super::read_params::{DEFAULT_LIMIT, MAX_LIMIT};
    let words = |words: &[&str]| json!({ "type": "string", "enum": words });
    let not_empty = json!({ "type": "string", "minLength": 1 });
    let time = json!({ "type": "string", "format": "date-time" });
    let position = json!({ "type": "integer", "format": "int64", "minimum": 1 });
    if location == "path" {
        return match name {
            "aggregate_type" => {
                Some((words(&["Payment", "Door", "Device", "DeviceSession"]), true))
            }
            "id" if path.starts_with("/api/payments/") || path.starts_with("/api/sessions/") => {
                Some((json!({ "type": "string", "format": "uuid" }), true))
            }
            // A path segment is never empty.
            _ => Some((json!({ "type": "string", "minLength": 1 }), true)),
        };
    }
    if location != "query" {
        return None;
    }
    let schema = match (path, name) {
        (_, "limit") => json!({ "type": "integer", "format": "int64", "minimum": 1,
                               "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT }),
        // Only a `next_cursor` this API returned; anything else is refused with 422.
        (_, "cursor") => json!({ "type": "string", "format": "cursor" }),
        (_, "reveal_codes") | (_, "test") => json!({ "type": "boolean", "default": false }),
        ("/api/reports/revenue", "from") => {
            return Some((json!({ "type": "string", "format": "date" }), true));
        }
        // Not before `from`, and at most 3,660 days after it.
        ("/api/reports/revenue", "to") => {
            return Some((
                json!({ "type": "string", "format": "date", "x-not-before": "from" }),
                true,
            ));
        }
        ("/api/reports/revenue", "group_by") => {
            words(&["day", "week", "month", "door", "device", "location"])
        }
        ("/api/reports/revenue", "tz") => json!({ "type": "string", "format": "time-zone" }),
        ("/api/reports/revenue", "format") => words(&["json", "csv"]),
        (_, "from") | (_, "to") | (_, "at") => time,
        ("/api/payments", "status") => words(super::payments::STATUSES),
        ("/api/payments", "kind") => words(&["door", "device"]),
        ("/api/sessions", "state") => words(super::sessions::STATES),
        ("/api/parked-reactions", "status") => words(&crate::store::parking::STATUSES),
        ("/api/stripe/deliveries", "status") => words(super::stripe_webhook::DELIVERY_STATUSES),
        ("/api/audit", "action") => {
            let actions = latchkey_projections::audit::known_actions();
            json!({ "type": "string", "enum": actions })
        }
        ("/api/events", "after") => json!({ "type": "integer", "format": "int64", "minimum": 0,
                                            "default": 0 }),
        ("/api/ledger/proofs/inclusion", "position")
        | ("/api/ledger/proofs/consistency", "old")
        | ("/api/ledger/proofs/consistency", "new") => return Some((position, true)),
        (
            _,
            "door" | "device" | "email" | "payment" | "aggregate_type" | "aggregate_id" | "actor",
        ) => not_empty,
        _ => return None,
    };
    Some((schema, false))
}

const ERROR_BODY: &str = "#/components/schemas/ErrorBody";

/// Adds the statuses that follow from what an operation is rather than from its handler,
/// so that no annotation can forget them, and gives every error answer the one error
/// shape:
/// - every operation: 408 (the request took longer than the server's limit) and 500;
/// - with `bearer` security: 401 (no, unknown or revoked token), and unless it only reads,
///   403 (the role may not, or a cookie-authenticated write without `X-CSRF-Token`);
/// - with a JSON body: 400 (not JSON, or not sent as `application/json`), 413 (larger than
///   the body limit) and 422 (JSON that does not fit the schema; the message names the
///   field);
/// - with a path parameter: 404 (no such record).
pub fn complete(document: &mut Value) {
    // A rule between fields that utoipa's derive cannot state (JSON Schema 2020-12): a
    // new currency comes with a new price (15.00 EUR does not become 15.00 USD).
    if let Some(changes) = document.pointer_mut("/components/schemas/DoorChanges") {
        changes["dependentSchemas"] = json!({ "currency": {
            "required": ["price"],
            "properties": { "price": { "type": "integer", "format": "int64", "minimum": 1 } }
        } });
    }
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        for operation in item
            .as_object_mut()
            .into_iter()
            .flat_map(|item| item.values_mut())
        {
            let parameters = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten();
            for parameter in parameters {
                let name = parameter["name"].as_str().unwrap_or_default().to_string();
                let location = parameter["in"].as_str().unwrap_or_default().to_string();
                if let Some((schema, required)) = parameter_schema(path, &location, &name) {
                    parameter["schema"] = schema;
                    if required {
                        parameter["required"] = json!(true);
                    }
                }
            }
        }
    }
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            let secured = operation
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|all| !all.is_empty());
            // A JSON body the server parses (the webhook's is raw signed bytes, `string`).
            let json_body = operation
                .pointer("/requestBody/content/application~1json/schema")
                .is_some_and(|schema| schema.get("type") != Some(&json!("string")));
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| json!({ "description": description }));
            };
            if secured {
                add(
                    "401",
                    "No token, or an unknown or revoked one (`unauthenticated`)",
                );
            }
            // Every role reads; a read route that may refuse a role lists its own 403.
            if secured && method != "get" {
                add(
                    "403",
                    "The token's role may not do this, or a cookie-authenticated write came \
                     without `X-CSRF-Token` (`forbidden`)",
                );
            }
            if json_body {
                add(
                    "400",
                    "The body is not JSON, or not sent as `Content-Type: application/json` \
                     (`bad_request`)",
                );
                add(
                    "413",
                    "The body is larger than the server's limit (`too_large`)",
                );
                add(
                    "422",
                    "The JSON does not fit the schema: a wrong type, a value out of bounds, a \
                     missing or unknown field; the message names it (`invalid`)",
                );
            }
            if path.contains('{') {
                add("404", "No such record (`not_found`)");
            }
            add(
                "408",
                "Not answered within the server's time limit (`timeout`)",
            );
            add(
                "500",
                "Internal error; the details are in the server log (`internal`)",
            );
            for (status, response) in responses.iter_mut() {
                if status.starts_with('2') {
                    continue;
                }
                if let Some(response) = response.as_object_mut() {
                    response.insert(
                        "content".into(),
                        json!({ "application/json": { "schema": { "$ref": ERROR_BODY } } }),
                    );
                }
            }
        }
    }
}
