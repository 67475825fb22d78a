//! `GET/POST /lost-link`: "Lost your link?" (issue 21 item 1). A guest who closed the tab
//! types the email they paid with, and the links to their recent purchases (the door's
//! access page, the device's session page; fresh tokens, minted when the mail is
//! rendered) are mailed to that address — never shown on the page, so knowing someone's
//! email gives nothing.
//!
//! The answer is the same page for every well-formed address, known or not (nothing to
//! enumerate), and only a known one gets mail. Requests are rate-limited per typed address
//! and per client address (`crate::mail::requests::LOST_LINK`; 429 past them, whatever the
//! address).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use chrono::{Duration, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::json;

use crate::http::{ApiError, AppState};
use crate::mail::outbox::{self, FactRef, NewMail, LINK_RESEND};
use crate::mail::requests;
use crate::payments::checkout;
use crate::ui::account::login::ClientAddress;
use crate::ui::branding::{self, Branding};
use crate::ui::layout::{html_response, page, HtmlError, PageHead};

/// How far back purchases count as "recent": a stay or a session is over long before.
fn lookback() -> Duration {
    Duration::days(30)
}

/// Links in one mail at most (the newest purchases).
const LINKS_MAX: i64 = 5;

const TITLE: &str = "Lost your link?";

fn form(email: &str, error: Option<&str>) -> Markup {
    let invalid = error.is_some();
    html! {
        section.card {
            h1 { (TITLE) }
            p { "Type the email you paid with. We send the links to your recent purchases (your door code, your device's session) to that address again." }
            form method="post" action="/lost-link" novalidate {
                div {
                    label for="email" { "Email used at checkout" }
                    input #email type="email" name="email" autocomplete="email" required
                        value=(email)
                        aria-invalid=[invalid.then_some("true")]
                        aria-describedby=[invalid.then_some("email-error")];
                    @if let Some(error) = error { p.field-error #email-error { (error) } }
                }
                button type="submit" { "Send my links" }
            }
        }
    }
}

/// GET /lost-link
pub async fn page_get(State(state): State<AppState>) -> Response {
    let branding = branding::current(&state).await;
    html_response(
        StatusCode::OK,
        page(PageHead::new(TITLE, branding), form("", None)),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct LostLinkForm {
    #[serde(default)]
    email: String,
}

/// POST /lost-link
pub async fn submit(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Form(input): Form<LostLinkForm>,
) -> Result<Response, HtmlError> {
    let branding = branding::current(&state).await;
    let internal = |error: anyhow::Error| {
        HtmlError::from(ApiError::Internal(error)).with_branding(branding.clone())
    };
    let Ok(email) = checkout::parse_email(&input.email) else {
        let body = form(
            input.email.trim(),
            Some("Please enter a valid email address, like name@example.com."),
        );
        return Ok(html_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            page(PageHead::new(TITLE, branding), body),
        ));
    };
    let email = email.to_lowercase();
    let now = Utc::now();
    let admitted = requests::admit(
        &state.database,
        "lost_link",
        requests::LOST_LINK,
        &email,
        address,
        now.timestamp_millis(),
    )
    .await
    .map_err(|error| internal(error.into()))?;
    if !admitted {
        return Ok(too_many(branding));
    }
    let payments =
        outbox::recent_payments_for(&state.database, &email, now - lookback(), LINKS_MAX)
            .await
            .map_err(|error| internal(error.into()))?;
    if !payments.is_empty() {
        let facts = json!({
            "payments": payments.iter().map(|(payment_id, kind, target_uid)| {
                json!({"payment_id": payment_id, "kind": kind, "target_uid": target_uid})
            }).collect::<Vec<_>>(),
        });
        let mail = NewMail {
            key: format!("resend:{}", uuid::Uuid::new_v4()),
            kind: LINK_RESEND,
            payment_id: "",
            recipient: &email,
            facts,
        };
        outbox::queue_now(&state.database, mail, FactRef::request(now))
            .await
            .map_err(internal)?;
        tracing::info!(links = payments.len(), "guest links queued for resending");
    }
    let body = html! {
        section.card {
            h1 { "Check your email" }
            p role="status" { "If a recent payment used " strong { (email) } ", we have sent the link to its page there. It can take a minute; look in the spam folder too." }
            p { "Nothing arrives? The payment may be older than 30 days, or made with another address." }
        }
    };
    Ok(html_response(
        StatusCode::OK,
        page(PageHead::new("Check your email", branding), body),
    ))
}

fn too_many(branding: Branding) -> Response {
    let body = html! {
        section.card {
            h1 { "Too many requests" }
            p role="alert" { "We have sent links for this address, or from your network, several times in the last hour. Please wait an hour and try again." }
        }
    };
    let mut response = html_response(
        StatusCode::TOO_MANY_REQUESTS,
        page(PageHead::new("Too many requests", branding), body),
    );
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("3600"),
    );
    response.into_response()
}
