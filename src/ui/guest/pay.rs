//! `GET/POST /pay/{door_uid}` and `GET/POST /use/{device_uid}`: what it costs, the guest's
//! email (and plan), then a 303 to Stripe Checkout.
//!
//! Refusals re-show the form where that helps: an invalid email or unknown plan is a 422
//! with the message next to the field, Stripe failing a 502 with the form ready to send
//! again. An unknown door is a 404 page, maintenance a 409 page without a form.

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use chrono::{DateTime, Utc};
use latchkey_aggregates::device::Device;
use latchkey_aggregates::door::Door;
use maud::{html, Markup};
use serde::Deserialize;

use super::view;
use crate::http::{ApiError, AppState};
use crate::payments::checkout;
use crate::ui::account::login::ClientAddress;
use crate::ui::branding::{self, Branding};
use crate::ui::layout::{self, html_response, page, HtmlError, PageHead};

#[derive(Debug, Default, Deserialize)]
pub struct PayQuery {
    /// Set by Stripe's cancel URL.
    #[serde(default)]
    cancelled: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PayForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    plan_id: String,
}

/// What the form shows besides the place: prefilled values and one message.
#[derive(Debug, Default)]
struct FormState {
    email: String,
    plan_id: String,
    email_error: Option<String>,
    plan_error: Option<String>,
    /// A banner above the form (cancelled checkout, Stripe down).
    notice: Option<Notice>,
}

#[derive(Debug)]
struct Notice {
    bad: bool,
    text: String,
}

pub async fn door_page(
    State(state): State<AppState>,
    Path(door_uid): Path<String>,
    Query(query): Query<PayQuery>,
) -> Result<Response, HtmlError> {
    let branding = branding::current(&state).await;
    let door = load_door(&state, &door_uid, &branding).await?;
    let form = FormState {
        notice: cancelled_notice(&query),
        ..FormState::default()
    };
    Ok(door_response(
        StatusCode::OK,
        &door,
        &door_uid,
        form,
        branding,
    ))
}

pub async fn door_submit(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Path(door_uid): Path<String>,
    form: Result<Form<PayForm>, FormRejection>,
) -> Result<Response, HtmlError> {
    let branding = branding::current(&state).await;
    let Form(form) = form.map_err(|rejection| bad_form(rejection, &branding))?;
    let door = load_door(&state, &door_uid, &branding).await?;
    if let Some(form_state) = invalid_fields(&form, None) {
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(door_response(
            status, &door, &door_uid, form_state, branding,
        ));
    }
    state
        .checkout_limits
        .admit(address, &format!("door:{door_uid}"))
        .map_err(|error| HtmlError::from(error).with_branding(branding.clone()))?;
    match checkout::start_door_checkout(&state, &door_uid, &form.email).await {
        Ok(started) => Ok(see_other(&started.checkout_url)),
        Err(error) => {
            let (status, form_state) = refusal(error, form, &branding)?;
            Ok(door_response(
                status, &door, &door_uid, form_state, branding,
            ))
        }
    }
}

pub async fn device_page(
    State(state): State<AppState>,
    Path(device_uid): Path<String>,
    Query(query): Query<PayQuery>,
) -> Result<Response, HtmlError> {
    let branding = branding::current(&state).await;
    let device = load_device(&state, &device_uid, &branding).await?;
    let frees_at = view::device_frees_at(&state, &device, None).await;
    let form = FormState {
        notice: cancelled_notice(&query),
        plan_id: device
            .plans()
            .first()
            .map(|plan| plan.plan_id.clone())
            .unwrap_or_default(),
        ..FormState::default()
    };
    Ok(device_response(
        StatusCode::OK,
        &device,
        &device_uid,
        frees_at,
        form,
        branding,
    ))
}

pub async fn device_submit(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Path(device_uid): Path<String>,
    form: Result<Form<PayForm>, FormRejection>,
) -> Result<Response, HtmlError> {
    let branding = branding::current(&state).await;
    let Form(form) = form.map_err(|rejection| bad_form(rejection, &branding))?;
    let device = load_device(&state, &device_uid, &branding).await?;
    if let Some(form_state) = invalid_fields(&form, Some(&device)) {
        let frees_at = view::device_frees_at(&state, &device, None).await;
        let status = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(device_response(
            status,
            &device,
            &device_uid,
            frees_at,
            form_state,
            branding,
        ));
    }
    state
        .checkout_limits
        .admit(address, &format!("device:{device_uid}"))
        .map_err(|error| HtmlError::from(error).with_branding(branding.clone()))?;
    match checkout::start_device_checkout(&state, &device_uid, &form.plan_id, &form.email).await {
        Ok(started) => Ok(see_other(&started.checkout_url)),
        Err(error) => {
            let (status, form_state) = refusal(error, form, &branding)?;
            let frees_at = view::device_frees_at(&state, &device, None).await;
            Ok(device_response(
                status,
                &device,
                &device_uid,
                frees_at,
                form_state,
                branding,
            ))
        }
    }
}

fn see_other(url: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response()
}

fn cancelled_notice(query: &PayQuery) -> Option<Notice> {
    query.cancelled.as_ref().map(|_| Notice {
        bad: false,
        text: "Payment cancelled: you were not charged. You can try again below.".to_string(),
    })
}

fn bad_form(rejection: FormRejection, branding: &Branding) -> HtmlError {
    HtmlError::new(
        StatusCode::BAD_REQUEST,
        "Please check your input",
        format!("The form could not be read ({rejection}). Go back and send it again."),
    )
    .with_branding(branding.clone())
}

/// The form's own mistakes, each next to its field (422), before anything is started.
fn invalid_fields(form: &PayForm, device: Option<&Device>) -> Option<FormState> {
    let email_error = checkout::parse_email(&form.email).err().map(|_| {
        "Please enter a valid email address, like name@example.com: your receipt goes there."
            .to_string()
    });
    let plan_error = device
        .filter(|device| device.plan(&form.plan_id).is_none())
        .map(|_| "Please choose one of the plans below.".to_string());
    if email_error.is_none() && plan_error.is_none() {
        return None;
    }
    Some(FormState {
        email: form.email.trim().to_string(),
        plan_id: form.plan_id.clone(),
        email_error,
        plan_error,
        notice: None,
    })
}

/// Which refusals re-show the form (and how), and which become an error page.
fn refusal(
    error: ApiError,
    form: PayForm,
    branding: &Branding,
) -> Result<(StatusCode, FormState), HtmlError> {
    let status = error.status();
    let mut state = FormState {
        email: form.email.trim().to_string(),
        plan_id: form.plan_id,
        ..FormState::default()
    };
    match error {
        ApiError::Upstream(message) => {
            tracing::warn!(reason = %message, "checkout could not start");
            state.notice = Some(Notice {
                bad: true,
                text: "The payment service did not answer. Nothing was charged; please try again in a moment."
                    .to_string(),
            });
        }
        other => return Err(HtmlError::from(other).with_branding(branding.clone())),
    }
    Ok((status, state))
}

async fn load_door(
    state: &AppState,
    door_uid: &str,
    branding: &Branding,
) -> Result<Door, HtmlError> {
    let (door, _) =
        state.buses.doors.load(door_uid).await.map_err(|error| {
            HtmlError::from(ApiError::from(error)).with_branding(branding.clone())
        })?;
    if !door.is_registered() {
        return Err(HtmlError::not_found(
            "There is no door with this address. Check the link, or scan the code on the door again.",
        )
        .with_branding(branding.clone()));
    }
    if !door.is_accepting_payments() {
        return Err(HtmlError::new(
            StatusCode::CONFLICT,
            "Temporarily closed",
            format!(
                "{} is under maintenance, so it cannot be booked right now. Please try again later.",
                door.name().unwrap_or("This door")
            ),
        )
        .with_branding(branding.clone()));
    }
    Ok(door)
}

async fn load_device(
    state: &AppState,
    device_uid: &str,
    branding: &Branding,
) -> Result<Device, HtmlError> {
    let (device, _) = state
        .buses
        .devices
        .load(device_uid)
        .await
        .map_err(|error| HtmlError::from(ApiError::from(error)).with_branding(branding.clone()))?;
    if !device.is_registered() {
        return Err(HtmlError::not_found(
            "There is no device with this address. Check the link, or scan the code on the device again.",
        )
        .with_branding(branding.clone()));
    }
    if device.status() != latchkey_aggregates::device::DeviceStatus::Active {
        return Err(HtmlError::new(
            StatusCode::CONFLICT,
            "Temporarily out of service",
            format!(
                "{} is under maintenance, so it cannot be started right now. Please try again later.",
                device.name().unwrap_or("This device")
            ),
        )
        .with_branding(branding.clone()));
    }
    Ok(device)
}

fn door_response(
    status: StatusCode,
    door: &Door,
    door_uid: &str,
    form: FormState,
    branding: Branding,
) -> Response {
    let name = door.name().unwrap_or(door_uid).to_string();
    let body = html! {
        (notice(&form))
        section.card {
            h1 { (name) }
            @if let Some(location) = door.location() { p.muted { (location) } }
            @if let Some(price) = door.price() { p.price { (layout::money(price)) } }
            @if let Some(minutes) = door.access_minutes() {
                p { "You get a door code that works for " (layout::duration(minutes)) " from payment." }
            }
        }
        section.card {
            form method="post" action={ "/pay/" (door_uid) } novalidate {
                (email_field(&form))
                button type="submit" { (button_label(&form, "Pay")) }
            }
        }
        (lost_link_hint())
    };
    html_response(status, page(PageHead::new(name, branding), body))
}

fn device_response(
    status: StatusCode,
    device: &Device,
    device_uid: &str,
    frees_at: Option<DateTime<Utc>>,
    form: FormState,
    branding: Branding,
) -> Response {
    let name = device.name().unwrap_or(device_uid).to_string();
    let time_zone = device.time_zone().unwrap_or("UTC");
    let body = html! {
        (notice(&form))
        section.card {
            h1 { (name) }
            @if let Some(location) = device.location() { p.muted { (location) } }
            @match frees_at {
                None => p.status.free { "Free now" },
                Some(at) => p {
                    span.status.busy { "In use" }
                    " until about " (layout::local_time(at, time_zone))
                    ". You can pay now: your session starts by itself when it is free, and you are charged only once the device is on."
                },
            }
        }
        section.card {
            form method="post" action={ "/use/" (device_uid) } novalidate {
                fieldset aria-describedby=[form.plan_error.as_ref().map(|_| "plan-error")] {
                    legend { "Choose a plan" }
                    @if let Some(error) = &form.plan_error {
                        p.field-error id="plan-error" { (error) }
                    }
                    @for plan in device.plans() {
                        label.choice {
                            input type="radio" name="plan_id" value=(plan.plan_id)
                                checked[plan.plan_id == form.plan_id] required;
                            span { (plan.name) " · " (layout::duration(plan.minutes)) }
                            span.price-tag { (layout::money(&plan.price)) }
                        }
                    }
                }
                (email_field(&form))
                p.muted { "Your card is only authorized now; it is charged when the device switches on." }
                button type="submit" { (button_label(&form, "Pay and start")) }
            }
        }
        (lost_link_hint())
    };
    html_response(status, page(PageHead::new(name, branding), body))
}

/// For a guest who paid earlier and closed the page.
fn lost_link_hint() -> Markup {
    html! { p.muted { "Paid already? " a href="/lost-link" { "Lost your link?" } } }
}

fn notice(form: &FormState) -> Markup {
    html! {
        @if let Some(notice) = &form.notice {
            div.notice.bad[notice.bad] role=(if notice.bad { "alert" } else { "status" }) {
                (notice.text)
            }
        }
    }
}

fn button_label(form: &FormState, label: &str) -> String {
    match &form.notice {
        Some(notice) if notice.bad => "Try again".to_string(),
        _ => label.to_string(),
    }
}

fn email_field(form: &FormState) -> Markup {
    let invalid = form.email_error.is_some();
    html! {
        div {
            label for="email" { "Email for your receipt" }
            input #email type="email" name="email" autocomplete="email" required
                value=(form.email)
                aria-invalid=[invalid.then_some("true")]
                aria-describedby=[invalid.then_some("email-error")];
            @if let Some(error) = &form.email_error {
                p.field-error #email-error { (error) }
            }
        }
    }
}
