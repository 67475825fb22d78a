//! `/settings` (admin): guest-page branding and the Stripe, TTLock and Shelly
//! credentials, each section with its own Save and (for integrations) **Test connection**.
//! Secrets are never shown again after saving, only their last four characters; values
//! set in the environment win and show as such.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::operator::{csrf_field, Operator, OperatorForm};
use crate::http::auth::Permission;
use crate::http::{ApiError, AppState};
use crate::settings_store::{self, ConnectionReport, Group, SaveError, StoredSetting, FIELDS};
use crate::ui::dashboard::shell::shell;
use crate::ui::layout::{html_response, HtmlError};

fn internal(error: impl Into<anyhow::Error>) -> Response {
    HtmlError::from(ApiError::Internal(error.into())).into_response()
}

const GROUPS: [(Group, &str, &str); 4] = [
    (Group::Branding, "branding", "Guest page branding"),
    (Group::Stripe, "stripe", "Stripe"),
    (Group::Ttlock, "ttlock", "TTLock"),
    (Group::Shelly, "shelly", "Shelly Cloud"),
];

fn group_by_slug(slug: &str) -> Option<(Group, &'static str, &'static str)> {
    GROUPS.iter().copied().find(|(_, s, _)| *s == slug)
}

#[derive(Deserialize, Default)]
pub struct Saved {
    saved: Option<String>,
    cleared: Option<String>,
}

/// What to show above a section after an action.
struct Outcome {
    group: Group,
    good: bool,
    message: String,
}

/// GET /settings
pub async fn settings_page(
    State(state): State<AppState>,
    op: Operator,
    Query(saved): Query<Saved>,
) -> Response {
    if let Err(error) = op.require(Permission::Administer) {
        return error.into_response();
    }
    let outcome = saved
        .saved
        .as_deref()
        .and_then(group_by_slug)
        .map(|(group, _, title)| Outcome {
            group,
            good: true,
            message: format!("{title} settings saved; they apply now."),
        })
        .or_else(|| {
            saved
                .cleared
                .as_deref()
                .and_then(settings_store::field)
                .map(|field| Outcome {
                    group: field.group,
                    good: true,
                    message: format!("{} removed from the stored settings.", field.label),
                })
        });
    render(&state, &op, outcome, StatusCode::OK).await
}

async fn render(
    state: &AppState,
    op: &Operator,
    outcome: Option<Outcome>,
    status: StatusCode,
) -> Response {
    let stored = match state.settings_store.stored().await {
        Ok(stored) => stored,
        Err(error) => return internal(error),
    };
    let stored: HashMap<&str, &StoredSetting> =
        stored.iter().map(|row| (row.name.as_str(), row)).collect();
    let store = &state.settings_store;
    let master_key = store.master_key().map(|key| key.id().to_string());
    let body = html! {
        h1 { "Settings" }
        @match &master_key {
            Some(id) => p.muted { "Secrets are encrypted at rest with LATCHKEY_MASTER_KEY (key " code { (id) } "). After saving, only their last four characters are shown." },
            None => div.notice.bad role="alert" {
                p { strong { "Secrets cannot be saved here yet: LATCHKEY_MASTER_KEY is not set." } }
                p { "Generate a key with " code { "openssl rand -base64 32" } ", set it as LATCHKEY_MASTER_KEY in the server's environment, keep a copy somewhere safe (stored secrets cannot be read without it) and restart. Until then, secrets can only come from environment variables; non-secret settings can be saved." }
            },
        }
        @for (group, slug, title) in GROUPS {
            section.card id=(slug) {
                h2 { (title) }
                @if let Some(outcome) = outcome.as_ref().filter(|outcome| outcome.group == group) {
                    p.notice.good[outcome.good].bad[!outcome.good] role="status" { (outcome.message) }
                }
                form method="post" action={ "/settings/" (slug) } {
                    (csrf_field(op))
                    @for field in FIELDS.iter().filter(|field| field.group == group) {
                        (field_row(store, field, stored.get(field.name).copied()))
                    }
                    button type="submit" { "Save " (title) " settings" }
                }
                @if group != Group::Branding {
                    form.inline method="post" action={ "/settings/" (slug) "/test" } {
                        (csrf_field(op))
                        button.button.secondary type="submit" { "Test connection" }
                    }
                }
                @let removable: Vec<_> = FIELDS.iter().filter(|field| field.group == group && stored.contains_key(field.name)).collect();
                @if !removable.is_empty() {
                    details {
                        summary { "Remove a stored value" }
                        @for field in removable {
                            form.inline method="post" action="/settings/clear" {
                                (csrf_field(op))
                                input type="hidden" name="name" value=(field.name);
                                button type="submit" aria-label={ "Remove stored " (field.label) } { "Remove " (field.label) }
                            }
                        }
                    }
                }
            }
        }
    };
    html_response(status, shell(op, "Settings", body))
}

fn field_row(
    store: &settings_store::SettingsStore,
    field: &settings_store::Field,
    stored: Option<&StoredSetting>,
) -> Markup {
    let id = field.name.to_ascii_lowercase();
    let from_env = store.environment_display(field.name);
    html! {
        div.field {
            label for=(id) { (field.label) }
            @if let Some(value) = &from_env {
                input id=(id) type="text" value=(value) disabled aria-describedby={ (id) "-hint" };
                p.muted id={ (id) "-hint" } { "Set by the environment variable " code { (field.name) } ", which wins over this page." }
            } @else if field.secret {
                input id=(id) type="password" name=(field.name) autocomplete="off" placeholder=(stored.and_then(|row| row.last4.as_deref()).map(|tail| format!("stored, ends in …{tail}; leave empty to keep")).unwrap_or_default()) aria-describedby={ (id) "-hint" };
                p.muted id={ (id) "-hint" } {
                    @if let Some(row) = stored {
                        "Stored (ends in " code.last4 { "…" (row.last4.clone().unwrap_or_default()) } "), saved by " (row.updated_by) ". "
                        @if let Some(problem) = &row.problem { strong.field-error { (problem) } " " }
                    }
                    (field.hint)
                }
            } @else {
                input id=(id) type="text" name=(field.name) value=(stored.and_then(|row| row.value.clone()).unwrap_or_default()) aria-describedby={ (id) "-hint" };
                p.muted id={ (id) "-hint" } { (field.hint) }
            }
        }
    }
}

/// POST /settings/{group}: saves the non-empty fields of one section, then swaps the
/// integration clients so the new values apply at once.
pub async fn save(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    form: OperatorForm<HashMap<String, String>>,
) -> Response {
    let op = form.operator;
    if let Err(error) = op.require(Permission::Administer) {
        return error.into_response();
    }
    let Some((group, slug, _)) = group_by_slug(&slug) else {
        return HtmlError::not_found("There is no such settings section.")
            .with_branding(op.branding)
            .into_response();
    };
    let changes: Vec<(String, String)> = FIELDS
        .iter()
        .filter(|field| field.group == group)
        .filter_map(|field| {
            form.form
                .get(field.name)
                .map(|value| (field.name.to_string(), value.clone()))
        })
        .collect();
    match state
        .settings_store
        .save(&changes, &op.principal.actor_id)
        .await
    {
        Ok(()) => {}
        Err(SaveError::Internal(error)) => return internal(error),
        Err(error) => {
            let outcome = Outcome {
                group,
                good: false,
                message: format!("Not saved: {error}"),
            };
            return render(&state, &op, Some(outcome), StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    }
    if let Err(error) = settings_store::apply(&state) {
        let outcome = Outcome {
            group,
            good: false,
            message: format!("Saved, but the clients could not be rebuilt: {error}"),
        };
        return render(&state, &op, Some(outcome), StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    Redirect::to(&format!("/settings?saved={slug}#{slug}")).into_response()
}

#[derive(Deserialize)]
pub struct ClearForm {
    #[serde(default)]
    name: String,
}

/// POST /settings/clear: forgets one stored value.
pub async fn clear(State(state): State<AppState>, form: OperatorForm<ClearForm>) -> Response {
    let op = form.operator;
    if let Err(error) = op.require(Permission::Administer) {
        return error.into_response();
    }
    match state
        .settings_store
        .clear(&form.form.name, &op.principal.actor_id)
        .await
    {
        Ok(()) => {}
        Err(SaveError::Internal(error)) => return internal(error),
        Err(error) => {
            return HtmlError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Please check your input",
                error.to_string(),
            )
            .with_branding(op.branding)
            .into_response()
        }
    }
    if let Err(error) = settings_store::apply(&state) {
        return internal(error);
    }
    Redirect::to(&format!("/settings?cleared={}", form.form.name)).into_response()
}

/// POST /settings/{group}/test: one real call through the client in use now.
pub async fn test(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    form: OperatorForm<HashMap<String, String>>,
) -> Response {
    let op = form.operator;
    if let Err(error) = op.require(Permission::Administer) {
        return error.into_response();
    }
    let Some((group, ..)) = group_by_slug(&slug).filter(|(group, ..)| *group != Group::Branding)
    else {
        return HtmlError::not_found("There is no such connection to test.")
            .with_branding(op.branding)
            .into_response();
    };
    let report = match group {
        Group::Stripe => settings_store::test_stripe(&state).await,
        Group::Ttlock => settings_store::test_ttlock(&state).await,
        Group::Shelly | Group::Branding => settings_store::test_shelly(&state).await,
    };
    let ConnectionReport { ok, message } = report;
    tracing::info!(module = slug, ok, "connection test");
    render(
        &state,
        &op,
        Some(Outcome {
            group,
            good: ok,
            message,
        }),
        StatusCode::OK,
    )
    .await
}
