//! `berth.toml`: parsing, validation and secret resolution. Every error names the file, the line,
//! the key and what was expected, and never repeats a secret's value.

mod agent;
mod backend;
mod drift;
mod locate;
mod pool;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use agent::{
    AgentSection, AgentSettings, CapacitySection, MetricsListen, PollingSection, PostProvisionSection, ReconcileSection,
};
pub use backend::{BackendConfig, BackendKind, BackendSettings, PROXMOX_SECRET_ENV};
pub use drift::DriftSettings;
pub use locate::ConfigFileError;
use locate::Locator;
pub use pool::{MAX_READY, PoolSettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    provisioner: backend::RawBackend,
    api: Option<agent::ApiSection>,
    agent: Option<AgentSection>,
    polling: Option<PollingSection>,
    capacity: Option<CapacitySection>,
    post_provision: Option<PostProvisionSection>,
    reconcile: Option<ReconcileSection>,
    drift: Option<drift::RawDrift>,
    #[serde(default)]
    pool: Vec<pool::RawPool>,
}

/// A loaded, validated configuration.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    /// In file order; never empty.
    pub backends: Vec<BackendConfig>,
    /// The agent's tables; `None` when the file has no `[api]` (it drives a backend only).
    pub agent: Option<AgentSettings>,
    /// The scheduled check of a site file against the cluster (`[drift]`).
    pub drift: Option<DriftSettings>,
    /// Warm pools (`[[pool]]`), in file order.
    pub pools: Vec<PoolSettings>,
}

impl Config {
    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        base_dir(&self.path)
    }

    /// The backend called `name`; without a name, the only one (an error names the choices
    /// when the file has several).
    pub fn backend(&self, name: Option<&str>) -> Result<&BackendConfig, ConfigFileError> {
        let names = || {
            self.backends
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let err = |message: String| ConfigFileError {
            path: self.path.clone(),
            line: None,
            column: None,
            key: Some("provisioner.backends".into()),
            message,
        };
        match name {
            Some(n) => self
                .backends
                .iter()
                .find(|b| b.name == n)
                .ok_or_else(|| err(format!("no backend named {n:?}; this file configures: {}", names()))),
            None if self.backends.len() == 1 => Ok(&self.backends[0]),
            None => Err(err(format!(
                "this file configures {} backends ({}); name one with --backend",
                self.backends.len(),
                names()
            ))),
        }
    }

    /// The backends' names and kinds, for messages: `pve1 (proxmox), lab (libvirt)`.
    pub fn describe_backends(&self) -> String {
        self.backends
            .iter()
            .map(|b| {
                if b.name == b.kind().as_str() {
                    b.name.clone()
                } else {
                    format!("{} ({})", b.name, b.kind().as_str())
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn base_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
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
    let base = std::path::absolute(base_dir(path)).unwrap_or_else(|_| ".".into());
    let tables = agent::RawAgentTables {
        api: raw.api,
        agent: raw.agent,
        polling: raw.polling,
        capacity: raw.capacity,
        post_provision: raw.post_provision,
        reconcile: raw.reconcile,
    };
    let agent = agent::settle(tables, &base).map_err(|(key, message)| loc.at_key(&key, &message))?;
    let cx = backend::Ctx {
        path,
        base: &base,
        loc: &loc,
        env,
    };
    let backends = backend::settle_backends(raw.provisioner, &cx)?;
    let drift = raw
        .drift
        .map(|d| drift::settle(d, &base, &backends))
        .transpose()
        .map_err(|(key, message)| loc.at_key(&key, &message))?;
    let pools = pool::settle(raw.pool, &backends).map_err(|(key, message)| loc.at_key(&key, &message))?;
    Ok(Config {
        path: path.to_owned(),
        backends,
        agent,
        drift,
        pools,
    })
}

#[cfg(test)]
mod tests;
