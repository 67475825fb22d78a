//! `GET/POST /pay/{door_uid}`: what a door costs, the guest's email, and off to Stripe.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use latchkey_aggregates::door::Door;
use maud::html;

use crate::http::AppState;
use crate::ui::branding::{self, Branding};
use crate::ui::layout::{self, html_response, page, HtmlError, PageHead};

pub async fn door_page(
    State(state): State<AppState>,
    Path(door_uid): Path<String>,
) -> Result<Response, HtmlError> {
    let branding = branding::current(&state).await;
    let door = load_door(&state, &door_uid, &branding).await?;
    Ok(render_door(&door, &door_uid, branding))
}

async fn load_door(
    state: &AppState,
    door_uid: &str,
    branding: &Branding,
) -> Result<Door, HtmlError> {
    let (door, _) = state.buses.doors.load(door_uid).await.map_err(|error| {
        HtmlError::from(crate::http::ApiError::from(error)).with_branding(branding.clone())
    })?;
    if !door.is_registered() {
        return Err(HtmlError::not_found(format!(
            "There is no door “{door_uid}”. Check the link or scan the code on the door again."
        ))
        .with_branding(branding.clone()));
    }
    Ok(door)
}

fn render_door(door: &Door, door_uid: &str, branding: Branding) -> Response {
    let name = door.name().unwrap_or(door_uid).to_string();
    let body = html! {
        section.card {
            h1 { (name) }
            @if let Some(location) = door.location() { p.muted { (location) } }
            @if let Some(price) = door.price() { p.price { (layout::money(price)) } }
            @if let Some(minutes) = door.access_minutes() { p { "Access for " (layout::duration(minutes)) } }
        }
    };
    html_response(StatusCode::OK, page(PageHead::new(name, branding), body))
}
