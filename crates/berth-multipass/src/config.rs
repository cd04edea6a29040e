//! `[provisioner.multipass]` of berth.toml: which `multipass` binary to run, the default image,
//! the cloud-init user, timeouts and the environment the binary gets; `validate()` names the
//! offending key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use berth_core::ConfigError;
pub(crate) use berth_core::spec::is_unix_user;

pub const DEFAULT_BINARY: &str = "multipass";
pub const DEFAULT_IMAGE: &str = "24.04";
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 60;
pub const DEFAULT_LAUNCH_TIMEOUT_SECONDS: u64 = 900;
pub const DEFAULT_USER: &str = "ubuntu";
const MAX_TIMEOUT_SECONDS: u64 = 24 * 3600;
/// Directories searched for a bare `binary` name after Berth's own `PATH` (snap installs land in
/// `/snap/bin`, which service managers rarely put on `PATH`).
const EXTRA_SEARCH_DIRS: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin", "/snap/bin"];

/// The Multipass backend's configuration. Every key has a default, so an empty
/// `[provisioner.multipass]` table is valid.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MultipassConfig {
    /// The `multipass` executable: a bare name is looked up on `PATH` (and `/snap/bin`); a path
    /// is absolute or relative to the config file's directory.
    #[serde(default = "default_binary")]
    pub binary: PathBuf,
    /// Image launched when a spec names no template (anything `multipass find` lists: `24.04`,
    /// `noble`, `lts`, `daily:25.04`).
    #[serde(default = "default_image")]
    pub image: String,
    /// Upper bound for quick calls (`info`, `list`, `start`, `stop`, `delete`, `version`).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Upper bound for `launch` (image download included) and for waiting for an address.
    #[serde(default = "default_launch_timeout")]
    pub launch_timeout_seconds: u64,
    /// The cloud-init user that gets the SSH keys when a spec names no user.
    #[serde(default = "default_user")]
    pub user: String,
    /// Fixed variables given to every `multipass` call (values are never logged).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of variables copied from Berth's own environment when set there. The snap-packaged
    /// client needs `HOME`, hence the default.
    #[serde(default = "default_pass_env")]
    pub pass_env: Vec<String>,
}

fn default_binary() -> PathBuf {
    PathBuf::from(DEFAULT_BINARY)
}
fn default_image() -> String {
    DEFAULT_IMAGE.to_owned()
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECONDS
}
fn default_launch_timeout() -> u64 {
    DEFAULT_LAUNCH_TIMEOUT_SECONDS
}
fn default_user() -> String {
    DEFAULT_USER.to_owned()
}
fn default_pass_env() -> Vec<String> {
    vec!["HOME".to_owned()]
}

impl Default for MultipassConfig {
    fn default() -> Self {
        MultipassConfig {
            binary: default_binary(),
            image: default_image(),
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            launch_timeout_seconds: DEFAULT_LAUNCH_TIMEOUT_SECONDS,
            user: default_user(),
            env: BTreeMap::new(),
            pass_env: default_pass_env(),
        }
    }
}

impl MultipassConfig {
    /// Checks every key without touching the file system (doctor checks the binary).
    pub fn validate(&self, base_dir: &Path) -> Result<(), ConfigError> {
        let _ = base_dir;
        if self.binary.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "binary",
                "must not be empty: give `multipass` or the executable's path",
            ));
        }
        check_image("image", &self.image)?;
        for (key, value) in [
            ("timeout_seconds", self.timeout_seconds),
            ("launch_timeout_seconds", self.launch_timeout_seconds),
        ] {
            if value == 0 || value > MAX_TIMEOUT_SECONDS {
                return Err(ConfigError::new(
                    key,
                    format!("must be between 1 and {MAX_TIMEOUT_SECONDS} (got {value})"),
                ));
            }
        }
        if !is_unix_user(&self.user) {
            return Err(ConfigError::new(
                "user",
                format!(
                    "must be a Unix user name (lowercase letters, digits, '_' or '-', at most 32) (got {:?})",
                    self.user
                ),
            ));
        }
        berth_exec::check_env(&self.env, &self.pass_env)
    }

    /// Where `binary` is: a path resolves against `base_dir`; a bare name is searched on
    /// Berth's `PATH`, then in the usual install directories. `Err` says where it looked.
    pub fn resolve_binary(&self, base_dir: &Path) -> Result<PathBuf, String> {
        let b = &self.binary;
        if b.components().count() > 1 || b.is_absolute() {
            return Ok(if b.is_absolute() { b.clone() } else { base_dir.join(b) });
        }
        let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        dirs.extend(EXTRA_SEARCH_DIRS.iter().map(PathBuf::from));
        dirs.iter().map(|d| d.join(b)).find(|p| p.is_file()).ok_or_else(|| {
            format!(
                "{} was not found on PATH or in {} (install Multipass or set `binary` to its path)",
                b.display(),
                EXTRA_SEARCH_DIRS.join(", ")
            )
        })
    }
}

/// An image reference as `multipass launch` takes it: non-empty, no whitespace, not an option.
pub(crate) fn check_image(key: &str, image: &str) -> Result<(), ConfigError> {
    if image.is_empty() || image.starts_with('-') || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(
            key,
            format!(
                "must be a Multipass image such as \"24.04\", \"noble\" or \"daily:25.04\" (no spaces, not starting with '-') (got {image:?})"
            ),
        ));
    }
    Ok(())
}

impl fmt::Debug for MultipassConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MultipassConfig")
            .field("binary", &self.binary)
            .field("image", &self.image)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("launch_timeout_seconds", &self.launch_timeout_seconds)
            .field("user", &self.user)
            .field("env", &berth_exec::RedactedEnv(&self.env))
            .field("pass_env", &self.pass_env)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MultipassConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_table_takes_every_default() {
        let c = parse("").unwrap();
        c.validate(Path::new("/etc/berth")).unwrap();
        assert_eq!(c, MultipassConfig::default());
        assert_eq!(c.binary, Path::new("multipass"));
        assert_eq!(c.image, "24.04");
        assert_eq!((c.timeout_seconds, c.launch_timeout_seconds), (60, 900));
        assert_eq!(c.user, "ubuntu");
        assert_eq!(c.pass_env, vec!["HOME".to_owned()]);
    }

    #[test]
    fn binary_paths_resolve_against_base_dir() {
        let c = parse("binary = \"bin/multipass\"\n").unwrap();
        assert_eq!(
            c.resolve_binary(Path::new("/etc/berth")).unwrap(),
            Path::new("/etc/berth/bin/multipass")
        );
        let c = parse("binary = \"/opt/mp\"\n").unwrap();
        assert_eq!(c.resolve_binary(Path::new("/etc/berth")).unwrap(), Path::new("/opt/mp"));
        let c = parse("binary = \"no-such-multipass-berth\"\n").unwrap();
        let err = c.resolve_binary(Path::new("/")).unwrap_err();
        assert!(err.contains("no-such-multipass-berth was not found on PATH"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("binary = \"\"\n", "binary"),
            ("image = \"\"\n", "image"),
            ("image = \"--help\"\n", "image"),
            ("image = \"24.04 lts\"\n", "image"),
            ("timeout_seconds = 0\n", "timeout_seconds"),
            ("launch_timeout_seconds = 100000\n", "launch_timeout_seconds"),
            ("user = \"Root User\"\n", "user"),
            ("env = { \"A-B\" = \"x\" }\n", "env.A-B"),
            ("pass_env = [\"1X\"]\n", "pass_env"),
            ("env = { HOME = \"/root\" }\n", "pass_env"),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap().validate(Path::new("/")).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
        assert!(parse("imgae = \"24.04\"\n").unwrap_err().contains("imgae"));
    }

    #[test]
    fn debug_hides_env_values() {
        let c = parse("pass_env = []\nenv = { MP_TOKEN = \"tok-secret-1\" }\n").unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("MP_TOKEN") && !shown.contains("tok-secret-1"), "{shown}");
    }
}
