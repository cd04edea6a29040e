//! Credentials a machine is born with (a generated root password, or one an operator typed for a
//! machine built by hand) are sealed to the requester's age public key (X25519, ASCII armor) by
//! the agent, or by the control plane the moment the operator's form arrives: what is stored and
//! returned is ciphertext, and the customer decrypts with `berth instance credentials --identity` or the
//! `age`/`rage` command line tools.

use std::str::FromStr as _;

/// What is encrypted: one JSON object, so more than a password can travel later. `Debug`
/// never shows the password.
#[derive(serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Plain {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Plain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plain")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Encrypts `plain` to `recipient` (`age1…`). The error never contains the plaintext.
pub fn seal(recipient: &str, plain: &Plain) -> Result<String, String> {
    let r = age::x25519::Recipient::from_str(recipient.trim())
        .map_err(|e| format!("requester_public_key is not an age X25519 recipient (age1…): {e}"))?;
    let json = serde_json::to_vec(plain).map_err(|e| format!("cannot encode credentials: {e}"))?;
    age::encrypt_and_armor(&r, &json).map_err(|e| format!("cannot encrypt credentials: {e}"))
}

/// Decrypts armored `ciphertext` with the identity file's text (`AGE-SECRET-KEY-1…` lines).
pub fn open(identity_file: &str, ciphertext: &str) -> Result<Plain, String> {
    let ids = age::IdentityFile::from_buffer(identity_file.as_bytes())
        .map_err(|e| format!("cannot read the identity file: {e}"))?
        .into_identities()
        .map_err(|e| format!("cannot read the identity file: {e}"))?;
    let decryptor = age::Decryptor::new(age::armor::ArmoredReader::new(ciphertext.as_bytes()))
        .map_err(|e| format!("the credentials are not an age file: {e}"))?;
    let mut reader = decryptor
        .decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| format!("cannot decrypt (is it the identity for this order's requester key?): {e}"))?;
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut out).map_err(|e| format!("cannot decrypt: {e}"))?;
    serde_json::from_slice(&out).map_err(|e| format!("decrypted, but not Berth credentials: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret as _;

    #[test]
    fn roundtrip_and_only_the_right_identity_opens() {
        let id = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let plain = Plain {
            user: "root".into(),
            password: "hunter2-very-secret".into(),
        };
        let sealed = seal(&id.to_public().to_string(), &plain).unwrap();
        assert!(sealed.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"), "{sealed}");
        assert!(!sealed.contains("hunter2"));
        let file = format!("# created: now\n{}\n", id.to_string().expose_secret());
        assert_eq!(open(&file, &sealed).unwrap(), plain);
        assert!(!format!("{plain:?}").contains("hunter2"), "Debug hides the password");
        let wrong = open(other.to_string().expose_secret(), &sealed).unwrap_err();
        assert!(wrong.contains("cannot decrypt"), "{wrong}");
        assert!(!wrong.contains("hunter2"));
    }

    #[test]
    fn bad_recipient_names_the_field() {
        let e = seal(
            "ssh-ed25519 AAAA",
            &Plain {
                user: "u".into(),
                password: "p".into(),
            },
        )
        .unwrap_err();
        assert!(e.starts_with("requester_public_key"), "{e}");
    }
}
