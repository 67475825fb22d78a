//! Parsing the query parameters of the read API: every bad value is a 422 that names the
//! parameter, never a bare 400 from the extractor (handlers take each parameter as text).

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use chrono::{DateTime, NaiveDate, Utc};
use latchkey_projections::ProjectionError;
use serde::de::DeserializeOwned;

use super::ApiError;

/// Page size when the caller names none.
pub const DEFAULT_LIMIT: i64 = 50;

/// The largest page: bounds the work of one request and the size of its answer.
pub const MAX_LIMIT: i64 = 200;

/// The query string as `T`, or a JSON 400 (axum's own rejection is plain text). With
/// every field an `Option<String>`, only a malformed query string (a repeated parameter,
/// bad percent-encoding) gets here; values are checked by the functions below.
pub struct ReadQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ReadQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(ReadQuery(value)),
            Err(rejection) => Err(ApiError::BadRequest(format!(
                "the query string is malformed: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// `limit`: 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`].
pub fn limit(value: Option<&str>) -> Result<i64, ApiError> {
    let Some(value) = value else {
        return Ok(DEFAULT_LIMIT);
    };
    match value.parse::<i64>() {
        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(ApiError::Invalid(format!(
            "limit must be a whole number from 1 to {MAX_LIMIT}, not {value:?}"
        ))),
    }
}

/// A time filter: RFC 3339 (`2026-11-23T10:00:00Z`) or a date (`2026-11-23`, midnight UTC).
pub fn time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(value) = value else {
        return Ok(None);
    };
    if let Ok(time) = DateTime::parse_from_rfc3339(value) {
        return Ok(Some(time.with_timezone(&Utc)));
    }
    if let Ok(day) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).map(|midnight| midnight.and_utc()));
    }
    Err(ApiError::Invalid(format!(
        "{name} must be an RFC 3339 time such as 2026-11-23T10:00:00Z or a date such as \
         2026-11-23, not {value:?}"
    )))
}

/// A calendar date `YYYY-MM-DD`.
pub fn date(name: &str, value: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| {
        ApiError::Invalid(format!(
            "{name} must be a date such as 2026-11-23, not {value:?}"
        ))
    })
}

/// One of a fixed set of words.
pub fn one_of(
    name: &str,
    value: Option<&str>,
    allowed: &[&str],
) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some(value) if allowed.contains(&value) => Ok(Some(value.to_owned())),
        Some(value) => Err(ApiError::Invalid(format!(
            "{name} must be one of {}, not {value:?}",
            allowed.join(", ")
        ))),
    }
}

/// A non-empty free-text filter.
pub fn text(name: &str, value: Option<&str>) -> Result<Option<String>, ApiError> {
    match value {
        None => Ok(None),
        Some("") => Err(ApiError::Invalid(format!("{name} must not be empty"))),
        Some(value) => Ok(Some(value.to_owned())),
    }
}

/// Opaque cursors: the parts of a keyset position, hex-encoded so clients treat them
/// as tokens rather than build them.
pub fn encode_cursor(parts: &[&str]) -> String {
    hex::encode(parts.join("\n"))
}

pub fn decode_cursor(value: &str, parts: usize) -> Result<Vec<String>, ApiError> {
    let invalid = || ApiError::Invalid("cursor is not one this API returned".to_owned());
    let bytes = hex::decode(value).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let fields: Vec<String> = text.split('\n').map(str::to_owned).collect();
    if fields.len() != parts {
        return Err(invalid());
    }
    Ok(fields)
}

/// A failure reading a projection: logged, answered 500.
pub fn internal(error: impl Into<anyhow::Error>) -> ApiError {
    ApiError::Internal(error.into())
}

impl From<ProjectionError> for ApiError {
    fn from(error: ProjectionError) -> Self {
        internal(error)
    }
}
