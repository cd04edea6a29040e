//! `berth.toml`: parsing, validation and secret resolution. Every error names the file, the line,
//! the key and what was expected, and never repeats a secret's value.

mod agent;
mod locate;

use std::path::{Path, PathBuf};

use berth_core::Secret;
#[cfg(feature = "libvirt")]
use berth_libvirt::LibvirtConfig;
use berth_manual::ManualConfig;
use berth_multipass::MultipassConfig;
use berth_proxmox::ProxmoxConfig;
use berth_script::ScriptConfig;
use serde::Deserialize;

use crate::guard::{BreakerConfig, RateLimit};

pub use agent::{AgentSection, AgentSettings, CapacitySection, PollingSection, PostProvisionSection, ReconcileSection};
pub use locate::ConfigFileError;
use locate::{Locator, is_secret_key};

/// Environment variable that may hold the Proxmox API token secret.
pub const PROXMOX_SECRET_ENV: &str = "BERTH_PROXMOX_TOKEN_SECRET";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Proxmox,
    Script,
    Manual,
    Multipass,
    Libvirt,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Proxmox => "proxmox",
            BackendKind::Script => "script",
            BackendKind::Manual => "manual",
            BackendKind::Multipass => "multipass",
            BackendKind::Libvirt => "libvirt",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    provisioner: RawProvisioner,
    api: Option<agent::ApiSection>,
    agent: Option<AgentSection>,
    polling: Option<PollingSection>,
    capacity: Option<CapacitySection>,
    post_provision: Option<PostProvisionSection>,
    reconcile: Option<ReconcileSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvisioner {
    #[serde(rename = "type")]
    kind: BackendKind,
    /// Client-side limit on calls to the backend's endpoint.
    #[serde(default)]
    rate_limit: RateLimit,
    #[serde(default)]
    circuit_breaker: BreakerConfig,
    proxmox: Option<ProxmoxConfig>,
    script: Option<ScriptConfig>,
    multipass: Option<MultipassConfig>,
    manual: Option<ManualConfig>,
    #[cfg(feature = "libvirt")]
    libvirt: Option<LibvirtConfig>,
    /// Without the libvirt feature the table is still recognised, so the error is about the
    /// build, not about an unknown key.
    #[cfg(not(feature = "libvirt"))]
    #[allow(dead_code)]
    libvirt: Option<toml::Value>,
}

/// A loaded, validated configuration.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub backend: BackendKind,
    /// Present when `backend` is Proxmox, with its token secret resolved.
    pub proxmox: Option<ProxmoxConfig>,
    /// Present when `backend` is Script.
    pub script: Option<ScriptConfig>,
    /// Present when `backend` is Multipass.
    pub multipass: Option<MultipassConfig>,
    /// Present when `backend` is Manual.
    pub manual: Option<ManualConfig>,
    /// Present when `backend` is Libvirt (relative paths already resolved).
    #[cfg(feature = "libvirt")]
    pub libvirt: Option<LibvirtConfig>,
    /// The agent's tables; `None` when the file has no `[api]` (it drives a backend only).
    pub agent: Option<AgentSettings>,
    pub rate_limit: RateLimit,
    pub circuit_breaker: BreakerConfig,
}

impl Config {
    fn new(path: &Path, backend: BackendKind) -> Self {
        Config {
            path: path.to_owned(),
            backend,
            proxmox: None,
            script: None,
            multipass: None,
            manual: None,
            #[cfg(feature = "libvirt")]
            libvirt: None,
            agent: None,
            rate_limit: RateLimit::default(),
            circuit_breaker: BreakerConfig::default(),
        }
    }

    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        }
    }
}

/// Reads and validates `path`, resolving secrets from files and the environment.
pub fn load_config(path: &Path) -> Result<Config, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError {
        path: path.to_owned(),
        line: None,
        column: None,
        key: None,
        message: format!("cannot read the configuration file: {e}"),
    })?;
    parse_config(path, &text, &|name| std::env::var(name).ok())
}

/// Parses and validates `text` (the contents of `path`); `env` looks up environment variables.
pub fn parse_config(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigFileError> {
    let loc = Locator::new(path, text);
    let raw: RawConfig = toml::from_str(text).map_err(|e| loc.toml_error(&e))?;
    let base = std::path::absolute(Config::new(path, BackendKind::Manual).base_dir()).unwrap_or_else(|_| ".".into());
    let tables = agent::RawAgentTables {
        api: raw.api,
        agent: raw.agent,
        polling: raw.polling,
        capacity: raw.capacity,
        post_provision: raw.post_provision,
        reconcile: raw.reconcile,
    };
    let settings = agent::settle(tables, &base).map_err(|(key, message)| loc.at_key(&key, &message))?;
    let (rate_limit, circuit_breaker) = (raw.provisioner.rate_limit, raw.provisioner.circuit_breaker);
    check(rate_limit.validate(), "rate_limit", |e| e, &loc)?;
    check(circuit_breaker.validate(), "circuit_breaker", |e| e, &loc)?;
    let mut config = backend_config(path, raw.provisioner, &loc, env)?;
    config.agent = settings;
    config.rate_limit = rate_limit;
    config.circuit_breaker = circuit_breaker;
    Ok(config)
}

fn backend_config(
    path: &Path,
    p: RawProvisioner,
    loc: &Locator,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigFileError> {
    match p.kind {
        BackendKind::Proxmox => {
            let mut px = table(p.proxmox, "proxmox", "api_url, api_token_id, node, template_vmid, storage", loc)?;
            resolve_proxmox_secret(&mut px, path, loc, env)?;
            check(px.validate(), "proxmox", |e| (e.key, e.message), loc)?;
            Ok(Config { proxmox: Some(px), ..Config::new(path, p.kind) })
        }
        BackendKind::Script => {
            let sc = table(p.script, "script", "command, or provision/terminate/start/stop/status/list", loc)?;
            let config = Config::new(path, p.kind);
            check(sc.validate(&config.base_dir()), "script", |e| (e.key, e.message), loc)?;
            Ok(Config { script: Some(sc), ..config })
        }
        BackendKind::Manual => {
            let mc = p.manual.unwrap_or_default();
            let config = Config::new(path, p.kind);
            check(mc.validate(&config.base_dir()), "manual", |e| (e.key, e.message), loc)?;
            Ok(Config { manual: Some(mc), ..config })
        }
        BackendKind::Multipass => {
            let mc = p.multipass.unwrap_or_default();
            let config = Config::new(path, p.kind);
            check(mc.validate(&config.base_dir()), "multipass", |e| (e.key, e.message), loc)?;
            Ok(Config { multipass: Some(mc), ..config })
        }
        #[cfg(feature = "libvirt")]
        BackendKind::Libvirt => {
            let mut lc = table(p.libvirt, "libvirt", "images_dir or template_pool", loc)?;
            let config = Config::new(path, p.kind);
            let base = std::path::absolute(config.base_dir()).unwrap_or_else(|_| config.base_dir());
            check(lc.validate(&base), "libvirt", |e| (e.key, e.message), loc)?;
            Ok(Config {
                libvirt: Some(lc),
                ..config
            })
        }
        #[cfg(not(feature = "libvirt"))]
        BackendKind::Libvirt => Err(loc.at_key(
            "provisioner.type",
            "backend \"libvirt\" is not available in this build of berth (built without the `libvirt` feature); expected \"proxmox\", \"script\", \"multipass\" or \"manual\"",
        )),
    }
}

/// The backend's own table, or an error pointing at `type` that says what the table needs.
fn table<T>(t: Option<T>, name: &str, needs: &str, loc: &Locator) -> Result<T, ConfigFileError> {
    t.ok_or_else(|| {
        loc.at_key(
            "provisioner.type",
            &format!("type = \"{name}\" needs a [provisioner.{name}] table ({needs})"),
        )
    })
}

/// A backend's own validation error, placed at its key in the file (secret values not shown).
fn check<E>(
    r: Result<(), E>,
    table: &str,
    parts: impl FnOnce(E) -> (String, String),
    loc: &Locator,
) -> Result<(), ConfigFileError> {
    r.map_err(|e| {
        let (key, message) = parts(e);
        let msg = if is_secret_key(&key) {
            "invalid value (not shown: it is a secret)".to_owned()
        } else {
            message
        };
        loc.at_key(&format!("provisioner.{table}.{key}"), &msg)
    })
}

fn resolve_proxmox_secret(
    px: &mut ProxmoxConfig,
    config_path: &Path,
    loc: &Locator,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigFileError> {
    const KEY: &str = "provisioner.proxmox.api_token_secret";
    const FILE_KEY: &str = "provisioner.proxmox.api_token_secret_file";
    // Where the secret came from: its errors point there (a key in the file, or the variable).
    let mut source = KEY.to_owned();
    let secret = match (&px.api_token_secret, &px.api_token_secret_file) {
        (Some(_), Some(_)) => {
            return Err(loc.at_key(
                FILE_KEY,
                "give either api_token_secret or api_token_secret_file, not both",
            ));
        }
        (Some(s), None) => s.clone(),
        (None, Some(file)) => {
            let file = if file.is_relative() {
                config_path.parent().unwrap_or(Path::new(".")).join(file)
            } else {
                file.clone()
            };
            let text = std::fs::read_to_string(&file).map_err(|e| {
                loc.at_key(
                    FILE_KEY,
                    &format!("cannot read the token secret file {}: {e}", file.display()),
                )
            })?;
            crate::fsutil::warn_if_readable_by_others(&file, "secret file");
            source = FILE_KEY.to_owned();
            Secret::new(text.trim_end_matches(['\n', '\r']))
        }
        (None, None) => match env(PROXMOX_SECRET_ENV) {
            Some(v) => {
                source = format!("environment variable {PROXMOX_SECRET_ENV}");
                Secret::new(v)
            }
            None => {
                return Err(loc.at_key(
                    "provisioner.proxmox",
                    &format!("missing the API token secret: set api_token_secret, api_token_secret_file, or the {PROXMOX_SECRET_ENV} environment variable"),
                ));
            }
        },
    };
    let problem = if secret.is_empty() {
        Some("the API token secret is empty")
    } else if looks_like_placeholder(secret.expose()) {
        Some(
            "the API token secret is still a placeholder; create a token with `pveum user token add` and use its secret",
        )
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(if source.starts_with("provisioner.") {
            loc.at_key(&source, problem)
        } else {
            ConfigFileError {
                path: config_path.to_owned(),
                line: None,
                column: None,
                key: None,
                message: format!("{source}: {problem}"),
            }
        });
    }
    resolve_ca_file(px, config_path, loc)?;
    px.api_token_secret = Some(secret);
    Ok(())
}

/// A relative `ca_file` is relative to the configuration file, like every other path in it; it
/// must be readable now, so the error can name its line.
fn resolve_ca_file(px: &mut ProxmoxConfig, config_path: &Path, loc: &Locator) -> Result<(), ConfigFileError> {
    let Some(ca) = &px.ca_file else {
        return Ok(());
    };
    let ca = if ca.is_relative() {
        config_path.parent().unwrap_or(Path::new(".")).join(ca)
    } else {
        ca.clone()
    };
    std::fs::metadata(&ca).map_err(|e| {
        loc.at_key(
            "provisioner.proxmox.ca_file",
            &format!("cannot read the CA file {}: {e}", ca.display()),
        )
    })?;
    px.ca_file = Some(ca);
    Ok(())
}

fn looks_like_placeholder(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    lower.contains("xxxx")
        || lower.starts_with('<')
        || ["changeme", "secret", "token", "todo"].contains(&lower.as_str())
}

#[cfg(test)]
mod tests;
