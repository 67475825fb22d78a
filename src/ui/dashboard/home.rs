//! `/dashboard`: today's revenue and payments, active sessions, and the health of
//! Stripe, TTLock, Shelly and each projection — green, amber or red with the last error
//! and when. `/dashboard/live` is the same panel alone, which the script re-fetches.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use latchkey_projections::revenue::CurrencyTotals;
use latchkey_projections::{payments, revenue, sessions};
use maud::{html, Markup};

use super::{badge, money, page, when_opt, HtmlError, Operator, PageResult};
use crate::http::auth::Permission;
use crate::http::read_params::internal;
use crate::http::{ApiError, AppState};
use crate::integrations::health::{HealthState, ModuleHealthSnapshot};
use crate::projections_runtime::{PooledConn, ProjectionStatus};

/// Seconds between refreshes of the live panel.
const REFRESH_SECONDS: u32 = 5;

/// A module that failed within this long is amber even when its last call succeeded.
const RECENT_ERROR: Duration = Duration::hours(1);

/// Projection lag (events) up to which a projection is amber rather than red.
const LAG_AMBER_UP_TO: i64 = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(dashboard))
        .route("/dashboard/live", get(live))
}

/// The figures and states the page shows.
pub struct Overview {
    pub since: DateTime<Utc>,
    pub revenue: Vec<CurrencyTotals>,
    pub payments_by_status: Vec<(String, i64)>,
    pub active_sessions: i64,
    pub modules: Vec<ModuleHealthSnapshot>,
    pub projections: Vec<ProjectionStatus>,
}

/// A traffic light.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Light {
    Green,
    Amber,
    Red,
}

impl Light {
    fn class(self) -> &'static str {
        match self {
            Light::Green => "light green",
            Light::Amber => "light amber",
            Light::Red => "light red",
        }
    }

    fn word(self) -> &'static str {
        match self {
            Light::Green => "OK",
            Light::Amber => "Attention",
            Light::Red => "Failing",
        }
    }
}

/// Failing now → red; not configured, or failed within the last hour → amber.
pub fn module_light(module: &ModuleHealthSnapshot, now: DateTime<Utc>) -> Light {
    match module.state {
        HealthState::Failing => Light::Red,
        HealthState::NotConfigured => Light::Amber,
        HealthState::Ok => match module.last_error_at {
            Some(at) if now - at < RECENT_ERROR => Light::Amber,
            _ => Light::Green,
        },
    }
}

/// Caught up → green; a little behind → amber; far behind → red.
pub fn projection_light(lag_events: i64) -> Light {
    match lag_events {
        0 => Light::Green,
        lag if lag <= LAG_AMBER_UP_TO => Light::Amber,
        _ => Light::Red,
    }
}

pub async fn overview(state: &AppState, now: DateTime<Utc>) -> Result<Overview, ApiError> {
    let since = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|midnight| midnight.and_utc())
        .unwrap_or(now);
    let (revenue, payments_by_status, active_sessions) = {
        let mut pooled = PooledConn::acquire(&state.database)
            .await
            .map_err(internal)?;
        let mut conn = pooled.conn();
        (
            revenue::totals_since(&mut conn, since).await?,
            payments::count_by_status_since(&mut conn, since).await?,
            sessions::count_in_state(&mut conn, "active").await?,
        )
    };
    let modules: Vec<_> = crate::shared_status::modules(state)
        .await
        .map_err(anyhow::Error::new)?;
    let projections = crate::projections_runtime::status(&state.database).await?;
    Ok(Overview {
        since,
        revenue,
        payments_by_status,
        active_sessions,
        modules,
        projections,
    })
}

async fn dashboard(State(state): State<AppState>, op: Operator) -> PageResult {
    op.require(Permission::Read)?;
    let now = Utc::now();
    let overview = overview(&state, now).await?;
    let body = html! {
        h1 { "Dashboard" }
        div #live data-refresh="/dashboard/live" data-every=(REFRESH_SECONDS) aria-live="polite" {
            (panel(&overview, now))
        }
    };
    Ok(page(&op, "Dashboard", body))
}

async fn live(State(state): State<AppState>, op: Operator) -> Result<Response, HtmlError> {
    op.require(Permission::Read)?;
    let now = Utc::now();
    let overview = overview(&state, now).await?;
    Ok((
        [(axum::http::header::CACHE_CONTROL, "no-store")],
        panel(&overview, now),
    )
        .into_response())
}

fn panel(overview: &Overview, now: DateTime<Utc>) -> Markup {
    let payments_total: i64 = overview.payments_by_status.iter().map(|(_, n)| n).sum();
    html! {
        section.figures aria-label="Today" {
            div.figure {
                h2 { "Revenue today" }
                @if overview.revenue.is_empty() {
                    p.value { "none yet" }
                }
                @for totals in &overview.revenue {
                    p.value { (money(totals.net, &totals.currency)) }
                    p.detail { (money(totals.gross, &totals.currency)) " gross, "
                        (money(totals.refunds, &totals.currency)) " refunded, "
                        @if totals.disputes != 0 { (money(totals.disputes, &totals.currency)) " lost to disputes, " }
                        (totals.count) " paid" }
                }
            }
            div.figure {
                h2 { "Payments today" }
                p.value #payments-today { (payments_total) }
                p.detail {
                    @for (status, count) in &overview.payments_by_status {
                        (badge(status)) " " (count) " "
                    }
                }
            }
            div.figure {
                h2 { "Active sessions" }
                p.value #active-sessions { a href="/dashboard/sessions" { (overview.active_sessions) } }
            }
        }
        p.detail { "Today since " (super::when(overview.since)) "; updated " (super::when(now)) "." }
        section.health aria-label="Health" {
            h2 { "Modules" }
            table {
                thead { tr { th { "Module" } th { "State" } th { "Last error" } th { "When" } th { "Last success" } } }
                tbody {
                    @for module in &overview.modules {
                        @let light = module_light(module, now);
                        tr {
                            td { (module.name) }
                            td { span class=(light.class()) { (light.word()) } " "
                                @match module.state {
                                    HealthState::NotConfigured => "not configured",
                                    HealthState::Failing => { (module.consecutive_failures) " failures in a row" },
                                    HealthState::Ok => "ok",
                                }
                            }
                            td { (module.last_error.as_deref().unwrap_or("—")) }
                            td { (when_opt(module.last_error_at)) }
                            td { (when_opt(module.last_ok_at)) }
                        }
                    }
                }
            }
            h2 { "Projections" }
            table {
                thead { tr { th { "Projection" } th { "State" } th { "Position" } th { "Behind by" } } }
                tbody {
                    @for projection in &overview.projections {
                        @let light = projection_light(projection.lag_events);
                        tr {
                            td { (projection.projection) }
                            td { span class=(light.class()) { (light.word()) } }
                            td { (projection.position) }
                            td { (projection.lag_events) " events" }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(state: HealthState, last_error_at: Option<DateTime<Utc>>) -> ModuleHealthSnapshot {
        ModuleHealthSnapshot {
            name: "shelly".into(),
            configured: state != HealthState::NotConfigured,
            state,
            last_error: last_error_at.map(|_| "timeout".into()),
            last_error_at,
            last_ok_at: None,
            consecutive_failures: u64::from(state == HealthState::Failing),
            calls_ok_total: 0,
            calls_failed_total: 0,
        }
    }

    #[test]
    fn modules_are_red_when_failing_and_amber_after_a_recent_error() {
        let now = Utc::now();
        assert_eq!(
            module_light(&module(HealthState::Failing, Some(now)), now),
            Light::Red
        );
        assert_eq!(
            module_light(&module(HealthState::NotConfigured, None), now),
            Light::Amber
        );
        let recent = now - Duration::minutes(5);
        assert_eq!(
            module_light(&module(HealthState::Ok, Some(recent)), now),
            Light::Amber
        );
        let old = now - Duration::hours(3);
        assert_eq!(
            module_light(&module(HealthState::Ok, Some(old)), now),
            Light::Green
        );
        assert_eq!(
            module_light(&module(HealthState::Ok, None), now),
            Light::Green
        );
    }

    #[test]
    fn projections_turn_amber_then_red_as_they_fall_behind() {
        assert_eq!(projection_light(0), Light::Green);
        assert_eq!(projection_light(3), Light::Amber);
        assert_eq!(projection_light(LAG_AMBER_UP_TO + 1), Light::Red);
    }
}
