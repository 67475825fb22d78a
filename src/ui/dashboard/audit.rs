//! The audit log: filter by action, entity (aggregate type and id), actor and date,
//! newest first in keyset pages; each entry links to its entity's page.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use latchkey_projections::audit::{self, AuditEntry, AuditFilter};
use maud::{html, Markup};
use serde::Deserialize;

use super::{filled, page, query_string, select, when, Operator, PageResult};
use crate::http::auth::Permission;
use crate::http::read_params::{self, internal, DEFAULT_LIMIT};
use crate::http::{ApiError, AppState};
use crate::projections_runtime::PooledConn;

const AGGREGATE_TYPES: [&str; 4] = ["Payment", "Door", "Device", "DeviceSession"];

pub fn router() -> Router<AppState> {
    Router::new().route("/dashboard/audit", get(list))
}

#[derive(Debug, Default, Deserialize)]
struct AuditQuery {
    action: Option<String>,
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
    actor: Option<String>,
    from: Option<String>,
    to: Option<String>,
    /// Entries below this journal position (the next page).
    before: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    op: Operator,
    Query(query): Query<AuditQuery>,
) -> PageResult {
    op.require(Permission::Read)?;
    let actions = audit::known_actions();
    let filter = AuditFilter {
        action: read_params::one_of("action", filled(&query.action), &actions)?,
        aggregate_type: read_params::one_of(
            "aggregate_type",
            filled(&query.aggregate_type),
            &AGGREGATE_TYPES,
        )?,
        aggregate_id: filled(&query.aggregate_id).map(str::to_owned),
        actor: filled(&query.actor).map(str::to_owned),
        from: read_params::time("from", filled(&query.from))?,
        to: read_params::time("to", filled(&query.to))?,
    };
    let before = filled(&query.before)
        .map(|text| {
            text.parse::<i64>().map_err(|_| {
                ApiError::Invalid(format!("before must be a journal position, not {text:?}"))
            })
        })
        .transpose()?;
    let entries = {
        let mut pooled = PooledConn::acquire(&state.database)
            .await
            .map_err(internal)?;
        audit::list(&mut pooled.conn(), &filter, before, DEFAULT_LIMIT)
            .await
            .map_err(ApiError::from)?
    };
    let pairs = [
        ("action", filled(&query.action)),
        ("aggregate_type", filled(&query.aggregate_type)),
        ("aggregate_id", filled(&query.aggregate_id)),
        ("actor", filled(&query.actor)),
        ("from", filled(&query.from)),
        ("to", filled(&query.to)),
    ];
    let next = match entries.last() {
        Some(last) if entries.len() as i64 == DEFAULT_LIMIT => {
            let position = last.position.to_string();
            let mut with_before = pairs.to_vec();
            with_before.push(("before", Some(&position)));
            Some(format!("/dashboard/audit{}", query_string(&with_before)))
        }
        _ => None,
    };
    let body = html! {
        h1 { "Audit log" }
        form.filters method="get" action="/dashboard/audit" {
            (select("action", "Action", &actions, filter.action.as_deref()))
            (select("aggregate_type", "Entity", &AGGREGATE_TYPES, filter.aggregate_type.as_deref()))
            label { "Entity id" input type="text" name="aggregate_id" value=[filter.aggregate_id.as_deref()]; }
            label { "Actor" input type="text" name="actor" value=[filter.actor.as_deref()] placeholder="operator:…"; }
            label { "From" input type="date" name="from" value=[filled(&query.from)]; }
            label { "To" input type="date" name="to" value=[filled(&query.to)]; }
            button type="submit" { "Filter" }
        }
        @if entries.is_empty() { p.empty { "No entries match these filters." } } @else {
            div.scroll { table.audit {
                thead { tr { th { "#" } th { "At" } th { "Action" } th { "Entity" } th { "Actor" } th { "Details" } } }
                tbody { @for entry in &entries { tr {
                    td.num { (entry.position) }
                    td { (when(entry.at)) }
                    td { (entry.action) }
                    td { (entity_link(entry)) }
                    td { (entry.actor.as_deref().unwrap_or("—")) }
                    td { code.details { (details(entry)) } }
                } } }
            } }
        }
        @if let Some(next) = next { p.pager { a rel="next" href=(next) { "Older entries →" } } }
    };
    Ok(page(&op, "Audit", body))
}

/// The dashboard page of the entry's entity.
pub fn entity_href(aggregate_type: &str, aggregate_id: &str) -> String {
    match aggregate_type {
        "Payment" => format!("/dashboard/payments/{aggregate_id}"),
        "Door" => format!("/dashboard/doors/{aggregate_id}"),
        "Device" => format!("/dashboard/devices/{aggregate_id}"),
        "DeviceSession" => format!("/dashboard/sessions?payment={aggregate_id}"),
        _ => format!("/dashboard/audit?aggregate_id={aggregate_id}"),
    }
}

fn entity_link(entry: &AuditEntry) -> Markup {
    html! { a href=(entity_href(&entry.aggregate_type, &entry.aggregate_id)) { (entry.aggregate_type) " " (entry.aggregate_id.get(..8).unwrap_or(&entry.aggregate_id)) } }
}

/// The details, shortened for the table.
fn details(entry: &AuditEntry) -> String {
    let text = entry.details.to_string();
    match text.char_indices().nth(160) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
