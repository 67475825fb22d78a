//! Account pages (issue 9): login with password then second factor, first-login password
//! change and TOTP enrolment, the account page (password, sessions, API tokens), and the
//! admin's users and settings pages. [`operator::Operator`] is the extractor every
//! operator page takes.

pub mod enrol;
pub mod login;
pub mod operator;
pub mod profile;
pub mod reset;
pub mod settings_page;
pub mod users_page;

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::accounts::sessions;
use crate::http::AppState;

pub use operator::{csrf_field, Operator, OperatorForm};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login::login_page).post(login::login_submit))
        .route(
            "/login/code",
            get(login::code_page).post(login::code_submit),
        )
        .route("/login/cancel", post(login::cancel))
        .route(
            "/login/forgot",
            get(reset::forgot_page).post(reset::forgot_submit),
        )
        .route(
            "/login/reset/{token}",
            get(reset::reset_page).post(reset::reset_submit),
        )
        .route("/logout", post(logout))
        .route(
            "/account/password",
            get(enrol::password_page).post(enrol::password_submit),
        )
        .route(
            "/account/2fa",
            get(enrol::enrol_page).post(enrol::enrol_submit),
        )
        .route("/account", get(profile::account_page))
        .route(
            "/account/logout-everywhere",
            post(profile::logout_everywhere),
        )
        .route("/account/tokens", post(profile::create_token))
        .route(
            "/account/tokens/{token_id}/revoke",
            post(profile::revoke_token),
        )
        .route(
            "/users",
            get(users_page::users_page).post(users_page::create),
        )
        .route("/users/{user_id}/role", post(users_page::change_role))
        .route("/users/{user_id}/deactivate", post(users_page::deactivate))
        .route("/users/{user_id}/reactivate", post(users_page::reactivate))
        .route("/users/{user_id}/reset-2fa", post(users_page::reset_2fa))
        .route(
            "/users/{user_id}/reset-password",
            post(users_page::reset_password),
        )
        .route("/settings", get(settings_page::settings_page))
        .route("/settings/clear", post(settings_page::clear))
        .route("/settings/{group}", post(settings_page::save))
        .route("/settings/{group}/test", post(settings_page::test))
}

/// Whether cookies must be `Secure`: the public URL is https.
pub(crate) fn secure_cookies(state: &AppState) -> bool {
    state.settings.public_url.scheme() == "https"
}

/// Ends this session and clears the cookie.
async fn logout(
    State(state): State<AppState>,
    form: OperatorForm<std::collections::HashMap<String, String>>,
) -> Response {
    if let Err(error) = sessions::delete(&state.database, &form.operator.session_hash).await {
        return crate::ui::layout::HtmlError::from(crate::http::ApiError::Internal(error.into()))
            .into_response();
    }
    tracing::info!(user_id = form.operator.user_id, "logged out");
    (
        [sessions::set_cookie(
            sessions::COOKIE_NAME,
            None,
            secure_cookies(&state),
        )],
        Redirect::to("/login?logged_out=1"),
    )
        .into_response()
}
