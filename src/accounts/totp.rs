//! Time-based one-time passwords (RFC 6238: HMAC-SHA-1, 30-second steps, 6 digits),
//! accepted one step either side for clock drift; the enrolment QR code (SVG); backup
//! codes.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per step.
pub const STEP_SECONDS: i64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// How many backup codes a user gets.
pub const BACKUP_CODES: usize = 10;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A fresh 160-bit secret, base32 (what authenticator apps expect).
pub fn new_secret() -> String {
    base32_encode(&super::random_bytes::<20>())
}

/// RFC 4648 base32 without padding.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes base32, ignoring case, spaces and padding; `None` for other characters.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for character in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let upper = character.to_ascii_uppercase();
        let value = BASE32.iter().position(|&b| char::from(b) == upper)? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The time step of a unix time in seconds.
pub fn step_at(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(STEP_SECONDS)
}

/// The code for one step (RFC 4226 dynamic truncation).
pub fn code_for_step(secret: &[u8], step: i64) -> String {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = (u32::from(digest[offset] & 0x7f) << 24)
        | (u32::from(digest[offset + 1]) << 16)
        | (u32::from(digest[offset + 2]) << 8)
        | u32::from(digest[offset + 3]);
    format!(
        "{:0width$}",
        binary % 10_u32.pow(DIGITS),
        width = DIGITS as usize
    )
}

/// The step whose code `code` is, within one step of `now_seconds`, never one at or
/// before `last_used_step` (a code is good once). Spaces in the code are ignored.
pub fn matching_step(
    secret_base32: &str,
    code: &str,
    now_seconds: i64,
    last_used_step: Option<i64>,
) -> Option<i64> {
    let secret = base32_decode(secret_base32)?;
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() != DIGITS as usize || !code.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let now = step_at(now_seconds);
    [now - 1, now, now + 1].into_iter().find(|&step| {
        last_used_step.is_none_or(|last| step > last)
            && crate::http::auth::constant_time_eq(
                code_for_step(&secret, step).as_bytes(),
                code.as_bytes(),
            )
    })
}

/// The `otpauth://` URI authenticator apps read from the QR code.
pub fn otpauth_uri(issuer: &str, account: &str, secret_base32: &str) -> String {
    format!(
        "otpauth://totp/{label}?secret={secret_base32}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        label = url_escape(&format!("{issuer}:{account}")),
        issuer = url_escape(issuer),
    )
}

fn url_escape(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The QR code of `data` as an SVG document (dark modules on white, scalable).
pub fn qr_svg(data: &str) -> Option<String> {
    let code = qrcode::QrCode::new(data.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
    )
}

/// Ten fresh backup codes, `xxxxx-xxxxx` in lower-case base32 (50 bits each).
pub fn new_backup_codes() -> Vec<String> {
    (0..BACKUP_CODES)
        .map(|_| {
            let text = base32_encode(&super::random_bytes::<7>()).to_ascii_lowercase();
            format!("{}-{}", &text[0..5], &text[5..10])
        })
        .collect()
}

/// A backup code as typed, reduced to the form that was hashed (lower case, one dash).
pub fn normalise_backup_code(typed: &str) -> String {
    let compact: String = typed
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if compact.len() == 10 {
        format!("{}-{}", &compact[0..5], &compact[5..10])
    } else {
        compact
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 seed "12345678901234567890" (8 digits there; the low 6
    /// digits of those values are what a 6-digit generator yields).
    #[test]
    fn matches_the_rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, expected) in [
            (59_i64, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(code_for_step(secret, step_at(time)), expected, "t={time}");
        }
    }

    #[test]
    fn base32_round_trips_and_matches_rfc_4648() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("mzxw6ytboi======").unwrap(), b"foobar");
        assert!(base32_decode("not base32!").is_none());
        let secret = new_secret();
        assert_eq!(secret.len(), 32);
        assert_eq!(base32_decode(&secret).unwrap().len(), 20);
    }

    #[test]
    fn a_code_is_accepted_one_step_either_side_and_only_once() {
        let secret = new_secret();
        let raw = base32_decode(&secret).unwrap();
        let now = 1_700_000_000;
        let previous = code_for_step(&raw, step_at(now) - 1);
        assert_eq!(
            matching_step(&secret, &previous, now, None),
            Some(step_at(now) - 1)
        );
        let too_old = code_for_step(&raw, step_at(now) - 2);
        assert_eq!(matching_step(&secret, &too_old, now, None), None);
        let current = code_for_step(&raw, step_at(now));
        assert_eq!(
            matching_step(&secret, &current, now, Some(step_at(now))),
            None
        );
        assert_eq!(matching_step(&secret, "12345", now, None), None);
    }

    #[test]
    fn the_uri_names_issuer_account_and_secret() {
        let uri = otpauth_uri("Latchkey", "ann@example.com", "ABC");
        assert!(uri.starts_with("otpauth://totp/Latchkey%3Aann%40example.com?"));
        assert!(uri.contains("secret=ABC"));
        assert!(uri.contains("issuer=Latchkey"));
        assert!(qr_svg(&uri).unwrap().contains("<svg"));
    }

    #[test]
    fn backup_codes_are_ten_distinct_and_normalise() {
        let codes = new_backup_codes();
        assert_eq!(codes.len(), 10);
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), 10);
        assert_eq!(normalise_backup_code(" ABCDE fghij "), "abcde-fghij");
    }
}
