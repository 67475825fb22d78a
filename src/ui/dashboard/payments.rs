//! Payments: the filterable list (keyset pages, newest first), its CSV export, and one
//! payment with its journal history and, for admins, a refund form with a confirmation
//! step; for operators, retry or reissue a door payment's code and release a device
//! payment's hold.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use latchkey_projections::payments::{self, PageKey, PaymentFilter, PaymentRow};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    badge, csrf_field, filled, major, may, minor_units, money, page, query_string, see_other,
    select, when, when_opt, Operator, OperatorForm, PageResult,
};
use crate::http::auth::Permission;
use crate::http::journal_api::JournalEventView;
use crate::http::operator_actions::{self, RefundBody};
use crate::http::payments::{decode_cursor, encode_cursor, filter_of, PaymentQuery, STATUSES};
use crate::http::read_params::{internal, DEFAULT_LIMIT};
use crate::http::reports::csv_field;
use crate::http::{ApiError, AppState};
use crate::projections_runtime::PooledConn;
use latchkey_aggregates::door::{AccessCodeState, ReissueMode};

/// Rows per CSV query: the export streams the whole filtered list in keyset chunks.
const CSV_CHUNK: i64 = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/payments", get(list))
        .route("/dashboard/payments.csv", get(export))
        .route("/dashboard/payments/{id}", get(detail))
        .route("/dashboard/payments/{id}/refund", post(refund))
        .route("/dashboard/payments/{id}/retry-code", post(retry_code))
        .route("/dashboard/payments/{id}/reissue-code", post(reissue_code))
        .route("/dashboard/payments/{id}/release-hold", post(release_hold))
}

/// The list's query string: the API's filters, as a person types them in the form.
fn api_query(query: &PaymentQuery) -> PaymentQuery {
    let own = |value: &Option<String>| filled(value).map(str::to_owned);
    PaymentQuery {
        status: own(&query.status),
        kind: own(&query.kind),
        door: own(&query.door),
        device: own(&query.device),
        email: own(&query.email),
        from: own(&query.from),
        to: own(&query.to),
        limit: None,
        cursor: own(&query.cursor),
    }
}

fn filter_pairs(query: &PaymentQuery) -> Vec<(&'static str, Option<&str>)> {
    vec![
        ("status", query.status.as_deref()),
        ("kind", query.kind.as_deref()),
        ("door", query.door.as_deref()),
        ("device", query.device.as_deref()),
        ("email", query.email.as_deref()),
        ("from", query.from.as_deref()),
        ("to", query.to.as_deref()),
    ]
}

async fn list(
    State(state): State<AppState>,
    op: Operator,
    Query(raw): Query<PaymentQuery>,
) -> PageResult {
    op.require(Permission::Read)?;
    let query = api_query(&raw);
    let filter = filter_of(&query)?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let rows = {
        let mut pooled = PooledConn::acquire(&state.database)
            .await
            .map_err(internal)?;
        payments::list(&mut pooled.conn(), &filter, after.as_ref(), DEFAULT_LIMIT)
            .await
            .map_err(ApiError::from)?
    };
    let pairs = filter_pairs(&query);
    let next = match rows.last() {
        Some(last) if rows.len() as i64 == DEFAULT_LIMIT => {
            let cursor = encode_cursor(&last.key());
            let mut with_cursor = pairs.clone();
            with_cursor.push(("cursor", Some(&cursor)));
            Some(format!("/dashboard/payments{}", query_string(&with_cursor)))
        }
        _ => None,
    };
    let body = html! {
        h1 { "Payments" }
        (filter_form(&query))
        p.actions {
            a href={ "/dashboard/payments.csv" (query_string(&pairs)) } download { "Download CSV" }
            @if query.cursor.is_some() { " · " a href={ "/dashboard/payments" (query_string(&pairs)) } { "Newest" } }
        }
        @if rows.is_empty() {
            p.empty { "No payments match these filters." }
        } @else {
            (table(&rows))
        }
        @if let Some(next) = next { p.pager { a rel="next" href=(next) { "Older payments →" } } }
    };
    Ok(page(&op, "Payments", body))
}

fn filter_form(query: &PaymentQuery) -> Markup {
    html! {
        form.filters method="get" action="/dashboard/payments" {
            (select("status", "Status", STATUSES, query.status.as_deref()))
            (select("kind", "Kind", &["door", "device"], query.kind.as_deref()))
            label { "Door" input type="text" name="door" value=[query.door.as_deref()] size="8"; }
            label { "Device" input type="text" name="device" value=[query.device.as_deref()] size="8"; }
            label { "Email" input type="email" name="email" value=[query.email.as_deref()]; }
            label { "From" input type="date" name="from" value=[query.from.as_deref()]; }
            label { "To" input type="date" name="to" value=[query.to.as_deref()]; }
            button type="submit" { "Filter" }
        }
    }
}

fn table(rows: &[PaymentRow]) -> Markup {
    html! {
        div.scroll {
            table.payments {
                thead { tr { th { "Created" } th { "Status" } th { "Amount" } th { "Refunded" } th { "For" } th { "Email" } th { "Payment" } } }
                tbody {
                    @for row in rows {
                        tr {
                            td { (when(row.created_at)) }
                            td { (badge(&row.status)) (flags(row)) }
                            td.num { (money(row.amount, &row.currency)) }
                            td.num { @if row.amount_refunded > 0 { (money(row.amount_refunded, &row.currency)) } }
                            td { (target(row)) }
                            td { (row.email) }
                            td { a href={ "/dashboard/payments/" (row.payment_id) } { (short_id(&row.payment_id)) } }
                        }
                    }
                }
            }
        }
    }
}

/// The flags beside a status: a dispute, an amount that was not the price, held access.
fn flags(row: &PaymentRow) -> Markup {
    html! {
        @if row.disputed { " " (badge("disputed")) }
        @if row.access_held { " " (badge("held")) }
        @else if let Some(direction) = &row.amount_mismatch { " " (badge(&format!("amount {direction}"))) }
    }
}

fn target(row: &PaymentRow) -> Markup {
    html! {
        @if let Some(door) = &row.door_uid {
            a href={ "/dashboard/doors/" (door) } { "door " (door) }
        } @else if let Some(device) = &row.device_uid {
            a href={ "/dashboard/devices/" (device) } { "device " (device) }
            @if let Some(plan) = &row.plan_id { " · " (plan) }
        }
    }
}

fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The filtered list as CSV, streamed in keyset chunks (a million rows never sit in
/// memory at once).
async fn export(
    State(state): State<AppState>,
    op: Operator,
    Query(raw): Query<PaymentQuery>,
) -> PageResult {
    op.require(Permission::Read)?;
    let filter = filter_of(&api_query(&raw))?;
    let header_line = format!("{}\n", CSV_COLUMNS.join(","));
    let chunks = futures::stream::unfold(
        Some((state.database.clone(), filter, None::<PageKey>)),
        |cursor| async move {
            let (database, filter, after) = cursor?;
            match next_chunk(&database, &filter, after.as_ref()).await {
                Ok((text, Some(last))) => Some((Ok(text), Some((database, filter, Some(last))))),
                Ok((text, None)) => Some((Ok(text), None)),
                Err(error) => {
                    tracing::error!(error = %error, "payments CSV export failed mid-stream");
                    Some((Err(std::io::Error::other(error.to_string())), None))
                }
            }
        },
    );
    let body = futures::stream::iter([Ok::<_, std::io::Error>(header_line)]).chain(chunks);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"payments.csv\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

use futures::StreamExt as _;

/// Amounts are integer minor units of the row's currency (`_minor`): 500 for ¥500, 1250
/// for 1.250 KWD, exactly as Stripe counts them.
const CSV_COLUMNS: [&str; 13] = [
    "payment_id",
    "created_at",
    "status",
    "kind",
    "door_uid",
    "device_uid",
    "plan_id",
    "amount_minor",
    "amount_received_minor",
    "amount_refunded_minor",
    "currency",
    "email",
    "succeeded_at",
];

/// One chunk of CSV lines and, when the chunk was full, where the next one starts.
async fn next_chunk(
    database: &crate::store::Database,
    filter: &PaymentFilter,
    after: Option<&PageKey>,
) -> Result<(String, Option<PageKey>), ApiError> {
    let mut pooled = PooledConn::acquire(database).await.map_err(internal)?;
    let rows = payments::list(&mut pooled.conn(), filter, after, CSV_CHUNK).await?;
    let mut text = String::new();
    for row in &rows {
        text.push_str(&csv_line(row));
    }
    let next = (rows.len() as i64 == CSV_CHUNK)
        .then(|| rows.last().map(PaymentRow::key))
        .flatten();
    Ok((text, next))
}

pub fn csv_line(row: &PaymentRow) -> String {
    let rfc3339 = |at: chrono::DateTime<chrono::Utc>| at.to_rfc3339();
    let fields = [
        row.payment_id.clone(),
        rfc3339(row.created_at),
        row.status.clone(),
        row.kind.clone(),
        row.door_uid.clone().unwrap_or_default(),
        row.device_uid.clone().unwrap_or_default(),
        row.plan_id.clone().unwrap_or_default(),
        row.amount.to_string(),
        row.amount_received.to_string(),
        row.amount_refunded.to_string(),
        row.currency.clone(),
        row.email.clone(),
        row.succeeded_at.map(rfc3339).unwrap_or_default(),
    ];
    let quoted: Vec<String> = fields.iter().map(|field| csv_field(field)).collect();
    format!("{}\n", quoted.join(","))
}

#[derive(Debug, Default, Deserialize)]
struct DetailQuery {
    refunded: Option<String>,
    /// Set after an operator's action: what became of it, in words.
    done: Option<String>,
}

async fn detail(
    State(state): State<AppState>,
    op: Operator,
    Path(id): Path<String>,
    Query(notice): Query<DetailQuery>,
) -> PageResult {
    op.require(Permission::Read)?;
    let row = {
        let mut pooled = PooledConn::acquire(&state.database)
            .await
            .map_err(internal)?;
        payments::get(&mut pooled.conn(), &id)
            .await
            .map_err(ApiError::from)?
    };
    let row = row.ok_or_else(|| ApiError::NotFound(format!("no payment {id:?}")))?;
    let events: Vec<JournalEventView> = state
        .journal
        .aggregate_events("Payment", &id, None)
        .await
        .map_err(internal)?
        .into_iter()
        .map(JournalEventView::from)
        .collect();
    let refundable = matches!(row.status.as_str(), "succeeded" | "partially_refunded");
    let body = html! {
        h1 { "Payment " (short_id(&row.payment_id)) " " (badge(&row.status)) (flags(&row)) }
        @if row.access_held {
            p.notice.bad role="alert" { "Stripe collected " (money(row.amount_received, &row.currency)) ", below the price of " (money(row.amount, &row.currency)) ": no access is granted until an admin grants it (POST /api/payments/" (row.payment_id) "/grant-access) or refunds." }
        }
        @if notice.refunded.is_some() {
            p.notice role="status" { "Refund requested. The refunded total changes when Stripe confirms it." }
        }
        @if let Some(done) = notice.done.as_deref().and_then(action_notice) {
            p.notice role="status" { (done) }
        }
        dl.facts {
            dt { "Payment id" } dd { code { (row.payment_id) } }
            dt { "Amount" } dd { (money(row.amount, &row.currency)) }
            dt { "Received" } dd { (money(row.amount_received, &row.currency)) }
            dt { "Refunded" } dd { (money(row.amount_refunded, &row.currency)) }
            dt { "For" } dd { (target(&row)) }
            dt { "Guest" } dd { (row.email) }
            dt { "Created" } dd { (when(row.created_at)) }
            dt { "Succeeded" } dd { (when_opt(row.succeeded_at)) }
            @if let Some(reason) = &row.last_failure_reason { dt { "Last failure" } dd { (reason) } }
            dt { "Stripe" } dd { (row.stripe_payment_intent.as_deref().unwrap_or("—")) }
            @if row.kind == "device" {
                dt { "Session" } dd { a href={ "/dashboard/sessions?payment=" (row.payment_id) } { "sessions of this payment" } }
            }
        }
        @if refundable && may(&op, Permission::Refund) {
            (refund_form(&op, &row))
        }
        @if may(&op, Permission::Operate) {
            (operator_forms(&op, &row, refundable))
        }
        h2 { "History" }
        @if events.is_empty() {
            p.empty { "No journal events for this payment." }
        } @else {
            (history(&events))
        }
    };
    Ok(page(&op, "Payment", body))
}

fn refund_form(op: &Operator, row: &PaymentRow) -> Markup {
    let rest = row.amount_received - row.amount_refunded;
    html! {
        section.refund {
            h2 { "Refund" }
            form method="post" action={ "/dashboard/payments/" (row.payment_id) "/refund" } {
                (csrf_field(op))
                label {
                    "Amount (" (row.currency.to_ascii_uppercase()) ", empty for the whole "
                    (money(rest, &row.currency)) ")"
                    input type="text" name="amount" inputmode="decimal" placeholder={ "e.g. " (major(rest, &row.currency)) };
                }
                label { "Reason" input type="text" name="reason"; }
                button #refund-button type="submit" { "Refund…" }
            }
        }
    }
}

/// Retry or reissue a paid door payment's code; release an authorized device payment's
/// hold.
fn operator_forms(op: &Operator, row: &PaymentRow, paid: bool) -> Markup {
    let base = format!("/dashboard/payments/{}", row.payment_id);
    html! {
        @if row.kind == "door" && paid {
            section.code-actions {
                h2 { "Door code" }
                form method="post" action={ (base) "/retry-code" } {
                    (csrf_field(op))
                    button #retry-code type="submit" { "Retry the code" }
                }
                form method="post" action={ (base) "/reissue-code" } {
                    (csrf_field(op))
                    button #reissue-code type="submit" { "Reissue the code (the old one is deleted)" }
                }
            }
        }
        @if row.kind == "device" && row.status == "authorized" {
            section.release {
                h2 { "Card hold" }
                form method="post" action={ (base) "/release-hold" } {
                    (csrf_field(op))
                    label { "Reason" input type="text" name="reason" required; }
                    button #release-hold type="submit" { "Release the hold" }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ActionForm {
    reason: Option<String>,
}

async fn retry_code(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OperatorForm { operator: op, .. }: OperatorForm<ActionForm>,
) -> PageResult {
    code_action(&state, &op, &id, ReissueMode::Retry).await
}

async fn reissue_code(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OperatorForm { operator: op, .. }: OperatorForm<ActionForm>,
) -> PageResult {
    code_action(&state, &op, &id, ReissueMode::Replace).await
}

async fn code_action(state: &AppState, op: &Operator, id: &str, mode: ReissueMode) -> PageResult {
    let result = operator_actions::door_code_action(state, &op.principal, id, mode).await?;
    let done = match result.state {
        AccessCodeState::Issued => "code_issued",
        _ => "code_failed",
    };
    Ok(see_other(&format!("/dashboard/payments/{id}?done={done}")))
}

/// The notice after an operator's action, from a fixed list (the query string is not
/// trusted to carry words onto the page).
fn action_notice(done: &str) -> Option<&'static str> {
    match done {
        "code_issued" => Some("The new code is on the lock; the guest's page shows it."),
        "code_failed" => Some(
            "The lock did not take the code yet; it is retried automatically (see the history).",
        ),
        "release_requested" => {
            Some("Release requested. The payment becomes cancelled when Stripe confirms it.")
        }
        _ => None,
    }
}

async fn release_hold(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OperatorForm { operator: op, form }: OperatorForm<ActionForm>,
) -> PageResult {
    let reason = filled(&form.reason).unwrap_or_default().to_owned();
    operator_actions::release(&state, &op.principal, &id, reason).await?;
    Ok(see_other(&format!(
        "/dashboard/payments/{id}?done=release_requested"
    )))
}

/// The journal entries of one aggregate, in order.
pub fn history(events: &[JournalEventView]) -> Markup {
    html! {
        ol.history {
            @for event in events {
                li {
                    span.seq { "#" (event.sequence) }
                    " " strong { (event.event_type) }
                    " · " (when(event.recorded_at))
                    " · position " (event.position)
                    details { summary { "details" } pre { code { (serde_json::to_string_pretty(&event.payload).unwrap_or_default()) } } }
                }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct RefundForm {
    amount: Option<String>,
    reason: Option<String>,
    /// Present on the confirmation page's button only.
    confirm: Option<String>,
    /// Made once per confirmation page: a double click or a resent form refunds once.
    idempotency_key: Option<String>,
}

async fn refund(
    State(state): State<AppState>,
    Path(id): Path<String>,
    OperatorForm { operator: op, form }: OperatorForm<RefundForm>,
) -> PageResult {
    op.require(Permission::Refund)?;
    let row = {
        let mut pooled = PooledConn::acquire(&state.database)
            .await
            .map_err(internal)?;
        payments::get(&mut pooled.conn(), &id)
            .await
            .map_err(ApiError::from)?
    };
    let row = row.ok_or_else(|| ApiError::NotFound(format!("no payment {id:?}")))?;
    let amount = filled(&form.amount)
        .map(|text| minor_units(text, &row.currency))
        .transpose()?;
    let reason = filled(&form.reason).map(str::to_owned);
    if form.confirm.as_deref() != Some("yes") {
        let lingering = lingering_code(&state, &row).await;
        return Ok(confirmation(
            &op,
            &row,
            amount,
            reason.as_deref(),
            lingering.as_deref(),
        ));
    }
    let _accepted = operator_actions::request_refund(
        &state,
        &op.principal,
        &id,
        RefundBody { amount, reason },
        filled(&form.idempotency_key),
    )
    .await?;
    Ok(see_other(&format!("/dashboard/payments/{id}?refunded=1")))
}

/// For a door payment whose code the lock keeps offline (no gateway), what a refund
/// cannot undo: the code keeps opening the door until its end.
async fn lingering_code(state: &AppState, row: &PaymentRow) -> Option<String> {
    let door_uid = row.door_uid.as_deref()?;
    let payment_id = row.payment_id.parse().ok()?;
    let (door, _) = state.buses.doors.load(door_uid).await.ok()?;
    let code = door.access_code(payment_id)?;
    crate::ui::guest::view::still_valid(code, &door).map(|_| {
        let until = code.still_valid_until.or(code.valid_to);
        format!(
            "This door's lock has no internet gateway: the guest's code cannot be removed \
             remotely and keeps opening the door until {} whatever is refunded.",
            until.map_or_else(|| "its end".to_string(), |until| until.to_rfc3339())
        )
    })
}

fn confirmation(
    op: &Operator,
    row: &PaymentRow,
    amount: Option<i64>,
    reason: Option<&str>,
    lingering_code: Option<&str>,
) -> Response {
    let rest = row.amount_received - row.amount_refunded;
    let shown = money(amount.unwrap_or(rest), &row.currency);
    let body = html! {
        h1 { "Confirm the refund" }
        p { "Refund " strong { (shown) } " of payment " code { (row.payment_id) } " to " (row.email) "?" }
        p { "Stripe is asked at once; this cannot be undone." }
        @if let Some(warning) = lingering_code { p.notice.bad role="alert" { (warning) } }
        form method="post" action={ "/dashboard/payments/" (row.payment_id) "/refund" } {
            (csrf_field(op))
            @if let Some(amount) = amount { input type="hidden" name="amount" value=(major(amount, &row.currency)); }
            @if let Some(reason) = reason { input type="hidden" name="reason" value=(reason); }
            input type="hidden" name="confirm" value="yes";
            input type="hidden" name="idempotency_key" value=(Uuid::new_v4());
            button #confirm-refund type="submit" { "Confirm refund of " (shown) }
            " " a href={ "/dashboard/payments/" (row.payment_id) } { "Cancel" }
        }
    };
    page(op, "Confirm refund", body)
}
