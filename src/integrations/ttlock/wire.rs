//! JSON shapes TTLock answers with, and the one rule for reading any answer:
//! success iff `errcode` is absent or 0, whatever the HTTP status says.
//!
//! Numbers are read leniently (TTLock's own list example returns `"keyboardPwdType": "3"`),
//! and unknown fields are ignored, because the vendor adds fields without notice.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::error::TtlockError;

/// `POST /oauth2/token` answer (password and refresh grants).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(deserialize_with = "lenient_i64")]
    pub expires_in: i64,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub uid: Option<i64>,
}

/// One page of `GET /v3/lock/list`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockListPage {
    #[serde(default)]
    pub list: Vec<LockItem>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub pages: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockItem {
    #[serde(deserialize_with = "lenient_i64")]
    pub lock_id: i64,
    #[serde(default)]
    pub lock_name: Option<String>,
    #[serde(default)]
    pub lock_alias: Option<String>,
    #[serde(default)]
    pub lock_mac: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub electric_quantity: Option<i64>,
    #[serde(default)]
    pub feature_value: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub has_gateway: Option<i64>,
}

/// `POST /v3/keyboardPwd/get` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RandomPasscodeResponse {
    #[serde(deserialize_with = "lenient_string")]
    pub keyboard_pwd: String,
    #[serde(deserialize_with = "lenient_i64")]
    pub keyboard_pwd_id: i64,
}

/// `POST /v3/keyboardPwd/add` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomPasscodeResponse {
    #[serde(deserialize_with = "lenient_i64")]
    pub keyboard_pwd_id: i64,
}

/// One page of `GET /v3/lock/listKeyboardPwd`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasscodeListPage {
    #[serde(default)]
    pub list: Vec<PasscodeItem>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub pages: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasscodeItem {
    #[serde(deserialize_with = "lenient_i64")]
    pub keyboard_pwd_id: i64,
    #[serde(default, deserialize_with = "lenient_opt_string")]
    pub keyboard_pwd: Option<String>,
    #[serde(default)]
    pub keyboard_pwd_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub keyboard_pwd_type: Option<i64>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub start_date: Option<i64>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub end_date: Option<i64>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub is_custom: Option<i64>,
}

/// `GET /v3/lock/getPassageModeConfiguration` answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassageModeResponse {
    #[serde(deserialize_with = "lenient_i64")]
    pub passage_mode: i64,
    #[serde(default)]
    pub cyclic_config: Vec<PassagePeriodItem>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub auto_unlock: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassagePeriodItem {
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub is_all_day: Option<i64>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub start_time: Option<i64>,
    #[serde(default, deserialize_with = "lenient_opt_i64")]
    pub end_time: Option<i64>,
    #[serde(default)]
    pub week_days: Vec<i64>,
}

/// Turns a response body into `Ok(json)` or the typed error it carries.
///
/// Order matters: an `errcode` wins over the HTTP status (TTLock uses 200 for errors, and
/// we do not know what status OAuth errors use), then a non-2xx status is an error.
pub fn check_body(status: u16, body: &str) -> Result<Value, TtlockError> {
    let parsed: Result<Value, _> = serde_json::from_str(body);
    let value = match parsed {
        Ok(value) => value,
        Err(_) if status >= 500 => {
            return Err(TtlockError::Server {
                detail: format!("HTTP {status}"),
            })
        }
        Err(error) => {
            return Err(TtlockError::UnexpectedResponse {
                message: format!(
                    "HTTP {status}, body is not JSON ({error}): {}",
                    excerpt(body)
                ),
            })
        }
    };
    if let Some(errcode) = value.get("errcode").and_then(value_as_i64) {
        if errcode != 0 {
            let errmsg = value
                .get("errmsg")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            return Err(TtlockError::from_errcode(errcode, errmsg));
        }
    }
    match status {
        200..=299 => Ok(value),
        500.. => Err(TtlockError::Server {
            detail: format!("HTTP {status}"),
        }),
        _ => Err(TtlockError::UnexpectedResponse {
            message: format!("HTTP {status}: {}", excerpt(body)),
        }),
    }
}

/// Deserialises a checked body into the expected shape.
pub fn decode<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, TtlockError> {
    serde_json::from_value(value).map_err(|error| TtlockError::UnexpectedResponse {
        message: error.to_string(),
    })
}

fn excerpt(body: &str) -> String {
    // Bodies go into error messages and logs: keep them short.
    body.chars().take(200).collect()
}

fn value_as_i64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(number) => number.as_i64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn lenient_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let value = Value::deserialize(deserializer)?;
    value_as_i64(&value)
        .ok_or_else(|| serde::de::Error::custom(format!("expected an integer, got {value}")))
}

fn lenient_opt_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(value.as_ref().and_then(value_as_i64))
}

fn lenient_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    lenient_opt_string(deserializer)?.ok_or_else(|| serde::de::Error::custom("expected a string"))
}

fn lenient_opt_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    // Codes are digit strings, but a JSON number would lose leading zeros: accept both and
    // keep strings as they are.
    let value = Option::<Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(Value::String(text)) => Some(text),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_200_with_errcode_is_an_error() {
        let result = check_body(200, r#"{"errcode":-3002,"errmsg":"gateway offline"}"#);
        assert!(matches!(result, Err(TtlockError::GatewayOffline { .. })));
    }

    #[test]
    fn errcode_zero_and_bare_objects_are_success() {
        assert!(check_body(200, r#"{"errcode":0,"errmsg":"none error message"}"#).is_ok());
        assert!(check_body(200, r#"{"keyboardPwdId":5501}"#).is_ok());
        assert!(check_body(200, r#"{"errcode":"0"}"#).is_ok());
    }

    #[test]
    fn numbers_may_arrive_as_strings() {
        let item: PasscodeItem = decode(serde_json::json!({
            "keyboardPwdId": "12", "keyboardPwdType": "3", "keyboardPwd": 40718235
        }))
        .unwrap();
        assert_eq!(item.keyboard_pwd_id, 12);
        assert_eq!(item.keyboard_pwd_type, Some(3));
        assert_eq!(item.keyboard_pwd.as_deref(), Some("40718235"));
    }
}
