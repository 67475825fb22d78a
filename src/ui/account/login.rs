//! `/login` (email and password) → `/login/code` (TOTP or a backup code) → the page the
//! operator asked for. Failed passwords and codes count against the account and the
//! client address; at the limit every attempt is answered 429 with when to retry, and
//! once the limit has passed the right password still leads to the code step.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::operator::{csrf_refused, SessionUser, CSRF_FIELD};
use super::secure_cookies;
use crate::accounts::rate_limit::{self, Limited};
use crate::accounts::{now_ms, password, sessions, totp, users, SessionStage};
use crate::http::auth::constant_time_eq;
use crate::http::{ApiError, AppState};
use crate::ui::branding::{self, Branding};
use crate::ui::layout::{html_response, page, HtmlError, PageHead};

/// The pre-login CSRF cookie (double submit: the form carries the same value); also the
/// "forgot password" pages' (`super::reset`).
pub(crate) const LOGIN_COOKIE: &str = "latchkey_login";

/// The client's address: the TCP peer, or what a trusted proxy says it forwarded for
/// (`LATCHKEY_TRUSTED_PROXIES`); `None` when the server runs without connection info.
pub struct ClientAddress(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let proxies = &state.settings.security.trusted_proxies;
        Ok(ClientAddress(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| proxies.client_address(info.0.ip(), &parts.headers)),
        ))
    }
}

#[derive(Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
    logged_out: Option<String>,
}

/// Only paths on this site: never `//host` or a full URL (an open redirect). Browsers
/// drop TAB, CR and LF from URLs and read `\` as `/`, so `/\t/evil.example` would become
/// `//evil.example`: any control character, whitespace or backslash, also once
/// percent-decoded, sends the user to the dashboard instead.
pub fn safe_next(next: Option<&str>) -> String {
    let on_this_site = |path: &str| {
        path.starts_with('/')
            && !path.starts_with("//")
            && !path
                .chars()
                .any(|c| c == '\\' || c.is_control() || c.is_whitespace())
    };
    match next {
        Some(path) if on_this_site(path) && on_this_site(&percent_decoded(path)) => {
            path.to_string()
        }
        _ => "/dashboard".to_string(),
    }
}

/// `%XX` sequences decoded once (invalid ones kept as they are).
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let decoded = (bytes[index] == b'%')
            .then(|| path.get(index + 1..index + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                index += 3;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn internal(error: impl Into<anyhow::Error>) -> Response {
    HtmlError::from(ApiError::Internal(error.into())).into_response()
}

/// A small centred card page (login, code, enrolment).
pub(crate) fn card_page(branding: Branding, title: &str, body: Markup) -> Markup {
    page(
        PageHead::new(title, branding),
        html! { section.card { h1 { (title) } (body) } },
    )
}

fn login_form(
    next: &str,
    token: &str,
    email: &str,
    error: Option<&str>,
    notice: Option<&str>,
) -> Markup {
    html! {
        @if let Some(notice) = notice { p.notice.good { (notice) } }
        @if let Some(error) = error { p.notice.bad role="alert" { (error) } }
        form method="post" action="/login" {
            input type="hidden" name=(CSRF_FIELD) value=(token);
            input type="hidden" name="next" value=(next);
            div {
                label for="email" { "Email" }
                input #email type="email" name="email" value=(email) autocomplete="username" required autofocus;
            }
            div {
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required;
            }
            button type="submit" { "Log in" }
        }
        p { a href="/login/forgot" { "Forgot your password?" } }
    }
}

/// GET /login
pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
) -> Response {
    let next = safe_next(query.next.as_deref());
    let token = sessions::read_cookie(&headers, LOGIN_COOKIE)
        .unwrap_or_else(|| hex::encode(crate::accounts::random_bytes::<16>()));
    let notice = query.logged_out.map(|_| "You are logged out.");
    let body = login_form(&next, &token, "", None, notice);
    (
        [sessions::set_cookie(
            LOGIN_COOKIE,
            Some(&token),
            secure_cookies(&state),
        )],
        html_response(
            StatusCode::OK,
            card_page(branding::current(&state).await, "Log in", body),
        ),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    csrf_token: Option<String>,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

/// The page for a refused login (429) that says when to try again.
fn rate_limited(branding: Branding, limited: Limited) -> Response {
    let now = now_ms();
    let seconds = limited.retry_after_seconds(now);
    let minutes = (seconds + 59) / 60;
    let at = chrono::DateTime::from_timestamp_millis(limited.retry_at_ms)
        .map(|at| at.format("%H:%M UTC").to_string())
        .unwrap_or_default();
    let message = format!(
        "Too many failed login attempts for this account or from this address. Logins are \
         paused for your protection: try again in {minutes} minute{} (after {at}).",
        if minutes == 1 { "" } else { "s" }
    );
    let body = html! {
        p.notice.bad role="alert" { (message) }
        p { a href="/login" { "Back to the login page" } }
    };
    let mut response = html_response(
        StatusCode::TOO_MANY_REQUESTS,
        card_page(branding, "Too many attempts", body),
    );
    if let Ok(value) = seconds.to_string().parse() {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

/// POST /login
pub async fn login_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<LoginForm>,
) -> Response {
    let branding = branding::current(&state).await;
    let cookie = sessions::read_cookie(&headers, LOGIN_COOKIE);
    let token_ok = matches!((&cookie, &form.csrf_token), (Some(cookie), Some(sent)) if constant_time_eq(cookie.as_bytes(), sent.as_bytes()));
    if !token_ok {
        return csrf_refused().with_branding(branding).into_response();
    }
    let accounts = &state.settings.accounts;
    match rate_limit::check(&state.database, accounts, &form.email, address).await {
        Ok(Some(limited)) => return rate_limited(branding, limited),
        Ok(None) => {}
        Err(error) => return internal(error),
    }
    let user = match users::by_email(&state.database, &form.email).await {
        Ok(user) => user,
        Err(error) => return internal(error),
    };
    // Unknown accounts cost the same hash as known ones: timing does not tell them apart.
    let stored = user
        .as_ref()
        .map_or(password::decoy_hash(), |user| user.password_hash.as_str());
    let password_ok = password::verify_off_thread(&form.password, stored).await;
    let next = safe_next(form.next.as_deref());
    let user = match user {
        Some(user) if password_ok && user.is_active() => user,
        other => {
            if let Err(error) =
                rate_limit::record_failure(&state.database, accounts, &form.email, address).await
            {
                return internal(error);
            }
            let message = if other.is_some_and(|user| password_ok && !user.is_active()) {
                "This account is deactivated. Ask an admin if you need access again."
            } else {
                "The email or password is not right. Check both and try again."
            };
            let token = cookie.unwrap_or_default();
            let body = login_form(&next, &token, &form.email, Some(message), None);
            return html_response(
                StatusCode::UNAUTHORIZED,
                card_page(branding, "Log in", body),
            );
        }
    };
    let stage = if user.totp_confirmed {
        SessionStage::Code
    } else {
        SessionStage::Full
    };
    let (session_id, _) = match sessions::create(&state.database, &user.user_id, stage).await {
        Ok(created) => created,
        Err(error) => return internal(error),
    };
    let target = match stage {
        SessionStage::Code => format!("/login/code?{}", next_query(&next)),
        // First login (one-time password, no second factor yet): the operator extractor
        // sends the user through the password change and enrolment.
        SessionStage::Full if user.must_change_password => "/account/password".to_string(),
        SessionStage::Full => "/account/2fa".to_string(),
    };
    tracing::info!(user_id = user.user_id, "password accepted");
    (
        // Appended, not inserted: two cookies in one response.
        axum::response::AppendHeaders([
            sessions::set_cookie(
                sessions::COOKIE_NAME,
                Some(&session_id),
                secure_cookies(&state),
            ),
            sessions::set_cookie(LOGIN_COOKIE, None, secure_cookies(&state)),
        ]),
        Redirect::to(&target),
    )
        .into_response()
}

fn next_query(next: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish()
}

fn code_form(session: &SessionUser, next: &str, error: Option<&str>) -> Markup {
    html! {
        @if let Some(error) = error { p.notice.bad role="alert" { (error) } }
        p { "Enter the 6-digit code from your authenticator app for " strong { (session.user.email) } ", or one of your backup codes." }
        form method="post" action="/login/code" {
            input type="hidden" name=(CSRF_FIELD) value=(session.csrf_token);
            input type="hidden" name="next" value=(next);
            div {
                label for="code" { "Code" }
                input #code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" required autofocus;
            }
            button type="submit" { "Verify" }
        }
        form method="post" action="/login/cancel" {
            input type="hidden" name=(CSRF_FIELD) value=(session.csrf_token);
            button.button.secondary type="submit" { "Use another account" }
        }
    }
}

/// The session waiting for its second factor, or where to go instead.
async fn code_session(
    parts_headers: &HeaderMap,
    state: &AppState,
) -> Result<SessionUser, Response> {
    match any_session(parts_headers, state).await? {
        None => Err(Redirect::to("/login").into_response()),
        Some(session) if session.stage == SessionStage::Full => {
            Err(Redirect::to("/dashboard").into_response())
        }
        Some(session) => Ok(session),
    }
}

/// The session of the cookie, at whatever stage.
async fn any_session(
    parts_headers: &HeaderMap,
    state: &AppState,
) -> Result<Option<SessionUser>, Response> {
    let mut request = axum::http::Request::new(());
    *request.headers_mut() = parts_headers.clone();
    let (parts, ()) = request.into_parts();
    SessionUser::load(&parts, state)
        .await
        .map_err(IntoResponse::into_response)
}

/// A form post for a session, whatever its stage, must carry that session's CSRF token:
/// even a post that would do nothing is refused without it (a cross-site form must not
/// learn anything, nor clear a cookie).
#[allow(clippy::result_large_err)]
fn check_session_csrf(session: &SessionUser, sent: Option<&str>) -> Result<(), Response> {
    if sent.is_some_and(|sent| constant_time_eq(sent.as_bytes(), session.csrf_token.as_bytes())) {
        return Ok(());
    }
    Err(csrf_refused()
        .with_branding(session.branding.clone())
        .into_response())
}

/// GET /login/code
pub async fn code_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<NextQuery>,
) -> Response {
    let session = match code_session(&headers, &state).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    let next = safe_next(query.next.as_deref());
    let body = code_form(&session, &next, None);
    html_response(
        StatusCode::OK,
        card_page(session.branding.clone(), "Two-factor code", body),
    )
}

#[derive(Deserialize)]
pub struct CodeForm {
    csrf_token: Option<String>,
    #[serde(default)]
    code: String,
    next: Option<String>,
}

/// POST /login/code
pub async fn code_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    ClientAddress(address): ClientAddress,
    Form(form): Form<CodeForm>,
) -> Response {
    let session = match any_session(&headers, &state).await {
        Ok(Some(session)) => session,
        Ok(None) => return Redirect::to("/login").into_response(),
        Err(response) => return response,
    };
    if let Err(refused) = check_session_csrf(&session, form.csrf_token.as_deref()) {
        return refused;
    }
    if session.stage == SessionStage::Full {
        return Redirect::to("/dashboard").into_response();
    }
    let accounts = &state.settings.accounts;
    let user = &session.user;
    match rate_limit::check(&state.database, accounts, &user.email, address).await {
        Ok(Some(limited)) => return rate_limited(session.branding, limited),
        Ok(None) => {}
        Err(error) => return internal(error),
    }
    let accepted = match verify_second_factor(&state, user, &form.code).await {
        Ok(accepted) => accepted,
        Err(error) => return internal(error),
    };
    let next = safe_next(form.next.as_deref());
    if !accepted {
        if let Err(error) =
            rate_limit::record_failure(&state.database, accounts, &user.email, address).await
        {
            return internal(error);
        }
        let body = code_form(
            &session,
            &next,
            Some(
                "That code is not right (or was already used). Try the current code from your app.",
            ),
        );
        return html_response(
            StatusCode::UNAUTHORIZED,
            card_page(session.branding, "Two-factor code", body),
        );
    }
    // A fresh session id once fully logged in: an id seen before login is worth nothing.
    if let Err(error) = sessions::delete(&state.database, &session.session_hash).await {
        return internal(error);
    }
    let (session_id, _) =
        match sessions::create(&state.database, &user.user_id, SessionStage::Full).await {
            Ok(created) => created,
            Err(error) => return internal(error),
        };
    tracing::info!(user_id = user.user_id, "logged in");
    (
        [sessions::set_cookie(
            sessions::COOKIE_NAME,
            Some(&session_id),
            secure_cookies(&state),
        )],
        Redirect::to(&next),
    )
        .into_response()
}

/// A TOTP code (each step once) or an unused backup code.
async fn verify_second_factor(
    state: &AppState,
    user: &users::User,
    code: &str,
) -> Result<bool, sqlx::Error> {
    let Some(secret) = user
        .totp_secret
        .as_ref()
        .filter(|_| user.totp_confirmed)
        .and_then(|stored| stored.reveal(&user.user_id, state.settings_store.master_key()))
    else {
        return Ok(false);
    };
    let now = now_ms() / 1000;
    if let Some(step) = totp::matching_step(&secret, code, now, user.totp_last_step) {
        return users::use_totp_step(&state.database, &user.user_id, step).await;
    }
    let looks_like_backup = code.chars().filter(char::is_ascii_alphanumeric).count() == 10;
    if looks_like_backup {
        return users::use_backup_code(&state.database, &user.user_id, code).await;
    }
    Ok(false)
}

/// POST /login/cancel: abandon a half-done login.
pub async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Response {
    let session = match any_session(&headers, &state).await {
        Ok(session) => session,
        Err(response) => return response,
    };
    if let Some(session) = session {
        let sent = form.get(CSRF_FIELD).map(String::as_str);
        if let Err(refused) = check_session_csrf(&session, sent) {
            return refused;
        }
        if let Err(error) = sessions::delete(&state.database, &session.session_hash).await {
            return internal(error);
        }
    }
    (
        [sessions::set_cookie(
            sessions::COOKIE_NAME,
            None,
            secure_cookies(&state),
        )],
        Redirect::to("/login"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(
            safe_next(Some("/dashboard/payments?x=1")),
            "/dashboard/payments?x=1"
        );
        assert_eq!(safe_next(Some("//evil.example")), "/dashboard");
        assert_eq!(safe_next(Some("https://evil.example")), "/dashboard");
        assert_eq!(safe_next(Some("/\\evil.example")), "/dashboard");
        assert_eq!(safe_next(None), "/dashboard");
        assert_eq!(safe_next(Some("/\t/evil.example")), "/dashboard");
        assert_eq!(safe_next(Some("/\n/evil.example")), "/dashboard");
        assert_eq!(safe_next(Some("/%09/evil.example")), "/dashboard");
        assert_eq!(safe_next(Some("/%5Cevil.example")), "/dashboard");
    }
}
