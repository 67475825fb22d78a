//! The page shell every HTML page shares, and the HTML error page.
//!
//! Pages are small server-rendered documents: one style sheet, at most one deferred
//! script, no web fonts, no inline script or style (the Content-Security-Policy forbids
//! them). Every page sends `Referrer-Policy: no-referrer` (a header, and a meta tag)
//! because guest URLs carry capability tokens that must not leak to a logo's host.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use super::branding::Branding;
use crate::http::ApiError;
use latchkey_aggregates::Money;

/// What goes into a page's `<head>` besides the fixed parts.
#[derive(Clone, Debug)]
pub struct PageHead {
    pub title: String,
    pub branding: Branding,
    /// Load `/static/app.js` (only pages with a live countdown need it).
    pub script: bool,
    /// Reload the page after this many seconds (`<meta http-equiv=refresh>`), so waiting
    /// pages update without JavaScript.
    pub refresh_seconds: Option<u32>,
}

impl PageHead {
    pub fn new(title: impl Into<String>, branding: Branding) -> Self {
        PageHead {
            title: title.into(),
            branding,
            script: false,
            refresh_seconds: None,
        }
    }

    pub fn with_script(mut self) -> Self {
        self.script = true;
        self
    }

    pub fn refresh_every(mut self, seconds: u32) -> Self {
        self.refresh_seconds = Some(seconds);
        self
    }
}

/// A whole HTML document around `body`.
pub fn page(head: PageHead, body: Markup) -> Markup {
    let branding = &head.branding;
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                @if let Some(seconds) = head.refresh_seconds {
                    meta http-equiv="refresh" content=(seconds);
                }
                title { (head.title) " · " (branding.name) }
                link rel="stylesheet" href="/static/app.css";
                link rel="stylesheet" href="/static/brand.css";
                @if head.script {
                    script src="/static/app.js" defer {}
                }
            }
            body {
                header.brand {
                    @if let Some(logo) = &branding.logo_url {
                        img.logo src=(logo) alt={ (branding.name) " logo" } height="32";
                    }
                    span.brand-name { (branding.name) }
                }
                main { (body) }
            }
        }
    }
}

/// An error shown as a page (the HTML twin of [`ApiError`]).
#[derive(Clone, Debug)]
pub struct HtmlError {
    pub status: StatusCode,
    pub title: String,
    pub message: String,
    /// The operator's branding; the default when the page fails before it is known.
    /// (Boxed: errors travel in `Result`s and should stay small.)
    pub branding: Box<Branding>,
}

impl HtmlError {
    pub fn new(status: StatusCode, title: impl Into<String>, message: impl Into<String>) -> Self {
        HtmlError {
            status,
            title: title.into(),
            message: message.into(),
            branding: Box::default(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        HtmlError::new(StatusCode::NOT_FOUND, "Not found", message)
    }

    pub fn with_branding(mut self, branding: Branding) -> Self {
        self.branding = Box::new(branding);
        self
    }

    fn render(&self) -> Markup {
        let head = PageHead::new(self.title.clone(), (*self.branding).clone());
        page(
            head,
            html! {
                section.card.error {
                    h1 { (self.title) }
                    p { (self.message) }
                }
            },
        )
    }
}

/// The title a guest sees for each kind of failure; the message stays the API's own.
impl From<ApiError> for HtmlError {
    fn from(error: ApiError) -> Self {
        let status = error.status();
        let title = match &error {
            ApiError::NotFound(_) => "Not found",
            ApiError::Conflict(_) => "Not available right now",
            ApiError::Gone(_) => "Expired",
            ApiError::Invalid(_) | ApiError::BadRequest(_) => "Please check your input",
            ApiError::Upstream(_) => "The payment service did not answer",
            ApiError::NotConfigured(_) | ApiError::Unavailable(_) => "Temporarily unavailable",
            ApiError::Unauthenticated(_) | ApiError::Forbidden(_) => "Not allowed",
            ApiError::RateLimited { .. } => "Too many attempts",
            ApiError::Internal(_) => "Something went wrong",
        };
        let message = match error {
            ApiError::Internal(cause) => {
                tracing::error!(error.message = %cause, error.cause_chain = ?cause, "page failed");
                "Something went wrong on our side. Please try again in a moment.".to_string()
            }
            other => other.to_string(),
        };
        HtmlError::new(status, title, message)
    }
}

impl IntoResponse for HtmlError {
    fn into_response(self) -> Response {
        html_response(self.status, self.render())
    }
}

/// A page with its status; pages are per-guest, so nothing in between may cache them.
pub fn html_response(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// Money for people: `€12.50`, `$3.00`, `¥500`, `12.50 SEK`, `1.250 KWD`, in the
/// currency's own precision (the exponent table in `latchkey_aggregates::money`).
pub fn money(amount: &Money) -> String {
    let number = amount.currency.format_major(amount.amount_minor.abs());
    let sign = if amount.amount_minor < 0 { "-" } else { "" };
    match amount.currency.as_str() {
        "eur" => format!("{sign}€{number}"),
        "usd" => format!("{sign}${number}"),
        "gbp" => format!("{sign}£{number}"),
        "jpy" => format!("{sign}¥{number}"),
        _ => format!("{sign}{number} {}", amount.currency.code()),
    }
}

/// A time as people at the place read it: `Tue 24 Nov, 14:05` in `time_zone` (an IANA
/// name; UTC if unknown).
pub fn local_time(at: chrono::DateTime<chrono::Utc>, time_zone: &str) -> String {
    let zone: chrono_tz::Tz = time_zone.parse().unwrap_or(chrono_tz::UTC);
    at.with_timezone(&zone)
        .format("%a %-d %b, %H:%M")
        .to_string()
}

/// Minutes for people: `45 minutes`, `2 hours`, `1 hour 30 minutes`.
pub fn duration(minutes: u32) -> String {
    let plural = |n: u32, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    match (minutes / 60, minutes % 60) {
        (0, rest) => plural(rest, "minute"),
        (hours, 0) => plural(hours, "hour"),
        (hours, rest) => format!("{} {}", plural(hours, "hour"), plural(rest, "minute")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_escapes_and_links_the_style_sheet() {
        let branding = Branding {
            name: "<Sauna & Co>".to_string(),
            logo_url: Some("/logo.png".to_string()),
            colour: "#112233".to_string(),
        };
        let html = page(
            PageHead::new("Pay", branding).refresh_every(3),
            html! { p { "hi" } },
        )
        .into_string();
        assert!(html.contains("&lt;Sauna &amp; Co&gt;"));
        assert!(html.contains(r#"href="/static/app.css""#));
        assert!(html.contains(r#"http-equiv="refresh" content="3""#));
        assert!(html.contains(r#"alt="&lt;Sauna &amp; Co&gt; logo""#));
        assert!(!html.contains("app.js"));
    }

    #[test]
    fn money_and_durations_read_naturally() {
        let money_of = |minor, code| {
            money(&Money::new(
                minor,
                latchkey_aggregates::Currency::parse(code).unwrap(),
            ))
        };
        assert_eq!(money_of(1250, "eur"), "€12.50");
        assert_eq!(money_of(5, "usd"), "$0.05");
        assert_eq!(money_of(500, "jpy"), "¥500");
        assert_eq!(money_of(1999, "sek"), "19.99 SEK");
        assert_eq!(money_of(1250, "kwd"), "1.250 KWD");
        assert_eq!(money_of(-1250, "kwd"), "-1.250 KWD");
        assert_eq!(money_of(50000, "isk"), "500 ISK");
        assert_eq!(duration(45), "45 minutes");
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-24T13:05:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(local_time(at, "Europe/Paris"), "Tue 24 Nov, 14:05");
        assert_eq!(local_time(at, "Not/AZone"), "Tue 24 Nov, 13:05");
        assert_eq!(duration(60), "1 hour");
        assert_eq!(duration(90), "1 hour 30 minutes");
    }

    #[test]
    fn api_errors_keep_their_status_and_message() {
        let error = HtmlError::from(ApiError::Conflict("door 7 is in maintenance".into()));
        assert_eq!(error.status, StatusCode::CONFLICT);
        assert_eq!(error.message, "door 7 is in maintenance");
    }
}
