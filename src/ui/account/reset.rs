//! "Forgot your password?" (issue 21 item 1): `/login/forgot` mails a one-hour, single-use
//! link to the account's address, `/login/reset/{token}` lets its holder choose a new
//! password. The answer to a request is the same page whether or not an account uses the
//! address (nothing to enumerate); requests are rate-limited per address typed and per
//! client (`crate::mail::requests`). A reset ends the user's dashboard sessions; the
//! second factor stays, so the next login still asks for the code. Both forms carry the
//! login page's pre-login CSRF token (double submit with its cookie).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::login::{card_page, ClientAddress, LOGIN_COOKIE};
use super::operator::{csrf_refused, CSRF_FIELD};
use super::secure_cookies;
use crate::accounts::{password, resets, sessions, users};
use crate::http::auth::constant_time_eq;
use crate::http::{ApiError, AppState};
use crate::mail::requests;
use crate::ui::branding::{self, Branding};
use crate::ui::layout::{html_response, HtmlError};

fn internal(error: impl Into<anyhow::Error>) -> Response {
    HtmlError::from(ApiError::Internal(error.into())).into_response()
}

/// The pre-login CSRF token of this browser, or a fresh one.
fn csrf_token(headers: &HeaderMap) -> String {
    sessions::read_cookie(headers, LOGIN_COOKIE)
        .unwrap_or_else(|| hex::encode(crate::accounts::random_bytes::<16>()))
}

/// Whether a post carries the token of its browser's cookie.
fn csrf_ok(headers: &HeaderMap, sent: Option<&str>) -> bool {
    matches!((sessions::read_cookie(headers, LOGIN_COOKIE), sent),
        (Some(cookie), Some(sent)) if constant_time_eq(cookie.as_bytes(), sent.as_bytes()))
}

/// A form page that (re)sets the pre-login cookie its form's token matches.
fn with_cookie(state: &AppState, token: &str, response: Response) -> Response {
    (
        [sessions::set_cookie(
            LOGIN_COOKIE,
            Some(token),
            secure_cookies(state),
        )],
        response,
    )
        .into_response()
}

fn forgot_form(csrf: &str, email: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error { p.notice.bad role="alert" { (error) } }
        p { "Type the email of your account. We send it a link to choose a new password; the link works once, for an hour." }
        form method="post" action="/login/forgot" {
            input type="hidden" name=(CSRF_FIELD) value=(csrf);
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
pub async fn forgot_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let branding = branding::current(&state).await;
    let token = csrf_token(&headers);
    let page = html_response(
        StatusCode::OK,
        card_page(
            branding,
            "Forgot your password?",
            forgot_form(&token, "", None),
        ),
    );
    with_cookie(&state, &token, page)
}

#[derive(Deserialize)]
pub struct ForgotForm {
    csrf_token: Option<String>,
    #[serde(default)]
    email: String,
}

/// POST /login/forgot: the same answer for every address; a mail only for an active
/// account's.
pub async fn forgot_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<ForgotForm>,
) -> Response {
    let branding = branding::current(&state).await;
    if !csrf_ok(&headers, form.csrf_token.as_deref()) {
        return csrf_refused().with_branding(branding).into_response();
    }
    let Ok(email) = users::normalise_email(&form.email) else {
        let body = forgot_form(
            form.csrf_token.as_deref().unwrap_or_default(),
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

fn reset_form(token: &str, csrf: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error { p.notice.bad role="alert" { (error) } }
        p { "Choose a new password (at least " (password::MIN_LENGTH) " characters; a few words work well)." }
        form method="post" action={ "/login/reset/" (token) } {
            input type="hidden" name=(CSRF_FIELD) value=(csrf);
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
pub async fn reset_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let branding = branding::current(&state).await;
    match resets::valid_user(&state.database, &token, state.clock.now()).await {
        Ok(Some(_)) => {
            let csrf = csrf_token(&headers);
            let form = reset_form(&token, &csrf, None);
            let page = html_response(
                StatusCode::OK,
                card_page(branding, "Choose a new password", form),
            );
            with_cookie(&state, &csrf, page)
        }
        Ok(None) => link_gone(branding),
        Err(error) => internal(error),
    }
}

#[derive(Deserialize)]
pub struct ResetForm {
    csrf_token: Option<String>,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm: String,
}

/// POST /login/reset/{token}: the new password, once.
pub async fn reset_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(form): Form<ResetForm>,
) -> Response {
    let branding = branding::current(&state).await;
    if !csrf_ok(&headers, form.csrf_token.as_deref()) {
        return csrf_refused().with_branding(branding).into_response();
    }
    let csrf = form.csrf_token.clone().unwrap_or_default();
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
                reset_form(&token, &csrf, Some(message)),
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
