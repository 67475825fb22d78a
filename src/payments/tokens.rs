//! The guest's capability token: 256 random bits, URL-safe, bound to one payment, stored
//! only as a SHA-256. Whoever holds the link sees that payment's access page and nothing
//! else; the token says nothing about any id.

use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::on_pool;
use crate::store::Database;

/// Characters of an encoded token: 32 bytes in unpadded base64url.
pub const TOKEN_LENGTH: usize = 43;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A new random token (43 URL-safe characters).
pub fn generate() -> String {
    let mut bytes = [0_u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    encode(&bytes)
}

fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(TOKEN_LENGTH);
    for chunk in bytes.chunks(3) {
        let mut buffer = [0_u8; 3];
        buffer[..chunk.len()].copy_from_slice(chunk);
        let n = (u32::from(buffer[0]) << 16) | (u32::from(buffer[1]) << 8) | u32::from(buffer[2]);
        let digits = chunk.len() + 1;
        for index in 0..digits {
            let sextet = (n >> (18 - 6 * index)) & 0x3f;
            out.push(char::from(ALPHABET[sextet as usize]));
        }
    }
    out
}

/// Whether `candidate` has the shape of a token (length and alphabet), checked before any
/// lookup so malformed input is refused cheaply and uniformly.
pub fn well_formed(candidate: &str) -> bool {
    candidate.len() == TOKEN_LENGTH && candidate.bytes().all(|byte| ALPHABET.contains(&byte))
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Binds `token` to a payment.
pub async fn store(
    database: &Database,
    token: &str,
    payment_id: Uuid,
    kind: &str,
) -> Result<(), sqlx::Error> {
    let sql = "INSERT INTO access_tokens (token_hash, payment_id, kind) VALUES ($1, $2, $3)";
    on_pool!(database, pool => {
        sqlx::query(sql)
            .bind(hash(token))
            .bind(payment_id.to_string())
            .bind(kind)
            .execute(pool)
            .await
            .map(|_| ())
    })
}

/// The payment a token grants access to, if any. The lookup is by hash, so its time does
/// not depend on how much of a guessed token is right.
pub async fn payment_for(
    database: &Database,
    token: &str,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    let sql = "SELECT payment_id, kind FROM access_tokens WHERE token_hash = $1";
    let row: Option<(String, String)> = on_pool!(database, pool => {
        sqlx::query_as(sql).bind(hash(token)).fetch_optional(pool).await
    })?;
    Ok(row.and_then(|(id, kind)| Uuid::parse_str(&id).ok().map(|id| (id, kind))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_characters_and_differ() {
        let first = generate();
        let second = generate();
        assert_eq!(first.len(), TOKEN_LENGTH);
        assert!(well_formed(&first));
        assert_ne!(first, second);
    }

    #[test]
    fn encoding_matches_base64url_without_padding() {
        assert_eq!(encode(b"\xfb\xff"), "-_8");
        assert_eq!(encode(b"Man"), "TWFu");
    }

    #[test]
    fn malformed_tokens_are_recognised() {
        assert!(!well_formed("short"));
        assert!(!well_formed(&"a".repeat(44)));
        assert!(!well_formed(&format!("{}=", "a".repeat(42))));
    }
}
