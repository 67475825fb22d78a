//! Who is using the dashboard: the [`Operator`] extractor every operator page takes, the
//! [`OperatorForm`] extractor every operator form POST takes (it checks the CSRF token),
//! and [`csrf_field`] for the hidden input those forms carry.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::de::DeserializeOwned;

use crate::accounts::{sessions, users, SessionStage, User};
use crate::http::auth::{constant_time_eq, Permission, Principal, Role};
use crate::http::AppState;
use crate::ui::branding::{self, Branding};
use crate::ui::layout::HtmlError;

/// The name of the hidden form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";

/// A logged-in, fully enrolled operator (any role). Not logged in → 303 to
/// `/login?next=…`; password still one-time → `/account/password`; no second factor
/// yet → `/account/2fa`.
#[derive(Clone, Debug)]
pub struct Operator {
    pub user_id: String,
    pub email: String,
    pub role: Role,
    /// The same identity as the JSON API sees it (for commands' metadata, audit).
    pub principal: Principal,
    /// This session's CSRF token, for forms ([`csrf_field`]) and `X-CSRF-Token`.
    pub csrf_token: String,
    /// The operator's branding, for the page shell.
    pub branding: Branding,
    /// The stored session, for logout.
    pub(crate) session_hash: String,
}

impl Operator {
    /// A 403 page unless this operator's role allows `permission`.
    // HtmlError is the pages' error by design; the Err path is rare and not hot.
    #[allow(clippy::result_large_err)]
    pub fn require(&self, permission: Permission) -> Result<(), HtmlError> {
        self.principal.require(permission).map_err(|error| {
            HtmlError::new(StatusCode::FORBIDDEN, "Not allowed", error.to_string())
                .with_branding(self.branding.clone())
        })
    }

    /// A 403 page unless `submitted` is this session's CSRF token.
    #[allow(clippy::result_large_err)]
    pub fn check_csrf(&self, submitted: Option<&str>) -> Result<(), HtmlError> {
        match submitted {
            Some(token) if constant_time_eq(token.as_bytes(), self.csrf_token.as_bytes()) => Ok(()),
            _ => Err(csrf_refused().with_branding(self.branding.clone())),
        }
    }
}

/// The 403 page for a form without (or with a wrong) CSRF token.
pub fn csrf_refused() -> HtmlError {
    HtmlError::new(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form did not come from your current session (or it has expired). Go back, \
         reload the page and submit it again.",
    )
}

/// The hidden input every operator form must carry.
pub fn csrf_field(operator: &Operator) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(operator.csrf_token); }
}

/// A logged-in session with its user, whatever their enrolment (the enrolment pages).
#[derive(Clone, Debug)]
pub struct SessionUser {
    pub user: User,
    pub csrf_token: String,
    pub session_hash: String,
    pub stage: SessionStage,
    pub branding: Branding,
}

/// Where to send a request that is not (fully) logged in.
pub(crate) fn login_redirect(parts: &Parts) -> Response {
    let next = parts
        .uri
        .path_and_query()
        .map(|path| path.as_str())
        .unwrap_or("/dashboard");
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("next", next)
        .finish();
    Redirect::to(&format!("/login?{query}")).into_response()
}

impl SessionUser {
    /// The active user of this request's session, at any stage; `None` without one.
    pub async fn load(parts: &Parts, state: &AppState) -> Result<Option<SessionUser>, HtmlError> {
        let Some(cookie) = sessions::cookie_value(&parts.headers) else {
            return Ok(None);
        };
        let internal =
            |error: sqlx::Error| HtmlError::from(crate::http::ApiError::Internal(error.into()));
        let Some(login) = sessions::lookup(&state.database, &state.settings.accounts, &cookie)
            .await
            .map_err(internal)?
        else {
            return Ok(None);
        };
        let user = users::by_id(&state.database, &login.user_id)
            .await
            .map_err(internal)?;
        let Some(user) = user.filter(User::is_active) else {
            sessions::delete(&state.database, &login.session_hash)
                .await
                .map_err(internal)?;
            return Ok(None);
        };
        Ok(Some(SessionUser {
            user,
            csrf_token: login.csrf_token,
            session_hash: login.session_hash,
            stage: login.stage,
            branding: branding::current(state).await,
        }))
    }
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let session = SessionUser::load(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Some(session) = session else {
            return Err(login_redirect(parts));
        };
        if session.stage == SessionStage::Code {
            return Err(Redirect::to("/login/code").into_response());
        }
        if session.user.must_change_password {
            return Err(Redirect::to("/account/password").into_response());
        }
        if !session.user.totp_confirmed {
            return Err(Redirect::to("/account/2fa").into_response());
        }
        Ok(Operator {
            principal: Principal::of_user(&session.user),
            user_id: session.user.user_id,
            email: session.user.email,
            role: session.user.role,
            csrf_token: session.csrf_token,
            branding: session.branding,
            session_hash: session.session_hash,
        })
    }
}

/// A form POST from a logged-in operator whose `csrf_token` field matches the session:
/// missing or wrong → 403 page. `T` is the rest of the form (unknown fields, such as the
/// token itself, are ignored by serde).
pub struct OperatorForm<T> {
    pub operator: Operator,
    pub form: T,
}

#[derive(serde::Deserialize)]
struct CsrfOnly {
    csrf_token: Option<String>,
}

impl<T: DeserializeOwned + Send> FromRequest<AppState> for OperatorForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let operator = Operator::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, 1024 * 1024)
            .await
            .map_err(|_| bad_form("the form is too large").into_response())?;
        let csrf: CsrfOnly =
            serde_urlencoded::from_bytes(&bytes).unwrap_or(CsrfOnly { csrf_token: None });
        operator
            .check_csrf(csrf.csrf_token.as_deref())
            .map_err(IntoResponse::into_response)?;
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|error| {
            bad_form(&error.to_string())
                .with_branding(operator.branding.clone())
                .into_response()
        })?;
        Ok(OperatorForm { operator, form })
    }
}

/// A 400 page for a form that does not parse.
pub fn bad_form(reason: &str) -> HtmlError {
    HtmlError::new(
        StatusCode::BAD_REQUEST,
        "Please check your input",
        format!("The form could not be read: {reason}."),
    )
}
