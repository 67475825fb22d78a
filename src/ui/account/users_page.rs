//! `/users` (admin): create users (a one-time password, shown once), change roles,
//! deactivate and reactivate, reset two-factor, reset a password.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::operator::{csrf_field, Operator, OperatorForm};
use crate::accounts::password;
use crate::accounts::users::{self, CreateUserError, User};
use crate::http::auth::{Permission, Role};
use crate::http::{ApiError, AppState};
use crate::ui::dashboard::shell::shell;
use crate::ui::layout::{html_response, HtmlError};

type EmptyForm = std::collections::HashMap<String, String>;

fn internal(error: impl Into<anyhow::Error>) -> Response {
    HtmlError::from(ApiError::Internal(error.into())).into_response()
}

#[derive(Deserialize, Default)]
pub struct Done {
    done: Option<String>,
}

/// GET /users
pub async fn users_page(
    State(state): State<AppState>,
    op: Operator,
    Query(done): Query<Done>,
) -> Response {
    if let Err(error) = op.require(Permission::Administer) {
        return error.into_response();
    }
    let notice = done.done.as_deref().map(|done| match done {
        "role" => "Role changed.",
        "deactivated" => {
            "User deactivated: their sessions ended and their API tokens stopped working."
        }
        "reactivated" => "User reactivated.",
        "2fa" => "Two-factor reset: they set it up again at their next login.",
        _ => "Saved.",
    });
    render(
        &state,
        &op,
        notice.map(|n| (true, n.to_string())),
        None,
        StatusCode::OK,
    )
    .await
}

async fn render(
    state: &AppState,
    op: &Operator,
    notice: Option<(bool, String)>,
    one_time: Option<(&str, &str)>,
    status: StatusCode,
) -> Response {
    let list = match users::list(&state.database).await {
        Ok(list) => list,
        Err(error) => return internal(error),
    };
    html_response(
        status,
        shell(op, "Users", body(op, &list, notice, one_time)),
    )
}

fn role_options(current: Option<Role>) -> Markup {
    html! {
        @for role in [Role::Auditor, Role::Operator, Role::Admin] {
            option value=(role.as_str()) selected[current == Some(role)] { (role.as_str()) }
        }
    }
}

fn body(
    op: &Operator,
    list: &[User],
    notice: Option<(bool, String)>,
    one_time: Option<(&str, &str)>,
) -> Markup {
    html! {
        h1 { "Users" }
        @if let Some((good, text)) = notice {
            p.notice.good[good].bad[!good] role="status" { (text) }
        }
        @if let Some((email, password)) = one_time {
            div.notice.good role="status" {
                p { "One-time password for " strong { (email) } ". Hand it over safely; " strong { "it is not shown again." }
                    " At first login they choose their own password and set up two-factor." }
                p { code.secret #one-time-password { (password) } }
            }
        }
        section.card {
            h2 { "Add a user" }
            form method="post" action="/users" {
                (csrf_field(op))
                div { label for="email" { "Email" } input #email type="email" name="email" required; }
                div { label for="role" { "Role" } select #role name="role" { (role_options(Some(Role::Operator))) } }
                p.muted { "Auditors read everything; operators also run doors, devices and sessions; admins also refund and manage settings and users." }
                button type="submit" { "Create user" }
            }
        }
        section.card {
            h2 { "All users" }
            table.data {
                thead { tr { th { "Email" } th { "Role" } th { "State" } th { "Two-factor" } th { "Actions" } } }
                tbody {
                    @for user in list {
                        tr {
                            td { (user.email) }
                            td {
                                form.inline method="post" action={ "/users/" (user.user_id) "/role" } {
                                    (csrf_field(op))
                                    label.visually-hidden for={ "role-" (user.user_id) } { "Role of " (user.email) }
                                    select id={ "role-" (user.user_id) } name="role" { (role_options(Some(user.role))) }
                                    button type="submit" { "Change" }
                                }
                            }
                            td { @if user.is_active() { "active" } @else { "deactivated" } }
                            td { @if user.totp_confirmed { "on" } @else { "not set up" } }
                            td {
                                @if user.user_id != op.user_id {
                                    @if user.is_active() {
                                        (action(op, user, "deactivate", "Deactivate"))
                                    } @else {
                                        (action(op, user, "reactivate", "Reactivate"))
                                    }
                                    (action(op, user, "reset-2fa", "Reset 2FA"))
                                    (action(op, user, "reset-password", "New one-time password"))
                                } @else {
                                    span.muted { "you" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn action(op: &Operator, user: &User, path: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action={ "/users/" (user.user_id) "/" (path) } {
            (csrf_field(op))
            button type="submit" aria-label={ (label) " " (user.email) } { (label) }
        }
    }
}

#[derive(Deserialize)]
pub struct NewUser {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

/// POST /users: creates the user with a one-time password shown on this response only.
pub async fn create(State(state): State<AppState>, form: OperatorForm<NewUser>) -> Response {
    let op = form.operator;
    if let Err(error) = op.require(Permission::Administer) {
        return error.into_response();
    }
    let Some(role) = Role::parse(&form.form.role) else {
        return render(
            &state,
            &op,
            Some((false, "Choose admin, operator or auditor.".into())),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    };
    let one_time = password::one_time();
    let hash = match password::hash(&one_time) {
        Ok(hash) => hash,
        Err(error) => return internal(error),
    };
    match users::create(&state.database, &form.form.email, role, &hash, true).await {
        Ok(user) => {
            tracing::info!(
                user_id = user.user_id,
                by = op.email,
                "user created on the users page"
            );
            render(
                &state,
                &op,
                None,
                Some((&user.email, &one_time)),
                StatusCode::CREATED,
            )
            .await
        }
        Err(CreateUserError::Store(error)) => internal(error),
        Err(error) => {
            render(
                &state,
                &op,
                Some((false, format!("Not created: {error}."))),
                None,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

/// The target user of a `/users/{id}/…` action, refusing actions on oneself.
async fn target(state: &AppState, op: &Operator, user_id: &str) -> Result<User, Response> {
    op.require(Permission::Administer)
        .map_err(IntoResponse::into_response)?;
    let user = users::by_id(&state.database, user_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| {
            HtmlError::not_found("There is no such user.")
                .with_branding(op.branding.clone())
                .into_response()
        })?;
    if user.user_id == op.user_id {
        return Err(HtmlError::new(
            StatusCode::CONFLICT,
            "Not on yourself",
            "Use your account page for your own password and sessions; another admin changes your role or access.",
        )
        .with_branding(op.branding.clone())
        .into_response());
    }
    Ok(user)
}

/// Refuses to remove the last active admin (nobody could manage users afterwards).
async fn keep_an_admin(state: &AppState, op: &Operator, user: &User) -> Result<(), Response> {
    if user.role == Role::Admin && user.is_active() {
        let admins = users::active_admins(&state.database)
            .await
            .map_err(internal)?;
        if admins <= 1 {
            return Err(HtmlError::new(
                StatusCode::CONFLICT,
                "Last admin",
                "This is the last active admin; make someone else admin first.",
            )
            .with_branding(op.branding.clone())
            .into_response());
        }
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

/// A user action's answer: back to the list with a note, or the error page.
type ActionResult = Result<Response, Response>;

/// Back to the list with `done` as the note, once the store has done its part.
fn done<E: Into<anyhow::Error>>(result: Result<(), E>, done: &str) -> Response {
    match result {
        Ok(()) => Redirect::to(&format!("/users?done={done}")).into_response(),
        Err(error) => internal(error),
    }
}

/// POST /users/{id}/role
pub async fn change_role(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    form: OperatorForm<RoleForm>,
) -> ActionResult {
    let op = form.operator;
    let user = target(&state, &op, &user_id).await?;
    let Some(role) = Role::parse(&form.form.role) else {
        return Err(render(
            &state,
            &op,
            Some((false, "Choose admin, operator or auditor.".into())),
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await);
    };
    if role != Role::Admin {
        keep_an_admin(&state, &op, &user).await?;
    }
    Ok(done(
        users::set_role(&state.database, &user.user_id, role).await,
        "role",
    ))
}

/// POST /users/{id}/deactivate
pub async fn deactivate(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    form: OperatorForm<EmptyForm>,
) -> ActionResult {
    let user = target(&state, &form.operator, &user_id).await?;
    keep_an_admin(&state, &form.operator, &user).await?;
    Ok(done(
        users::deactivate(&state.database, &user.user_id).await,
        "deactivated",
    ))
}

/// POST /users/{id}/reactivate
pub async fn reactivate(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    form: OperatorForm<EmptyForm>,
) -> ActionResult {
    let user = target(&state, &form.operator, &user_id).await?;
    Ok(done(
        users::reactivate(&state.database, &user.user_id).await,
        "reactivated",
    ))
}

/// POST /users/{id}/reset-2fa
pub async fn reset_2fa(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    form: OperatorForm<EmptyForm>,
) -> ActionResult {
    let user = target(&state, &form.operator, &user_id).await?;
    Ok(done(
        users::reset_totp(&state.database, &user.user_id).await,
        "2fa",
    ))
}

/// POST /users/{id}/reset-password: a new one-time password, shown once; sessions and
/// API tokens end.
pub async fn reset_password(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    form: OperatorForm<EmptyForm>,
) -> ActionResult {
    let op = form.operator;
    let user = target(&state, &op, &user_id).await?;
    let one_time = password::one_time();
    let hash = password::hash_off_thread(&one_time)
        .await
        .map_err(internal)?;
    users::reset_password(&state.database, &user.user_id, &hash)
        .await
        .map_err(internal)?;
    Ok(render(
        &state,
        &op,
        None,
        Some((&user.email, &one_time)),
        StatusCode::OK,
    )
    .await)
}
