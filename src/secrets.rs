//! Secrets at rest: values such as the Stripe secret key, stored in the database
//! encrypted with AES-256-GCM under `LATCHKEY_MASTER_KEY`, a random 96-bit nonce per
//! value, the setting's name as associated data (a ciphertext moved to another row does
//! not decrypt) and the key's id stored beside it (so a rotated key is detected, not
//! mistaken for corruption).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::config::Settings;

/// The key that encrypts stored secrets.
#[derive(Clone)]
pub struct MasterKey {
    cipher: Aes256Gcm,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

/// A secret that could not be decrypted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("stored under another master key ({0}); enter the value again or restore that LATCHKEY_MASTER_KEY")]
    OtherKey(String),
    #[error("the stored value is damaged and does not decrypt; enter it again")]
    Damaged,
}

/// An encrypted value and the id of the key that sealed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// Hex of nonce (12 bytes) then ciphertext and tag.
    pub ciphertext: String,
    pub key_id: String,
}

impl MasterKey {
    /// The key from `LATCHKEY_MASTER_KEY` (already validated at start-up), if set.
    pub fn from_settings(settings: &Settings) -> Option<MasterKey> {
        let raw = settings.master_key.as_ref()?;
        let bytes = crate::config::decode_base64(raw.expose_secret())?;
        MasterKey::from_bytes(&bytes)
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<MasterKey> {
        let cipher = Aes256Gcm::new_from_slice(bytes).ok()?;
        // The id names the key without revealing it: a hash with its own label.
        let digest = Sha256::new()
            .chain_update(b"latchkey master key id\0")
            .chain_update(bytes)
            .finalize();
        Some(MasterKey {
            cipher,
            id: format!("aes256gcm:{}", &hex::encode(digest)[..12]),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `plaintext` for the row named `name`.
    pub fn seal(&self, name: &str, plaintext: &str) -> anyhow::Result<Sealed> {
        let nonce_bytes = crate::accounts::random_bytes::<12>();
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce_bytes),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("encrypting the setting {name} failed"))?;
        let mut out = nonce_bytes.to_vec();
        out.extend(ciphertext);
        Ok(Sealed {
            ciphertext: hex::encode(out),
            key_id: self.id.clone(),
        })
    }

    /// Decrypts what [`MasterKey::seal`] produced for the row named `name`.
    pub fn open(&self, name: &str, sealed: &Sealed) -> Result<String, SecretError> {
        if sealed.key_id != self.id {
            return Err(SecretError::OtherKey(sealed.key_id.clone()));
        }
        let bytes = hex::decode(&sealed.ciphertext).map_err(|_| SecretError::Damaged)?;
        if bytes.len() < 12 {
            return Err(SecretError::Damaged);
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let plaintext = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Damaged)?;
        String::from_utf8(plaintext).map_err(|_| SecretError::Damaged)
    }
}

/// The last four characters of a secret: all that is ever shown again.
pub fn last4(secret: &str) -> String {
    let characters: Vec<char> = secret.chars().collect();
    characters[characters.len().saturating_sub(4)..]
        .iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_under_its_key_and_name_only() {
        let sealed = key(1).seal("STRIPE_SECRET_KEY", "sk_test_abc123").unwrap();
        assert!(!sealed.ciphertext.contains("sk_test"));
        assert_eq!(
            key(1).open("STRIPE_SECRET_KEY", &sealed).unwrap(),
            "sk_test_abc123"
        );
        assert_eq!(
            key(1).open("SHELLY_AUTH_KEY", &sealed),
            Err(SecretError::Damaged)
        );
        assert!(matches!(
            key(2).open("STRIPE_SECRET_KEY", &sealed),
            Err(SecretError::OtherKey(_))
        ));
    }

    #[test]
    fn each_seal_uses_a_fresh_nonce() {
        let a = key(1).seal("X", "same").unwrap();
        let b = key(1).seal("X", "same").unwrap();
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn last4_shows_only_the_tail() {
        assert_eq!(last4("sk_test_123456"), "3456");
        assert_eq!(last4("ab"), "ab");
    }
}
