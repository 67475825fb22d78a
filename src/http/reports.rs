//! `GET /api/reports/revenue`: gross, refunds, net and count per bucket and currency, as
//! JSON or CSV. Days are local: each door's or device's own zone, or `tz` for all.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use latchkey_projections::revenue::{self, GroupBy, ReportQuery, ReportRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Permission, Principal};
use super::read_params::{self, internal, ReadQuery};
use super::{ApiError, AppState};
use crate::projections_runtime::PooledConn;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/reports/revenue", get(revenue_report))
}

/// The longest report, in days: bounds the rows one request reads and returns.
pub const MAX_REPORT_DAYS: i64 = 3_660;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevenueRowView {
    /// `2026-11-23` (day), `2026-W48` (ISO week), `2026-11` (month), a door or device uid,
    /// or a location.
    pub bucket: String,
    /// Collected on payments that succeeded in the bucket, minor units.
    pub gross: i64,
    /// Refunds reported in the bucket, minor units.
    pub refunds: i64,
    /// Taken back by disputes in the bucket (withdrawn minus reinstated), minor units.
    pub disputes: i64,
    /// `gross - refunds - disputes`, minor units.
    pub net: i64,
    /// Payments that succeeded in the bucket.
    pub count: i64,
    /// Rows never mix currencies.
    pub currency: String,
}

impl From<ReportRow> for RevenueRowView {
    fn from(row: ReportRow) -> Self {
        RevenueRowView {
            bucket: row.bucket,
            gross: row.gross,
            refunds: row.refunds,
            disputes: row.disputes,
            net: row.net,
            count: row.count,
            currency: row.currency,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevenueReport {
    pub rows: Vec<RevenueRowView>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevenueQuery {
    /// First local day, YYYY-MM-DD (required).
    pub from: Option<String>,
    /// Last local day, inclusive, YYYY-MM-DD (required).
    pub to: Option<String>,
    /// day (default), week, month, door, device or location.
    pub group_by: Option<String>,
    /// IANA zone for every day boundary; default: each door's or device's own zone.
    pub tz: Option<String>,
    /// json (default) or csv.
    pub format: Option<String>,
}

/// Revenue per bucket and currency.
#[utoipa::path(get, path = "/api/reports/revenue", tag = "reports",
    params(RevenueQuery),
    responses(
        (status = 200, description = "JSON, or CSV with `format=csv` \
            (header `bucket,gross_minor,refunds_minor,disputes_minor,net_minor,count,currency`)",
            content((RevenueReport = "application/json"), (String = "text/csv"))),
        (status = 401, body = super::openapi::ErrorBody),
        (status = 422, body = super::openapi::ErrorBody)),
    security(("bearer" = [])))]
pub async fn revenue_report(
    State(state): State<AppState>,
    principal: Principal,
    ReadQuery(query): ReadQuery<RevenueQuery>,
) -> Result<Response, ApiError> {
    principal.require(Permission::Read)?;
    let (report, csv) = report_query(&query)?;
    let mut pooled = PooledConn::acquire(&state.database)
        .await
        .map_err(internal)?;
    let rows = revenue::report(&mut pooled.conn(), &report).await?;
    if csv {
        return Ok(to_csv(&rows).into_response());
    }
    let rows = rows.into_iter().map(RevenueRowView::from).collect();
    Ok(Json(RevenueReport { rows }).into_response())
}

/// The checked report parameters, and whether CSV was asked for (422 naming a bad one).
pub fn report_query(query: &RevenueQuery) -> Result<(ReportQuery, bool), ApiError> {
    let required = |name: &str, value: &Option<String>| {
        value
            .clone()
            .ok_or_else(|| ApiError::Invalid(format!("{name} is required (YYYY-MM-DD)")))
    };
    let from = read_params::date("from", &required("from", &query.from)?)?;
    let to = read_params::date("to", &required("to", &query.to)?)?;
    let days = (to - from).num_days();
    if !(0..MAX_REPORT_DAYS).contains(&days) {
        return Err(ApiError::Invalid(format!(
            "to must be on or after from, and at most {MAX_REPORT_DAYS} days later"
        )));
    }
    let group_by = match query.group_by.as_deref() {
        None => GroupBy::Day,
        Some(text) => GroupBy::parse(text).ok_or_else(|| {
            ApiError::Invalid(format!(
                "group_by must be one of day, week, month, door, device, location, not {text:?}"
            ))
        })?,
    };
    let tz = match query.tz.as_deref() {
        None => None,
        Some(name) => Some(
            name.parse::<latchkey_projections::chrono_tz::Tz>()
                .map_err(|_| {
                    ApiError::Invalid(format!(
                        "tz must be an IANA time zone such as Europe/Paris, not {name:?}"
                    ))
                })?,
        ),
    };
    let csv = match read_params::one_of("format", query.format.as_deref(), &["json", "csv"])? {
        Some(format) => format == "csv",
        None => false,
    };
    let report = ReportQuery {
        from,
        to,
        group_by,
        tz,
    };
    Ok((report, csv))
}

pub fn to_csv(rows: &[ReportRow]) -> Response {
    // Amounts are integer minor units of the row's currency, as the headers say.
    let mut body =
        String::from("bucket,gross_minor,refunds_minor,disputes_minor,net_minor,count,currency\n");
    for row in rows {
        body.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            csv_field(&row.bucket),
            row.gross,
            row.refunds,
            row.disputes,
            row.net,
            row.count,
            csv_field(&row.currency)
        ));
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"revenue.csv\"",
            ),
        ],
        body,
    )
        .into_response()
}

/// Quotes a field that holds a comma, quote or line break (RFC 4180); a leading `=`, `+`,
/// `-` or `@` is prefixed with `'` so a spreadsheet does not run a location as a formula.
pub fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}
