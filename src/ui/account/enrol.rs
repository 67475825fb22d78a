//! First login: replace the one-time password, then enrol in TOTP (QR code or the
//! secret typed by hand, confirmed by a code) and see the ten backup codes once.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;

use super::login::card_page;
use super::operator::{csrf_refused, login_redirect, SessionUser, CSRF_FIELD};
use crate::accounts::{now_ms, password, sessions, totp, users, SessionStage};
use crate::http::auth::constant_time_eq;
use crate::http::{ApiError, AppState};
use crate::ui::layout::{html_response, HtmlError};

/// A fully logged-in session, enrolled or not (the enrolment pages themselves).
pub struct Enrolling(pub SessionUser);

impl FromRequestParts<AppState> for Enrolling {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match SessionUser::load(parts, state).await {
            Err(error) => Err(error.into_response()),
            Ok(None) => Err(login_redirect(parts)),
            Ok(Some(session)) if session.stage == SessionStage::Code => {
                Err(Redirect::to("/login/code").into_response())
            }
            Ok(Some(session)) => Ok(Enrolling(session)),
        }
    }
}

impl Enrolling {
    #[allow(clippy::result_large_err)]
    fn check_csrf(&self, sent: Option<&str>) -> Result<(), Response> {
        match sent {
            Some(sent) if constant_time_eq(sent.as_bytes(), self.0.csrf_token.as_bytes()) => Ok(()),
            _ => Err(csrf_refused()
                .with_branding(self.0.branding.clone())
                .into_response()),
        }
    }
}

fn internal(error: impl Into<anyhow::Error>) -> Response {
    HtmlError::from(ApiError::Internal(error.into())).into_response()
}

fn password_form(session: &SessionUser, error: Option<&str>) -> Markup {
    let one_time = session.user.must_change_password;
    html! {
        @if one_time {
            p { "You logged in with a one-time password. Choose your own password to continue (at least "
                (password::MIN_LENGTH) " characters; a few words work well)." }
        }
        @if let Some(error) = error { p.notice.bad role="alert" { (error) } }
        form method="post" action="/account/password" {
            input type="hidden" name=(CSRF_FIELD) value=(session.csrf_token);
            @if !one_time {
                div {
                    label for="current" { "Current password" }
                    input #current type="password" name="current" autocomplete="current-password" required;
                }
            }
            div {
                label for="new_password" { "New password" }
                input #new_password type="password" name="new_password" autocomplete="new-password" minlength=(password::MIN_LENGTH) required;
            }
            div {
                label for="confirm" { "New password again" }
                input #confirm type="password" name="confirm" autocomplete="new-password" required;
            }
            button type="submit" { "Save password" }
        }
    }
}

/// GET /account/password
pub async fn password_page(Enrolling(session): Enrolling) -> Response {
    let body = password_form(&session, None);
    html_response(
        StatusCode::OK,
        card_page(session.branding.clone(), "Choose a password", body),
    )
}

#[derive(Deserialize)]
pub struct PasswordForm {
    csrf_token: Option<String>,
    current: Option<String>,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm: String,
}

/// POST /account/password
pub async fn password_submit(
    State(state): State<AppState>,
    enrolling: Enrolling,
    Form(form): Form<PasswordForm>,
) -> Response {
    if let Err(response) = enrolling.check_csrf(form.csrf_token.as_deref()) {
        return response;
    }
    let session = &enrolling.0;
    let user = &session.user;
    let refuse = |message: &str| {
        html_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            card_page(
                session.branding.clone(),
                "Choose a password",
                password_form(session, Some(message)),
            ),
        )
    };
    if !user.must_change_password
        && !password::verify_off_thread(
            form.current.as_deref().unwrap_or_default(),
            &user.password_hash,
        )
        .await
    {
        return refuse("The current password is not right.");
    }
    if let Err(reason) = password::check_policy(&form.new_password) {
        return refuse(&format!("Not saved: {reason}."));
    }
    if form.new_password != form.confirm {
        return refuse("Not saved: the two new passwords differ.");
    }
    if password::verify_off_thread(&form.new_password, &user.password_hash).await {
        return refuse("Not saved: choose a password different from the current one.");
    }
    let hash = match password::hash_off_thread(&form.new_password).await {
        Ok(hash) => hash,
        Err(error) => return internal(error),
    };
    if let Err(error) = users::set_password(&state.database, &user.user_id, &hash, false).await {
        return internal(error);
    }
    // Whoever else is logged in with the old password is logged out; this session stays.
    if let Err(error) =
        sessions::delete_others_for_user(&state.database, &user.user_id, &session.session_hash)
            .await
    {
        return internal(error);
    }
    tracing::info!(user_id = user.user_id, "password changed");
    let next = if user.totp_confirmed {
        "/account?saved=password"
    } else {
        "/account/2fa"
    };
    Redirect::to(next).into_response()
}

fn enrol_body(session: &SessionUser, secret: &str, error: Option<&str>) -> Markup {
    let issuer = session.branding.name.clone();
    let uri = totp::otpauth_uri(&issuer, &session.user.email, secret);
    // The SVG itself carries the text alternative (screen readers skip the drawing).
    let svg = totp::qr_svg(&uri).unwrap_or_default().replacen(
        "<svg ",
        "<svg role=\"img\" aria-label=\"QR code for your authenticator app\" ",
        1,
    );
    let grouped: Vec<String> = secret
        .as_bytes()
        .chunks(4)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect();
    html! {
        p { "Two-factor login is required. Scan this code with an authenticator app (such as "
            "Google Authenticator, Aegis or 1Password), then type the 6-digit code it shows." }
        div.qr { (PreEscaped(svg)) }
        p { "Cannot scan? Enter this key by hand (time-based, 6 digits, 30 seconds):" }
        p { code.secret data-secret=(secret) { (grouped.join(" ")) } }
        @if let Some(error) = error { p.notice.bad role="alert" { (error) } }
        form method="post" action="/account/2fa" {
            input type="hidden" name=(CSRF_FIELD) value=(session.csrf_token);
            div {
                label for="code" { "Code from the app" }
                input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required autofocus;
            }
            button type="submit" { "Confirm" }
        }
    }
}

/// GET /account/2fa
pub async fn enrol_page(State(state): State<AppState>, Enrolling(session): Enrolling) -> Response {
    if session.user.must_change_password {
        return Redirect::to("/account/password").into_response();
    }
    if session.user.totp_confirmed {
        return Redirect::to("/account").into_response();
    }
    // One secret per enrolment: reloading the page must not invalidate a scanned code.
    let key = state.settings_store.master_key();
    let stored = session
        .user
        .totp_secret
        .as_ref()
        .and_then(|stored| stored.reveal(&session.user.user_id, key));
    let secret = match stored {
        Some(secret) => secret,
        None => {
            let secret = totp::new_secret();
            if let Err(error) =
                users::begin_totp(&state.database, &session.user.user_id, &secret, key).await
            {
                return internal(error);
            }
            secret
        }
    };
    let body = enrol_body(&session, &secret, None);
    html_response(
        StatusCode::OK,
        card_page(session.branding.clone(), "Set up two-factor login", body),
    )
}

#[derive(Deserialize)]
pub struct CodeForm {
    csrf_token: Option<String>,
    #[serde(default)]
    code: String,
}

/// POST /account/2fa: a valid code confirms the secret; the backup codes are shown once.
pub async fn enrol_submit(
    State(state): State<AppState>,
    enrolling: Enrolling,
    Form(form): Form<CodeForm>,
) -> Response {
    if let Err(response) = enrolling.check_csrf(form.csrf_token.as_deref()) {
        return response;
    }
    let session = &enrolling.0;
    let user = &session.user;
    if user.must_change_password {
        return Redirect::to("/account/password").into_response();
    }
    let key = state.settings_store.master_key();
    let Some(secret) = user
        .totp_secret
        .as_ref()
        .filter(|_| !user.totp_confirmed)
        .and_then(|stored| stored.reveal(&user.user_id, key))
    else {
        return Redirect::to("/account/2fa").into_response();
    };
    let Some(step) = totp::matching_step(&secret, &form.code, now_ms() / 1000, None) else {
        let body = enrol_body(
            session,
            &secret,
            Some("That code is not right. Check the time on your phone and type the current code."),
        );
        return html_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            card_page(session.branding.clone(), "Set up two-factor login", body),
        );
    };
    let codes = totp::new_backup_codes();
    if let Err(error) = users::confirm_totp(&state.database, &user.user_id, step, &codes).await {
        return internal(error);
    }
    // Other sessions were opened with the password alone; from now on both factors count.
    if let Err(error) =
        sessions::delete_others_for_user(&state.database, &user.user_id, &session.session_hash)
            .await
    {
        return internal(error);
    }
    let body = html! {
        p.notice.good { "Two-factor login is on." }
        p { "These are your backup codes. Each works once in place of an app code, for "
            "example if you lose your phone. Store them somewhere safe now: "
            strong { "they are not shown again." } }
        ol.backup-codes { @for code in &codes { li { code { (code) } } } }
        p { a.button href="/dashboard" { "Continue to the dashboard" } }
    };
    html_response(
        StatusCode::OK,
        card_page(session.branding.clone(), "Backup codes", body),
    )
}
