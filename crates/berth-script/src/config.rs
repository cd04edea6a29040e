//! `[provisioner.script]` of berth.toml: which executable handles which action, the
//! environment scripts get, and the limits; `validate()` names the offending key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use berth_core::ConfigError;

/// The protocol actions. Each is handled by its own key's executable or, failing that, by
/// `command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Provision,
    Terminate,
    Start,
    Stop,
    Status,
    List,
    Health,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::Provision,
        Action::Terminate,
        Action::Start,
        Action::Stop,
        Action::Status,
        Action::List,
        Action::Health,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Provision => "provision",
            Action::Terminate => "terminate",
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Status => "status",
            Action::List => "list",
            Action::Health => "health",
        }
    }

    /// The config key naming this action's own executable.
    pub fn config_key(self) -> &'static str {
        match self {
            Action::Health => "health_check",
            other => other.as_str(),
        }
    }

    /// `health` is optional (doctor then skips the live check); every other action is required.
    /// The seed's minimal form: `provision` and `terminate` (with `health_check`). Without
    /// `status` Berth keeps its own record of provisions (`state_dir`); without `start`/`stop`
    /// there is no power control; without `list`, no reconcile.
    pub fn required(self) -> bool {
        matches!(self, Action::Provision | Action::Terminate)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The script backend's configuration. Paths are absolute or relative to the directory of the
/// config file (the `base_dir` given to [`ScriptConfig::validate`] and `ScriptProvider::new`).
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScriptConfig {
    /// One executable handling every action (it reads the action from the request).
    #[serde(default)]
    pub command: Option<PathBuf>,
    #[serde(default)]
    pub provision: Option<PathBuf>,
    #[serde(default)]
    pub terminate: Option<PathBuf>,
    #[serde(default)]
    pub start: Option<PathBuf>,
    #[serde(default)]
    pub stop: Option<PathBuf>,
    #[serde(default)]
    pub status: Option<PathBuf>,
    #[serde(default)]
    pub list: Option<PathBuf>,
    /// The `health` action's executable (the seed's name for it).
    #[serde(default)]
    pub health_check: Option<PathBuf>,
    /// Upper bound for one script run; the process group is killed when it is reached.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Fixed variables given to every script (values may be secrets: never logged).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of variables copied from Berth's own environment (when set there).
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Stdout beyond this many bytes is refused and the script killed.
    #[serde(default = "default_max_output")]
    pub max_output_bytes: u64,
    /// Without a `status` action: where Berth records its provisions (relative to the config
    /// file's directory), so a provision run again never makes a second machine.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

pub const DEFAULT_STATE_DIR: &str = "berth-script";

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

pub const DEFAULT_TIMEOUT_SECONDS: u64 = 300;
pub const DEFAULT_MAX_OUTPUT_BYTES: u64 = 1024 * 1024;
const MAX_TIMEOUT_SECONDS: u64 = 24 * 3600;
const MAX_OUTPUT_LIMIT: u64 = 64 * 1024 * 1024;

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECONDS
}
fn default_max_output() -> u64 {
    DEFAULT_MAX_OUTPUT_BYTES
}

impl ScriptConfig {
    /// One executable for every action, every other setting at its default.
    pub fn with_command(command: impl Into<PathBuf>) -> Self {
        ScriptConfig {
            command: Some(command.into()),
            provision: None,
            terminate: None,
            start: None,
            stop: None,
            status: None,
            list: None,
            health_check: None,
            timeout_seconds: DEFAULT_TIMEOUT_SECONDS,
            env: BTreeMap::new(),
            pass_env: Vec::new(),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
            state_dir: default_state_dir(),
        }
    }

    /// `state_dir` resolved against `base_dir`.
    pub fn state_dir(&self, base_dir: &Path) -> PathBuf {
        if self.state_dir.is_absolute() {
            self.state_dir.clone()
        } else {
            base_dir.join(&self.state_dir)
        }
    }

    fn own_key(&self, action: Action) -> Option<&PathBuf> {
        match action {
            Action::Provision => self.provision.as_ref(),
            Action::Terminate => self.terminate.as_ref(),
            Action::Start => self.start.as_ref(),
            Action::Stop => self.stop.as_ref(),
            Action::Status => self.status.as_ref(),
            Action::List => self.list.as_ref(),
            Action::Health => self.health_check.as_ref(),
        }
    }

    /// The executable handling `action` (its own key, else `command`), resolved against
    /// `base_dir`; `None` if neither is set.
    pub fn executable(&self, action: Action, base_dir: &Path) -> Option<PathBuf> {
        let path = self.own_key(action).or(self.command.as_ref())?;
        Some(if path.is_absolute() {
            path.clone()
        } else {
            std::path::absolute(base_dir)
                .unwrap_or_else(|_| base_dir.to_path_buf())
                .join(path)
        })
    }

    /// Checks every key without touching the file system (doctor checks the files).
    pub fn validate(&self, base_dir: &Path) -> Result<(), ConfigError> {
        let _ = base_dir;
        if let Some(cmd) = &self.command
            && cmd.as_os_str().is_empty()
        {
            return Err(ConfigError::new(
                "command",
                "must not be empty: give the executable's path",
            ));
        }
        for action in Action::ALL {
            let key = action.config_key();
            if let Some(p) = self.own_key(action)
                && p.as_os_str().is_empty()
            {
                return Err(ConfigError::new(key, "must not be empty: give the executable's path"));
            }
            if action.required() && self.own_key(action).is_none() && self.command.is_none() {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "no executable handles the `{action}` action: set `{key}` or `command` (one executable for every action)"
                    ),
                ));
            }
        }
        if self.state_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("state_dir", "must not be empty: give a directory"));
        }
        if self.timeout_seconds == 0 || self.timeout_seconds > MAX_TIMEOUT_SECONDS {
            return Err(ConfigError::new(
                "timeout_seconds",
                format!(
                    "must be between 1 and {MAX_TIMEOUT_SECONDS} (got {})",
                    self.timeout_seconds
                ),
            ));
        }
        if !(1024..=MAX_OUTPUT_LIMIT).contains(&self.max_output_bytes) {
            return Err(ConfigError::new(
                "max_output_bytes",
                format!(
                    "must be between 1024 and {MAX_OUTPUT_LIMIT} (got {})",
                    self.max_output_bytes
                ),
            ));
        }
        berth_exec::check_env(&self.env, &self.pass_env)
    }
}

impl fmt::Debug for ScriptConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptConfig")
            .field("command", &self.command)
            .field("provision", &self.provision)
            .field("terminate", &self.terminate)
            .field("start", &self.start)
            .field("stop", &self.stop)
            .field("status", &self.status)
            .field("list", &self.list)
            .field("health_check", &self.health_check)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("env", &berth_exec::RedactedEnv(&self.env))
            .field("pass_env", &self.pass_env)
            .field("max_output_bytes", &self.max_output_bytes)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<ScriptConfig, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn command_alone_handles_every_action_relative_to_base_dir() {
        let c = parse("command = \"bin/backend\"\n").unwrap();
        c.validate(Path::new("/etc/berth")).unwrap();
        for a in Action::ALL {
            assert_eq!(
                c.executable(a, Path::new("/etc/berth")).unwrap(),
                Path::new("/etc/berth/bin/backend")
            );
        }
        assert_eq!(c.timeout_seconds, 300);
        assert_eq!(c.max_output_bytes, 1 << 20);
    }

    #[test]
    fn per_action_keys_override_command() {
        let c = parse("command = \"/opt/b\"\nprovision = \"/opt/p.sh\"\nhealth_check = \"h.sh\"\n").unwrap();
        c.validate(Path::new("/x")).unwrap();
        assert_eq!(
            c.executable(Action::Provision, Path::new("/x")).unwrap(),
            Path::new("/opt/p.sh")
        );
        assert_eq!(
            c.executable(Action::Health, Path::new("/x")).unwrap(),
            Path::new("/x/h.sh")
        );
        assert_eq!(
            c.executable(Action::Stop, Path::new("/x")).unwrap(),
            Path::new("/opt/b")
        );
    }

    #[test]
    fn the_seeds_three_keys_are_enough_and_a_missing_one_is_named() {
        let c =
            parse("provision = \"/p\"\nterminate = \"/t\"\nhealth_check = \"/h\"\ntimeout_seconds = 300\n").unwrap();
        c.validate(Path::new("/")).unwrap();
        assert_eq!(
            c.state_dir(Path::new("/etc/berth")),
            Path::new("/etc/berth/berth-script")
        );
        let err = parse("provision = \"/p\"\n")
            .unwrap()
            .validate(Path::new("/"))
            .unwrap_err();
        assert_eq!(err.key, "terminate");
        assert!(err.message.contains("set `terminate` or `command`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("command = \"/b\"\ntimeout_seconds = 0\n", "timeout_seconds"),
            ("command = \"/b\"\nmax_output_bytes = 10\n", "max_output_bytes"),
            ("command = \"\"\n", "command"),
            ("command = \"/b\"\nenv = { \"A-B\" = \"x\" }\n", "env.A-B"),
            ("command = \"/b\"\npass_env = [\"1X\"]\n", "pass_env"),
            (
                "command = \"/b\"\nenv = { X = \"1\" }\npass_env = [\"X\"]\n",
                "pass_env",
            ),
        ];
        for (text, key) in cases {
            let err = parse(text).unwrap().validate(Path::new("/")).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
        assert!(
            parse("command = \"/b\"\nprovison = \"/p\"\n")
                .unwrap_err()
                .contains("provison")
        );
    }

    #[test]
    fn debug_hides_env_values() {
        let c = parse("command = \"/b\"\nenv = { API_TOKEN = \"tok-secret-1\" }\n").unwrap();
        let shown = format!("{c:?}");
        assert!(
            shown.contains("API_TOKEN") && !shown.contains("tok-secret-1"),
            "{shown}"
        );
    }
}
