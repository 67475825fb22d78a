//! `GET /api/openapi.json`: the OpenAPI 3 document, generated from the handlers'
//! `#[utoipa::path]` annotations and the response types' `ToSchema` derives.
//!
//! To document a route: annotate its handler with `#[utoipa::path(...)]` (see
//! `payments::list`) and add the handler to `paths(...)` below; its body types follow
//! on their own. Every route but the operations ones requires the `bearer` scheme.

use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
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
    /// Stable: bad_request, unauthenticated, forbidden, not_found, conflict, gone,
    /// invalid, upstream_failed, not_configured, unavailable, internal.
    pub code: String,
    /// What to fix, in words.
    pub message: String,
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
    components(schemas(ErrorBody, ErrorDetail)),
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

async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
