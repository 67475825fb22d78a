//! Stand-ins until the accounts extractor and the shared layout land: the caller as a
//! [`Principal`] (bearer token), a bare page shell, money formatting and an HTML error.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use crate::http::auth::{Permission, Principal};
use crate::http::{ApiError, AppState};

pub struct Operator {
    pub principal: Principal,
    pub csrf_token: String,
}

impl Operator {
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        self.principal.require(permission)
    }
    pub fn may(&self, permission: Permission) -> bool {
        self.principal.role.allows(permission)
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = HtmlError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, HtmlError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        Ok(Operator {
            principal,
            csrf_token: String::new(),
        })
    }
}

pub fn shell(op: &Operator, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                link rel="stylesheet" href="/static/dashboard.css";
                script src="/static/dashboard.js" defer {}
            }
            body {
                nav { a href="/dashboard" { "Dashboard" } " " (op.principal.actor_id) }
                main { (body) }
            }
        }
    }
}

pub struct HtmlError {
    pub status: StatusCode,
    pub message: String,
}

impl From<ApiError> for HtmlError {
    fn from(error: ApiError) -> Self {
        HtmlError {
            status: error.status(),
            message: error.to_string(),
        }
    }
}

impl IntoResponse for HtmlError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html! { (DOCTYPE) html { body { h1 { (self.status) } p { (self.message) } } } }
                .into_string(),
        )
            .into_response()
    }
}

pub fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    format!(
        "{sign}{}.{:02} {}",
        minor / 100,
        minor % 100,
        currency.to_ascii_uppercase()
    )
}
