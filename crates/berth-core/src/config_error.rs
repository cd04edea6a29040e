//! `ConfigError`: the one error every backend's configuration check returns — which key of its
//! `[provisioner.<backend>]` table is wrong, and what was expected.

/// A configuration value that is wrong: which key, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The key inside the backend's `[provisioner.<backend>]` table, e.g. `timeout_seconds`,
    /// `tls_fingerprint` or `env.API_TOKEN`.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_key_colon_message() {
        let e = ConfigError::new("env.A-B", "is not a variable name");
        assert_eq!(e.to_string(), "env.A-B: is not a variable name");
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("env.A-B", "is not a variable name")
        );
    }
}
