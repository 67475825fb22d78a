//! Reports: revenue over a date range grouped by day, ISO week, month, door, device or
//! location — a server-rendered bar chart of net revenue per currency, the table, and
//! the same rows as CSV. An empty range says so.

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use chrono::{Duration, Utc};
use latchkey_projections::revenue::{self, ReportRow};
use maud::{html, Markup, PreEscaped};

use super::chart::{self, Bar, BarChart};
use super::{filled, money, page, query_string, Operator, PageResult};
use crate::http::auth::Permission;
use crate::http::read_params::internal;
use crate::http::reports::{report_query, to_csv, RevenueQuery};
use crate::http::AppState;
use crate::projections_runtime::PooledConn;

const GROUPS: [&str; 6] = ["day", "week", "month", "door", "device", "location"];

/// Days shown when the form is opened without a range.
const DEFAULT_DAYS: i64 = 30;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard/reports", get(report))
        .route("/dashboard/reports.csv", get(export))
}

/// The form's values, with the defaults filled in: the last 30 days, by day.
fn with_defaults(raw: &RevenueQuery) -> RevenueQuery {
    let today = Utc::now().date_naive();
    let own = |value: &Option<String>| filled(value).map(str::to_owned);
    RevenueQuery {
        from: own(&raw.from)
            .or_else(|| Some((today - Duration::days(DEFAULT_DAYS - 1)).to_string())),
        to: own(&raw.to).or_else(|| Some(today.to_string())),
        group_by: own(&raw.group_by),
        tz: own(&raw.tz),
        format: None,
    }
}

async fn rows_of(
    state: &AppState,
    query: &RevenueQuery,
) -> Result<Vec<ReportRow>, crate::http::ApiError> {
    let (report, _) = report_query(query)?;
    let mut pooled = PooledConn::acquire(&state.database)
        .await
        .map_err(internal)?;
    Ok(revenue::report(&mut pooled.conn(), &report).await?)
}

async fn report(
    State(state): State<AppState>,
    op: Operator,
    Query(raw): Query<RevenueQuery>,
) -> PageResult {
    op.require(Permission::Read)?;
    let query = with_defaults(&raw);
    let rows = rows_of(&state, &query).await?;
    let from = query.from.as_deref().unwrap_or_default();
    let to = query.to.as_deref().unwrap_or_default();
    let group = query.group_by.as_deref().unwrap_or("day");
    let pairs = [
        ("from", query.from.as_deref()),
        ("to", query.to.as_deref()),
        ("group_by", query.group_by.as_deref()),
        ("tz", query.tz.as_deref()),
    ];
    let body = html! {
        h1 { "Revenue" }
        form.filters method="get" action="/dashboard/reports" {
            label { "From" input type="date" name="from" value=(from) required; }
            label { "To" input type="date" name="to" value=(to) required; }
            label { "Group by" select name="group_by" {
                @for option in GROUPS { option value=(option) selected[group == option] { (option) } }
            } }
            label { "Time zone" input type="text" name="tz" value=[query.tz.as_deref()] placeholder="each door's own"; }
            button type="submit" { "Show" }
        }
        @if rows.is_empty() {
            p.empty #no-revenue { "No revenue between " (from) " and " (to) "." }
        } @else {
            p.actions { a href={ "/dashboard/reports.csv" (query_string(&pairs)) } download { "Download CSV" } }
            @for currency in currencies(&rows) {
                figure.chart-box {
                    (PreEscaped(chart_svg(&rows, &currency, group)))
                }
            }
            (table(&rows))
        }
    };
    Ok(page(&op, "Reports", body))
}

/// Currencies in the rows, in order of first appearance: one chart each (never summed).
fn currencies(rows: &[ReportRow]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    for row in rows {
        if !seen.contains(&row.currency) {
            seen.push(row.currency.clone());
        }
    }
    seen
}

fn chart_svg(rows: &[ReportRow], currency: &str, group: &str) -> String {
    let bars: Vec<Bar> = rows
        .iter()
        .filter(|row| row.currency == currency)
        .map(|row| Bar {
            label: row.bucket.clone(),
            value: row.net,
        })
        .collect();
    let code = currency.to_ascii_uppercase();
    let title = format!("Net revenue per {group}, {code}");
    let description = format!(
        "Bar chart of net revenue (gross minus refunds and disputes) in {code} for each {group} of the range; the table below has the same numbers."
    );
    let format = |value: i64| money(value, currency);
    chart::render(&BarChart {
        title: &title,
        description: &description,
        bars: &bars,
        format: &format,
    })
}

fn table(rows: &[ReportRow]) -> Markup {
    html! {
        div.scroll { table.report {
            thead { tr { th { "Bucket" } th { "Gross" } th { "Refunds" } th { "Disputes" } th { "Net" } th { "Payments" } } }
            tbody { @for row in rows { tr {
                td { (row.bucket) }
                td.num { (money(row.gross, &row.currency)) }
                td.num { (money(row.refunds, &row.currency)) }
                td.num { (money(row.disputes, &row.currency)) }
                td.num { (money(row.net, &row.currency)) }
                td.num { (row.count) }
            } } }
        } }
    }
}

async fn export(
    State(state): State<AppState>,
    op: Operator,
    Query(raw): Query<RevenueQuery>,
) -> PageResult {
    op.require(Permission::Read)?;
    let rows = rows_of(&state, &with_defaults(&raw)).await?;
    Ok(to_csv(&rows).into_response())
}
