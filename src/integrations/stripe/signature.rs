//! Verifying (and, for the simulator and tests, producing) `Stripe-Signature` headers.
//!
//! The scheme, from Stripe's documentation and every official SDK: the header is
//! `t=<unix seconds>,v1=<hex>[,v1=<hex>…]` (test mode adds a `v0=` that must be ignored);
//! each `v1` is HMAC-SHA256 over `"{t}." + raw body`, keyed with the whole endpoint secret
//! string (`whsec_…` included, not decoded). A delivery is genuine if any `v1` matches any
//! configured secret (secrets are rolled with both active for up to a day).
//!
//! We verify over the raw bytes before anything parses them: one re-encoded byte breaks
//! the MAC, and an unverified body must not reach the JSON parser's error paths.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How far the signed timestamp may be from our clock, either way. Stripe's SDKs use
/// 300 s; we reject the future too (like stripe-dotnet and async-stripe), because a
/// timestamp far ahead would otherwise extend a captured delivery's replay window.
pub const TOLERANCE_SECONDS: i64 = 300;

/// The header name, as Stripe sends it (HTTP header names are case-insensitive).
pub const HEADER: &str = "stripe-signature";

/// Why a delivery's signature was refused. Callers branch on it only to count and to
/// record the reason; the HTTP answer is the same 401 for all of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    MissingHeader,
    #[error("the Stripe-Signature header is malformed (expected t=<unix seconds>,v1=<hex>)")]
    MalformedHeader,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    #[error("no v1 signature matches any configured webhook secret")]
    Mismatch,
    #[error("the signature timestamp is more than 300 s old")]
    TooOld,
    #[error("the signature timestamp is more than 300 s in the future")]
    InFuture,
}

impl SignatureError {
    /// A stable snake_case reason for metrics labels and the failures table.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::MissingHeader => "missing_header",
            SignatureError::MalformedHeader => "malformed_header",
            SignatureError::NoV1Signature => "no_v1_signature",
            SignatureError::Mismatch => "mismatch",
            SignatureError::TooOld => "too_old",
            SignatureError::InFuture => "in_future",
        }
    }
}

/// The parts of a `Stripe-Signature` header we use.
#[derive(Debug, PartialEq, Eq)]
struct ParsedHeader {
    timestamp: i64,
    /// Decoded `v1` values; entries that are not hex are dropped (they cannot match).
    v1: Vec<Vec<u8>>,
}

fn parse_header(header: &str) -> Result<ParsedHeader, SignatureError> {
    let mut timestamp = None;
    let mut v1 = Vec::new();
    let mut saw_v1 = false;
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(SignatureError::MalformedHeader)?;
        match key.trim() {
            "t" if timestamp.is_none() => {
                timestamp = Some(
                    value
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| SignatureError::MalformedHeader)?,
                )
            }
            "v1" => {
                saw_v1 = true;
                if let Ok(bytes) = hex::decode(value.trim()) {
                    v1.push(bytes);
                }
            }
            // `v0` (test mode's fake signature) and any future scheme are ignored on
            // purpose: accepting a weaker scheme would allow a downgrade.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::MalformedHeader)?;
    if !saw_v1 {
        return Err(SignatureError::NoV1Signature);
    }
    Ok(ParsedHeader { timestamp, v1 })
}

/// HMAC accepts keys of any length, so this is `None` only in theory; callers treat
/// `None` as "no match" rather than panicking.
fn mac(secret: &[u8], timestamp: i64, payload: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    Some(mac)
}

/// Verifies `header` over the raw `payload` against every secret, at `now` (unix
/// seconds, injectable for tests). Returns the signed timestamp.
pub fn verify(
    payload: &[u8],
    header: Option<&str>,
    secrets: &[SecretString],
    now: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::MissingHeader)?;
    let parsed = parse_header(header)?;
    // Every (secret, signature) pair is compared, without stopping early, so the time
    // taken says nothing about which pair came close.
    let mut matched = subtle::Choice::from(0);
    for secret in secrets {
        let Some(mac) = mac(secret.expose_secret().as_bytes(), parsed.timestamp, payload) else {
            continue;
        };
        let expected = mac.finalize().into_bytes();
        for candidate in &parsed.v1 {
            matched |= expected.as_slice().ct_eq(candidate.as_slice());
        }
    }
    if !bool::from(matched) {
        return Err(SignatureError::Mismatch);
    }
    if parsed.timestamp < now - TOLERANCE_SECONDS {
        return Err(SignatureError::TooOld);
    }
    if parsed.timestamp > now + TOLERANCE_SECONDS {
        return Err(SignatureError::InFuture);
    }
    Ok(parsed.timestamp)
}

/// The hex `v1` signature of `payload` at `timestamp` with `secret`.
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    mac(secret.as_bytes(), timestamp, payload)
        .map(|mac| hex::encode(mac.finalize().into_bytes()))
        .unwrap_or_default()
}

/// A complete header as Stripe sends it: one `v1` per active secret.
pub fn header(payload: &[u8], secrets: &[&str], timestamp: i64) -> String {
    let mut out = format!("t={timestamp}");
    for secret in secrets {
        out.push_str(",v1=");
        out.push_str(&sign(payload, secret, timestamp));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// stripe-dotnet's `EventUtilityTest` fixture (484 bytes, LF, trailing newline).
    const DOTNET_PAYLOAD: &[u8] = include_bytes!("testdata/event_test_signature.json");
    const DOTNET_TIME: i64 = 1_533_204_620;
    const DOTNET_V1: &str = "2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7";

    fn secrets(values: &[&str]) -> Vec<SecretString> {
        values
            .iter()
            .map(|v| SecretString::from(v.to_string()))
            .collect()
    }

    #[test]
    fn the_stripe_dotnet_public_vector_verifies() {
        assert_eq!(DOTNET_PAYLOAD.len(), 484);
        assert_eq!(
            sign(DOTNET_PAYLOAD, "webhook_secret", DOTNET_TIME),
            DOTNET_V1
        );
        let header = format!("t={DOTNET_TIME},v1={DOTNET_V1}");
        let verified = verify(
            DOTNET_PAYLOAD,
            Some(&header),
            &secrets(&["webhook_secret"]),
            DOTNET_TIME + 10,
        );
        assert_eq!(verified, Ok(DOTNET_TIME));
    }

    #[test]
    fn the_whole_secret_including_its_prefix_is_the_key() {
        let body = b"{\"id\":\"evt_1\"}";
        let header = header(body, &["whsec_test_secret"], 1000);
        assert!(verify(body, Some(&header), &secrets(&["whsec_test_secret"]), 1000).is_ok());
        assert_eq!(
            verify(body, Some(&header), &secrets(&["test_secret"]), 1000),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_v1_against_any_secret_is_accepted_and_v0_is_ignored() {
        let body = b"{}";
        let old = sign(body, "whsec_old", 1000);
        let header = format!("t=1000,v0={old},v1=00ff,v1={old}");
        let configured = secrets(&["whsec_new", "whsec_old"]);
        assert_eq!(verify(body, Some(&header), &configured, 1000), Ok(1000));
        // A v0 alone, even a correct one, is not a signature we accept.
        let only_v0 = format!("t=1000,v0={old}");
        assert_eq!(
            verify(body, Some(&only_v0), &configured, 1000),
            Err(SignatureError::NoV1Signature)
        );
    }

    #[test]
    fn a_tampered_body_fails() {
        let header = header(b"{\"amount\":100}", &["whsec_x"], 1000);
        assert_eq!(
            verify(
                b"{\"amount\":999}",
                Some(&header),
                &secrets(&["whsec_x"]),
                1000
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn the_window_is_300_seconds_both_ways() {
        let body = b"{}";
        let keys = secrets(&["whsec_x"]);
        let at = |t: i64| header(body, &["whsec_x"], t);
        assert!(verify(body, Some(&at(700)), &keys, 1000).is_ok());
        assert_eq!(
            verify(body, Some(&at(699)), &keys, 1000),
            Err(SignatureError::TooOld)
        );
        assert!(verify(body, Some(&at(1300)), &keys, 1000).is_ok());
        assert_eq!(
            verify(body, Some(&at(1301)), &keys, 1000),
            Err(SignatureError::InFuture)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let keys = secrets(&["whsec_x"]);
        for bad in ["", "garbage", "t=abc,v1=00", "v1=00", "t=1,,v1=00"] {
            let result = verify(b"{}", Some(bad), &keys, 1);
            assert!(
                matches!(
                    result,
                    Err(SignatureError::MalformedHeader | SignatureError::NoV1Signature)
                ),
                "{bad:?} gave {result:?}"
            );
        }
        assert_eq!(
            verify(b"{}", None, &keys, 1),
            Err(SignatureError::MissingHeader)
        );
        assert_eq!(
            verify(b"{}", Some("t=1"), &keys, 1),
            Err(SignatureError::NoV1Signature)
        );
    }

    #[test]
    fn no_secrets_means_nothing_verifies() {
        let header = header(b"{}", &["whsec_x"], 1);
        assert_eq!(
            verify(b"{}", Some(&header), &[], 1),
            Err(SignatureError::Mismatch)
        );
    }
}
