//! `[provisioner.manual]` of berth.toml: where the requests are kept, who is told about them
//! (a Slack-compatible webhook), and how long a request may wait; `validate()` names the key.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use berth_core::ConfigError;

/// The manual backend's configuration. `state_dir` is absolute or relative to the directory of
/// the config file (the `base_dir` given to [`ManualConfig::validate`] and `ManualProvider::new`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ManualConfig {
    /// Slack-compatible incoming webhook (`http` or `https`) told about every new request and
    /// every deletion. Optional: without it operators watch `berth vm list --pending`.
    /// Such URLs usually embed a token, so only the scheme and host are ever shown.
    #[serde(default)]
    pub notification_webhook: Option<String>,
    /// Directory holding one JSON record per instance.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// A pending request older than this fails ("no operator completed it within N s").
    #[serde(default = "default_deadline")]
    pub deadline_seconds: u64,
    /// Upper bound for one webhook request.
    #[serde(default = "default_webhook_timeout")]
    pub webhook_timeout_seconds: u64,
    /// Further attempts after a failed webhook request (network error, 5xx or 429).
    #[serde(default = "default_webhook_retries")]
    pub webhook_retries: u32,
    /// Wait before the first retry; doubled for each further one (capped at 30 s).
    #[serde(default = "default_webhook_backoff")]
    pub webhook_backoff_ms: u64,
    /// How often a waiting create looks at its record.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_ms: u64,
}

pub const DEFAULT_STATE_DIR: &str = "berth-manual";
pub const DEFAULT_DEADLINE_SECONDS: u64 = 86_400;
pub const DEFAULT_WEBHOOK_TIMEOUT_SECONDS: u64 = 10;
pub const DEFAULT_WEBHOOK_RETRIES: u32 = 3;
pub const DEFAULT_WEBHOOK_BACKOFF_MS: u64 = 500;
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 1000;
const MAX_DEADLINE_SECONDS: u64 = 90 * 86_400;
const MAX_WEBHOOK_TIMEOUT_SECONDS: u64 = 300;
const MAX_WEBHOOK_RETRIES: u32 = 10;
const MAX_BACKOFF_MS: u64 = 60_000;
const MAX_POLL_INTERVAL_MS: u64 = 60_000;

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}
fn default_deadline() -> u64 {
    DEFAULT_DEADLINE_SECONDS
}
fn default_webhook_timeout() -> u64 {
    DEFAULT_WEBHOOK_TIMEOUT_SECONDS
}
fn default_webhook_retries() -> u32 {
    DEFAULT_WEBHOOK_RETRIES
}
fn default_webhook_backoff() -> u64 {
    DEFAULT_WEBHOOK_BACKOFF_MS
}
fn default_poll_interval() -> u64 {
    DEFAULT_POLL_INTERVAL_MS
}

impl Default for ManualConfig {
    fn default() -> Self {
        ManualConfig {
            notification_webhook: None,
            state_dir: default_state_dir(),
            deadline_seconds: DEFAULT_DEADLINE_SECONDS,
            webhook_timeout_seconds: DEFAULT_WEBHOOK_TIMEOUT_SECONDS,
            webhook_retries: DEFAULT_WEBHOOK_RETRIES,
            webhook_backoff_ms: DEFAULT_WEBHOOK_BACKOFF_MS,
            poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
        }
    }
}

impl ManualConfig {
    /// `state_dir` resolved against `base_dir` (the config file's directory).
    pub fn state_dir(&self, base_dir: &Path) -> PathBuf {
        if self.state_dir.is_absolute() {
            self.state_dir.clone()
        } else {
            std::path::absolute(base_dir)
                .unwrap_or_else(|_| base_dir.to_path_buf())
                .join(&self.state_dir)
        }
    }

    /// The parsed webhook URL, if one is configured and valid.
    pub fn webhook_url(&self) -> Result<Option<reqwest::Url>, ConfigError> {
        let Some(raw) = &self.notification_webhook else {
            return Ok(None);
        };
        let key = "notification_webhook";
        let expected = "expected an http(s) URL like \"https://hooks.slack.com/services/...\"";
        let url = reqwest::Url::parse(raw.trim()).map_err(|e| ConfigError::new(key, format!("{e}; {expected}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(ConfigError::new(
                key,
                format!("scheme {:?} is not supported; {expected}", url.scheme()),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::new(key, format!("has no host; {expected}")));
        }
        Ok(Some(url))
    }

    /// Checks every key without touching the file system (doctor checks the directory).
    pub fn validate(&self, base_dir: &Path) -> Result<(), ConfigError> {
        let _ = base_dir;
        self.webhook_url()?;
        if self.state_dir.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "state_dir",
                "must not be empty: give a directory (relative paths resolve against the config file's directory)",
            ));
        }
        range("deadline_seconds", self.deadline_seconds, 1, MAX_DEADLINE_SECONDS)?;
        range(
            "webhook_timeout_seconds",
            self.webhook_timeout_seconds,
            1,
            MAX_WEBHOOK_TIMEOUT_SECONDS,
        )?;
        range(
            "webhook_retries",
            u64::from(self.webhook_retries),
            0,
            u64::from(MAX_WEBHOOK_RETRIES),
        )?;
        range("webhook_backoff_ms", self.webhook_backoff_ms, 1, MAX_BACKOFF_MS)?;
        range("poll_interval_ms", self.poll_interval_ms, 1, MAX_POLL_INTERVAL_MS)?;
        Ok(())
    }
}

fn range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::new(
            key,
            format!("must be between {min} and {max} (got {value})"),
        ))
    }
}

/// Only scheme and host of a webhook URL: the path and query usually carry its token.
pub(crate) fn redacted_url(url: &reqwest::Url) -> String {
    format!("{}://{}/<redacted>", url.scheme(), url.host_str().unwrap_or(""))
}

impl fmt::Debug for ManualConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let webhook = self
            .notification_webhook
            .as_ref()
            .map(|raw| match reqwest::Url::parse(raw) {
                Ok(url) => redacted_url(&url),
                Err(_) => "<invalid, redacted>".to_owned(),
            });
        f.debug_struct("ManualConfig")
            .field("notification_webhook", &webhook)
            .field("state_dir", &self.state_dir)
            .field("deadline_seconds", &self.deadline_seconds)
            .field("webhook_timeout_seconds", &self.webhook_timeout_seconds)
            .field("webhook_retries", &self.webhook_retries)
            .field("webhook_backoff_ms", &self.webhook_backoff_ms)
            .field("poll_interval_ms", &self.poll_interval_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<ManualConfig, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_seeds_section_parses_with_defaults() {
        let c = parse("notification_webhook = \"https://slack.webhook/services/T0/B0/xyz\"\n").unwrap();
        c.validate(Path::new("/etc/berth")).unwrap();
        assert_eq!(c.deadline_seconds, 86_400);
        assert_eq!(c.webhook_timeout_seconds, 10);
        assert_eq!(c.webhook_retries, 3);
        assert_eq!(c.poll_interval_ms, 1000);
        assert_eq!(
            c.state_dir(Path::new("/etc/berth")),
            Path::new("/etc/berth/berth-manual")
        );
        let empty = parse("").unwrap();
        empty.validate(Path::new("/")).unwrap();
        assert_eq!(empty, ManualConfig::default());
    }

    #[test]
    fn absolute_state_dir_is_kept() {
        let c = parse("state_dir = \"/var/lib/berth/manual\"\n").unwrap();
        assert_eq!(c.state_dir(Path::new("/etc/berth")), Path::new("/var/lib/berth/manual"));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("notification_webhook = \"not a url\"\n", "notification_webhook"),
            (
                "notification_webhook = \"ftp://example.com/x\"\n",
                "notification_webhook",
            ),
            ("notification_webhook = \"file:///tmp/x\"\n", "notification_webhook"),
            ("state_dir = \"\"\n", "state_dir"),
            ("deadline_seconds = 0\n", "deadline_seconds"),
            ("webhook_timeout_seconds = 0\n", "webhook_timeout_seconds"),
            ("webhook_retries = 11\n", "webhook_retries"),
            ("webhook_backoff_ms = 0\n", "webhook_backoff_ms"),
            ("poll_interval_ms = 0\n", "poll_interval_ms"),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap().validate(Path::new("/")).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
        assert!(
            parse("notification_webhok = \"x\"\n")
                .unwrap_err()
                .contains("notification_webhok")
        );
    }

    #[test]
    fn debug_hides_the_webhook_token() {
        let c = parse("notification_webhook = \"https://hooks.example.com/services/T0/B0/tok-secret-1\"\n").unwrap();
        let shown = format!("{c:?}");
        assert!(
            shown.contains("hooks.example.com") && !shown.contains("tok-secret-1"),
            "{shown}"
        );
    }
}
