//! Passwords: argon2id hashes in PHC format, a length policy, one-time passwords.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Shorter passwords are refused; long passphrases beat composition rules.
pub const MIN_LENGTH: usize = 12;
/// Longer ones are refused too: hashing megabytes is a cheap denial of service.
pub const MAX_LENGTH: usize = 256;

/// The argon2id hash (PHC string, salt included) of `password`.
pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| anyhow::anyhow!("hashing a password failed: {error}"))
}

/// Whether `password` matches `stored`; a malformed stored hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_LENGTH {
        return false;
    }
    PasswordHash::new(stored)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// [`verify`] on the blocking pool: an argon2 hash takes tens of milliseconds of CPU,
/// which on an async worker would stall webhooks and pages under a login flood.
pub async fn verify_off_thread(password: &str, stored: &str) -> bool {
    let (password, stored) = (password.to_string(), stored.to_string());
    tokio::task::spawn_blocking(move || verify(&password, &stored))
        .await
        .unwrap_or(false)
}

/// [`hash`] on the blocking pool, for the same reason.
pub async fn hash_off_thread(password: &str) -> anyhow::Result<String> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || hash(&password)).await?
}

/// Why a new password is refused, in words for the person choosing it.
pub fn check_policy(password: &str) -> Result<(), String> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(format!(
            "the password must be at least {MIN_LENGTH} characters long (a few words work well)"
        ));
    }
    if password.len() > MAX_LENGTH {
        return Err(format!(
            "the password must be at most {MAX_LENGTH} bytes long"
        ));
    }
    Ok(())
}

/// A random one-time password (20 characters, no look-alike characters) that an admin
/// hands over; its holder must choose a new one at first login.
pub fn one_time() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// A hash nobody's password matches, verified against for unknown emails so that a
/// login for an unknown account takes as long as one for a known account.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash(&one_time()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let stored = hash("correct horse battery").unwrap();
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", &stored));
        assert!(!verify("correct horse batterz", &stored));
        assert!(!verify("anything", "not a phc string"));
    }

    #[test]
    fn the_policy_wants_twelve_characters() {
        assert!(check_policy("short").is_err());
        assert!(check_policy("twelve chars").is_ok());
    }

    #[test]
    fn one_time_passwords_pass_the_policy_and_differ() {
        let a = one_time();
        assert!(check_policy(&a).is_ok());
        assert_ne!(a, one_time());
    }
}
