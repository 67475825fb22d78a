//! "Forgot your password?" (issue 21 item 1): `/login/forgot` mails a one-hour, single-use
//! link to the account's address, `/login/reset/{token}` lets its holder choose a new
//! password. The answer to a request is the same page whether or not an account uses the
//! address (nothing to enumerate); requests are rate-limited per address typed and per
//! client (`crate::mail::requests`). A reset ends the user's dashboard sessions; the
//! second factor stays, so the next login still asks for the code.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::login::{card_page, ClientAddress};
use crate::accounts::{password, resets, sessions, users};
use crate::http::{ApiError, AppState};
use crate::mail::requests;
use crate::ui::branding::{self, Branding};
use crate::ui::layout::{html_response, HtmlError};

fn internal(error: impl Into<anyhow::Error>) -> Response {
    HtmlError::from(ApiError::Internal(error.into())).into_response()
}

fn forgot_form(email: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error { p.notice.bad role="alert" { (error) } }
        p { "Type the email of your account. We send it a link to choose a new password; the link works once, for an hour." }
        form method="post" action="/login/forgot" {
            div {
                label for="email" { "Email" }
                input #email type="email" name="email" value=(email) autocomplete="username" required autofocus;
            }
            button type="submit" { "Send the link" }
        }
        p { a href="/login" { "Back to the login page" } }
    }
}

/// GET /login/forgot
pub async fn forgot_page(State(state): State<AppState>) -> Response {
    let branding = branding::current(&state).await;
    html_response(
        StatusCode::OK,
        card_page(branding, "Forgot your password?", forgot_form("", None)),
    )
}

#[derive(Deserialize)]
pub struct ForgotForm {
    #[serde(default)]
    email: String,
}

/// POST /login/forgot: the same answer for every address; a mail only for an active
/// account's.
pub async fn forgot_submit(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    Form(form): Form<ForgotForm>,
) -> Response {
    let branding = branding::current(&state).await;
    let Ok(email) = users::normalise_email(&form.email) else {
        let body = forgot_form(
            form.email.trim(),
            Some("That is not an email address such as ann@example.com."),
        );
        return html_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            card_page(branding, "Forgot your password?", body),
        );
    };
    let now = state.clock.now();
    let purpose = "password_reset";
    let limits = requests::PASSWORD_RESET;
    match requests::admit(
        &state.database,
        purpose,
        limits,
        &email,
        address,
        now.timestamp_millis(),
    )
    .await
    {
        Ok(true) => {}
        Ok(false) => return too_many(branding),
        Err(error) => return internal(error),
    }
    match users::by_email(&state.database, &email).await {
        Ok(Some(user)) if user.is_active() => {
            if let Err(error) = resets::request(&state.database, &user, now).await {
                return internal(error);
            }
        }
        Ok(_) => tracing::info!("password reset asked for an unknown or inactive address"),
        Err(error) => return internal(error),
    }
    let body = html! {
        p role="status" { "If an account uses " strong { (email) } ", we have sent it a link to choose a new password. It works once, for an hour." }
        p { "Nothing arrived within a few minutes? Check the spam folder, or ask an admin to reset your password." }
        p { a href="/login" { "Back to the login page" } }
    };
    html_response(
        StatusCode::OK,
        card_page(branding, "Check your email", body),
    )
}

fn too_many(branding: Branding) -> Response {
    let body = html! {
        p.notice.bad role="alert" { "Too many requests for this address or from your network. Please wait an hour, or ask an admin to reset your password." }
        p { a href="/login" { "Back to the login page" } }
    };
    let mut response = html_response(
        StatusCode::TOO_MANY_REQUESTS,
        card_page(branding, "Too many requests", body),
    );
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("3600"),
    );
    response
}

fn reset_form(token: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error { p.notice.bad role="alert" { (error) } }
        p { "Choose a new password (at least " (password::MIN_LENGTH) " characters; a few words work well)." }
        form method="post" action={ "/login/reset/" (token) } {
            div {
                label for="new_password" { "New password" }
                input #new_password type="password" name="new_password" autocomplete="new-password" minlength=(password::MIN_LENGTH) required autofocus;
            }
            div {
                label for="confirm" { "New password again" }
                input #confirm type="password" name="confirm" autocomplete="new-password" required;
            }
            button type="submit" { "Save password" }
        }
    }
}

/// The page for a link that is unknown, used or expired (410: it will not work again).
fn link_gone(branding: Branding) -> Response {
    let body = html! {
        p.notice.bad role="alert" { "This link does not work any more: it was used already, or it is more than an hour old." }
        p { a href="/login/forgot" { "Ask for a new link" } }
    };
    html_response(StatusCode::GONE, card_page(branding, "Link expired", body))
}

/// GET /login/reset/{token}
pub async fn reset_page(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let branding = branding::current(&state).await;
    match resets::valid_user(&state.database, &token, state.clock.now()).await {
        Ok(Some(_)) => html_response(
            StatusCode::OK,
            card_page(branding, "Choose a new password", reset_form(&token, None)),
        ),
        Ok(None) => link_gone(branding),
        Err(error) => internal(error),
    }
}

#[derive(Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm: String,
}

/// POST /login/reset/{token}: the new password, once.
pub async fn reset_submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Form(form): Form<ResetForm>,
) -> Response {
    let branding = branding::current(&state).await;
    let user_id = match resets::valid_user(&state.database, &token, state.clock.now()).await {
        Ok(Some(user_id)) => user_id,
        Ok(None) => return link_gone(branding),
        Err(error) => return internal(error),
    };
    let refuse = |message: &str| {
        html_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            card_page(
                branding.clone(),
                "Choose a new password",
                reset_form(&token, Some(message)),
            ),
        )
    };
    if let Err(reason) = password::check_policy(&form.new_password) {
        return refuse(&format!("Not saved: {reason}."));
    }
    if form.new_password != form.confirm {
        return refuse("Not saved: the two new passwords differ.");
    }
    let hash = match password::hash_off_thread(&form.new_password).await {
        Ok(hash) => hash,
        Err(error) => return internal(error),
    };
    // The clock is read again: hashing takes a moment, and the link's hour may end in it.
    match resets::consume(&state.database, &token, &user_id, state.clock.now()).await {
        Ok(true) => {}
        Ok(false) => return link_gone(branding),
        Err(error) => return internal(error),
    }
    if let Err(error) = users::set_password(&state.database, &user_id, &hash, false).await {
        return internal(error);
    }
    // Whoever was logged in with the old password is logged out.
    if let Err(error) = sessions::delete_all_for_user(&state.database, &user_id).await {
        return internal(error);
    }
    tracing::info!(user_id, "password reset by email link");
    let body = html! {
        p role="status" { "Your new password is saved. Log in with it; your two-factor code is asked for as before." }
        p { a.button href="/login" { "Log in" } }
    };
    html_response(
        StatusCode::OK,
        card_page(branding, "Password changed", body),
    )
}
