//! `GET /access/{token}` (door code) and `GET /session/{token}` (device countdown): the
//! pages Stripe's success URL brings the guest to. Waiting states refresh themselves with
//! `<meta http-equiv=refresh>`, so they work without JavaScript.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup, PreEscaped};

use super::view::{self, AccessState, AccessStatus, OfferSummary, SessionPhase, SessionStatus};
use crate::http::{ApiError, AppState};
use crate::ui::branding::{self, Branding};
use crate::ui::layout::{self, html_response, page, HtmlError, PageHead};
use crate::ui::qr;

/// Seconds between reloads of a page that waits for something (payment, code, relay).
const WAITING_REFRESH_SECONDS: u32 = 2;

pub async fn access_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, HtmlError> {
    let branding = branding::current(&state).await;
    let status = view::access(&state, &token)
        .await
        .map_err(|error| token_error(error, &branding))?;
    Ok(render_access(&status, branding))
}

pub async fn session_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, HtmlError> {
    let branding = branding::current(&state).await;
    let status = view::session(&state, &token)
        .await
        .map_err(|error| token_error(error, &branding))?;
    Ok(render_session(&status, branding))
}

/// Token pages name their failures plainly: unknown link, expired, revoked.
fn token_error(error: ApiError, branding: &Branding) -> HtmlError {
    let title = match &error {
        ApiError::NotFound(_) => "Link not valid",
        ApiError::Gone(message) if message.starts_with("Access revoked") => "Access revoked",
        ApiError::Gone(message) if message.starts_with("Expired") => "Expired",
        ApiError::Gone(message) if message.starts_with("Refund recorded") => {
            "Refunded — code still works until its end"
        }
        ApiError::Gone(_) => "Not completed",
        _ => "",
    };
    let mut page = HtmlError::from(error).with_branding(branding.clone());
    if !title.is_empty() {
        page.title = title.to_string();
    }
    page
}

fn render_access(status: &AccessStatus, branding: Branding) -> Response {
    let door = &status.door;
    let mut head = PageHead::new(door.name.clone(), branding);
    // A declined card may be followed by another card on the same checkout: keep looking.
    // A refund in progress is followed until it is done.
    if matches!(
        status.state,
        AccessState::Confirming | AccessState::Issuing | AccessState::PaymentFailed
    ) || status.refund_completed == Some(false)
    {
        head = head.refresh_every(WAITING_REFRESH_SECONDS);
    }
    let body = html! {
        section.card {
            h1 { (door.name) }
            @if !door.location.is_empty() { p.muted { (door.location) } }
            @match status.state {
                AccessState::Confirming | AccessState::Issuing => {
                    p.status role="status" { (status.message) }
                    p.muted { "This page updates by itself." }
                }
                AccessState::PaymentFailed => {
                    div.notice.bad role="alert" {
                        p { (status.message) }
                        @if let Some(reason) = &status.failure_reason { p { "Reason: " (reason) } }
                    }
                    p.muted { "If you have just paid with another card, this page updates by itself." }
                    @if let Some(url) = &status.retry_url { a.button href=(url) { "Try again" } }
                }
                AccessState::Ready => (passcode_block(status)),
                AccessState::Refunded => {
                    div.notice.bad role="alert" { p { (status.message) } }
                }
            }
            @if let Some(offer) = &status.offer { (offer_line(offer)) }
        }
    };
    html_response(StatusCode::OK, page(head, body))
}

fn passcode_block(status: &AccessStatus) -> Markup {
    let code = status.passcode.clone().unwrap_or_default();
    let zone = status.door.time_zone.as_str();
    let qr_svg = qr::inline_svg(&code, &format!("QR code of the passcode {code}")).ok();
    html! {
        p { "Your door code" }
        p.passcode aria-label={ "Passcode " (spaced(&code)) } { (code) }
        @if let Some(svg) = qr_svg { div.qr { (PreEscaped(svg)) } }
        @if let (Some(from), Some(to)) = (status.valid_from, status.valid_to) {
            dl.facts {
                dt { "Valid from" } dd { (layout::local_time(from, zone)) }
                dt { "Until" } dd { (layout::local_time(to, zone)) }
                dt { "Time zone" } dd { (zone) }
            }
        }
        h2 { "How to open the door" }
        ol {
            li { "Touch the keypad to wake the lock." }
            li { "Type " strong { (code) } ", then press the unlock key (#)." }
            li { "Keep this page: the code works as often as you need until it ends." }
        }
        @if status.offline_fallback {
            p.notice { (view::FALLBACK_NOTE) }
        } @else if status.remotely_revocable == Some(false) {
            p.notice {
                "This lock has no internet gateway, so this code was set as a time-limited code "
                "(whole hours) that cannot be cancelled remotely. It stops working by itself at the end time."
            }
        }
    }
}

/// The offer the guest bought, as locked at checkout, with the start of its hash so guest
/// and operator can name the same offer.
fn offer_line(offer: &OfferSummary) -> Markup {
    let short = offer.hash.get(..12).unwrap_or(&offer.hash);
    html! {
        p.muted.offer {
            "Your offer: " (layout::duration(offer.minutes))
            " · offer " code { (short) }
        }
    }
}

/// "1 2 3 4" so screen readers read a code digit by digit.
fn spaced(code: &str) -> String {
    code.chars().map(String::from).collect::<Vec<_>>().join(" ")
}

fn render_session(status: &SessionStatus, branding: Branding) -> Response {
    let device = &status.device;
    let zone = device.time_zone.as_str();
    let mut head = PageHead::new(device.name.clone(), branding);
    match status.state {
        SessionPhase::Confirming
        | SessionPhase::Starting
        | SessionPhase::Finishing
        | SessionPhase::PaymentFailed => {
            head = head.refresh_every(WAITING_REFRESH_SECONDS);
        }
        SessionPhase::Waiting => head = head.refresh_every(10),
        SessionPhase::Active => {
            // The script counts down; without it, reload once a minute and at the end.
            let left = status.remaining_seconds.unwrap_or(0).clamp(1, 60) as u32;
            head = head.with_script().refresh_every(left + 1);
        }
        _ => {}
    }
    let body = html! {
        section.card {
            h1 { (device.name) }
            @if !device.location.is_empty() { p.muted { (device.location) } }
            @if let Some(plan) = &status.plan {
                p { (plan.name) " · " (layout::duration(plan.minutes)) }
            }
            @match status.state {
                SessionPhase::Active => {
                    p { "Time left" }
                    @if let Some(ends_at) = status.ends_at {
                        p.countdown data-ends-at=(ends_at.to_rfc3339()) role="timer" aria-live="off" {
                            (clock(status.remaining_seconds.unwrap_or(0)))
                        }
                        p.muted { "Ends at " (layout::local_time(ends_at, zone)) "." }
                    }
                    p.status role="status" { (status.message) }
                }
                SessionPhase::PaymentFailed => {
                    div.notice.bad role="alert" {
                        p { (status.message) }
                        @if let Some(reason) = &status.failure_reason { p { "Reason: " (reason) } }
                    }
                    p.muted { "If you have just paid with another card, this page updates by itself." }
                    @if let Some(url) = &status.retry_url { a.button href=(url) { "Try again" } }
                }
                SessionPhase::Waiting => {
                    p.status role="status" { (status.message) }
                    @if let Some(at) = status.expected_start {
                        p { "Expected start: about " (layout::local_time(at, zone)) "." }
                    }
                }
                SessionPhase::NotCharged => {
                    div.notice.good role="status" { (status.message) }
                }
                SessionPhase::ChargeFailed => {
                    div.notice.bad role="alert" {
                        p { (status.message) }
                        @if let Some(reason) = &status.failure_reason { p { "Reason: " (reason) } }
                    }
                }
                _ => {
                    p.status role="status" { (status.message) }
                    @if matches!(status.state, SessionPhase::Confirming | SessionPhase::Starting | SessionPhase::Finishing) {
                        p.muted { "This page updates by itself." }
                    }
                }
            }
            @if let Some(offer) = &status.offer { (offer_line(offer)) }
        }
    };
    html_response(StatusCode::OK, page(head, body))
}

/// `m:ss` (or `h:mm:ss`), the same format the script writes.
fn clock(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (hours, minutes, rest) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if hours > 0 {
        format!("{hours}:{minutes:02}:{rest:02}")
    } else {
        format!("{minutes}:{rest:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_match_the_script() {
        assert_eq!(clock(0), "0:00");
        assert_eq!(clock(65), "1:05");
        assert_eq!(clock(3725), "1:02:05");
        assert_eq!(spaced("1234"), "1 2 3 4");
    }
}
