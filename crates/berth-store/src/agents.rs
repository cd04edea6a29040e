//! Providers, agents and enrollment: a provider creates a single-use, expiring setup token; an
//! agent presents it once with its Ed25519 public key and is enrolled under that provider. Only
//! the token's SHA-256 hash is stored, and the secret never appears in `Debug` output.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::{Millis, StoreError};

/// Prefix of setup tokens, so a leaked one is recognisable (and greppable in logs).
pub const TOKEN_PREFIX: &str = "berth_enroll_";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub created_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Agent {
    pub id: String,
    pub provider_id: String,
    pub name: String,
    /// The Ed25519 public key, standard base64 of its 32 bytes.
    pub public_key: String,
    pub revoked_at: Option<Millis>,
    pub created_at: Millis,
}

/// A freshly made setup token: shown once, stored only hashed.
pub struct EnrollmentToken {
    pub secret: String,
    pub provider_id: String,
    pub expires_at: Millis,
}

impl std::fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("secret", &"<redacted>")
            .field("provider_id", &self.provider_id)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

pub(crate) fn new_secret() -> Result<String, StoreError> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| StoreError::Backend(format!("no randomness: {e}")))?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(raw)))
}

pub(crate) fn token_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Checks an agent's public key (standard base64 of 32 bytes, a valid Ed25519 point).
pub(crate) fn check_public_key(key: &str) -> Result<(), StoreError> {
    let bad = |why: &str| StoreError::Invalid {
        field: "public_key",
        reason: format!("{why}; expected the standard base64 of a 32-byte Ed25519 public key"),
    };
    let bytes = STANDARD.decode(key).map_err(|_| bad("not base64"))?;
    let arr: [u8; 32] = bytes.try_into().map_err(|_| bad("not 32 bytes"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| bad("not a valid Ed25519 point"))?;
    if key.is_weak() {
        // A small-order point: signatures "by" it can be forged by anyone.
        return Err(bad("a weak (small-order) key"));
    }
    Ok(())
}

pub(crate) fn check_name(field: &'static str, name: &str) -> Result<(), StoreError> {
    berth_core::text::check_name(name, 128).map_err(|reason| StoreError::Invalid { field, reason })
}

macro_rules! agent_from_row {
    ($row:expr) => {{
        use sqlx::Row as _;
        let row = $row;
        Ok::<_, $crate::StoreError>($crate::agents::Agent {
            id: row.try_get("id")?,
            provider_id: row.try_get("provider_id")?,
            name: row.try_get("name")?,
            public_key: row.try_get("public_key")?,
            revoked_at: row.try_get("revoked_at")?,
            created_at: row.try_get("created_at")?,
        })
    }};
}
pub(crate) use agent_from_row;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_hidden() {
        let a = new_secret().unwrap();
        let b = new_secret().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 50);
        assert_eq!(token_hash(&a).len(), 64);
        let t = EnrollmentToken {
            secret: a.clone(),
            provider_id: "p".into(),
            expires_at: 1,
        };
        assert!(!format!("{t:?}").contains(&a));
    }

    #[test]
    fn public_keys_are_checked() {
        let good = STANDARD.encode(
            ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .to_bytes(),
        );
        check_public_key(&good).unwrap();
        // The identity point (y = 1): a small-order key anyone can "sign" for.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        for bad in [
            "",
            "not base64!",
            "AAAA",
            &STANDARD.encode([0u8; 31]),
            &STANDARD.encode(identity),
        ] {
            assert!(
                matches!(
                    check_public_key(bad),
                    Err(StoreError::Invalid {
                        field: "public_key",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
