//! `/account`: the operator's own password, "log out everywhere", backup codes left,
//! and their API tokens (create — shown once —, list, revoke).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::operator::{csrf_field, Operator, OperatorForm};
use super::secure_cookies;
use crate::accounts::{sessions, tokens, users};
use crate::http::{ApiError, AppState};
use crate::ui::dashboard::shell::shell;
use crate::ui::layout::{html_response, HtmlError};

fn internal(error: impl Into<anyhow::Error>) -> Response {
    HtmlError::from(ApiError::Internal(error.into())).into_response()
}

#[derive(Deserialize, Default)]
pub struct Saved {
    saved: Option<String>,
}

/// GET /account
pub async fn account_page(
    State(state): State<AppState>,
    op: Operator,
    Query(saved): Query<Saved>,
) -> Response {
    match render(&state, &op, saved.saved.as_deref(), None).await {
        Ok(markup) => html_response(StatusCode::OK, markup),
        Err(response) => response,
    }
}

async fn render(
    state: &AppState,
    op: &Operator,
    saved: Option<&str>,
    new_token: Option<(&str, &str)>,
) -> Result<Markup, Response> {
    let list = tokens::list_for_user(&state.database, &op.user_id)
        .await
        .map_err(internal)?;
    let codes_left = users::backup_codes_left(&state.database, &op.user_id)
        .await
        .map_err(internal)?;
    let notice = match saved {
        Some("password") => Some("Your password is changed."),
        Some("revoked") => Some("The token is revoked; calls with it now get 401."),
        _ => None,
    };
    Ok(shell(
        op,
        "Account",
        html! {
            h1 { "Your account" }
            @if let Some(notice) = notice { p.notice.good role="status" { (notice) } }
            section.card {
                h2 { "Signed in as" }
                p { strong { (op.email) } " · role " (op.role.as_str()) }
                p { "Two-factor login is on; " (codes_left) " of 10 backup codes left." }
            }
            section.card {
                h2 { "Password" }
                p { a href="/account/password" { "Change your password" } }
            }
            section.card {
                h2 { "Sessions" }
                p { "Log out on every browser and device where you are logged in, including this one "
                    "(for example after losing a laptop)." }
                form method="post" action="/account/logout-everywhere" {
                    (csrf_field(op))
                    button type="submit" { "Log out everywhere" }
                }
            }
            section.card #tokens {
                h2 { "API tokens" }
                p { "Tokens let scripts call the JSON API as you, with your role ("
                    (op.role.as_str()) "). Send them as " code { "Authorization: Bearer <token>" } "." }
                @if let Some((label, token)) = new_token {
                    div.notice.good role="status" {
                        p { "Token " strong { (label) } " created. Copy it now: " strong { "it is not shown again." } }
                        p { code.secret #new-token { (token) } }
                    }
                }
                form method="post" action="/account/tokens" {
                    (csrf_field(op))
                    div {
                        label for="label" { "Name (what will use it)" }
                        input #label type="text" name="label" maxlength="80" required placeholder="e.g. reporting script";
                    }
                    button type="submit" { "Create token" }
                }
                @if !list.is_empty() {
                    table.data {
                        thead { tr { th { "Name" } th { "Ends in" } th { "Created" } th { "State" } th { span.visually-hidden { "Action" } } } }
                        tbody {
                            @for token in &list {
                                tr {
                                    td { (token.label) }
                                    td { code { "…" (token.last4) } }
                                    td { (token.created_at) }
                                    td { @if token.revoked { "revoked" } @else { "active" } }
                                    td {
                                        @if !token.revoked && !token.token_id.is_empty() {
                                            form.inline method="post" action={ "/account/tokens/" (token.token_id) "/revoke" } {
                                                (csrf_field(op))
                                                button type="submit" aria-label={ "Revoke " (token.label) } { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// POST /account/logout-everywhere
pub async fn logout_everywhere(
    State(state): State<AppState>,
    form: OperatorForm<std::collections::HashMap<String, String>>,
) -> Response {
    let op = form.operator;
    if let Err(error) = sessions::delete_all_for_user(&state.database, &op.user_id).await {
        return internal(error);
    }
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

#[derive(Deserialize)]
pub struct NewToken {
    #[serde(default)]
    label: String,
}

/// POST /account/tokens: the new token is on this response only.
pub async fn create_token(State(state): State<AppState>, form: OperatorForm<NewToken>) -> Response {
    let op = form.operator;
    let label = form.form.label.trim().to_string();
    if label.is_empty() || label.chars().count() > 80 {
        return HtmlError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Please check your input",
            "Give the token a name of 1 to 80 characters.",
        )
        .with_branding(op.branding.clone())
        .into_response();
    }
    let user = match users::by_id(&state.database, &op.user_id).await {
        Ok(Some(user)) => user,
        Ok(None) => return Redirect::to("/login").into_response(),
        Err(error) => return internal(error),
    };
    let token = match tokens::create_for_user(&state.database, &user, &label).await {
        Ok(token) => token,
        Err(error) => return internal(error),
    };
    match render(&state, &op, None, Some((&label, &token))).await {
        Ok(markup) => html_response(StatusCode::CREATED, markup),
        Err(response) => response,
    }
}

/// POST /account/tokens/{token_id}/revoke
pub async fn revoke_token(
    State(state): State<AppState>,
    Path(token_id): Path<String>,
    form: OperatorForm<std::collections::HashMap<String, String>>,
) -> Response {
    let op = form.operator;
    match tokens::revoke(&state.database, &op.user_id, &token_id).await {
        Ok(true) => Redirect::to("/account?saved=revoked").into_response(),
        Ok(false) => HtmlError::not_found("No active token of yours has that id.")
            .with_branding(op.branding)
            .into_response(),
        Err(error) => internal(error),
    }
}
