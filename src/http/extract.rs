//! Extractors that answer in our error shape instead of axum's plain-text rejections.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::ApiError;

/// `Json<T>` whose rejection is `{"error": {"code", "message"}}`: 400 for a body that is
/// not JSON, 422 for JSON of the wrong shape (naming the field serde complained about).
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(JsonRejection::JsonDataError(error)) => Err(ApiError::Invalid(error.body_text())),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::BadRequest(
                "send the body as JSON with Content-Type: application/json".into(),
            )),
            Err(other) => Err(ApiError::BadRequest(other.body_text())),
        }
    }
}

/// An optional JSON body: none (or only white space) is `None`; anything else must be
/// JSON sent as `application/json`, with the same answers as [`ApiJson`] (400 for a body
/// that is not JSON or not sent as JSON, 422 for JSON of the wrong shape).
pub struct OptionalApiJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let bytes =
            axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
                .await
                .map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalApiJson(None));
        }
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        let ApiJson(value) = ApiJson::<Option<T>>::from_request(request, state).await?;
        Ok(OptionalApiJson(value))
    }
}

/// Checks an IANA time zone name such as `Europe/Paris`.
pub fn valid_time_zone(name: &str) -> Result<(), ApiError> {
    name.parse::<chrono_tz::Tz>().map(|_| ()).map_err(|_| {
        ApiError::Invalid(format!(
            "time_zone {name:?} is not an IANA time zone name such as Europe/Paris"
        ))
    })
}

/// Parses a lower-case ISO 4217 currency such as `eur`.
pub fn currency(code: &str) -> Result<latchkey_aggregates::Currency, ApiError> {
    latchkey_aggregates::Currency::parse(code).map_err(|_| {
        ApiError::Invalid(format!(
            "currency {code:?} is not a lower-case ISO 4217 code such as eur"
        ))
    })
}
