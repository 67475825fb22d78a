//! The operator dashboard (issue 9): one module per page, all server-rendered, usable
//! without JavaScript. A few lines of script (`/static/dashboard.js`) refresh the live
//! parts (today's figures, module health, session countdowns) without a full reload.
//!
//! Every page asks the [`Operator`] for a permission: auditors read everything, operators
//! also act on doors, devices, sessions and deliveries, admins also refund. Controls a
//! role may not use are not rendered, and their endpoints answer 403 anyway. Write
//! actions call the JSON API's own handlers (the command bus underneath), with the
//! logged-in operator as the actor, so a page can never do what the API would refuse.

pub mod audit;
pub mod catalogue;
pub mod chart;
pub mod deliveries;
pub mod home;
pub mod mail;
pub mod parked;
pub mod payments;
pub mod reports;
pub mod sessions;
pub mod shell;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use maud::{html, Markup};

use crate::http::{ApiError, AppState};
pub use crate::ui::account::{csrf_field, Operator, OperatorForm};
use crate::ui::layout::html_response;
pub use crate::ui::layout::HtmlError;
pub use shell::shell;

/// What a page handler answers: the page, or an HTML error page with the right status.
pub type PageResult = Result<Response, HtmlError>;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/static/dashboard.js", get(script))
        .route("/static/dashboard.css", get(style))
        .route("/static/shell.css", get(shell_style))
        .merge(home::router())
        .merge(payments::router())
        .merge(sessions::router())
        .merge(catalogue::router())
        .merge(audit::router())
        .merge(reports::router())
        .merge(deliveries::router())
        .merge(parked::router())
        .merge(mail::router())
}

async fn script() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("dashboard.js"),
    )
}

async fn style() -> Response {
    static_file("text/css; charset=utf-8", include_str!("dashboard.css"))
}

async fn shell_style() -> Response {
    static_file("text/css; charset=utf-8", shell::SHELL_CSS)
}

fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A rendered page in the dashboard shell (`title` is its navigation label), with the
/// dashboard's style sheet and script; never cached (live data, per-role controls).
pub fn page(op: &Operator, title: &str, body: Markup) -> Response {
    let body = html! {
        link rel="stylesheet" href="/static/dashboard.css";
        script src="/static/dashboard.js" defer {}
        (body)
    };
    html_response(StatusCode::OK, shell(op, title, body))
}

/// Money for people (`€12.50`), from minor units and a currency code as stored.
pub fn money(minor: i64, currency: &str) -> String {
    match latchkey_aggregates::Currency::parse(currency) {
        Ok(code) => crate::ui::layout::money(&latchkey_aggregates::Money::new(minor, code)),
        Err(_) => format!("{minor} {}", currency.to_ascii_uppercase()),
    }
}

/// Minor units as a form shows them, in the currency's own precision (`1.250` for 1250
/// KWD, `500` for ¥500): what [`minor_units`] reads back to the same amount.
pub fn major(minor: i64, currency: &str) -> String {
    match latchkey_aggregates::Currency::parse(currency) {
        Ok(code) => code.format_major(minor),
        Err(_) => minor.to_string(),
    }
}

/// An amount typed in a form, in major units of the currency's own precision, to minor
/// units: `500` JPY → 500, `1.250` KWD → 1250, `2.50` EUR → 250. The message of a refusal
/// says why (`1.2505` KWD has too many decimals).
pub fn minor_units(text: &str, currency: &str) -> Result<i64, ApiError> {
    let currency = latchkey_aggregates::Currency::parse(currency)
        .map_err(|error| ApiError::Invalid(error.to_string()))?;
    currency
        .parse_major(text)
        .map_err(|error| ApiError::Invalid(error.to_string()))
}

/// Whether the operator's role allows `permission` (to show or hide a control).
pub fn may(op: &Operator, permission: crate::http::auth::Permission) -> bool {
    op.role.allows(permission)
}

/// A form with no fields of its own (a button): only the CSRF token, checked by
/// [`OperatorForm`].
#[derive(Debug, Default, serde::Deserialize)]
pub struct Button {}

/// After a successful form post: back to a page (303, so a reload does not re-post).
pub fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

/// A time for people, in UTC: `2026-11-23 14:05 UTC`.
pub fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

pub fn when_opt(at: Option<DateTime<Utc>>) -> String {
    at.map(when).unwrap_or_else(|| "—".to_string())
}

/// A status word as a coloured badge (the CSS colours by class).
pub fn badge(status: &str) -> Markup {
    html! { span class={ "badge " (status) } { (status.replace('_', " ")) } }
}

/// A text query parameter: absent when missing or blank (an empty filter box).
pub fn filled(value: &Option<String>) -> Option<&str> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// Percent-encodes a query parameter value.
pub fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `?a=1&b=2` from the parameters that have a value.
pub fn query_string(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| value.map(|value| format!("{name}={}", encode(value))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// A `<select>` of `options` with `selected` chosen and an "any" first entry.
pub fn select(name: &str, label: &str, options: &[&str], selected: Option<&str>) -> Markup {
    html! {
        label {
            (label)
            select name=(name) {
                option value="" { "any" }
                @for option in options {
                    option value=(option) selected[selected == Some(*option)] { (option.replace('_', " ")) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_keep_only_given_values_and_encode_them() {
        assert_eq!(query_string(&[("a", None)]), "");
        assert_eq!(
            query_string(&[
                ("email", Some("a+b@x.com")),
                ("door", None),
                ("s", Some("x y"))
            ]),
            "?email=a%2Bb%40x.com&s=x+y"
        );
    }
}
